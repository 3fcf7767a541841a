"""Empatica E4 export reader: real parsing of the Stress-Predict slice and every bad input."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from kfusion.config import DataConfig
from kfusion.data.readers.e4 import READER, read_e4_file, read_tags
from kfusion.data.sources import load_recordings
from kfusion.errors import DataError

FIXTURE = Path(__file__).parent / "fixtures" / "stress-predict" / "Raw_data"
S02 = FIXTURE / "S02"
S02_START = 1644228016.0


def file_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def write_e4(folder: Path, name: str, start, rate, rows) -> Path:
    """Write an E4-style file: header cells ``start``/``rate`` (str or list) and sample rows."""
    folder.mkdir(parents=True, exist_ok=True)
    start_row = ", ".join(map(str, start)) if isinstance(start, list) else str(start)
    rate_row = ", ".join(map(str, rate)) if isinstance(rate, list) else str(rate)
    path = folder / name
    path.write_text("\n".join([start_row, rate_row, *map(str, rows)]) + "\n")
    return path


def assert_names(err: DataError, path: Path, field: str) -> None:
    message = str(err.value if hasattr(err, "value") else err)
    assert str(path) in message, message
    assert field in message, message


# ---------------------------------------------------------------- real data (fixture slice)

def test_single_participant_folder_reads_all_four_signals():
    assert READER.participants(S02) == ["S02"]
    rec = READER.read(S02, "S02", DataConfig())
    assert rec.participant == "S02"
    assert rec.audio is None and rec.labels is None and rec.span is None
    assert set(rec.signals) == {"acc", "bvp", "eda", "temp"}
    for modality, rate, channels in [("acc", 32, 3), ("bvp", 64, 1), ("eda", 4, 1), ("temp", 4, 1)]:
        signal = rec.signals[modality]
        path = S02 / f"{modality.upper()}.csv"
        assert signal.rate == rate
        assert signal.start == S02_START
        assert signal.values.dtype == np.float32
        assert signal.values.shape == (len(file_lines(path)) - 2, channels)
        assert signal.source == str(path)
        assert signal.duration == pytest.approx(420.0)


def test_first_and_last_samples_match_the_file_text():
    rec = READER.read(S02, "S02", DataConfig())
    acc_lines, bvp_lines = file_lines(S02 / "ACC.csv"), file_lines(S02 / "BVP.csv")
    np.testing.assert_array_equal(rec.signals["acc"].values[0], [float(v) for v in acc_lines[2].split(",")])
    np.testing.assert_array_equal(rec.signals["acc"].values[-1], [float(v) for v in acc_lines[-1].split(",")])
    assert rec.signals["bvp"].values[0, 0] == np.float32(float(bvp_lines[2]))
    assert rec.signals["eda"].values[0, 0] == np.float32(float(file_lines(S02 / "EDA.csv")[2]))
    assert rec.signals["temp"].values[-1, 0] == np.float32(float(file_lines(S02 / "TEMP.csv")[-1]))


def test_tags_become_a_note_relative_to_the_start():
    rec = READER.read(S02, "S02", DataConfig())
    assert any("tags_S02.csv: 1 event mark(s) at +180 s" in note for note in rec.notes), rec.notes
    s01_notes = READER.read(FIXTURE / "S01", "S01", DataConfig()).notes
    assert s01_notes == ["tags_S01.csv: 1 event mark(s) at +46 s from the first signal start "
                         "(UNIX 1644226661)"]


def test_folder_of_participant_folders_through_load_recordings():
    result = load_recordings(f"e4:{FIXTURE}")
    assert [r.participant for r in result.recordings] == ["S01", "S02"]
    assert result.recordings[0].signals["bvp"].n == 60 * 64
    assert result.recordings[1].signals["bvp"].n == 420 * 64


def test_requested_modalities_only():
    rec = READER.read(S02, "S02", DataConfig(modalities=("eda", "temp")))
    assert set(rec.signals) == {"eda", "temp"}


def test_any_subset_of_files_and_lowercase_names(tmp_path):
    write_e4(tmp_path / "p1", "eda.csv", "1600000000.0", "4.0", [0.5, 0.6, 0.7])
    assert READER.participants(tmp_path) == ["p1"]
    rec = READER.read(tmp_path, "p1", DataConfig())
    assert set(rec.signals) == {"eda"}
    np.testing.assert_allclose(rec.signals["eda"].values[:, 0], [0.5, 0.6, 0.7], rtol=1e-6)


def test_participants_sorted_naturally(tmp_path):
    for name in ["p10", "p2", "p1"]:
        write_e4(tmp_path / name, "TEMP.csv", "1600000000", "4", [30.0])
    assert READER.participants(tmp_path) == ["p1", "p2", "p10"]


def test_the_file_rate_is_kept(tmp_path):
    write_e4(tmp_path / "p", "EDA.csv", "1600000000.5", "8", np.linspace(0, 1, 80))
    rec = READER.read(tmp_path, "p", DataConfig())
    assert rec.signals["eda"].rate == 8.0 and rec.signals["eda"].start == 1600000000.5
    assert rec.signals["eda"].n == 80


def test_a_full_length_participant_reads_fast(tmp_path):
    rng = np.random.default_rng(0)
    n = 230_000  # ~1 h of BVP at 64 Hz
    folder = tmp_path / "long"
    write_e4(folder, "BVP.csv", "1644227574.00", "64.000000", (f"{v:.2f}" for v in rng.normal(size=n)))
    acc = rng.integers(-64, 64, size=(n // 2, 3))
    write_e4(folder, "ACC.csv", ["1644227574.000000"] * 3, ["32.000000"] * 3,
             (f"{a},{b},{c}" for a, b, c in acc))
    begin = time.perf_counter()
    rec = READER.read(tmp_path, "long", DataConfig())
    assert time.perf_counter() - begin < 2.0
    assert rec.signals["bvp"].n == n and rec.signals["acc"].n == n // 2


def test_trailing_blank_lines_are_harmless(tmp_path):
    path = write_e4(tmp_path, "TEMP.csv", "1600000000", "4", [30.0, 31.0])
    path.write_text(path.read_text() + "\n\n")
    signal = read_e4_file(path, "temp")
    assert signal.n == 2


def test_read_tags_empty_and_values(tmp_path):
    empty = tmp_path / "tags.csv"
    empty.write_text("")
    assert read_tags(empty).size == 0
    tags = tmp_path / "tags_x.csv"
    tags.write_text("1644228196\r\n1644228572\r\n")
    np.testing.assert_array_equal(read_tags(tags), [1644228196.0, 1644228572.0])


# ---------------------------------------------------------------- bad input

def test_folder_without_any_signal_file(tmp_path):
    folder = tmp_path / "p1"
    folder.mkdir()
    (folder / "HR.csv").write_text("1600000000\n1\n70\n")
    with pytest.raises(DataError) as err:
        READER.read(tmp_path, "p1", DataConfig())
    assert_names(err, folder, "files")
    assert "ACC.csv" in str(err.value)


def test_empty_file(tmp_path):
    path = tmp_path / "p" / "EDA.csv"
    path.parent.mkdir()
    path.write_text("")
    with pytest.raises(DataError) as err:
        READER.read(tmp_path, "p", DataConfig())
    assert_names(err, path, "file")


def test_rate_row_missing(tmp_path):
    path = tmp_path / "BVP.csv"
    path.write_text("1600000000.0\n")
    with pytest.raises(DataError) as err:
        read_e4_file(path, "bvp")
    assert_names(err, path, "row 2 (sample rate)")


def test_start_time_not_a_number(tmp_path):
    path = write_e4(tmp_path, "BVP.csv", "start", "64", [1.0])
    with pytest.raises(DataError) as err:
        read_e4_file(path, "bvp")
    assert_names(err, path, "row 1 (start time)")
    assert "'start'" in str(err.value)


def test_start_time_not_plausible(tmp_path):
    path = write_e4(tmp_path, "BVP.csv", "12.0", "64", [1.0])
    with pytest.raises(DataError) as err:
        read_e4_file(path, "bvp")
    assert_names(err, path, "row 1 (start time)")
    assert "between 2000 and 2100" in str(err.value)


def test_start_time_in_milliseconds_gets_a_hint(tmp_path):
    path = write_e4(tmp_path, "EDA.csv", "1644227574000", "4", [1.0])
    with pytest.raises(DataError) as err:
        read_e4_file(path, "eda")
    assert "milliseconds" in str(err.value)


def test_rate_not_a_number(tmp_path):
    path = write_e4(tmp_path, "TEMP.csv", "1600000000", "four", [30.0])
    with pytest.raises(DataError) as err:
        read_e4_file(path, "temp")
    assert_names(err, path, "row 2 (sample rate)")


@pytest.mark.parametrize("rate", ["0", "-4"])
def test_rate_not_positive(tmp_path, rate):
    path = write_e4(tmp_path, "TEMP.csv", "1600000000", rate, [30.0])
    with pytest.raises(DataError) as err:
        read_e4_file(path, "temp")
    assert_names(err, path, "row 2 (sample rate)")
    assert "positive" in str(err.value)


def test_acc_start_differs_between_columns(tmp_path):
    path = write_e4(tmp_path, "ACC.csv", ["1600000000", "1600000001", "1600000000"], ["32"] * 3, ["1,2,3"])
    with pytest.raises(DataError) as err:
        read_e4_file(path, "acc")
    assert_names(err, path, "row 1 (start time)")
    assert "y=1600000001.0" in str(err.value)


def test_acc_rate_differs_between_columns(tmp_path):
    path = write_e4(tmp_path, "ACC.csv", ["1600000000"] * 3, ["32", "32", "16"], ["1,2,3"])
    with pytest.raises(DataError) as err:
        read_e4_file(path, "acc")
    assert_names(err, path, "row 2 (sample rate)")


def test_acc_with_two_columns(tmp_path):
    path = write_e4(tmp_path, "ACC.csv", ["1600000000"] * 2, ["32"] * 2, ["1,2"])
    with pytest.raises(DataError) as err:
        read_e4_file(path, "acc")
    assert_names(err, path, "columns")
    assert "3 columns" in str(err.value)


def test_acc_sample_row_with_missing_value(tmp_path):
    path = write_e4(tmp_path, "ACC.csv", ["1600000000"] * 3, ["32"] * 3, ["1,2,3", "4,5", "7,8,9"])
    with pytest.raises(DataError) as err:
        read_e4_file(path, "acc")
    assert_names(err, path, "line 4")


def test_acc_sample_row_with_extra_value(tmp_path):
    path = write_e4(tmp_path, "ACC.csv", ["1600000000"] * 3, ["32"] * 3, ["1,2,3", "4,5,6", "7,8,9,10"])
    with pytest.raises(DataError) as err:
        read_e4_file(path, "acc")
    assert_names(err, path, "line 5")


def test_non_numeric_sample_names_the_line(tmp_path):
    path = write_e4(tmp_path, "BVP.csv", "1600000000", "64", ["1.0", "2.0", "abc", "4.0"])
    with pytest.raises(DataError) as err:
        read_e4_file(path, "bvp")
    assert_names(err, path, "line 5")
    assert "'abc'" in str(err.value)


def test_non_numeric_acc_sample_names_column_and_line(tmp_path):
    path = write_e4(tmp_path, "ACC.csv", ["1600000000"] * 3, ["32"] * 3, ["1,2,3", "4,x,6"])
    with pytest.raises(DataError) as err:
        read_e4_file(path, "acc")
    assert_names(err, path, "column y, line 4")


def test_empty_line_in_the_samples(tmp_path):
    path = write_e4(tmp_path, "EDA.csv", "1600000000", "4", ["0.1", "", "0.3"])
    with pytest.raises(DataError) as err:
        read_e4_file(path, "eda")
    assert_names(err, path, "line 4")
    assert "empty line" in str(err.value)


def test_nan_run_in_the_samples(tmp_path):
    path = write_e4(tmp_path, "EDA.csv", "1600000000", "4", ["0.1", "0.2", "nan", "NaN", "0.3"])
    with pytest.raises(DataError) as err:
        read_e4_file(path, "eda")
    assert_names(err, path, "line 5")


def test_empty_acc_cell(tmp_path):
    path = write_e4(tmp_path, "ACC.csv", ["1600000000"] * 3, ["32"] * 3, ["1,2,3", "4,,6"])
    with pytest.raises(DataError) as err:
        read_e4_file(path, "acc")
    assert_names(err, path, "column y, line 4")
    assert "empty value" in str(err.value)


def test_header_rows_but_no_samples(tmp_path):
    path = write_e4(tmp_path, "TEMP.csv", "1600000000", "4", [])
    with pytest.raises(DataError) as err:
        read_e4_file(path, "temp")
    assert_names(err, path, "samples")


def test_two_columns_in_a_single_column_file(tmp_path):
    path = write_e4(tmp_path, "BVP.csv", "1600000000, 1600000000", "64, 64", ["1,2"])
    with pytest.raises(DataError) as err:
        read_e4_file(path, "bvp")
    assert_names(err, path, "columns")


def test_bad_tag_line(tmp_path):
    write_e4(tmp_path / "p", "EDA.csv", "1600000000", "4", [0.1])
    tags = tmp_path / "p" / "tags.csv"
    tags.write_text("1600000001\nlater\n")
    with pytest.raises(DataError) as err:
        READER.read(tmp_path, "p", DataConfig())
    assert_names(err, tags, "line 2")


def test_bad_participant_is_reported_by_load_recordings(tmp_path):
    write_e4(tmp_path / "good", "EDA.csv", "1600000000", "4", [0.1])
    write_e4(tmp_path / "bad", "EDA.csv", "1600000000", "4", ["x"])
    result = load_recordings(f"e4:{tmp_path}", DataConfig(skip_bad=True))
    assert [r.participant for r in result.recordings] == ["good"]
    assert isinstance(result.problems["bad"], DataError)
    assert "line 3" in str(result.problems["bad"])
