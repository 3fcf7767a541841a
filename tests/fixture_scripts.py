"""Load the fixture writers tests/fixtures/<name>/make_fixture.py (scripts, not a package) as
modules, once per test session."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"


@functools.lru_cache(maxsize=None)
def fixture_script(name: str):
    """The module of ``tests/fixtures/<name>/make_fixture.py`` (``wesad``, ``ppgdalia``, ``clips``)."""
    spec = importlib.util.spec_from_file_location(f"{name}_fixture", FIXTURES / name / "make_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
