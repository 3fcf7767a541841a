"""The notebooks in notebooks/: committed without outputs, and each runs at the small size.

Each notebook is executed with nbclient (kernel ``python3``, cwd = a temporary folder) with
``KFUSION_NOTEBOOK_SIZE=small`` and its working folder and data-set cache in ``tmp_path``. A
probe cell appended to the in-memory copy prints the notebook's key results as JSON, which the
test checks; the files on disk are never touched. The notebooks run two at a time (one
module fixture), each test waiting for its own.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = ["01_quickstart", "02_reproduce_table1", "03_export_tflite", "04_your_own_data"]
CELL_TIMEOUT = 600  # seconds per cell; the slowest small cell takes ~20 s on 2 cores
MARK = "KFUSION-TEST "

#: Appended to each notebook: its key results as one JSON line.
PROBES = {
    "01_quickstart": """
import json
print("KFUSION-TEST " + json.dumps({
    "scores": {k: {i: float(v) for i, v in col.items()} for k, col in scores.to_dict().items()},
    "held_out": fold.held_out,
    "split": {part: sorted(set(labelled.participants[getattr(fold, part)].tolist()))
              for part in ("train", "validation", "test")},
    "epochs_run": len(curves), "epochs_max": EPOCHS, "n_test": int(truth.size),
    "trainable": trainable, "frozen": frozen}))
""",
    "02_reproduce_table1": """
import json
print("KFUSION-TEST " + json.dumps({
    "rows": list(dict.fromkeys(results.table["row"])), "targets": list(dict.fromkeys(results.table["target"])),
    "n_folds": sorted(set(results.table["n_folds"].tolist())), "complete": bool(results.complete),
    "means": [float(v) for v in results.table["mean"]],
    "tests": results.tests[["comparison", "target", "metric", "n"]].to_dict("records"),
    "figure": str(results.files["figure"]), "first_seconds": first_run_seconds,
    "resume_seconds": resume_seconds, "folds_file": str(OUT / "folds.jsonl"),
    "participants": data.participant_ids()}))
""",
    "03_export_tflite": """
import json
print("KFUSION-TEST " + json.dumps({
    "parity": parity.to_dict("records"), "latency": latency.to_dict("records"),
    "sizes": sizes.to_dict("records"), "windows_compared": int(len(picked)),
    "timeline_rows": int(len(timeline)), "timeline_csv": str(WORKDIR / "timeline.csv"),
    "first_windows": int((data.participants == first).sum()),
    "sidecar_inputs": [i["name"] for i in sidecar["inputs"]]}))
""",
    "04_your_own_data": """
import json
print("KFUSION-TEST " + json.dumps({
    "rows": list(dict.fromkeys(results.table["row"])), "targets": list(dict.fromkeys(results.table["target"])),
    "n_folds": sorted(set(results.table["n_folds"].tolist())), "complete": bool(results.complete),
    "participants": data.participant_ids(), "classes": list(data.classes["stress"]),
    "labelled": sorted(set(data.participants[data.labels["stress"] >= 0].tolist())),
    "folds": sorted(set(results.folds["fold"])), "means": [float(v) for v in results.table["mean"]],
    "study": str(STUDY), "source": str(STRESS_PREDICT)}))
