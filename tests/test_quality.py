"""Signal-quality checks (issue 12, item 4): a sensor that was off, or values no E4 can
produce, never reach a model; the windows count as that modality absent, with the reason in the
report. Built from the real Stress-Predict slice (S02, 420 s) in the generic layout."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from kfusion.config import DataConfig, WindowConfig
from kfusion.data.dataset import build_dataset
from kfusion.data.quality import quality_flags

S02 = Path(__file__).parent / "fixtures" / "stress-predict" / "Raw_data" / "S02"
WEARABLES = ("acc", "bvp", "eda", "temp")


def participant(root: Path, edit=None, name: str = "EDA.csv") -> str:
    """``generic:root`` with one participant holding S02's E4 files; ``edit(samples)`` rewrites
    the samples of ``name`` (its two header lines kept)."""
    folder = root / "p1"
    folder.mkdir(parents=True)
    for file in ("ACC.csv", "BVP.csv", "EDA.csv", "TEMP.csv"):
        shutil.copy(S02 / file, folder / file)
    if edit is not None:
        lines = (folder / name).read_text().splitlines()
        values = np.array([[float(v) for v in line.split(",")] for line in lines[2:]])
        values = edit(values)
        body = [",".join(f"{v:.6g}" for v in row) for row in values]
        (folder / name).write_text("\n".join(lines[:2] + body) + "\n")
    return f"generic:{root}"


def test_real_recording_passes_every_check(tmp_path):
    dataset = build_dataset(participant(tmp_path), DataConfig(modalities=WEARABLES), cache_dir=False)
    entry = dataset.report["participants"]["p1"]
    assert "quality" not in entry and entry["windows"]["kept"] == entry["windows"]["total"] == 139


def test_eda_off_the_skin_is_absent_not_data(tmp_path):
    """The E4 off the wrist: EDA reads zero. Those windows are dropped (or EDA masked absent),
    with the reason, and never z-scored into a model input."""
    def off_for_a_minute(v):
        v[400:640] = 0.0  # 60 s at 4 Hz
        return v

    source = participant(tmp_path, off_for_a_minute)
    dropped = build_dataset(source, DataConfig(modalities=WEARABLES), cache_dir=False)
    entry = dropped.report["participants"]["p1"]
    reason = "eda below 0.01 µS (sensor off the skin)"
    assert entry["windows"]["dropped"][reason] >= 19 and entry["quality"][reason] >= 19
    assert any(reason in note for note in entry["notes"])
    filled = build_dataset(source, DataConfig(modalities=WEARABLES, window=WindowConfig(missing="fill")),
                           cache_dir=False)
    absent = ~filled.presence["eda"]
    assert absent.sum() == entry["quality"][reason]
    assert np.all(filled.inputs["eda"][absent] == 0) and filled.presence["bvp"][absent].all()
    # The calibration never saw the zeros: its mean is the worn recording's.
    worn = np.loadtxt(S02 / "EDA.csv", skiprows=2)
    worn = np.delete(worn, np.s_[400:640])
    assert filled.calibration["p1"]["eda"]["mean"][0] == pytest.approx(worn.mean(), rel=0.02)


@pytest.mark.parametrize("name, edit, reason", [
    ("EDA.csv", lambda v: np.where(np.arange(len(v))[:, None] == 100, 1e30, v), "eda out of range"),
    ("EDA.csv", lambda v: np.where(np.arange(len(v))[:, None] == 100, -5000.0, v), "eda out of range"),
    ("BVP.csv", lambda v: np.where(np.arange(len(v))[:, None] == 6400, 1e300, v), "bvp out of range"),
    ("TEMP.csv", lambda v: np.where(np.arange(len(v))[:, None] == 100, 80.0, v), "temp out of range"),
])
def test_impossible_values_name_themselves(tmp_path, name, edit, reason):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no numpy overflow leaks to the user
        dataset = build_dataset(participant(tmp_path, edit, name), DataConfig(modalities=WEARABLES),
                                cache_dir=False)
    dropped = dataset.report["participants"]["p1"]["windows"]["dropped"]
    assert any(r.startswith(reason) for r in dropped), dropped
    assert not any(r.startswith("gap in") for r in dropped), dropped  # not misreported as a gap
    assert 1 <= sum(dropped.values()) <= 3                 # one sample: the windows holding it
    assert np.isfinite(dataset.levels[name[:-4].lower()]).all()


def test_flat_sensor_and_the_check_switch(tmp_path):
    def flat(v):
        v[3200:3200 + 64 * 90] = v[3200]  # BVP stuck for 90 s
        return v

    source = participant(tmp_path, flat, "BVP.csv")
    dataset = build_dataset(source, DataConfig(modalities=WEARABLES), cache_dir=False)
    dropped = dataset.report["participants"]["p1"]["windows"]["dropped"]
    assert dropped.get("bvp flat for 60 s or more (sensor off)", 0) >= 28
    unchecked = build_dataset(source, DataConfig(modalities=WEARABLES, quality_checks=False), cache_dir=False)
    assert unchecked.report["participants"]["p1"]["windows"]["kept"] == 139


def test_quality_flags_rules():
    rate = 4.0
    eda = np.full((400, 1), 2.0) + np.random.default_rng(0).normal(0, 0.01, (400, 1))
    assert quality_flags("eda", eda, rate) == {}
    eda[10] = np.inf
    eda[20] = 0.0
    flags = quality_flags("eda", eda, rate)
    assert flags["eda out of range (expected -0.01 to 100 µS)"].nonzero()[0].tolist() == [10]
    assert flags["eda below 0.01 µS (sensor off the skin)"].nonzero()[0].tolist() == [20]
    acc = np.random.default_rng(1).normal(0, 5, (32 * 120, 3))
    acc[:32 * 61] = [0, 0, 64]  # still on a table for 61 s: flat on every axis
    assert quality_flags("acc", acc, 32.0)["acc flat for 60 s or more (sensor off)"].sum() == 32 * 61
    temp = np.full((400, 1), 33.0)  # skin temperature may sit still: never "flat"
    assert quality_flags("temp", temp, rate) == {}
    assert quality_flags("speech", eda, rate) == {}


@pytest.mark.parametrize("chunks", ["whole", "single samples", "random"])
def test_stream_quality_flags_what_batch_flags_however_the_signal_is_chunked(chunks):
    from kfusion.data.quality import StreamQuality

    rng = np.random.default_rng(0)
    rate, n = 4.0, 2000
    x = (2.0 + rng.normal(0, 0.1, size=(n, 1))).astype(np.float32)
    x[300:600] = 2.0           # flat for 75 s
    x[900:1000] = 3.0          # flat for 25 s: allowed
    x[1200] = 200.0            # impossible
    x[1500:1510] = 0.001       # off the skin
    batch = np.any(np.stack(list(quality_flags("eda", x, rate).values())), axis=0)
    sizes = {"whole": [n], "single samples": [1] * n,
             "random": list(rng.integers(1, 50, size=n))}[chunks]
    stream, out, voids, i = StreamQuality("eda", rate), [], [], 0
    for size in sizes:
        if i >= n:
            break
        checked, void_from = stream.check(x[i:i + size])
        out.append(checked)
        if void_from is not None:
            voids.append(void_from)
        i += size
    streamed = ~np.isfinite(np.concatenate(out)[:n, 0])
    assert not (streamed & ~batch).any()
    # the only samples streaming misses are the flat run's first FLAT_SECONDS, which it names
    assert voids == [300]      # once, when the run reaches FLAT_SECONDS
    missed = np.flatnonzero(batch & ~streamed)
    np.testing.assert_array_equal(missed, np.arange(300, 300 + stream.minimum - 1))
