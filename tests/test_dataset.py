"""WindowedDataset and build_dataset: shapes, report, cache, ids, bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from kfusion.config import DataConfig, WindowConfig
from kfusion.data import dataset as dataset_module
from kfusion.data.dataset import (FileHashes, WindowedDataset, build_dataset, dataset_fingerprint,
                                  default_cache_dir)
from kfusion.data.recording import Audio, LabelIntervals, Recording, Signal
from kfusion.data.sources import register_reader
from kfusion.errors import BadParticipantsError, ConfigError, DataError

T0 = 1_600_000_000.0
E4_PAIR = DataConfig(modalities=("bvp", "eda"))
STRESS = ("calm", "stress")


class TinyReader:
    """Reads ``<root>/<pid>/{meta.json, bvp.txt, eda.txt}``; counts its reads.

    meta.json: ``start`` (UNIX s), optional ``offsets`` (modality -> s), ``span`` (offsets),
    ``labels`` (rows of start offset, end offset, stress class).
    """

    def __init__(self):
        self.reads = 0

    def participants(self, root):
        return sorted(p.name for p in Path(root).iterdir() if p.is_dir())

    def read(self, root, participant, config):
        self.reads += 1
        folder = Path(root) / participant
        if (folder / "bad.txt").exists():
            raise DataError(folder / "bad.txt", "contents", "a readable file", "garbage")
        meta = json.loads((folder / "meta.json").read_text())
        start = meta["start"]
        signals = {}
        for modality, rate in (("bvp", 64), ("eda", 4)):
            path = folder / f"{modality}.txt"
            if path.exists():
                offset = meta.get("offsets", {}).get(modality, 0.0)
                signals[modality] = Signal(np.loadtxt(path, ndmin=1), rate, start + offset, str(path))
        labels = None
        if "labels" in meta:
            rows = np.asarray(meta["labels"], dtype=float)
            labels = LabelIntervals(start + rows[:, 0], start + rows[:, 1], {"stress": rows[:, 2]},
                                    source=str(folder / "meta.json"), scheme="classes",
                                    classes={"stress": STRESS})
        span = tuple(start + np.asarray(meta["span"])) if "span" in meta else None
        return Recording(participant, signals=signals, labels=labels, span=span,
                         notes=["tiny reader"], source=str(folder))


TINY = TinyReader()
OTHER = TinyReader()
register_reader("kftiny", TINY)
register_reader("kfother", OTHER)


def write_participant(root: Path, pid: str, bvp_seconds=20.0, eda_seconds=20.0, labels=None,
                      offsets=None, span=None, bad=False, modalities=("bvp", "eda"), seed=0) -> Path:
    folder = root / pid
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    meta = {"start": T0}
    if labels is not None:
        meta["labels"] = labels
    if offsets:
        meta["offsets"] = offsets
    if span is not None:
        meta["span"] = span
    (folder / "meta.json").write_text(json.dumps(meta))
    if "bvp" in modalities:
        np.savetxt(folder / "bvp.txt", rng.normal(0, 1, int(64 * bvp_seconds)), fmt="%.4f")
    if "eda" in modalities:
        np.savetxt(folder / "eda.txt", rng.uniform(1, 2, int(4 * eda_seconds)), fmt="%.4f")
    if bad:
        (folder / "bad.txt").write_text("x")
    return folder


SLOTS = [[0, 5, 0], [5, 10, 1], [10, 15, 1], [15, 20, 0]]


@pytest.fixture
def two_people(tmp_path):
    root = tmp_path / "data"
    write_participant(root, "A", labels=SLOTS, seed=1)
    write_participant(root, "B", bvp_seconds=16, eda_seconds=16, seed=2)
    return root


def test_build_shapes_labels_and_report(two_people):
    ds = build_dataset(f"kftiny:{two_people}", E4_PAIR, cache_dir=False)
    assert len(ds) == 11  # 20 s -> 6 windows, 16 s -> 5
    assert ds.modalities == ("bvp", "eda")
    assert ds.inputs["bvp"].shape == (11, 256, 1) and ds.inputs["bvp"].dtype == np.float32
    assert ds.inputs["eda"].shape == (11, 16, 1)
    assert ds.presence["bvp"].all() and ds.presence["eda"].all()
    np.testing.assert_array_equal(ds.participants, ["A"] * 6 + ["B"] * 5)
    np.testing.assert_allclose(ds.starts - T0, [0, 3, 6, 9, 12, 15, 0, 3, 6, 9, 12], atol=1e-6)
    # slots calm, stress, stress, calm; window [3,7) ties 2 s / 2 s -> the earlier slot (calm)
    np.testing.assert_array_equal(ds.labels["stress"], [0, 0, 1, 1, 1, 0] + [-1] * 5)
    assert ds.labels["stress"].dtype == np.int64
    assert ds.classes == {"stress": STRESS}
    # z-scored per window
    np.testing.assert_allclose(ds.inputs["bvp"].mean(axis=1), 0, atol=1e-5)
    report = ds.report
    assert report["windows"] == {"total": 11, "kept": 11, "dropped": {}}
    assert report["participants"]["A"]["durations"] == {"bvp": 20.0, "eda": 20.0}
    assert report["participants"]["B"]["windows"]["kept"] == 5
    assert report["labels"]["stress"] == {"calm": 3, "stress": 3, "unlabelled": 5}
    assert report["participants"]["A"]["labels"]["stress"] == {"calm": 3, "stress": 3, "unlabelled": 0}
    assert "tiny reader" in report["participants"]["A"]["notes"]
    json.dumps(report)  # JSON-able
    assert ds.participant_ids() == ["A", "B"]


def test_cache_hit_does_not_read_again_and_file_change_invalidates(two_people, tmp_path):
    cache = tmp_path / "cache"
    before = TINY.reads
    first = build_dataset(f"kftiny:{two_people}", E4_PAIR, cache_dir=cache)
    assert TINY.reads == before + 2 and first.report["cache"]["hit"] is False
    second = build_dataset(f"kftiny:{two_people}", E4_PAIR, cache_dir=cache)
    assert TINY.reads == before + 2, "a cache hit must not read the sources"
    assert second.report["cache"]["hit"] is True and second.fingerprint == first.fingerprint
    for m in first.inputs:
        np.testing.assert_array_equal(second.inputs[m], first.inputs[m])
    np.testing.assert_array_equal(second.labels["stress"], first.labels["stress"])

    # same size, different bytes -> new key, sources read again
    path = two_people / "A" / "bvp.txt"
    text = path.read_text()
    changed = text.replace("0", "1", 50)
    assert len(changed) == len(text) and changed != text
    path.write_text(changed)
    third = build_dataset(f"kftiny:{two_people}", E4_PAIR, cache_dir=cache)
    assert TINY.reads == before + 4 and third.fingerprint != first.fingerprint
    assert not np.array_equal(third.inputs["bvp"][:6], first.inputs["bvp"][:6])
    np.testing.assert_array_equal(third.inputs["bvp"][6:], first.inputs["bvp"][6:])

    # another config -> another key
    build_dataset(f"kftiny:{two_people}", E4_PAIR.replace(window=WindowConfig(overlap=2.0)), cache_dir=cache)
    assert TINY.reads == before + 6
    # no temporary folders left behind
    assert not [p for p in (cache / "datasets").iterdir() if p.name.startswith(".")]


def test_fingerprint_sees_rewrites_that_keep_size_and_mtime(two_people, tmp_path):
    hashes = FileHashes(tmp_path / "memo.json")
    key = dataset_fingerprint(f"kftiny:{two_people}", E4_PAIR, hashes=hashes)
    hashes.flush()
    assert key == dataset_fingerprint(f"kftiny:{two_people}", E4_PAIR,
                                      hashes=FileHashes(tmp_path / "memo.json"))
    path = two_people / "B" / "eda.txt"
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[0:1] = b"9" if data[0:1] != b"9" else b"8"
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # hide the change from mtime
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    assert dataset_fingerprint(f"kftiny:{two_people}", E4_PAIR,
                               hashes=FileHashes(tmp_path / "memo.json")) != key
    # the participant selection is part of the key too
    assert dataset_fingerprint(f"kftiny:{two_people}", E4_PAIR, participants=["A"]) != key


class NamingReader(TinyReader):
    """A reader that names the files it depends on (only meta.json and bvp.txt)."""

    def source_files(self, root):
        return [p for p in Path(root).rglob("*") if p.name in ("meta.json", "bvp.txt")]


register_reader("kfnaming", NamingReader())


def test_reader_can_name_its_source_files(two_people):
    key = dataset_fingerprint(f"kfnaming:{two_people}", E4_PAIR)
    (two_people / "A" / "eda.txt").write_text("1.0\n" * 80)    # not named: key unchanged
    (two_people / "A" / "video.mp4").write_bytes(b"\0" * 1000)
    assert dataset_fingerprint(f"kfnaming:{two_people}", E4_PAIR) == key
    (two_people / "A" / "bvp.txt").write_text("1.0\n" * 1280)  # named: key changes
    assert dataset_fingerprint(f"kfnaming:{two_people}", E4_PAIR) != key
    assert dataset_fingerprint(f"kftiny:{two_people}", E4_PAIR) != key


def test_cache_disabled_and_default_location(two_people, tmp_path, monkeypatch):
    before = TINY.reads
    build_dataset(f"kftiny:{two_people}", E4_PAIR, cache_dir=False)
    build_dataset(f"kftiny:{two_people}", E4_PAIR, cache_dir=False)
    assert TINY.reads == before + 4
    monkeypatch.setenv("KFUSION_CACHE", str(tmp_path / "envcache"))
    assert default_cache_dir() == tmp_path / "envcache"
    ds = build_dataset(f"kftiny:{two_people}", E4_PAIR)
    assert (tmp_path / "envcache" / "datasets" / ds.fingerprint / "meta.json").is_file()
    monkeypatch.delenv("KFUSION_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "kfusion"


def test_failed_cache_write_leaves_nothing_and_corrupt_cache_is_rebuilt(two_people, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    real_savez = np.savez

    def crash(path, **arrays):
        Path(path).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(dataset_module.np, "savez", crash)
    with pytest.warns(UserWarning, match="could not write the data-set cache"):
        ds = build_dataset(f"kftiny:{two_people}", E4_PAIR, cache_dir=cache)
    assert len(ds) == 11
    assert list((cache / "datasets").iterdir()) == []  # neither a half cache nor a temp folder
    monkeypatch.setattr(dataset_module.np, "savez", real_savez)

    ds = build_dataset(f"kftiny:{two_people}", E4_PAIR, cache_dir=cache)
    (cache / "datasets" / ds.fingerprint / "meta.json").write_text("{not json")
    before = TINY.reads
    with pytest.warns(UserWarning, match="unreadable data-set cache"):
        again = build_dataset(f"kftiny:{two_people}", E4_PAIR, cache_dir=cache)
    assert TINY.reads == before + 2 and len(again) == 11
    assert WindowedDataset.load(cache / "datasets" / ds.fingerprint).fingerprint == ds.fingerprint


def test_save_load_round_trip(two_people, tmp_path):
    ds = build_dataset(f"kftiny:{two_people}", E4_PAIR, cache_dir=False)
    ds.save(tmp_path / "saved")
    loaded = WindowedDataset.load(tmp_path / "saved")
    assert loaded.config == ds.config and loaded.fingerprint == ds.fingerprint
    assert loaded.classes == ds.classes and loaded.report == json.loads(json.dumps(ds.report))
    assert loaded.modalities == ds.modalities and loaded.targets == ds.targets
    for m in ds.inputs:
        np.testing.assert_array_equal(loaded.inputs[m], ds.inputs[m])
        np.testing.assert_array_equal(loaded.presence[m], ds.presence[m])
    np.testing.assert_array_equal(loaded.labels["stress"], ds.labels["stress"])
    np.testing.assert_array_equal(loaded.participants, ds.participants)
    np.testing.assert_array_equal(loaded.starts, ds.starts)
    with np.load(tmp_path / "saved" / "arrays.npz", allow_pickle=False) as npz:
        assert npz["participants"].dtype.kind == "U"
    with pytest.raises(DataError, match="meta.json"):
        WindowedDataset.load(tmp_path / "nowhere")


def test_select_subset_labelled(two_people):
    ds = build_dataset(f"kftiny:{two_people}", E4_PAIR, cache_dir=False)
    b = ds.subset(["B"])
    assert len(b) == 5 and set(b.participants) == {"B"} and b.fingerprint != ds.fingerprint
    labelled = ds.labelled("stress")
    assert len(labelled) == 6 and (labelled.labels["stress"] >= 0).all()
    picked = ds.select([10, 0])
    np.testing.assert_array_equal(picked.participants, ["B", "A"])
    np.testing.assert_array_equal(picked.inputs["eda"][1], ds.inputs["eda"][0])
    assert len(ds.select(ds.participants == "A")) == 6
    with pytest.raises(ConfigError):
        ds.select(np.ones(3, bool))
    with pytest.raises(ConfigError):
        ds.select([11])
    with pytest.raises(ConfigError, match="unknown participant"):
        ds.subset(["Z"])
    with pytest.raises(ConfigError, match="unknown target"):
        ds.labelled("arousal")


def test_ids_from_several_sources_are_made_unique(tmp_path):
    first, second = tmp_path / "one", tmp_path / "two"
    write_participant(first, "A")
    write_participant(first, "C", bvp_seconds=8, eda_seconds=8)
    write_participant(second, "A", bvp_seconds=8, eda_seconds=8)
    same_scheme = build_dataset([f"kftiny:{first}", f"kftiny:{second}"], E4_PAIR, cache_dir=False)
    assert same_scheme.participant_ids() == ["kftiny1-A", "C", "kftiny2-A"]
    mixed = build_dataset([f"kftiny:{first}", f"kfother:{second}"], E4_PAIR, cache_dir=False)
    assert mixed.participant_ids() == ["kftiny-A", "C", "kfother-A"]
    assert len(mixed.subset(["kfother-A"])) == 2
    only = build_dataset([f"kftiny:{first}", f"kfother:{second}"], E4_PAIR, cache_dir=False,
                         participants=["C"])
    assert only.participant_ids() == ["C"]
    with pytest.raises(DataError, match="participant"):
        build_dataset(f"kftiny:{first}", E4_PAIR, cache_dir=False, participants=["Q"])


def test_participants_without_requested_data_are_reported(tmp_path):
    root = tmp_path / "data"
    write_participant(root, "A")
    write_participant(root, "D", modalities=("bvp",))  # no EDA file
    eda_only = build_dataset(f"kftiny:{root}", DataConfig(modalities=("eda",)), cache_dir=False)
    assert eda_only.participant_ids() == ["A"]
    assert eda_only.report["skipped"] == {"D": "no E4 data"}
    both = build_dataset(f"kftiny:{root}", E4_PAIR, cache_dir=False)
    assert both.report["skipped"]["D"].startswith("no eda data")
    assert both.report["participants"]["D"]["windows"]["dropped"] == {"no eda data": 6}
    assert both.report["windows"] == {"total": 12, "kept": 6, "dropped": {"no eda data": 6}}


def test_bad_participants_listed_or_raised(tmp_path):
    root = tmp_path / "data"
    write_participant(root, "A")
    write_participant(root, "E", bad=True)
    with pytest.raises(BadParticipantsError) as err:
        build_dataset(f"kftiny:{root}", E4_PAIR, cache_dir=False)
    assert list(err.value.problems) == ["E"]
    ds = build_dataset(f"kftiny:{root}", E4_PAIR.replace(skip_bad=True), cache_dir=False)
    assert ds.participant_ids() == ["A"]
    assert "bad.txt" in ds.report["problems"]["E"]
    assert ds.report["participants"]["E"]["status"] == "problem"


def test_annotations_entirely_outside_the_recording(tmp_path):
    root = tmp_path / "data"
    write_participant(root, "A", labels=[[100, 105, 1], [105, 110, 0]])
    with pytest.raises(DataError) as err:
        build_dataset(f"kftiny:{root}", E4_PAIR, cache_dir=False)
    assert err.value.file.endswith("meta.json") and err.value.field == "annotation times"
    assert "entirely outside" in str(err.value)
    ds = build_dataset(f"kftiny:{root}", E4_PAIR.replace(skip_bad=True), cache_dir=False)
    assert len(ds) == 0 and "annotation times" in ds.report["problems"]["A"]


def test_no_overlap_between_modalities_names_files_and_spans(tmp_path):
    root = tmp_path / "data"
    write_participant(root, "A", bvp_seconds=10, eda_seconds=10, offsets={"eda": 30.0})
    with pytest.raises(DataError) as err:
        build_dataset(f"kftiny:{root}", E4_PAIR, cache_dir=False)
    message = str(err.value)
    assert "bvp.txt" in message and "eda.txt" in message and err.value.field == "time span"
    assert f"{T0 + 30:.3f}" in message  # the eda span is spelled out
    ds = build_dataset(f"kftiny:{root}", E4_PAIR.replace(skip_bad=True), cache_dir=False)
    assert "time span" in ds.report["problems"]["A"]
    # zero-filling keeps the windows of each modality, marked absent where missing
    fill = build_dataset(f"kftiny:{root}", E4_PAIR.replace(window=WindowConfig(missing="fill")),
                         cache_dir=False)
    assert len(fill) == 3 + 3
    np.testing.assert_array_equal(fill.presence["bvp"], [True] * 3 + [False] * 3)
    np.testing.assert_array_equal(fill.presence["eda"], [False] * 3 + [True] * 3)
    assert not fill.inputs["eda"][:3].any() and not fill.inputs["bvp"][3:].any()


def test_gaps_only_is_skipped_not_an_error(tmp_path):
    root = tmp_path / "data"
    folder = write_participant(root, "A", bvp_seconds=8, eda_seconds=8)
    (folder / "eda.txt").write_text("nan\n" * 32)
    ds = build_dataset(f"kftiny:{root}", E4_PAIR, cache_dir=False)
    assert len(ds) == 0 and ds.inputs["bvp"].shape == (0, 256, 1)
    assert ds.report["skipped"]["A"] == ("no windows (all 2 windows dropped: 2 gap in eda); to keep its "
                                         "windows pass --missing fill (absent modalities zero-filled "
                                         "and masked) or --modalities bvp")


# ----------------------------------------------------------------- in-memory recordings (audio)

MEMORY: dict[str, dict[str, Recording]] = {}


class MemoryReader:
    def participants(self, root):
        return list(MEMORY[str(root)])

    def read(self, root, participant, config):
        return MEMORY[str(root)][participant]


register_reader("kfmemory", MemoryReader())


def memory_source(tmp_path, recordings) -> str:
    root = tmp_path / "memory"
    root.mkdir(exist_ok=True)
    MEMORY[str(root)] = {r.participant: r for r in recordings}
    return f"kfmemory:{root}"


def e4_signals(seconds: float) -> dict:
    rng = np.random.default_rng(7)
    return {"acc": Signal(rng.normal(size=(int(32 * seconds), 3)), 32, T0, "ACC.csv"),
            "bvp": Signal(rng.normal(size=int(64 * seconds)), 64, T0, "BVP.csv"),
            "eda": Signal(rng.uniform(1, 2, int(4 * seconds)), 4, T0, "EDA.csv"),
            "temp": Signal(rng.uniform(30, 31, int(4 * seconds)), 4, T0, "TEMP.csv")}


def test_speech_and_wearables_with_short_audio(tmp_path):
    rng = np.random.default_rng(8)
    audio = Audio(0.1 * rng.standard_normal(16000 * 11), 16000, T0 + 1.0, "p1.p2.wav")  # 1..12 s
    rec = Recording("1", signals=e4_signals(20.0), audio=audio, span=(T0, T0 + 20.0))
    ds = build_dataset(memory_source(tmp_path, [rec]), DataConfig(), cache_dir=False, progress=True)
    # starts 0..15; audio covers [3,7) and [6,10) only
    assert len(ds) == 2 and ds.modalities == ("speech", "acc", "bvp", "eda", "temp")
    assert ds.inputs["speech"].shape == (2, 400, 40) and ds.inputs["acc"].shape == (2, 128, 3)
    np.testing.assert_allclose(ds.inputs["speech"].mean(axis=1), 0, atol=1e-4)  # CMVN
    assert ds.report["windows"]["dropped"] == {"speech not covered": 4}
    assert ds.report["participants"]["1"]["durations"]["speech"] == 11.0


def test_audio_entirely_outside_the_span_is_reported(tmp_path):
    audio = Audio(np.zeros(16000 * 8), 16000, T0 + 100.0, "p1.p2.wav")
    rec = Recording("1", signals=e4_signals(20.0), audio=audio, span=(T0, T0 + 20.0))
    source = memory_source(tmp_path, [rec])
    with pytest.raises(DataError) as err:
        build_dataset(source, DataConfig(), cache_dir=False)
    assert "p1.p2.wav" in str(err.value) and err.value.field == "time span"
    fill = build_dataset(source, DataConfig(window=WindowConfig(missing="fill")), cache_dir=False)
    assert len(fill) == 6 and not fill.presence["speech"].any() and not fill.inputs["speech"].any()
    notes = fill.report["participants"]["1"]["notes"]
    assert any("speech" in n and "p1.p2.wav" in n and "entirely outside" in n for n in notes)


def test_recording_with_no_e4_data_is_skipped_with_reason(tmp_path):
    speech_only = Recording("2", audio=Audio(np.zeros(16000 * 8), 16000, T0, "p2.wav"))
    full = Recording("1", signals=e4_signals(8.0), audio=Audio(np.zeros(16000 * 8), 16000, T0, "p1.wav"))
    ds = build_dataset(memory_source(tmp_path, [full, speech_only]),
                       DataConfig(modalities=("acc", "bvp", "eda", "temp")), cache_dir=False)
    assert ds.participant_ids() == ["1"] and ds.report["skipped"] == {"2": "no E4 data"}


def test_config_type_is_checked(two_people):
    with pytest.raises(ConfigError):
        build_dataset(f"kftiny:{two_people}", {"modalities": ["bvp"]}, cache_dir=False)
    with pytest.raises(ConfigError):
        build_dataset([], E4_PAIR, cache_dir=False)
