"""Bad input as a user makes it (issue 12): times in the wrong unit, spans no window array may be
sized by, contradictory or mistyped labels, named pipes and broken symlinks in the data folder,
and participants whose every window is dropped. Built from the real Stress-Predict slice (S02:
420 s of E4 files from UNIX 1644228016) in the generic layout."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile

from kfusion.cli import main
from kfusion.config import DataConfig, WindowConfig
from kfusion.data.dataset import build_dataset, source_files
from kfusion.data.readers.e4 import read_e4_file, read_tags
from kfusion.data.readers.generic import READER as GENERIC
from kfusion.data.readers.kemocon import regular_grid
from kfusion.data.sources import Source
from kfusion.data.windows import window_starts
from kfusion.errors import BadParticipantsError, ConfigError, DataError

FIXTURE = Path(__file__).parent / "fixtures" / "stress-predict"
S02 = FIXTURE / "Raw_data" / "S02"
T0 = 1644228016.0  # first sample of S02 (UNIX s)
E4_NAMES = ("ACC.csv", "BVP.csv", "EDA.csv", "TEMP.csv")


def e4_participant(root: Path, pid: str, names=E4_NAMES) -> Path:
    """``root/pid/`` with S02's E4 files (a copy, as a user would lay them out)."""
    folder = root / pid
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(S02 / name, folder / name)
    return folder


def audio_participant(folder: Path, start, seconds: float = 30.0, rate: int = 16000) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    soundfile.write(folder / "audio.wav", 0.1 * rng.standard_normal(int(seconds * rate)), rate)
    (folder / "audio.json").write_text(json.dumps({"start": start}))
    return folder


def labels_file(folder: Path, header: str, rows) -> Path:
    path = folder / "labels.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def inspect_cli(capsys, *args) -> tuple[int, str, str]:
    code = main(["data", "inspect", *map(str, args), "--no-cache"])
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------ 1. times in the wrong unit

@pytest.mark.parametrize("start, hint", [
    (T0 * 1000, "looks like milliseconds"),
    (10, "looks like seconds from the start of the recording"),
])
def test_audio_start_in_the_wrong_unit_is_a_one_line_error(tmp_path, capsys, start, hint):
    folder = e4_participant(tmp_path, "S02")
    audio_participant(folder, start)
    code, out, err = inspect_cli(capsys, f"generic:{tmp_path}")
    assert code == 2 and "Traceback" not in err
    problem = [line for line in err.splitlines() if "participant S02" in line]
    assert len(problem) == 1, err
    assert str(folder / "audio.json") in problem[0] and ": start: expected a UNIX time in seconds" in problem[0]
    assert hint in problem[0] and "np.float64" not in problem[0]
    # --skip-bad contains it as that participant's problem
    code, out, err = inspect_cli(capsys, f"generic:{tmp_path}", "--skip-bad")
    assert code == 0 and "S02: " in out and hint in out and "Problems" in out


def test_one_hint_for_every_time_a_user_writes(tmp_path):
    # E4 start line in relative seconds
    (tmp_path / "e4").mkdir()
    path = tmp_path / "e4" / "EDA.csv"
    path.write_text("12.5\n4\n0.1\n0.2\n")
    with pytest.raises(DataError, match="row 1 .start time.*from the start of the recording"):
        read_e4_file(path, "eda")
    # a tag time in milliseconds
    tags = tmp_path / "e4" / "tags.csv"
    tags.write_text(f"{T0 * 1000:.0f}\n")
    with pytest.raises(DataError, match=r"tags.csv: line 1: .*looks like milliseconds.*1644228016.0"):
        read_tags(tags)
    # label start/end in milliseconds: the column and line are named
    folder = e4_participant(tmp_path / "set", "S02", names=("EDA.csv",))
    path = labels_file(folder, "start,end,stress",
                       [f"{T0:.0f},{T0 + 60:.0f},0", f"{(T0 + 60) * 1000:.0f},{(T0 + 120) * 1000:.0f},1"])
    with pytest.raises(DataError) as err:
        GENERIC.read(tmp_path / "set", "S02", DataConfig())
    assert str(path) in str(err.value) and "column 'start', line 3" in str(err.value)
    assert "looks like milliseconds" in str(err.value)


