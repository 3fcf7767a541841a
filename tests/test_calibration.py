"""Per-person calibration: statistics from a participant's own signals, never labels; levels
beside the per-window normalised inputs; the choice enters the cache key and the reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kfusion.config import CalibrationConfig, DataConfig
from kfusion.data.calibration import (
    ChannelStats,
    calibrate,
    recording_calibration,
    standardize_levels,
    signal_statistics,
    speech_statistics,
    window_levels,
)
from kfusion.data.dataset import build_dataset, dataset_fingerprint
from kfusion.data.recording import LabelIntervals, Recording, Signal
from kfusion.errors import ConfigError
from kfusion.evaluation.baselines import calibrate_features

FIXTURE = Path(__file__).parent / "fixtures" / "stress-predict"
SOURCE = f"stresspredict:{FIXTURE}"
WEARABLES = ("acc", "bvp", "eda", "temp")


def _config(calibration: str) -> DataConfig:
    return DataConfig(modalities=WEARABLES, calibration=CalibrationConfig.parse(calibration))


def test_config_parse_and_validation():
    assert CalibrationConfig.parse("head:2.5") == CalibrationConfig("head", "head", 2.5)
    assert CalibrationConfig.parse("none").method("speech") == "none"
    assert CalibrationConfig(wearable="participant", speech="none").describe() == \
        "wearable participant, speech none"
    for bad in ("bogus", "participant:3", "head:x"):
        with pytest.raises(ConfigError, match="calibration"):
            CalibrationConfig.parse(bad)
    with pytest.raises(ConfigError, match="head_minutes"):
        CalibrationConfig(head_minutes=0)
    # Round trip through the data config's JSON form.
    config = DataConfig(calibration=CalibrationConfig("head", "participant", 3.0))
    assert DataConfig.from_dict(config.to_dict()) == config


def test_signal_statistics_participant_and_head():
    rate = 4.0
    first = np.full((int(120 * rate), 1), 2.0) + np.random.default_rng(0).normal(0, 0.1, (480, 1))
    later = np.full((int(600 * rate), 1), 10.0) + np.random.default_rng(1).normal(0, 1.0, (2400, 1))
    values = np.concatenate([first, later]).astype(np.float32)
    values[10:20] = np.nan  # a gap is ignored, not propagated
    head = signal_statistics(values, rate, "head", head_minutes=2.0)
    whole = signal_statistics(values, rate, "participant", head_minutes=2.0)
    assert head.mean[0] == pytest.approx(2.0, abs=0.05) and head.std[0] == pytest.approx(0.1, abs=0.02)
    assert head.seconds == pytest.approx(120 - 10 / rate)
    assert whole.mean[0] > 8 and whole.seconds == pytest.approx(720 - 10 / rate)
    assert signal_statistics(values[:20], rate, "participant", 5.0) is None  # < 10 s of signal
    calibrated = calibrate(values[:480], head)
    assert np.nanmean(calibrated) == pytest.approx(0.0, abs=0.05)


def test_speech_statistics_ignore_silence():
    rate = 16000
    t = np.arange(rate * 20) / rate
    tone = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    with_silence = np.concatenate([tone, np.zeros(rate * 40, dtype=np.float32)])
    a = speech_statistics(tone, "participant", 5.0)
    b = speech_statistics(with_silence, "participant", 5.0)
    # 40 s of digital silence do not move the statistics of the voiced frames.
    np.testing.assert_allclose(a.mean, b.mean, atol=0.5)
    assert b.seconds == pytest.approx(a.seconds, rel=0.05)


def test_window_levels_mean_and_log_std():
    x = np.stack([np.full((16, 1), 3.0), np.linspace(-1, 1, 16)[:, None]]).astype(np.float32)
    levels = window_levels(x)
    assert levels.shape == (2, 2)
    assert levels[0, 0] == pytest.approx(3.0) and levels[0, 1] == pytest.approx(np.log(1e-3))
    assert levels[1, 0] == pytest.approx(0.0, abs=1e-6)
    assert levels[1, 1] == pytest.approx(np.log(np.std(np.linspace(-1, 1, 16)) + 1e-3), rel=1e-5)


def _recording(pid: str, eda_level: float, labels: LabelIntervals | None, seconds=300.0):
    rng = np.random.default_rng(len(pid))
    n = int(seconds * 4)
    eda = (eda_level + 0.2 * np.sin(np.arange(n) / 20) + rng.normal(0, 0.01, n)).astype(np.float32)
    return Recording(pid, {"eda": Signal(eda[:, None], 4.0, 1.6e9, "eda.csv")}, None, labels)


def test_calibration_never_sees_labels_and_only_own_signals():
    labels_a = LabelIntervals(np.array([1.6e9]), np.array([1.6e9 + 300]), {"stress": np.array([0])},
                              classes={"stress": ("no", "yes")})
    labels_b = LabelIntervals(np.array([1.6e9]), np.array([1.6e9 + 300]), {"stress": np.array([1])},
                              classes={"stress": ("no", "yes")})
    config = DataConfig(modalities=("eda",), calibration=CalibrationConfig.parse("participant"))
    one = recording_calibration(_recording("p1", 5.0, labels_a), config)["eda"]
    two = recording_calibration(_recording("p1", 5.0, labels_b), config)["eda"]
    three = recording_calibration(_recording("p1", 5.0, None), config)["eda"]
    assert one.to_dict() == two.to_dict() == three.to_dict()
    assert recording_calibration(_recording("p1", 5.0, None),
                                 DataConfig(modalities=("eda",), calibration=CalibrationConfig.parse("none"))) == {}


def test_dataset_levels_calibration_and_cache_key():
    participant = build_dataset(SOURCE, _config("participant"), cache_dir=False)
    none = build_dataset(SOURCE, _config("none"), cache_dir=False)
    head = build_dataset(SOURCE, _config("head:2"), cache_dir=False)
    # Per-window normalised inputs are the same whatever the calibration (the authors' layout).
    for m in WEARABLES:
        np.testing.assert_array_equal(participant.inputs[m], none.inputs[m])
        assert participant.levels[m].shape == (len(participant), 2 * participant.inputs[m].shape[2])
    # Calibrated EDA levels are centred on each participant's own recording; raw ones are in µS.
    for pid in participant.participant_ids():
        rows = participant.participants == pid
        assert abs(participant.levels["eda"][rows, 0].mean()) < 0.3
    assert none.levels["eda"][:, 0].mean() > 0.1
    stats = participant.calibration["S02"]["eda"]
    assert stats["method"] == "participant" and stats["seconds"] == pytest.approx(420, abs=2)
    assert head.calibration["S02"]["eda"]["seconds"] == pytest.approx(120, abs=1)
    assert participant.report["participants"]["S02"]["calibration"]["eda"]["method"] == "participant"
    # Each participant's statistics come from its own signals only.
    alone = build_dataset(SOURCE, _config("participant"), cache_dir=False, participants=["S02"])
    assert alone.calibration["S02"] == participant.calibration["S02"]
    np.testing.assert_array_equal(alone.levels["eda"], participant.levels["eda"][participant.participants == "S02"])
    # The choice is part of the cache key.
    keys = {dataset_fingerprint(SOURCE, _config(c)) for c in ("none", "participant", "head:2", "head:3")}
    assert len(keys) == 4


def test_level_statistics_of_the_calibration_windows_only():
    rate = 4.0
    rng = np.random.default_rng(3)
    values = (5.0 + rng.normal(0, 1.0, (int(900 * rate), 2))).astype(np.float32)
    values[100:110] = np.nan  # windows touching the gap are left out
    whole = signal_statistics(values, rate, "participant", 5.0, window=(4.0, 3.0))
    # the level statistics are those of the gap-free 4 s windows (hop 3 s) of the calibrated signal
    starts = [s for s in range(0, values.shape[0] - 16 + 1, 12) if np.isfinite(values[s:s + 16]).all()]
    levels = window_levels(calibrate(np.stack([values[s:s + 16] for s in starts]), whole))
    np.testing.assert_allclose(whole.level_mean, levels.mean(0), rtol=1e-6)
    np.testing.assert_allclose(whole.level_std, levels.std(0), rtol=1e-6)
    assert whole.windows == len(starts) and whole.level_mean.shape == (4,)
    np.testing.assert_allclose(standardize_levels(levels, whole).mean(0), 0.0, atol=1e-5)
    # head: only the windows of the first minutes (39, two touching the gap); none without a
    # window; none when too few
    head = signal_statistics(values, rate, "head", 2.0, window=(4.0, 3.0))
    assert head.windows == 39 - 2 and signal_statistics(values, rate, "participant", 5.0).level_mean is None
    assert signal_statistics(values[:50], rate, "participant", 5.0, window=(8.0, 8.0)).level_mean is None
    # the model input: six rows, identity level rows without level statistics
    rows = whole.rows()
    assert rows.shape == (6, 2) and np.allclose(rows[2:4].reshape(-1), whole.level_mean.reshape(2, 2).reshape(-1))
    plain = ChannelStats(whole.mean, whole.std, "participant", 1.0).rows()
    np.testing.assert_array_equal(plain[2:4], 0.0)
    np.testing.assert_array_equal(plain[4:], 1.0)
    assert ChannelStats.from_dict(whole.to_dict()).to_dict() == whole.to_dict()


def test_dataset_levels_are_standardised_per_participant():
    levelled = build_dataset(SOURCE, _config("participant"), cache_dir=False)
    plain = build_dataset(SOURCE, DataConfig(modalities=WEARABLES, calibration=CalibrationConfig(
        standardize_levels=False)), cache_dir=False)
    for pid in levelled.participant_ids():
        rows = levelled.participants == pid
        # the data set's windows are the calibration windows here (one gap-free recording)
        np.testing.assert_allclose(levelled.levels["eda"][rows].mean(0), 0.0, atol=0.2)
        stats = levelled.calibration[pid]["eda"]
        np.testing.assert_allclose(levelled.levels["eda"][rows],
                                   standardize_levels(plain.levels["eda"][rows], ChannelStats.from_dict(stats)),
                                   atol=1e-5)
    assert dataset_fingerprint(SOURCE, _config("participant")) != dataset_fingerprint(
        SOURCE, DataConfig(modalities=WEARABLES, calibration=CalibrationConfig(standardize_levels=False)))


def test_dataset_save_load_and_select_keep_levels(tmp_path):
    dataset = build_dataset(SOURCE, _config("participant"), cache_dir=False)
    loaded = type(dataset).load(dataset.save(tmp_path / "saved"))
    for m in WEARABLES:
        np.testing.assert_array_equal(loaded.levels[m], dataset.levels[m])
    assert loaded.calibration == dataset.calibration
    part = dataset.subset(["S02"])
    assert set(part.calibration) == {"S02"} and len(part.levels["eda"]) == len(part)


def test_calibrate_features_per_participant_and_head():
    participants = np.array(["a"] * 6 + ["b"] * 6)
    starts = np.tile(np.arange(6) * 60.0, 2)
    features = np.concatenate([np.arange(6.0), 100 + 10 * np.arange(6.0)])[:, None]
    features[3, 0] = np.nan
    whole = calibrate_features(features, participants, starts, "participant")
    assert whole[participants == "b"].mean() == pytest.approx(0.0, abs=1e-9)
    assert np.isfinite(whole).all() and whole[3, 0] == 0.0
    # "head": only the first 2 minutes (windows at 0 and 60 s) set each participant's baseline.
    head = calibrate_features(features, participants, starts, "head", head_minutes=2.0)
    np.testing.assert_allclose(head[participants == "b"][:, 0], (np.arange(6) - 0.5) / 0.5)
    np.testing.assert_array_equal(calibrate_features(features, participants, starts, "none")[:3],
                                  features[:3])


def test_dataset_carries_whole_recording_physiology(tmp_path):
    """The hand-crafted row's physiological features travel with the data set (save/load,
    select) and feed its features, calibrated per participant."""
    from kfusion.data.physio import WEARABLE_PHYSIO_NAMES
    from kfusion.evaluation.protocol import dataset_handcrafted_features

    dataset = build_dataset(SOURCE, _config("participant"), cache_dir=False)
    assert dataset.physio.shape == (len(dataset), len(WEARABLE_PHYSIO_NAMES))
    assert tuple(dataset.physio_names) == WEARABLE_PHYSIO_NAMES
    hr = dataset.physio[:, list(dataset.physio_names).index("bvp_hr_mean")]
    assert np.nanmedian(hr) == pytest.approx(80, abs=35)  # a resting adult's heart, in bpm
    loaded = type(dataset).load(dataset.save(tmp_path / "d"))
    np.testing.assert_array_equal(loaded.physio, dataset.physio)
    assert loaded.subset(["S02"]).physio.shape[0] == int((dataset.participants == "S02").sum())
    features, names = dataset_handcrafted_features(dataset)
    assert "eda_scr_rate" in names and "eda_level_mean" in names
    assert np.isfinite(features).all()
    rows = dataset.participants == "S02"
    np.testing.assert_allclose(features[rows].mean(axis=0), 0.0, atol=1e-6)  # calibrated per person
