"""Stress-Predict reader on the real slice in tests/fixtures/stress-predict."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from kfusion.config import DataConfig
from kfusion.data.readers import stress_predict
from kfusion.data.readers.stress_predict import (READER, label_runs, participant_number,
                                                 read_stress_labels)
from kfusion.data.sources import load_recordings
from kfusion.errors import BadParticipantsError, DataError

ROOT = Path(__file__).parent / "fixtures" / "stress-predict"
LABELS = ROOT / "Processed_data" / "Improved_All_Combined_hr_rsp_binary.csv"
FIRST_STRESS = 1644228196.0


@pytest.fixture
def copy_root(tmp_path) -> Path:
    """A writable copy of the fixture (for corrupting files)."""
    root = tmp_path / "sp"
    shutil.copytree(ROOT, root)
    return root


def test_participants_are_the_raw_data_folders():
    assert READER.participants(ROOT) == ["S01", "S02"]
    assert participant_number("S02") == 2 and participant_number("S35") == 35


def test_labelled_participant():
    rec = READER.read(ROOT, "S02", DataConfig())
    labels = rec.labels
    assert labels.scheme == "classes"
    assert labels.classes == {"stress": ("non-stress", "stress")}
    assert labels.source == str(LABELS)
    # 180 s non-stress, then 240 s stress: one interval per run of equal seconds
    np.testing.assert_array_equal(labels.start, [1644228016.0, FIRST_STRESS])
    np.testing.assert_array_equal(labels.end, [FIRST_STRESS, 1644228436.0])
    np.testing.assert_array_equal(labels.columns["stress"], [0.0, 1.0])
    # signals come through the E4 reader, on the same clock
    assert {m: s.rate for m, s in rec.signals.items()} == {"acc": 32, "bvp": 64, "eda": 4, "temp": 4}
    assert rec.signals["bvp"].start == labels.start[0]
    assert rec.signals["acc"].values.shape == (420 * 32, 3)


def test_label_rows_match_the_file():
    label_rows = LABELS.read_text().splitlines()[1:]
    times, values = read_stress_labels(ROOT)[2]
    assert len(times) == len(label_rows) == 420
    np.testing.assert_array_equal(times, [float(row.split(",")[3]) for row in label_rows])
    np.testing.assert_array_equal(values, [float(row.split(",")[4]) for row in label_rows])
    assert (values == 0).sum() == 180 and (values == 1).sum() == 240


def test_label_runs_split_at_changes_and_gaps():
    times = np.array([10, 11, 12, 13, 15, 16, 17], dtype=float)
    labels = np.array([0, 0, 1, 1, 1, 1, 0], dtype=float)
    start, end, value = label_runs(times, labels)
    np.testing.assert_array_equal(start, [10, 12, 15, 17])
    np.testing.assert_array_equal(end, [12, 14, 17, 18])
    np.testing.assert_array_equal(value, [0, 1, 1, 0])


def test_windows_of_the_slice_get_both_classes():
    from kfusion.data.labels import window_labels

    labels = READER.read(ROOT, "S02", DataConfig()).labels
    starts = np.arange(1644228016.0, 1644228432.0, 3.0)
    targets, classes = window_labels(starts, 4.0, labels, 0.5)
    assert classes == {"stress": ("non-stress", "stress")}
    counts = np.bincount(targets["stress"] + 1, minlength=3)  # unlabelled, non-stress, stress
    assert counts[0] == 0 and counts[1] == 60 and counts[2] == 79


def test_unlabelled_participant_gets_none_and_a_note():
    rec = READER.read(ROOT, "S01", DataConfig())
    assert rec.labels is None
    assert any("no stress labels for participant S01" in n for n in rec.notes), rec.notes
    assert rec.signals["eda"].n == 240


def test_through_load_recordings():
    result = load_recordings(f"stresspredict:{ROOT}")
    assert [r.participant for r in result.recordings] == ["S01", "S02"]
    assert result.recordings[1].labels is not None


def test_label_file_is_read_once(monkeypatch):
    read_stress_labels(ROOT)  # warm the cache
    calls = []
    original = stress_predict._read_label_columns
    monkeypatch.setattr(stress_predict, "_read_label_columns",
                        lambda path: calls.append(path) or original(path))
    first = read_stress_labels(ROOT)
    READER.read(ROOT, "S02", DataConfig())
    assert read_stress_labels(ROOT) is first
    assert calls == []


def test_changed_label_file_is_read_again(copy_root):
    before = read_stress_labels(copy_root)[2][1].copy()
    path = copy_root / "Processed_data" / "Improved_All_Combined_hr_rsp_binary.csv"
    lines = path.read_text().splitlines()
    lines[1] = lines[1][:-1] + "1"  # first row: label 0 -> 1
    path.write_text("\n".join(lines) + "\n")
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse clocks
    after = read_stress_labels(copy_root)[2][1]
    assert before[0] == 0 and after[0] == 1


# ---------------------------------------------------------------- bad input

def _rewrite_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")


def test_label_value_not_binary(copy_root):
    path = copy_root / "Processed_data" / "Improved_All_Combined_hr_rsp_binary.csv"
    _rewrite_line(path, 5, "2,96.0,10.5,1644228019,2")
    with pytest.raises(DataError) as err:
        READER.read(copy_root, "S02", DataConfig())
    message = str(err.value)
    assert str(path) in message and "column 'Label', line 5" in message
    assert "0 (non-stress) or 1 (stress)" in message


def test_label_time_not_a_number(copy_root):
    path = copy_root / "Processed_data" / "Improved_All_Combined_hr_rsp_binary.csv"
    _rewrite_line(path, 7, "2,96.0,10.5,soon,0")
    with pytest.raises(DataError) as err:
        READER.read(copy_root, "S02", DataConfig())
    assert str(path) in str(err.value) and "column 'Time(sec)', line 7" in str(err.value)


def test_label_file_missing_a_column(copy_root):
    path = copy_root / "Processed_data" / "Improved_All_Combined_hr_rsp_binary.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(",".join(line.split(",")[:4]) for line in lines) + "\n")
    with pytest.raises(DataError) as err:
        READER.read(copy_root, "S02", DataConfig())
    assert str(path) in str(err.value) and "header" in str(err.value) and "Label" in str(err.value)


def test_label_times_going_backwards(copy_root):
    path = copy_root / "Processed_data" / "Improved_All_Combined_hr_rsp_binary.csv"
    _rewrite_line(path, 4, "2,96.0,10.5,1644228000,0")
    with pytest.raises(DataError) as err:
        READER.read(copy_root, "S02", DataConfig())
    assert str(path) in str(err.value) and "line 4" in str(err.value)


def test_label_file_missing(copy_root):
    path = copy_root / "Processed_data" / "Improved_All_Combined_hr_rsp_binary.csv"
    path.unlink()
    with pytest.raises(BadParticipantsError) as err:
        load_recordings(f"stresspredict:{copy_root}")
    assert set(err.value.problems) == {"S01", "S02"}
    assert str(path) in str(err.value.problems["S02"])


def test_raw_data_folder_missing(tmp_path):
    with pytest.raises(DataError) as err:
        READER.participants(tmp_path)
    assert str(tmp_path / "Raw_data") in str(err.value)


def test_bad_e4_file_inside_stress_predict(copy_root):
    path = copy_root / "Raw_data" / "S02" / "EDA.csv"
    _rewrite_line(path, 10, "")
    with pytest.raises(DataError) as err:
        READER.read(copy_root, "S02", DataConfig())
    assert str(path) in str(err.value) and "line 10" in str(err.value)


def test_unannotated_participant_counts_as_unlabelled(tmp_path):
    from kfusion.config import DataConfig
    from kfusion.data.dataset import build_dataset

    data = build_dataset(f"stresspredict:{ROOT}", DataConfig(modalities=("eda", "temp")),
                         cache_dir=False)
    counts = data.report["participants"]["S01"]["labels"]["stress"]
    kept = data.report["participants"]["S01"]["windows"]["kept"]
    assert kept > 0 and counts == {"non-stress": 0, "stress": 0, "unlabelled": kept}
