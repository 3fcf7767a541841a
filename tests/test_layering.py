"""Data flows one way: data -> models -> training -> evaluation -> export; no cycles; no private
APIs of other libraries."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "kfusion"
ORDER = ["data", "models", "training", "evaluation", "export"]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", ORDER)
def test_lower_layers_never_import_higher_ones(layer):
    higher = {f"kfusion.{name}" for name in ORDER[ORDER.index(layer) + 1:]} | {"kfusion.cli"}
    offenders = []
    for path in sorted((PACKAGE / layer).rglob("*.py")) if (PACKAGE / layer).is_dir() else []:
        for name in _imports(path):
            if any(name == h or name.startswith(h + ".") for h in higher):
                offenders.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_data_layer_does_not_import_tensorflow():
    code = ("import sys, kfusion.data.dataset, kfusion.data.inspect, kfusion.cli; "
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_bench_scripts_compile():
    """The benches are run by hand, not by the suite: at least they must parse."""
    import py_compile
    from pathlib import Path

    scripts = sorted((Path(__file__).parent.parent / "bench").glob("*.py"))
    assert scripts
    for script in scripts:
        py_compile.compile(str(script), doraise=True)


#: Private modules and members of other libraries (TensorFlow / LiteRT / Keras / KerasTuner
#: insides): only a tight version pin keeps them working, so kfusion uses public APIs only.
PRIVATE_API = re.compile(r"\.src\.|_experimental|tensorflow\.python|lite\.python|python\.lite"
                         r"|schema_py_generated|mlir_quantize|convert_phase")


def test_no_private_apis_of_other_libraries():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE.parent).as_posix()
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if PRIVATE_API.search(line):
                offenders.append(f"{name}:{number}: {line.strip()}")
    assert not offenders, "private APIs of other libraries:\n" + "\n".join(offenders)
