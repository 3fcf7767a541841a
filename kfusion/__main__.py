"""``python -m kfusion``: the command line, as the ``kfusion`` command."""

import sys

from kfusion.cli import main

if __name__ == "__main__":
    sys.exit(main())
