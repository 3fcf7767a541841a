"""inspect_source / format_inspection: the key numbers, JSON-able, readable text."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kfusion.config import DataConfig
from kfusion.data.inspect import format_inspection, inspect_source
from kfusion.data.recording import LabelIntervals, Recording, Signal
from kfusion.data.sources import register_reader
from kfusion.errors import DataError

T0 = 1_600_000_000.0
RECORDINGS: dict[str, dict[str, Recording]] = {}


class InspectReader:
    def __init__(self):
        self.reads = 0

    def participants(self, root):
        return list(RECORDINGS[str(root)])

    def read(self, root, participant, config):
        self.reads += 1
        rec = RECORDINGS[str(root)][participant]
        if rec is None:
            raise DataError(f"{root}/{participant}/EDA.csv", "column 'value', line 7", "a finite number", "'x'")
        return rec


READER = InspectReader()
register_reader("kfinspect", READER)


def recording(pid: str, seconds: float, eda_seconds: float, rows) -> Recording:
    rng = np.random.default_rng(int(pid))
    signals = {"bvp": Signal(rng.normal(size=int(64 * seconds)), 64, T0, f"{pid}/BVP.csv"),
               "eda": Signal(rng.uniform(1, 2, int(4 * eda_seconds)), 4, T0, f"{pid}/EDA.csv")}
    rows = np.asarray(rows, float)
    names = ("arousal", "valence", "cheerful", "happy", "angry", "nervous", "sad")
    starts = T0 + 5.0 * np.arange(len(rows))
    labels = LabelIntervals(starts, starts + 5.0, {n: rows[:, i] for i, n in enumerate(names)},
                            source=f"P{pid}.self.csv", scheme="kemocon")
    return Recording(pid, signals=signals, labels=labels, span=(T0, T0 + seconds),
                     notes=[f"participant {pid}: note from the reader"])


@pytest.fixture
def source(tmp_path):
    root = tmp_path / "src"
    root.mkdir()
    RECORDINGS[str(root)] = {
        # 20 s: 6 windows; EDA ends at 13 s -> windows at 12 and 15 dropped
        "1": recording("1", 20.0, 13.0, [[1, 5, 1, 1, 1, 1, 1], [3, 5, 2, 3, 3, 1, 1],
                                         [5, 4, 1, 1, 1, 1, 4], [5, 4, 1, 1, 1, 1, 4]]),
        # 10 s: 3 windows
        "2": recording("2", 10.0, 10.0, [[2, 3, 1, 1, 1, 1, 1], [4, 3, 1, 1, 1, 1, 1]]),
        "3": None,  # unreadable
    }
    return f"kfinspect:{root}"


def test_inspect_numbers(source, tmp_path):
    config = DataConfig(modalities=("bvp", "eda"), skip_bad=True)
    info = inspect_source(source, config, cache_dir=tmp_path / "cache")
    json.dumps(info)
    assert info["source"] == [source]
    assert [p["id"] for p in info["participants"]] == ["1", "2", "3"]
    one = info["participants"][0]
    assert one["durations"] == {"bvp": 20.0, "eda": 13.0}
    assert one["windows"] == {"total": 6, "kept": 4, "dropped": {"eda not covered": 2}}
    assert info["windows"] == {"total": 9, "kept": 7, "dropped": {"eda not covered": 2}}
    # participant 1 windows at 0,3,6,9: arousal slots 1,3,5,5 -> low, low (tie -> slot 0),
    # neutral (slot 1), high (slot 2 covers 3 s of [9,13)); participant 2 at 0,3,6: low, low, high
    assert info["labels"]["arousal"] == {"low": 4, "neutral": 1, "high": 2, "unlabelled": 0}
    # emotion: p1 slots neutral, happy (tie happy/angry), sad, sad -> windows neutral, neutral,
    # happy, sad; p2 neutral x3
    assert info["labels"]["emotion"] == {"cheerful": 0, "happy": 1, "angry": 0, "nervous": 0,
                                         "sad": 1, "neutral": 5, "unlabelled": 0}
    assert "EDA.csv" in info["problems"]["3"]
    assert info["participants"][2]["status"] == "problem"

    text = format_inspection(info)
    for expected in ("kfinspect:", "eda not covered", "7 kept of 9", "participant 1: note from the reader",
                     "Labels: arousal", "Labels: emotion", "Problems", "EDA.csv"):
        assert expected in text, expected
    row = next(line for line in text.splitlines() if line.strip().startswith("1 ") and "ok" in line)
    assert row.split()[:6] == ["1", "20.0", "13.0", "6", "4", "2"]
    all_row = next(line for line in text.splitlines()
                   if line.strip().startswith("all") and line.split()[1:] == ["4", "1", "2", "0"])
    assert all_row


def test_inspect_uses_the_cache(source, tmp_path):
    config = DataConfig(modalities=("bvp", "eda"), skip_bad=True)
    inspect_source(source, config, cache_dir=tmp_path / "cache")
    reads = READER.reads
    again = inspect_source(source, config, cache_dir=tmp_path / "cache")
    assert READER.reads == reads and again["cache"]["hit"] is True


def test_format_of_empty_result(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    RECORDINGS[str(root)] = {"9": Recording("9", notes=["no files"])}
    info = inspect_source(f"kfinspect:{root}", DataConfig(modalities=("eda",)), cache_dir=False)
    assert info["skipped"] == {"9": "no E4 data"} and info["windows"]["kept"] == 0
    text = format_inspection(info)
    assert "skipped: no E4 data" in text and "Labels: none" in text and "0 kept of 0" in text