def test_stress_predict_label_times_in_milliseconds(tmp_path):
    root = tmp_path / "sp"
    shutil.copytree(FIXTURE / "Raw_data", root / "Raw_data")
    (root / "Processed_data").mkdir()
    lines = (FIXTURE / "Processed_data" / "Improved_All_Combined_hr_rsp_binary.csv").read_text().splitlines()
    cells = [line.split(",") for line in lines[1:]]
    rows = [",".join(c[:3] + [f"{float(c[3]) * 1000:.0f}"] + c[4:]) for c in cells]
    label_path = root / "Processed_data" / "Improved_All_Combined_hr_rsp_binary.csv"
    label_path.write_text("\n".join([lines[0], *rows]) + "\n")
    with pytest.raises(BadParticipantsError) as err:
        build_dataset(f"stresspredict:{root}", cache_dir=False)
    message = str(err.value)
    assert str(label_path) in message and "column 'Time(sec)', line 2" in message
    assert "looks like milliseconds" in message


def test_files_days_apart_are_a_time_span_error_not_a_memory_error(tmp_path, capsys):
    folder = e4_participant(tmp_path, "S02")
    audio_participant(folder, T0 + 365 * 86400)  # a plausible UNIX time, a year off
    with pytest.raises(DataError) as err:
        build_dataset(f"generic:{tmp_path}", cache_dir=False)
    message = str(err.value)
    assert err.value.field == "time span" and "within 7 days" in message
    assert "speech (audio.wav)" in message and "acc (ACC.csv)" in message
    assert f"{T0 + 365 * 86400:.3f}" in message and f"{T0:.3f}" in message
    ds = build_dataset(f"generic:{tmp_path}", DataConfig(skip_bad=True), cache_dir=False)
    assert len(ds) == 0 and "time span" in ds.report["problems"]["S02"]
    # evaluating such a set says why it is empty instead of failing on its missing targets
    from kfusion.evaluation import evaluate
    with pytest.raises(ConfigError, match=r"evaluate: dataset: holds no windows \(1 participant\(s\) "
                                          r"without any; S02: .*time span"):
        evaluate(ds, None, out=tmp_path / "run")
    code, out, err = inspect_cli(capsys, f"generic:{tmp_path}")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "time span" in err


def test_window_starts_never_sizes_an_array_by_an_absurd_span():
    with pytest.raises(DataError, match="time span"):
        window_starts(T0, T0 * 1000, 4.0, 3.0)  # would be 4 TiB of start times
    assert window_starts(T0, T0 + 7 * 86400, 4.0, 3.0).size == (7 * 86400 - 4) // 3 + 1


def test_kemocon_times_in_seconds_where_milliseconds_are_expected(tmp_path):
    from kfusion.data.readers.kemocon import read_subjects

    (tmp_path / "metadata").mkdir()
    path = tmp_path / "metadata" / "subjects.csv"
    path.write_text(f"pid,initTime,startTime,endTime\n1,,{T0 * 1000:.0f},{T0 + 600:.0f}\n")
    with pytest.raises(DataError) as err:
        read_subjects(tmp_path)
    assert str(path) in str(err.value) and "column 'endTime', line 2" in str(err.value)
    assert "UNIX time in milliseconds" in str(err.value) and "looks like seconds" in str(err.value)


def test_kemocon_timestamp_jump_does_not_size_the_grid():
    times = np.concatenate([T0 + np.arange(100) / 4, [4_000_000_000.0]])
    with pytest.raises(DataError, match="spanning at most 7 days.*a jump of"):
        regular_grid(times, np.zeros((101, 1)), 4.0, T0, "E4_EDA.csv")


# ------------------------------------------------------------ 3. contradictory labels

def test_overlapping_rows_with_different_labels_name_both_lines(tmp_path):
    folder = e4_participant(tmp_path, "S02", names=("EDA.csv",))
    path = labels_file(folder, "start,end,stress,mood", [
        f"{T0},{T0 + 180},0,1", f"{T0 + 180},{T0 + 420},1,1", f"{T0 + 100},{T0 + 200},0,1"])
    with pytest.raises(DataError) as err:
        GENERIC.read(tmp_path, "S02", DataConfig())
    message = str(err.value)
    assert str(path) in message and "column 'stress', lines 3 and 4" in message
    assert "'1' on line 3 and '0' on line 4" in message and "overlapping for 20 s" in message


