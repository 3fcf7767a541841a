"""``python -m kfusion.cli``: the same as ``python -m kfusion`` and the ``kfusion`` command."""

import sys

from kfusion.cli import main

if __name__ == "__main__":
    sys.exit(main())
