"""The ppgdalia: reader on a fake release written in PPG-DaLiA's layout
(tests/fixtures/ppgdalia/make_fixture.py): activity labels on the right times, transient periods
left out, bad inputs, and the CLI."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from kfusion.cli import main
from kfusion.config import DataConfig
from kfusion.data.dataset import source_files
from kfusion.data.labels import window_labels
from kfusion.data.readers.ppgdalia import ACTIVITIES, READER
from kfusion.data.readers.wrist_pickle import NOMINAL_START
from kfusion.data.sources import Source
from kfusion.errors import DataError
from fixture_scripts import fixture_script

FIX = fixture_script("ppgdalia")
SUBJECTS = (1, 2, 3, 4)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A fake release S1..S4 (read-only; tests that change files use ``subject_copy``)."""
    return FIX.write_release(tmp_path_factory.mktemp("ppgdalia"), SUBJECTS)


def subject_copy(release: Path, tmp_path: Path, subject: str = "S1") -> Path:
    root = tmp_path / "PPG_FieldStudy"
    (root / subject).mkdir(parents=True)
    shutil.copy(release / subject / f"{subject}.pkl", root / subject / f"{subject}.pkl")
    return root


def rewrite(root: Path, subject: str, change) -> Path:
    path = root / subject / f"{subject}.pkl"
    with open(path, "rb") as handle:
        data = pickle.load(handle, encoding="latin1")
    change(data)
    path.write_bytes(FIX.dumps(data))
    return path


def test_fixture_has_the_release_keys_and_needs_latin1(release):
    raw = (release / "S1" / "S1.pkl").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(raw)
    data = pickle.loads(raw, encoding="latin1")
    assert sorted(data) == ["activity", "label", "questionnaire", "rpeaks", "signal", "subject"]
    assert data["activity"].shape == (data["signal"]["wrist"]["EDA"].shape[0], 1)


def test_signals_and_activity_on_the_pickle_clock(release):
    recording = READER.read(release, "S1", DataConfig())
    assert recording.modalities == ("acc", "bvp", "eda", "temp")
    assert {m: (s.start, s.rate) for m, s in recording.signals.items()} == {
        "acc": (NOMINAL_START, 32.0), "bvp": (NOMINAL_START, 64.0), "eda": (NOMINAL_START, 4.0),
        "temp": (NOMINAL_START, 4.0)}
    labels = recording.labels
    assert labels.classes["activity"] == tuple(ACTIVITIES.values())
    expected, t = [], 0.0
    for code, seconds in FIX.protocol():
        if code:
            expected.append((t, t + seconds, code - 1))
        t += seconds
    got = [(float(s - NOMINAL_START), float(e - NOMINAL_START), int(v))
           for s, e, v in zip(labels.start, labels.end, labels.columns["activity"])]
    assert got == expected  # transient periods (code 0) are not intervals
    assert any("transient" in n for n in recording.notes)
    # windows mostly in transient stretches are unlabelled, the others take their activity
    values, _ = window_labels(NOMINAL_START + np.array([1.0, 10.0, 32.0, 37.0]), 4.0, labels)
    assert values["activity"].tolist() == [-1, 0, -1, 1]
    files = sorted(p.relative_to(release).as_posix() for p in source_files(Source.parse(f"ppgdalia:{release}")))
    assert files == [f"S{k}/S{k}.pkl" for k in SUBJECTS]


@pytest.mark.parametrize("change, field, expected", [
    (lambda d: d.pop("activity"), "activity", "a key 'activity'"),
    (lambda d: d["activity"].__setitem__((40, 0), 9), "activity, sample 40", "an integer code 0-8 (0 transient"),
    (lambda d: d["activity"].__setitem__((41, 0), 2.5), "activity, sample 41", "an integer code 0-8"),
    (lambda d: d.update(activity=np.hstack([d["activity"], d["activity"]])), "activity", "shape [n] or [n, 1]"),
    (lambda d: d.update(activity=d["activity"][:100]), "signal.wrist.ACC",
     "32 Hz samples spanning the 25.0 s of 'activity'"),
    (lambda d: d["signal"]["wrist"].pop("EDA"), "signal.wrist.EDA", "a key 'EDA' in signal.wrist"),
    (lambda d: d.update(subject="S7"), "subject", "'S1' (the folder and file name)"),
])
def test_bad_pickles_name_file_field_and_expectation(release, tmp_path, change, field, expected):
    root = subject_copy(release, tmp_path)
    path = rewrite(root, "S1", change)
    with pytest.raises(DataError) as info:
        READER.read(root, "S1", DataConfig())
    err = info.value
    assert err.file == str(path) and err.field == field, str(err)
    assert expected in err.expected, str(err)


def test_wrong_folder(release, tmp_path):
    root = subject_copy(release, tmp_path)
    with pytest.raises(DataError, match=r"point ppgdalia: at the parent folder, ppgdalia:.*PPG_FieldStudy"):
        READER.participants(root / "S1")
    with pytest.raises(DataError, match=r"PPG_FieldStudy/ holds them: use ppgdalia:"):
        READER.participants(tmp_path)


def test_cli_inspect_and_evaluate(release, tmp_path, capsys):
    assert main(["data", "inspect", f"ppgdalia:{release}", "--no-cache", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert list(info["labels"]) == ["activity"]
    assert info["labels"]["activity"]["sitting"] == 8 * len(SUBJECTS)
    config = tmp_path / "evaluation.json"
    config.write_text(json.dumps({"epochs": 2, "patience": 1, "batch_size": 64}))
    code = main(["evaluate", "--data", f"ppgdalia:{release}", "--rows", "handcrafted",
                 "--targets", "activity", "--out", str(tmp_path / "ev"), "--config", str(config), "--no-cache"])
    assert code == 0, capsys.readouterr().err
    assert len((tmp_path / "ev" / "folds.jsonl").read_text().splitlines()) == len(SUBJECTS)