def test_overlapping_rows_that_agree_or_are_empty_are_fine(tmp_path):
    folder = e4_participant(tmp_path, "S02", names=("EDA.csv",))
    labels_file(folder, "start,end,stress", [
        f"{T0},{T0 + 180},0", f"{T0 + 100},{T0 + 180},0", f"{T0 + 150},{T0 + 250},",
        f"{T0 + 180},{T0 + 420},1"])
    labels = GENERIC.read(tmp_path, "S02", DataConfig()).labels
    assert len(labels) == 4 and labels.classes == {"stress": ("0", "1")}


# ------------------------------------------------------------ 4. class index typo

def test_class_index_typo_names_the_value_and_the_rule(tmp_path):
    for pid, last in (("A", 1), ("B", 999999)):
        folder = e4_participant(tmp_path, pid, names=("EDA.csv",))
        labels_file(folder, "start,end,stress", [f"{T0},{T0 + 180},0", f"{T0 + 180},{T0 + 420},{last}"])
    assert GENERIC.read(tmp_path, "A", DataConfig()).labels.classes == {"stress": ("0", "1")}
    with pytest.raises(DataError) as err:
        GENERIC.read(tmp_path, "B", DataConfig())
    message = str(err.value)
    assert str(tmp_path / "B" / "labels.csv") in message and "column 'stress', line 3" in message
    assert "found 999999" in message and "dense class index 0..1" in message
    assert "every index used" in message and "dataset.json" in message
    ds = build_dataset(f"generic:{tmp_path}", DataConfig(modalities=("eda",), skip_bad=True), cache_dir=False)
    assert ds.participant_ids() == ["A"] and ds.classes == {"stress": ("0", "1")}
    assert "999999" in ds.report["problems"]["B"]


def test_a_gap_in_class_indices_and_too_many_classes(tmp_path):
    folder = e4_participant(tmp_path, "A", names=("EDA.csv",))
    labels_file(folder, "start,end,level", [f"{T0 + i},{T0 + i + 1},{v}" for i, v in enumerate([0, 1, 3])])
    with pytest.raises(DataError, match=r"line 4: expected a dense class index 0\.\.1.*found 3"):
        GENERIC.read(tmp_path, "A", DataConfig())
    labels_file(folder, "start,end,level", [f"{T0 + i},{T0 + i + 1},{i}" for i in range(60)])
    with pytest.raises(DataError, match=r"line 52: .*K <= 50.*found 50 \(other values beyond it: 51, 52, 53\)"):
        GENERIC.read(tmp_path, "A", DataConfig())


# ------------------------------------------------------------ 5. pipes and symlinks

