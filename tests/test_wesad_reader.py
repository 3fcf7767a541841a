"""The wesad: reader on a fake release written in WESAD's layout (tests/fixtures/wesad/make_fixture.py):
Python 2 pickles, quest.csv quirks, the E4 folder; labels on the right times, the meditation
option, missing questionnaires, bad inputs, and the CLI."""

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
from kfusion.data.readers.e4 import READER as E4
from kfusion.data.readers.wesad import READER, quest_seconds, sam_levels
from kfusion.data.readers.wrist_pickle import NOMINAL_START
from kfusion.data.sources import Source
from kfusion.errors import DataError
from fixture_scripts import fixture_script

FIXTURES = Path(__file__).parent / "fixtures"


FIX = fixture_script("wesad")
SUBJECTS = (2, 3, 4, 5)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A fake release: S2..S5, S2/S4 in the order Base, TSST, Medi 1, Fun, Medi 2; S3/S5 with
    Fun before TSST. Read-only: tests that change files copy a subject (``subject_copy``)."""
    return FIX.write_release(tmp_path_factory.mktemp("wesad"), SUBJECTS)


def subject_copy(release: Path, tmp_path: Path, subject: str = "S2") -> Path:
    """A release folder holding a copy of one subject (pickle, quest; no E4 folder)."""
    root = tmp_path / "WESAD"
    (root / subject).mkdir(parents=True)
    for name in (f"{subject}.pkl", f"{subject}_quest.csv"):
        shutil.copy(release / subject / name, root / subject / name)
    return root


def load(path: Path) -> dict:
    with open(path, "rb") as handle:
        return pickle.load(handle, encoding="latin1")


def rewrite(root: Path, subject: str, change) -> Path:
    """Apply ``change(data)`` to a subject's pickle and write it back in the release's format."""
    path = root / subject / f"{subject}.pkl"
    data = load(path)
    change(data)
    path.write_bytes(FIX.dumps(data))
    return path


def periods(subject: int) -> dict[str, tuple[float, float]]:
    """name -> (start, end) seconds from the pickle's start, from the fixture's timeline."""
    out, t = {}, 0.0
    for name, code, seconds in FIX.protocol(subject):
        out.setdefault(name or f"code{code}@{t:g}", (t, t + seconds))
        t += seconds
    return out


def intervals(recording) -> list[tuple[float, float, dict]]:
    labels = recording.labels
    names = {c: labels.classes[c] for c in labels.columns}
    return [(float(labels.start[i] - NOMINAL_START), float(labels.end[i] - NOMINAL_START),
             {c: (names[c][int(v[i])] if np.isfinite(v[i]) else None) for c, v in labels.columns.items()})
            for i in range(len(labels))]


# --- the fixture reproduces the release's format ---------------------------------------------

def test_fixture_pickles_are_python2_pickles_that_need_latin1(release):
    raw = (release / "S2" / "S2.pkl").read_bytes()
    assert raw[:2] == b"\x80\x02" and b"cnumpy.core.multiarray\n_reconstruct" in raw
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(raw)  # what a plain Python 3 load does with the release's pickles
    data = pickle.loads(raw, encoding="latin1")
    assert sorted(data) == ["label", "signal", "subject"] and data["subject"] == "S2"
    assert sorted(data["signal"]) == ["chest", "wrist"]
    wrist = data["signal"]["wrist"]
    assert {k: (v.shape[1], v.dtype) for k, v in wrist.items()} == {
        "ACC": (3, np.float64), "BVP": (1, np.float64), "EDA": (1, np.float64), "TEMP": (1, np.float64)}
    seconds = data["label"].shape[0] / 700
    assert data["label"].dtype == np.int32 and data["label"].ndim == 1
    assert [wrist[k].shape[0] / r for k, r in FIX.WRIST_RATES.items()] == [seconds] * 4
    assert data["signal"]["chest"]["ECG"].shape == (data["label"].shape[0], 1)
    quest = (release / "S2" / "S2_quest.csv").read_text().splitlines()
    assert quest[1].startswith("# ORDER;Base;TSST;Medi 1;Fun;Medi 2;sRead;fRead;;")
    assert all(line.count(";") == 25 for line in quest)
    # the same arguments write byte-identical files
    again = FIX.write_subject(release.parent / "again", 2)
    assert (again / "S2.pkl").read_bytes() == raw


# --- reading ----------------------------------------------------------------------------------

def test_participants_are_the_subject_folders(release):
    assert READER.participants(release) == ["S2", "S3", "S4", "S5"]
    files = sorted(p.relative_to(release).as_posix() for p in source_files(Source.parse(f"wesad:{release}")))
    assert files == sorted(f"S{k}/S{k}{suffix}" for k in SUBJECTS for suffix in (".pkl", "_quest.csv"))


def test_wrist_signals_keep_the_pickle_clock(release):
    recording = READER.read(release, "S2", DataConfig())
    wrist = load(release / "S2" / "S2.pkl")["signal"]["wrist"]
    assert recording.modalities == ("acc", "bvp", "eda", "temp")
    for modality, key in (("acc", "ACC"), ("bvp", "BVP"), ("eda", "EDA"), ("temp", "TEMP")):
        signal = recording.signals[modality]
        assert signal.start == NOMINAL_START and signal.rate == FIX.WRIST_RATES[key]
        np.testing.assert_array_equal(signal.values, wrist[key].astype(np.float32))
        assert "S2.pkl" in signal.source and f"signal.wrist.{key}" in signal.source
    # only the requested modalities are read
    only = READER.read(release, "S2", DataConfig(modalities=("eda",)))
    assert list(only.signals) == ["eda"]


def test_conditions_on_the_label_times_and_unannotated_codes_left_out(release):
    for subject in (2, 3):  # TSST second, or Fun second
        recording = READER.read(release, f"S{subject}", DataConfig())
        when = periods(subject)
        got = {(s, e): (c["condition"], c["stress"]) for s, e, c in intervals(recording)}
        assert got == {when["Base"]: ("baseline", "non-stress"), when["TSST"]: ("stress", "stress"),
                       when["Fun"]: ("amusement", "non-stress")}
        assert recording.labels.classes["condition"] == ("baseline", "stress", "amusement")
        assert recording.labels.classes["stress"] == ("non-stress", "stress")
        assert any("not annotated" in n for n in recording.notes)
        assert any("meditation left unlabelled" in n for n in recording.notes)
    # windows: inside a condition labelled, inside readings (6, 7), code 0 and 5 unlabelled
    when = periods(2)
    probes = {"Base": when["Base"][0] + 10, "TSST": when["TSST"][0] + 4, "sRead": when["sRead"][0] + 2,
              "fRead": when["fRead"][0] + 2, "Medi 1": when["Medi 1"][0] + 5, "start": 1.0,
              "end": sum(s for _, _, s in FIX.protocol(2)) - 4.0}
    recording = READER.read(release, "S2", DataConfig())
    labels, _ = window_labels(NOMINAL_START + np.array(list(probes.values())), 4.0, recording.labels)
    got = dict(zip(probes, labels["condition"]))
    assert got == {"Base": 0, "TSST": 1, "sRead": -1, "fRead": -1, "Medi 1": -1, "start": -1, "end": -1}


def test_meditation_option_adds_a_fourth_condition(release):
    recording = READER.read(release, "S2", DataConfig(meditation=True))
    when = periods(2)
    got = {(s, e): (c["condition"], c["stress"]) for s, e, c in intervals(recording)}
    assert got[when["Medi 1"]] == ("meditation", "non-stress") == got[when["Medi 2"]]
    assert recording.labels.classes["condition"] == ("baseline", "stress", "amusement", "meditation")
    assert len(got) == 5 and not any("meditation left" in n for n in recording.notes)


def test_questionnaire_ratings_follow_order_and_map_to_three_levels(release):
    level = {1: "low", 2: "low", 3: "low", 4: "neutral", 5: "neutral", 6: "neutral", 7: "high", 8: "high",
             9: "high"}
    for subject in (2, 3):
        recording = READER.read(release, f"S{subject}", DataConfig(meditation=True))
        when = periods(subject)
        got = {(s, e): (c["valence"], c["arousal"]) for s, e, c in intervals(recording)}
        for name, (valence, arousal) in FIX.RATINGS.items():
            assert got[when[name]] == (level[valence], level[arousal]), (subject, name)
    # Medi 1 and Medi 2 (both label 4) keep their own ratings: arousal 1 (low) and 4 (neutral)
    assert got[when["Medi 1"]][1] == "low" and got[when["Medi 2"]][1] == "neutral"
    np.testing.assert_array_equal(sam_levels([1, 3, 3.9, 4, 6, 6.5, 7, 9, np.nan]), [0, 0, 0, 1, 1, 2, 2, 2, -1])


def test_quest_times_are_minutes_dot_seconds():
    assert quest_seconds("7.08", Path("q.csv"), "f") == 7 * 60 + 8
    assert quest_seconds("50.3", Path("q.csv"), "f") == 50 * 60 + 30  # a trailing zero dropped
    assert quest_seconds("62", Path("q.csv"), "f") == 62 * 60
    with pytest.raises(DataError, match=r"q.csv: line 3 \(# START\).*minutes.seconds.*'7.75' \(75 seconds\)"):
        quest_seconds("7.75", Path("q.csv"), "line 3 (# START)")


def test_meditation_runs_that_do_not_pair_with_ratings_take_the_nearest_quest_time(release, tmp_path):
    root = subject_copy(release, tmp_path)
    when = periods(2)

    def split_medi_1(data):  # label 0 for 2 s in the middle of Medi 1: two runs of code 4 there
        middle = int((when["Medi 1"][0] + 10) * 700)
        data["label"][middle:middle + 1400] = 0

    rewrite(root, "S2", split_medi_1)
    recording = READER.read(root, "S2", DataConfig(meditation=True))
    medi = [c["arousal"] for s, e, c in intervals(recording) if c["condition"] == "meditation"]
    assert medi == ["low", "low", "neutral"]
    assert any("each takes the rating whose # START/# END is nearest" in n for n in recording.notes)


def test_without_quest_conditions_stay_and_ratings_are_absent(release, tmp_path):
    root = subject_copy(release, tmp_path)
    (root / "S2" / "S2_quest.csv").unlink()
    recording = READER.read(root, "S2", DataConfig())
    assert sorted(recording.labels.columns) == ["condition", "stress"]
    assert len(recording.labels) == 3
    assert any("no S2_quest.csv" in n and "no arousal/valence" in n for n in recording.notes)


def test_a_python3_pickle_of_the_same_data_reads_the_same(release, tmp_path):
    root = subject_copy(release, tmp_path)
    path = root / "S2" / "S2.pkl"
    path.write_bytes(pickle.dumps(load(path), protocol=pickle.HIGHEST_PROTOCOL))
    a, b = READER.read(release, "S2", DataConfig()), READER.read(root, "S2", DataConfig())
    np.testing.assert_array_equal(a.signals["bvp"].values, b.signals["bvp"].values)
    assert intervals(a) == intervals(b)


def test_the_e4_folder_reads_with_e4_but_has_no_labels(release):
    folder = release / "S2" / "S2_E4_Data"
    recording = E4.read(folder, "S2_E4_Data", DataConfig())
    assert recording.labels is None
    pickled = READER.read(release, "S2", DataConfig())
    acc = recording.signals["acc"]
    assert acc.start == FIX.E4_EPOCH + 86400 * 2  # its own clock, not the pickle's
    lead = FIX.LEAD * 32
    np.testing.assert_array_equal(acc.values[lead:lead + pickled.signals["acc"].n], pickled.signals["acc"].values)


# --- bad inputs -------------------------------------------------------------------------------

def _error(root: Path, subject: str = "S2", config: DataConfig | None = None) -> DataError:
    with pytest.raises(DataError) as info:
        READER.read(root, subject, config or DataConfig())
    return info.value


@pytest.mark.parametrize("change, field, expected", [
    (lambda d: d["signal"]["wrist"].pop("BVP"), "signal.wrist.BVP", "a key 'BVP' in signal.wrist (BVP at 64 Hz)"),
    (lambda d: d.pop("label"), "label", "a key 'label'"),
    (lambda d: d.pop("signal"), "signal", "a key 'signal'"),
    (lambda d: d["signal"].pop("wrist"), "signal.wrist", "a key 'wrist' in signal"),
    (lambda d: d["signal"]["wrist"].update(ACC=d["signal"]["wrist"]["ACC"][:, :2]), "signal.wrist.ACC",
     "shape [n, 3] (ACC at 32 Hz)"),
    (lambda d: d["signal"]["wrist"].update(BVP=d["signal"]["wrist"]["BVP"][::2]), "signal.wrist.BVP",
     "64 Hz samples spanning the 216.0 s of 'label'"),
    (lambda d: d["signal"]["wrist"].update(EDA=d["signal"]["wrist"]["EDA"] > 2), "signal.wrist.EDA",
     "a numeric array"),
    (lambda d: d["signal"]["wrist"].update(TEMP=list(d["signal"]["wrist"]["TEMP"][:, 0])), "signal.wrist.TEMP",
     "a numpy array"),
    (lambda d: d.update(label=d["label"].reshape(-1, 2)), "label", "shape [n] or [n, 1]"),
    (lambda d: d["label"].__setitem__(5000, 9), "label, sample 5000", "an integer code 0-7 (1 baseline"),
    (lambda d: d.update(subject="S3"), "subject", "'S2' (the folder and file name)"),
])
def test_bad_pickles_name_file_field_and_expectation(release, tmp_path, change, field, expected):
    root = subject_copy(release, tmp_path)
    path = rewrite(root, "S2", change)
    err = _error(root)
    assert err.file == str(path) and err.field == field, str(err)
    assert expected in err.expected, str(err)


def test_not_a_pickle_or_not_a_dict(release, tmp_path):
    root = subject_copy(release, tmp_path)
    path = root / "S2" / "S2.pkl"
    path.write_text("subject,signal\nS2,1\n")
    err = _error(root)
    assert (err.file, err.field, err.found) == (str(path), "contents", "a text file")
    assert "a Python pickle (the WESAD subject pickle S<k>/S<k>.pkl)" in str(err)
    path.write_bytes(b"PK\x03\x04" + bytes(100))
    assert "a zip archive" in str(_error(root))
    path.write_bytes(FIX.dumps((1, 2)))
    assert "expected a dict" in str(_error(root))
    path.write_bytes(b"")
    assert "a non-empty file" in str(_error(root))


def test_a_pickle_that_would_run_code_is_refused_without_running_it(release, tmp_path):
    root = subject_copy(release, tmp_path)
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (root / "S2" / "S2.pkl").write_bytes(pickle.dumps({"subject": "S2", "x": Payload()}))
    err = _error(root)
    assert "pathlib" in str(err.found) and "touch" in str(err.found) and "numpy arrays" in err.expected
    assert not marker.exists()


def test_wrong_subject_folder_and_wrong_path(release, tmp_path):
    root = subject_copy(release, tmp_path)
    (root / "S2" / "S2.pkl").rename(root / "S2" / "S3.pkl")
    err = _error(root)
    assert err.file.endswith("S2.pkl") and "S3.pkl (another subject's file?)" in str(err.found)
    # pointed at a subject folder, at a pickle, or at the folder above the release
    with pytest.raises(DataError, match=r"point wesad: at the parent folder, wesad:.*WESAD"):
        READER.participants(root / "S2")
    with pytest.raises(DataError, match=r"no subject folders|S<k>/ subject folders"):
        READER.participants(tmp_path / "nothing-here")
    assert "WESAD/ holds them: use wesad:" in str(pytest.raises(DataError, READER.participants, tmp_path).value)


@pytest.mark.parametrize("edit, field, expected", [
    (lambda t: t.replace("# DIM;5;4", "# DIM;5;12"), "line 20 (# DIM for Medi 2), arousal", "a SAM rating from 1 to 9"),
    (lambda t: "\n".join(line for line in t.splitlines() if not line.startswith("# DIM;5;4")), "# DIM lines",
     "5 lines '# DIM;valence;arousal', one per rated condition of # ORDER (Base, TSST, Medi 1, Fun, Medi 2)"),
    (lambda t: t.replace(";Fun;", ";Funny;", 1), "line 2 (# ORDER), entry 4", "a condition Base, TSST"),
    (lambda t: t.replace("# START;0.12", "# START;0.72"), "line 3 (# START), entry 1 (Base)", "minutes.seconds"),
    (lambda t: t.replace("# ORDER", "# ORDRE"), "# ORDER line", "one line '# ORDER;"),
])
def test_bad_questionnaires_name_the_line(release, tmp_path, edit, field, expected):
    root = subject_copy(release, tmp_path)
    quest = root / "S2" / "S2_quest.csv"
    quest.write_text(edit(quest.read_text()))
    err = _error(root)
    assert err.file == str(quest) and err.field == field, str(err)
    assert expected in err.expected, str(err)


# --- command line -----------------------------------------------------------------------------

def test_sources_lists_every_reader_with_one_line(capsys):
    assert main(["data", "sources"]) == 0
    lines = capsys.readouterr().out.splitlines()
    by_scheme = {line.split(":PATH")[0]: line for line in lines}
    for scheme in ("kemocon", "e4", "stresspredict", "generic", "wesad", "ppgdalia"):
        assert scheme in by_scheme and len(by_scheme[scheme].split(":PATH", 1)[1].strip()) > 20
    assert "condition, stress, arousal, valence" in by_scheme["wesad"]


def test_cli_inspect_with_and_without_meditation(release, tmp_path, capsys):
    assert main(["data", "inspect", f"wesad:{release}", "--no-cache", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["modalities"] == ["acc", "bvp", "eda", "temp"]
    assert [p["id"] for p in info["participants"]] == ["S2", "S3", "S4", "S5"]
    assert set(info["labels"]) == {"condition", "stress", "arousal", "valence"}
    assert set(info["labels"]["condition"]) == {"baseline", "stress", "amusement", "unlabelled"}
    assert main(["data", "inspect", f"wesad:{release}", "--no-cache", "--meditation"]) == 0
    out = capsys.readouterr().out
    assert "meditation" in out and "Labels: condition" in out


def test_cli_evaluate_on_the_fixture(release, tmp_path, capsys):
    config = tmp_path / "evaluation.json"
    config.write_text(json.dumps({"epochs": 2, "patience": 1, "batch_size": 64}))
    code = main(["evaluate", "--data", f"wesad:{release}", "--rows", "wearable_only,handcrafted",
                 "--targets", "condition,stress", "--out", str(tmp_path / "ev"), "--config", str(config),
                 "--no-cache"])
    assert code == 0, capsys.readouterr().err
    folds = [json.loads(line) for line in (tmp_path / "ev" / "folds.jsonl").read_text().splitlines()]
    assert len(folds) == 2 * 2 * len(SUBJECTS)
    assert {f["fold"] for f in folds} == {f"S{k}" for k in SUBJECTS}
    assert (tmp_path / "ev" / "table.md").is_file()


def test_e4_at_the_release_points_to_the_e4_folder_and_to_wesad(release):
    with pytest.raises(DataError) as info:
        E4.read(release, "S2", DataConfig())
    found = str(info.value.found)
    assert f"e4:{release / 'S2' / 'S2_E4_Data'} reads them, without labels" in found
    assert f"wesad:{release}" in found