""",
}


def _code_cells(nb):
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def test_every_notebook_is_known_and_listed():
    found = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert found == NAMES
    readme = (NOTEBOOKS / "README.md").read_text()
    for name in NAMES:
        assert f"{name}.ipynb" in readme


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    cells = _code_cells(nb)
    assert cells, f"{path.name}: no code cells"
    for index, cell in enumerate(cells):
        assert cell.outputs == [], f"{path.name}: code cell {index} has stored outputs"
        assert cell.execution_count is None, f"{path.name}: code cell {index} has an execution count"
        assert "execution" not in cell.metadata, f"{path.name}: code cell {index} has run timings"
    # a Markdown introduction first, then the parameters cell reading the size switch
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert "KFUSION_NOTEBOOK_SIZE" in cells[0].source and "KFUSION_NOTEBOOK_WORKDIR" in cells[0].source


def run_notebook(name: str, tmp_path: Path) -> tuple[nbformat.NotebookNode, dict]:
    """Execute ``name`` at the small size plus its probe; returns the executed copy and the probe's dict.

    The kernel gets its environment as an argument (not through ``os.environ``), so several
    notebooks can run at once from threads of this process."""
    workdir = tmp_path / "work"
    env = {k: v for k, v in os.environ.items() if k != "KFUSION_STRESS_PREDICT"}
    env.update(KFUSION_NOTEBOOK_SIZE="small", KFUSION_NOTEBOOK_WORKDIR=str(workdir),
               KFUSION_CACHE=str(tmp_path / "cache"), TF_CPP_MIN_LOG_LEVEL="2")
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBES[name].strip()))
    run_dir = tmp_path / "cwd"
    run_dir.mkdir()
    NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                   resources={"metadata": {"path": str(run_dir)}}).execute(env=env)
    lines = [line for output in nb.cells[-1].outputs if output.get("output_type") == "stream"
             for line in output.text.splitlines() if line.startswith(MARK)]
    assert len(lines) == 1, f"{name}: the probe printed no result"
    for cell in _code_cells(nb):
        assert not any(o.get("output_type") == "error" for o in cell.outputs)
    assert workdir.is_dir() and not any(run_dir.iterdir()), "output written outside the working folder"
    return nb, json.loads(lines[0][len(MARK):])


#: The test that checks each notebook (the fixture below runs only the selected ones).
TESTS = {"test_quickstart_notebook": "01_quickstart", "test_reproduce_table1_notebook": "02_reproduce_table1",
         "test_export_tflite_notebook": "03_export_tflite", "test_your_own_data_notebook": "04_your_own_data"}
#: Notebooks run at once: each is mostly one busy Python thread (small models), so two kernels
#: use both cores of the 2-core machines make test runs on (67 s one after the other, ~40 s).
PARALLEL = 2


@pytest.fixture(scope="module")
def executed(request, tmp_path_factory):
    """``{name: Future of run_notebook(name, ...)}`` for every notebook whose test was selected,
    started at once (slowest first) in ``PARALLEL`` threads; each test waits for its own."""
    selected = {getattr(item, "originalname", item.name) for item in request.session.items}
    names = [name for test, name in TESTS.items() if test in selected]
    names.sort(key=["03_export_tflite", "02_reproduce_table1", "01_quickstart", "04_your_own_data"].index)
    with ThreadPoolExecutor(max_workers=PARALLEL, thread_name_prefix="notebook") as pool:
        yield {name: pool.submit(run_notebook, name, tmp_path_factory.mktemp(name)) for name in names}


def _images(nb) -> int:
    return sum("image/png" in o.get("data", {}) for cell in _code_cells(nb) for o in cell.outputs)


@pytest.mark.slow
def test_quickstart_notebook(executed):
    nb, probe = executed["01_quickstart"].result()
    split = probe["split"]
    assert split["test"] == [probe["held_out"]]
    assert not set(split["train"]) & set(split["validation"])
    assert probe["held_out"] not in split["train"] + split["validation"] and split["train"]
    assert 1 <= probe["epochs_run"] <= probe["epochs_max"] and probe["n_test"] > 0
    # Frozen up to the projection head: the encoders and fusion layer (about 29 k parameters of
    # the shipped attention backbone) stay, the projection (about 34 k) and the head train.
    assert 25_000 < probe["frozen"] < probe["trainable"]
    for metric in ("accuracy", "macro F1"):
        assert set(probe["scores"][metric]) == {"fusion model (attention, with fusion training)",
                                                "majority class of the training windows"}
        assert all(0.0 <= v <= 1.0 for v in probe["scores"][metric].values())
    assert _images(nb) >= 1  # the training curves


@pytest.mark.slow
def test_reproduce_table1_notebook(executed):
    nb, probe = executed["02_reproduce_table1"].result()
    assert probe["rows"] == ["speech_only", "wearable_only", "attention_without", "attention_with", "handcrafted"]
    assert probe["targets"] == ["arousal"] and probe["complete"]
    assert probe["n_folds"] == [len(probe["participants"])]  # one fold per participant, every row
    assert all(0.0 <= m <= 1.0 for m in probe["means"])
    assert {(t["comparison"], t["target"], t["metric"]) for t in probe["tests"]} == \
        {("attention", "arousal", "accuracy"), ("attention", "arousal", "f1")}
    assert Path(probe["figure"]).is_file() and _images(nb) >= 1
    folds = Path(probe["folds_file"]).read_text().splitlines()
    assert len(folds) == len(probe["rows"]) * len(probe["participants"])  # resume added nothing
    assert probe["resume_seconds"] < probe["first_seconds"]


@pytest.mark.slow
def test_export_tflite_notebook(executed):
    nb, probe = executed["03_export_tflite"].result()
    parity = {(p["inputs"], p["quantization"]): p for p in probe["parity"]}
    assert set(parity) == {("features", "none"), ("raw", "none")}
    assert parity[("features", "none")]["max |p - p_keras|"] <= 1e-5
    assert parity[("raw", "none")]["max |p - p_keras|"] <= 5e-3  # in-graph MFCC vs numpy MFCC
    for (inputs, _), p in parity.items():
        agreement = [v for k, v in p.items() if k.startswith("top-1 agrees")]
        assert len(agreement) == 3 and min(agreement) >= (1.0 if inputs == "features" else 0.9)
    assert probe["windows_compared"] > 0
    assert all(s["KB"] > 10 for s in probe["sizes"])
    assert all(row["ms per window"] > 0 for row in probe["latency"]) and len(probe["latency"]) == 3
    assert probe["sidecar_inputs"] == ["speech", "acc", "bvp", "eda", "temp", "presence"]
    assert probe["timeline_rows"] == probe["first_windows"] > 0 and Path(probe["timeline_csv"]).is_file()
    assert _images(nb) >= 1  # the timeline plot


@pytest.mark.slow
def test_your_own_data_notebook(executed):
    nb, probe = executed["04_your_own_data"].result()
    assert probe["source"].endswith("tests/fixtures/stress-predict")
    study = Path(probe["study"])
    assert json.loads((study / "dataset.json").read_text())["labels"]["stress"]["classes"] == \
        ["non-stress", "stress"]
    assert not (study / "S01" / "labels.csv").exists()  # S01 has no labels in Stress-Predict
    # small size: S02 stands in as three time segments (the notebook says so)
    assert probe["participants"] == ["S01", "S02-part1", "S02-part2", "S02-part3"]
    assert probe["labelled"] == probe["folds"] == ["S02-part1", "S02-part2", "S02-part3"]
    assert probe["classes"] == ["non-stress", "stress"]
    assert probe["rows"] == ["wearable_only", "handcrafted"] and probe["targets"] == ["stress"]
    assert probe["n_folds"] == [3] and probe["complete"]
    assert all(0.0 <= m <= 1.0 for m in probe["means"])
    assert _images(nb) >= 1