def build_with_timeout(source: str, seconds: float = 60.0, **kwargs):
    """build_dataset in a daemon thread: a blocked open() of a named pipe fails the test
    instead of hanging it."""
    result: dict = {}

    def run():
        try:
            result["dataset"] = build_dataset(source, **kwargs)
        except BaseException as err:  # noqa: BLE001 - re-raised below
            result["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "build_dataset hung (a named pipe opened?)"
    if "error" in result:
        raise result["error"]
    return result["dataset"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_named_pipes_and_broken_symlinks_do_not_stop_the_build(tmp_path):
    root = tmp_path / "set"
    folder = e4_participant(root, "S02", names=("BVP.csv", "EDA.csv"))
    os.mkfifo(folder / "stream")                        # unrelated: never opened, never mentioned
    os.mkfifo(folder / "TEMP.csv")                      # named like a data file: left out, noted
    (folder / "old").mkdir()
    os.symlink(tmp_path / "nowhere.csv", folder / "old" / "gone.csv")   # dangling
    os.symlink(folder / "loop", folder / "loop")                        # loops onto itself
    os.symlink(root, folder / "old" / "up")                             # a cycle of folders
    os.symlink(tmp_path / "nowhere", root / "broken")                   # at the data-set root
    with pytest.warns(UserWarning, match="named pipe"):
        ds = build_with_timeout(f"generic:{root}", config=DataConfig(modalities=("bvp", "eda")),
                                cache_dir=tmp_path / "cache")
    assert len(ds) == 139 and ds.participant_ids() == ["S02"]
    assert ds.report["ignored_files"] == [f"{folder / 'TEMP.csv'}: a named pipe; not read"]
    with pytest.warns(UserWarning, match="named pipe"):  # a cache hit says so too
        again = build_with_timeout(f"generic:{root}", config=DataConfig(modalities=("bvp", "eda")),
                                   cache_dir=tmp_path / "cache")
    assert again.report["cache"]["hit"] and again.report["ignored_files"] == ds.report["ignored_files"]
    from kfusion.data.inspect import format_inspection, inspect_source

    with pytest.warns(UserWarning, match="named pipe"):
        text = format_inspection(inspect_source(f"generic:{root}", DataConfig(modalities=("bvp", "eda")),
                                                cache_dir=tmp_path / "cache"))
    assert "Not read (not regular files)" in text and "TEMP.csv: a named pipe; not read" in text


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_walked_sources_skip_what_is_not_a_regular_file(tmp_path):
    # a reader without source_files(): every file under the folder is hashed, pipes and
    # broken or looping symlinks are left out with a note
    (tmp_path / "data.csv").write_text("1\n")
    os.mkfifo(tmp_path / "pipe")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    ignored: list = []
    files = source_files(Source.parse(f"kemocon:{tmp_path}"), ignored)
    assert files == [tmp_path / "data.csv"]
    assert sorted(ignored) == sorted([f"{tmp_path / 'dangling'}: a broken symlink; not read",
                                      f"{tmp_path / 'loop'}: a symlink loop; not read",
                                      f"{tmp_path / 'pipe'}: a named pipe; not read"])


def test_readers_hash_only_the_files_they_read(tmp_path):
    root = tmp_path / "set"
    folder = e4_participant(root, "S02", names=("EDA.csv",))
    (folder / "HR.csv").write_text("x\n")
    (folder / "video.mp4").write_bytes(b"\0" * 100)
    audio_participant(folder, T0)
    labels_file(folder, "start,end,stress", [f"{T0},{T0 + 60},0"])
    (root / "dataset.json").write_text("{}")
    names = sorted(p.relative_to(root).as_posix() for p in source_files(Source.parse(f"generic:{root}")))
    assert names == ["S02/EDA.csv", "S02/audio.json", "S02/audio.wav", "S02/labels.csv", "dataset.json"]
    e4 = sorted(p.name for p in source_files(Source.parse(f"e4:{FIXTURE / 'Raw_data'}")))
    assert e4 == sorted(list(E4_NAMES) * 2 + ["tags_S01.csv", "tags_S02.csv"])
    sp = source_files(Source.parse(f"stresspredict:{FIXTURE}"))
    assert len(sp) == 11 and sp[0].name == "Improved_All_Combined_hr_rsp_binary.csv"


# ------------------------------------------------------------ 6. every window dropped

def test_participants_whose_every_window_is_dropped_get_the_flag_that_keeps_them(tmp_path, capsys):
    root = tmp_path / "set"
    e4_participant(root, "full")
    audio_participant(root / "full", T0, seconds=60)
    audio_participant(root / "talk", T0, seconds=60)                      # audio only
    e4_participant(root, "wrist", names=("BVP.csv", "EDA.csv"))          # only some E4 files
    ds = build_dataset(f"generic:{root}", cache_dir=False)               # all five modalities
    assert ds.participant_ids() == ["full"]
    skipped = ds.report["skipped"]
    assert skipped["talk"].startswith("no E4 data (all 19 windows dropped: 19 no acc data)")
    assert skipped["talk"].endswith("to keep its windows pass --missing fill (absent modalities "
                                    "zero-filled and masked) or --modalities speech")
    assert skipped["wrist"].endswith("--missing fill (absent modalities zero-filled and masked) "
                                     "or --modalities bvp,eda")
    code, out, err = inspect_cli(capsys, f"generic:{root}")
    assert code == 0
    assert "talk: all 19 windows dropped (19 no acc data): to keep its windows pass --missing fill" in out
    # the flags do keep them
    fill = build_dataset(f"generic:{root}", DataConfig(window=WindowConfig(missing="fill")), cache_dir=False)
    assert fill.participant_ids() == ["full", "talk", "wrist"]
    speech = build_dataset(f"generic:{root}", DataConfig(modalities=("speech",)), cache_dir=False)
    assert speech.participant_ids() == ["full", "talk"]


# ------------------------------------------------------------ 7. errors a person can act on

def european(text: str) -> str:
    """``text`` as Excel saves a CSV in a European locale: ``;`` between values, ``,`` decimals."""
    return text.replace(",", ";").replace(".", ",")


@pytest.mark.parametrize("name, convert, kind, line", [
    ("EDA.csv", european, "decimal-comma", 1),                      # 1644228016,000000
    ("ACC.csv", european, "semicolon-separated, decimal-comma", 1),
    ("ACC.csv", lambda text: text.replace(",", ";"), "semicolon-separated", 1),
    # header rows left alone (written by hand), samples from Excel
    ("EDA.csv", lambda text: "\n".join(text.split("\n")[:2] + [european(x) for x in text.split("\n")[2:]]),
     "decimal-comma", 3),
    ("ACC.csv", lambda text: "\n".join(text.split("\n")[:2] + [european(x) for x in text.split("\n")[2:]]),
     "semicolon-separated", 3),
])
def test_european_excel_e4_exports_say_how_to_save_them(tmp_path, capsys, name, convert, kind, line):
    folder = e4_participant(tmp_path, "S02", names=(name,))
    path = folder / name
    path.write_text(convert(path.read_text()))
    code, out, err = inspect_cli(capsys, f"e4:{folder}", "--modalities", name[:-4].lower())
    assert code == 2 and "Traceback" not in err
    problem = [x for x in err.splitlines() if "participant S02" in x]
    assert len(problem) == 1, err
    assert f"{path}: line {line}: " in problem[0] and f"a {kind} export" in problem[0]
    assert "save it as CSV with ',' between values and '.' as the decimal mark" in problem[0]
    assert "column" not in problem[0]  # not the old "wrong column count"


def test_european_excel_labels_say_how_to_save_them(tmp_path):
    folder = e4_participant(tmp_path, "S02", names=("EDA.csv",))
    rows = [f"{T0:.1f},{T0 + 180.5:.1f},0", f"{T0 + 180.5:.1f},{T0 + 420:.1f},1"]
    cases = [
        (european("start,end,stress"), [european(r) for r in rows], "line 1", "semicolon-separated"),
        ("start;end;stress", [r.replace(",", ";") for r in rows], "line 1", "semicolon-separated"),
        # ',' between values but quoted decimal commas: Excel's answer to a comma in a number
        ("start,end,stress", [f'"{T0:.1f}","{T0 + 180.5:.1f}",0'.replace(".", ","),
                              f'"{T0 + 180.5:.1f}","{T0 + 420:.1f}",1'.replace(".", ",")],
         "column 'start', line 2", "decimal-comma"),
    ]
    for header, lines, where, kind in cases:
        path = labels_file(folder, header, lines)
        with pytest.raises(DataError) as err:
            GENERIC.read(tmp_path, "S02", DataConfig(modalities=("eda",)))
        message = str(err.value)
        assert f"{path}: {where}: " in message and f"a {kind} export" in message, message
        assert "save it as CSV with ',' between values and '.' as the decimal mark" in message


def test_well_formed_files_never_look_like_excel_exports(tmp_path):
    folder = e4_participant(tmp_path, "S02", names=("EDA.csv",))
    labels_file(folder, "start,end,stress", [f"{T0},{T0 + 180},a;b"])  # a ';' in a label is a label
    with pytest.raises(DataError) as err:
        GENERIC.read(tmp_path, "S02", DataConfig(modalities=("eda",)))
    assert "Excel" not in str(err.value) and "integer class index" in str(err.value)
    (folder / "EDA.csv").write_text("1644228016\n4\n0.1\n0.2,0.3\n")  # a stray extra value
    with pytest.raises(DataError, match=r"line 4: expected 1 comma-separated value\(s\), found 2"):
        read_e4_file(folder / "EDA.csv", "eda")


def test_generic_pointed_at_one_participant_names_the_parent_folder(tmp_path, capsys):
    folder = e4_participant(tmp_path / "set", "S02")
    audio_participant(folder, T0)
    labels_file(folder, "start,end,stress", [f"{T0},{T0 + 180},0", f"{T0 + 180},{T0 + 420},1"])
    code, out, err = inspect_cli(capsys, f"generic:{folder}")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{folder}: folders: expected a data set folder holding one folder per participant" in err
    assert "ACC.csv, BVP.csv, EDA.csv, TEMP.csv, audio.json, audio.wav, labels.csv" in err
    assert f"point generic: at the parent folder, generic:{tmp_path / 'set'}, which holds S02/" in err
    assert f"(to read its E4 files alone, without audio or labels, use e4:PATH with this folder: e4:{folder})" in err
    # audio and labels only, or a stray sub-folder: the same advice
    for name in E4_NAMES:
        (folder / name).unlink()
    (folder / "notes").mkdir()
    with pytest.raises(DataError, match=r"audio.json, audio.wav, labels.csv\): point generic: at the parent"):
        GENERIC.participants(folder)
    # the parent folder works, and a stray labels.csv beside real participant folders is left alone
    assert GENERIC.participants(tmp_path / "set") == ["S02"]
    shutil.copy(folder / "labels.csv", tmp_path / "set" / "labels.csv")
    assert GENERIC.participants(tmp_path / "set") == ["S02"]


def test_messages_never_show_numpy_reprs(tmp_path, capsys):
    from kfusion.data.readers.kemocon import _drop_duplicates_checked

    # labels.csv with an end equal to its start: both times are numpy floats inside the reader
    folder = e4_participant(tmp_path, "S02", names=("EDA.csv",))
    path = labels_file(folder, "start,end,stress", [f"{T0:.0f},{T0 + 60:.0f},0", f"{T0 + 60:.0f},{T0 + 60:.0f},1"])
    code, out, err = inspect_cli(capsys, f"generic:{tmp_path}", "--modalities", "eda")
    assert code == 2 and "np." not in err
    assert (f"{path}: column 'end', line 3: expected a time after start (1644228076.0), "
            f"found 1644228076.0") in err
    # a reader outside this file formatting numpy values with !r: the message is still plain
    times = np.array([T0 * 1000, T0 * 1000 + 250, T0 * 1000 + 125.5])
    with pytest.raises(DataError) as raised:
        _drop_duplicates_checked(Path("E4_EDA.csv"), times, np.zeros((3, 1)), np.array([2, 3, 4]), [])
    assert "np." not in str(raised.value)
    assert "(1644228016125.5 after 1644228016250.0 on line 3)" in str(raised.value)
    # numpy scalars and lists of them given as found/expected, and round-off noise
    err = DataError("f.csv", "column 'x'", np.float64(0.1) + np.float64(0.2),
                    [np.float64(1644227874.0), np.int64(3), np.float32(0.1)])
    assert str(err) == "f.csv: column 'x': expected 0.3, found [1644227874.0, 3, 0.1]"
    assert "np." not in str(BadParticipantsError({"S02": err}))


def test_bad_participants_say_which_flag_goes_on(tmp_path, capsys):
    for pid in ("A", "B", "C"):
        e4_participant(tmp_path, pid, names=("EDA.csv",))
    for pid in ("B", "C"):
        (tmp_path / pid / "EDA.csv").write_text("1644228016\n4\n0.1\nx\n")
    code, out, err = inspect_cli(capsys, f"generic:{tmp_path}", "--modalities", "eda")
    assert code == 2
    lines = err.strip().splitlines()
    assert lines[0] == "kfusion: error: 2 participant(s) could not be read:"
    assert lines[1].startswith(f"  participant B: {tmp_path / 'B' / 'EDA.csv'}: line 4: ")
    assert lines[2].startswith(f"  participant C: {tmp_path / 'C' / 'EDA.csv'}: line 4: ")
    assert lines[3] == ("Fix their files, or use --skip-bad (kfusion data inspect, train, evaluate, "
                        "tune, calibrate) to report them and go on with the others; in Python: "
                        "DataConfig(skip_bad=True).")
    assert "skip_bad=True (CLI" not in err
    # what the sentence promises works, on the command line and in Python
    code, out, err = inspect_cli(capsys, f"generic:{tmp_path}", "--modalities", "eda", "--skip-bad")
    assert code == 0 and "B: " in out and "C: " in out
    ds = build_dataset(f"generic:{tmp_path}", DataConfig(modalities=("eda",), skip_bad=True), cache_dir=False)
    assert ds.participant_ids() == ["A"]
    import pickle

    again = pickle.loads(pickle.dumps(BadParticipantsError({"B": DataError("f.csv", "x", "y")})))
    assert list(again.problems) == ["B"] and "could not be read" in str(again)
