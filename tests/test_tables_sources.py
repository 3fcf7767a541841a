import numpy as np
import pytest

from kfusion.data.sources import Source, load_recordings, register_reader
from kfusion.data.recording import Recording
from kfusion.data.tables import check_increasing, read_table, to_numbers
from kfusion.errors import BadParticipantsError, ConfigError, DataError


def test_read_table_parses_and_names_bad_cells(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("timestamp,value\n1.5,0E-10\n2.5,3\n")
    table = read_table(path, ["timestamp", "value"], numeric=["timestamp", "value"])
    assert table["value"].tolist() == [0.0, 3.0]
    path.write_text("timestamp,value\n1.5,1\n2.5,abc\n")
    with pytest.raises(DataError, match=r"t\.csv: column 'value', line 3: expected a finite number, found 'abc'"):
        read_table(path, ["timestamp", "value"], numeric=["value"])
    path.write_text("timestamp,value\n1.5,\n")
    with pytest.raises(DataError, match="line 2: expected a finite number, found an empty value"):
        read_table(path, ["timestamp", "value"], numeric=["value"])


def test_read_table_header_and_missing_file(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("time,value\n1,2\n")
    with pytest.raises(DataError, match=r"header: expected columns timestamp, value.*missing timestamp"):
        read_table(path, ["timestamp", "value"])
    with pytest.raises(DataError, match=r"nope\.csv: file: expected an existing file"):
        read_table(tmp_path / "nope.csv", ["a"])
    path.write_text("timestamp,value\n")
    with pytest.raises(DataError, match="at least one data row"):
        read_table(path, ["timestamp", "value"])


def test_optional_numbers_and_increasing():
    values = to_numbers(np.array(["1", "", "3"]), "f.csv", "x", allow_empty=True)
    assert np.isnan(values[1]) and values[2] == 3
    check_increasing([1, 2, 3], "f.csv", "timestamp")
    with pytest.raises(DataError, match="line 4.*duplicate timestamp"):
        check_increasing([1, 2, 2], "f.csv", "timestamp")
    with pytest.raises(DataError, match="line 3.*decreasing timestamp"):
        check_increasing([1, 0.5], "f.csv", "timestamp")


class _ToyReader:
    def participants(self, root):
        return ["a", "b", "c"]

    def read(self, root, participant, config):
        if participant == "b":
            raise DataError(root / "b.csv", "column 'x'", "a number", "'?'")
        return Recording(participant)


def test_sources_registry_and_bad_participants(tmp_path):
    register_reader("toy", _ToyReader())
    with pytest.raises(ConfigError, match="unknown data source scheme 'nosuch'"):
        Source.parse("nosuch:/x")
    with pytest.raises(ConfigError, match="SCHEME:PATH"):
        Source.parse("just-a-path")
    with pytest.raises(BadParticipantsError, match=r"(?s)participant b: .*b\.csv.*--skip-bad"):
        load_recordings(f"toy:{tmp_path}")
    from kfusion.config import DataConfig

    result = load_recordings(f"toy:{tmp_path}", DataConfig(skip_bad=True))
    assert [r.participant for r in result.recordings] == ["a", "c"]
    assert list(result.problems) == ["b"] and isinstance(result.problems["b"], DataError)
    with pytest.raises(DataError, match="participant: expected one of a, b, c, found z"):
        load_recordings(f"toy:{tmp_path}", participants=["z"])
    with pytest.raises(DataError, match="path: expected an existing folder"):
        load_recordings(f"toy:{tmp_path}/missing")


def test_source_modalities_follow_the_reader_format():
    from kfusion.data.sources import source_modalities

    assert source_modalities("e4:/x") == ("acc", "bvp", "eda", "temp")
    assert source_modalities(["stresspredict:/x"]) == ("acc", "bvp", "eda", "temp")
    assert source_modalities(["e4:/x", "generic:/y"]) == ("speech", "acc", "bvp", "eda", "temp")
