"""Data flows one way: errors -> checks/modalities -> config -> data -> models -> training ->
evaluation -> export -> pipeline -> cli; no cycles between modules; no private APIs of other
libraries."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "kfusion"
ORDER = ["data", "models", "training", "evaluation", "export"]
#: Every top-level module and sub-package of kfusion, lowest first; a module may import only
#: from its own layer or lower ones.
LAYERS = [
    ["errors"],
    ["checks", "modalities"],
    ["config", "runs"],
    ["data"],
    ["models"],
    ["training", "saved_models"],  # loading a shipped model registers models' and training's layers
    ["evaluation"],
    ["export"],
    ["pipeline"],
    ["cli", "__main__"],
]


def _layer(module: str) -> int | None:
    """The layer of a dotted kfusion module name (``kfusion.data.dataset`` -> data's)."""
    parts = module.split(".")
    if parts[0] != "kfusion" or len(parts) == 1:
        return None
    for index, names in enumerate(LAYERS):
        if parts[1] in names:
            return index
    return None


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    return (PACKAGE.parent / relative).with_suffix(".py").is_file() or (
        PACKAGE.parent / relative / "__init__.py").is_file()


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    """kfusion-or-other modules ``path`` imports (``from kfusion import checks`` gives
    ``kfusion.checks``); with ``top_level_only``, only imports run when the module loads."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    if top_level_only:  # also imports inside top-level if/try blocks
        nodes = [n for stmt in tree.body for n in ast.walk(stmt)
                 if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names
                         if _is_module(f"{node.module}.{alias.name}"))
    return names


def _sources():
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("layer", ORDER)
def test_lower_layers_never_import_higher_ones(layer):
    higher = {f"kfusion.{name}" for name in ORDER[ORDER.index(layer) + 1:]} | {"kfusion.cli"}
    assert (PACKAGE / layer).is_dir(), f"kfusion/{layer}: no such package; update ORDER"
    offenders = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for name in _imports(path):
            if any(name == h or name.startswith(h + ".") for h in higher):
                offenders.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_every_module_has_a_layer_and_imports_only_its_own_or_lower_ones():
    offenders = []
    for path in _sources():
        module = _module_name(path)
        if module == "kfusion":
            continue
        own = _layer(module)
        assert own is not None, f"{module}: not in LAYERS of tests/test_layering.py; add it"
        for name in _imports(path):
            other = _layer(name)
            if other is not None and other > own:
                offenders.append(f"{module} (layer {own}: {LAYERS[own]}) imports {name} "
                                 f"(layer {other}: {LAYERS[other]})")
    assert not offenders, "\n".join(offenders)


def _module_graph() -> dict[str, set[str]]:
    graph = {}
    for path in _sources():
        module = _module_name(path)
        own_packages = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
        edges = set()
        for name in _imports(path, top_level_only=True):
            if not name.startswith("kfusion"):
                continue
            parts = name.split(".")
            for i in range(2, len(parts) + 1):  # importing a.b.c runs a.b's __init__ too
                target = ".".join(parts[:i])
                if _is_module(target) and target != module and target not in own_packages:
                    edges.add(target)
        graph[module] = edges
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycles_between_modules():
    cycle = _find_cycle(_module_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


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
