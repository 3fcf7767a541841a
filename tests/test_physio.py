"""Hand-crafted physiology / prosody baseline features (kfusion.data.physio)."""

from __future__ import annotations

import json

import neurokit2 as nk
import numpy as np
import pytest

from kfusion.data.physio import (PHYSIO_SETTINGS, SPEECH_PROSODY_NAMES, WEARABLE_PHYSIO_NAMES,
                                 speech_prosody, wearable_physio)
from kfusion.errors import ConfigError

T0 = 1_700_000_000.0  # UNIX start of every synthetic recording
SECONDS = 4.0
SR = 16_000


def window_starts(duration: float, hop: float = 3.0) -> np.ndarray:
    return T0 + np.arange(0.0, duration - SECONDS + 1e-9, hop)


def column(x: np.ndarray, name: str) -> np.ndarray:
    return x[:, list(WEARABLE_PHYSIO_NAMES).index(name)]


def speech_column(x: np.ndarray, name: str) -> np.ndarray:
    return x[:, list(SPEECH_PROSODY_NAMES).index(name)]


def one(modality: str, values: np.ndarray, rate: float, starts: np.ndarray) -> np.ndarray:
    x, names = wearable_physio({modality: (np.asarray(values, np.float32), rate, T0)}, starts, SECONDS)
    assert names == list(WEARABLE_PHYSIO_NAMES)
    assert x.shape == (len(starts), len(names)) and x.dtype == np.float32
    return x


def modality_columns(modality: str) -> list[int]:
    return [i for i, n in enumerate(WEARABLE_PHYSIO_NAMES) if n.startswith(modality + "_")]


def ppg(heart_rate: float, duration: float = 120, variability: bool = True, seed: int = 0) -> np.ndarray:
    kwargs = {} if variability else {"frequency_modulation": 0.0, "ibi_randomness": 0.0}
    return nk.ppg_simulate(duration=duration, sampling_rate=64, heart_rate=heart_rate, random_state=seed,
                           **kwargs)[:, None]


def eda(scr_number: int, duration: float = 120, seed: int = 0) -> np.ndarray:
    return nk.eda_simulate(duration=duration, sampling_rate=4, scr_number=scr_number, drift=0.0,
                           noise=0.01, random_state=seed)[:, None] + 2.0


def tone(f0: float, duration: float, amplitude: float = 0.1) -> np.ndarray:
    """Five harmonics of ``f0`` with a 4 Hz syllable-like envelope (silent half of each cycle)."""
    t = np.arange(int(duration * SR)) / SR
    harmonic = sum(np.sin(2 * np.pi * h * f0 * t) / h for h in range(1, 6))
    envelope = np.clip(np.sin(2 * np.pi * 4.0 * t), 0.0, None) ** 2
    return (amplitude * harmonic * envelope).astype(np.float32)


# ------------------------------------------------------------------------------------------
# Layout
# ------------------------------------------------------------------------------------------

def test_settings_are_json_and_names_unique():
    assert json.loads(json.dumps(PHYSIO_SETTINGS)) == PHYSIO_SETTINGS
    assert len(set(WEARABLE_PHYSIO_NAMES)) == len(WEARABLE_PHYSIO_NAMES) == 14
    assert len(set(SPEECH_PROSODY_NAMES)) == len(SPEECH_PROSODY_NAMES) == 6


def test_missing_modalities_give_nan_columns_of_fixed_width():
    starts = window_starts(60)
    temp = 33.0 + 0.01 * np.arange(240)[:, None] / 4
    x = one("temp", temp, 4, starts)
    temp_cols = modality_columns("temp")
    assert np.all(np.isfinite(x[:, temp_cols]))
    others = [i for i in range(x.shape[1]) if i not in temp_cols]
    assert np.all(np.isnan(x[:, others]))
    empty, names = wearable_physio({}, starts, SECONDS)
    assert empty.shape == x.shape and np.all(np.isnan(empty)) and names == list(WEARABLE_PHYSIO_NAMES)
    none, _ = speech_prosody(None, SR, T0, starts, SECONDS)
    assert none.shape == (len(starts), len(SPEECH_PROSODY_NAMES)) and np.all(np.isnan(none))


def test_windows_outside_the_recording_are_nan():
    starts = np.array([T0 - 10.0, T0 - 2.0, T0, T0 + 50.0, T0 + 57.0, T0 + 100.0])
    temp = np.full((240, 1), 33.0)  # 60 s
    t = column(one("temp", temp, 4, starts), "temp_mean")
    np.testing.assert_array_equal(np.isnan(t), [True, True, False, False, True, True])
    s = speech_column(speech_prosody(tone(150, 60), SR, T0, starts, SECONDS)[0], "speech_voiced_frac")
    np.testing.assert_array_equal(np.isnan(s), [True, True, False, False, True, True])


def test_bad_arguments_raise_config_error():
    starts = window_starts(20)
    with pytest.raises(ConfigError, match="acc"):
        wearable_physio({"acc": (np.zeros((100, 2)), 32, T0)}, starts, SECONDS)
    with pytest.raises(ConfigError, match="unknown"):
        wearable_physio({"ecg": (np.zeros((100, 1)), 32, T0)}, starts, SECONDS)
    with pytest.raises(ConfigError, match="starts"):
        wearable_physio({}, starts[:, None], SECONDS)
    with pytest.raises(ConfigError, match="window length"):
        wearable_physio({}, starts, 0.0)
    with pytest.raises(ConfigError, match="rate"):
        wearable_physio({"temp": (np.zeros((100, 1)), 0, T0)}, starts, SECONDS)
    with pytest.raises(ConfigError, match="mono"):
        speech_prosody(np.zeros((SR, 2), np.float32), SR, T0, starts, SECONDS)


# ------------------------------------------------------------------------------------------
# BVP
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("heart_rate", [70, 110])
def test_heart_rate_per_window_follows_simulated_ppg(heart_rate):
    starts = window_starts(120)
    steady = one("bvp", ppg(heart_rate, variability=False), 64, starts)
    hr = column(steady, "bvp_hr_mean")
    assert np.all(np.abs(hr - heart_rate) <= 5), hr
    beats = column(steady, "bvp_n_beats")
    assert np.all(np.abs(beats - heart_rate / 60 * SECONDS) <= 1.5), beats
    assert np.all(np.isfinite(column(steady, "bvp_rmssd"))) and np.all(np.isfinite(column(steady, "bvp_ibi_std")))

    # NeuroKit's default heart-rate variability: every window still near, the average close.
    varied = one("bvp", ppg(heart_rate), 64, starts)
    hr = column(varied, "bvp_hr_mean")
    assert abs(np.mean(hr) - heart_rate) <= 2 and np.all(np.abs(hr - heart_rate) <= 15), hr
    # More variable beats -> larger RMSSD than the steady simulation.
    assert np.median(column(varied, "bvp_rmssd")) > np.median(column(steady, "bvp_rmssd"))


def test_heart_rate_gap_uses_only_clean_beats():
    starts = window_starts(120)
    signal = ppg(70, variability=False)
    signal[50 * 64:62 * 64] = np.nan
    x = one("bvp", signal, 64, starts)
    hr, beats = column(x, "bvp_hr_mean"), column(x, "bvp_n_beats")
    rel = starts - T0
    inside = (rel >= 50) & (rel + SECONDS <= 62)
    assert inside.any() and np.all(np.isnan(beats[inside])) and np.all(np.isnan(hr[inside]))
    clear = (rel + SECONDS <= 49) | (rel >= 63)
    assert np.all(np.abs(hr[clear] - 70) <= 5)
    # No interval bridges the gap, so a window across its edge still sees about 70 bpm, not less.
    edge = ~inside & ~clear
    assert np.all(np.isnan(hr[edge]) | (np.abs(hr[edge] - 70) <= 5)), hr[edge]


# ------------------------------------------------------------------------------------------
# EDA
# ------------------------------------------------------------------------------------------

def test_scr_counts_grow_with_simulated_responses():
    starts = window_starts(120)
    counts = {}
    for k in (2, 12):
        x = one("eda", eda(k), 4, starts)
        assert np.all(np.isfinite(x[:, modality_columns("eda")]))
        rate = column(x, "eda_scr_rate")
        counts[k] = float(np.sum(rate * SECONDS / 60))
        amp = column(x, "eda_scr_amp")
        assert np.all((amp > 0) == (rate > 0))
    assert counts[2] > 0
    assert counts[12] > 2 * counts[2], counts


def test_flat_eda_has_no_scr():
    starts = window_starts(120)
    rng = np.random.default_rng(0)
    x = one("eda", 3.0 + rng.normal(0, 0.001, (480, 1)), 4, starts)
    np.testing.assert_array_equal(column(x, "eda_scr_rate"), 0.0)
    np.testing.assert_array_equal(column(x, "eda_scr_amp"), 0.0)
    np.testing.assert_allclose(column(x, "eda_tonic_mean"), 3.0, atol=0.01)


def test_tonic_level_follows_offset():
    starts = window_starts(120)
    base = one("eda", eda(4), 4, starts)
    shifted = one("eda", eda(4) + 5.0, 4, starts)
    np.testing.assert_allclose(column(shifted, "eda_tonic_mean") - column(base, "eda_tonic_mean"), 5.0, atol=0.02)
    np.testing.assert_allclose(column(shifted, "eda_phasic_std"), column(base, "eda_phasic_std"), atol=1e-3)
    np.testing.assert_array_equal(column(shifted, "eda_scr_rate"), column(base, "eda_scr_rate"))


def test_eda_tonic_slope_sign():
    starts = window_starts(120)
    ramp = 2.0 + 0.01 * np.arange(480)[:, None] / 4  # +0.01 µS/s
    slope = column(one("eda", ramp, 4, starts), "eda_tonic_slope")
    assert np.all(slope > 0.005) and np.all(slope < 0.015), slope


def test_eda_too_short_is_nan_without_error():
    starts = window_starts(12)
    x = one("eda", eda(1, duration=12), 4, starts)
    assert np.all(np.isnan(x[:, modality_columns("eda")]))
    x = one("bvp", ppg(70, duration=6), 64, window_starts(6))  # under bvp min_run_seconds: no beats
    for name in ("bvp_hr_mean", "bvp_ibi_std", "bvp_rmssd"):
        assert np.all(np.isnan(column(x, name)))
    np.testing.assert_array_equal(column(x, "bvp_n_beats"), 0.0)
    short, _ = wearable_physio({"eda": (np.ones((3, 1)), 4, T0), "bvp": (np.ones((2, 1)), 64, T0),
                                "acc": (np.ones((1, 3)), 32, T0), "temp": (np.ones((0, 1)), 4, T0)},
                               starts, SECONDS)
    assert np.all(np.isnan(short))  # every window reaches past the end of these recordings


def test_nan_gap_makes_only_touching_windows_nan():
    starts = window_starts(120)
    rel = starts - T0
    touching = (rel + SECONDS > 50) & (rel < 60)
    signal = eda(6)
    signal[200:240] = np.nan  # 50 s .. 60 s
    for modality, values, rate in [("eda", signal, 4),
                                   ("temp", np.where(np.isnan(signal), np.nan, 33.0), 4)]:
        x = one(modality, values, rate, starts)[:, modality_columns(modality)]
        np.testing.assert_array_equal(np.isnan(x).any(axis=1), touching)
        np.testing.assert_array_equal(np.isnan(x).all(axis=1), touching)
    acc = np.tile([0.0, 0.0, 64.0], (120 * 32, 1))
    acc[50 * 32:60 * 32, 1] = np.nan  # one axis missing is a gap too
    x = one("acc", acc, 32, starts)[:, modality_columns("acc")]
    np.testing.assert_array_equal(np.isnan(x).any(axis=1), touching)
    np.testing.assert_array_equal(np.isnan(x).all(axis=1), touching)


# ------------------------------------------------------------------------------------------
# ACC and TEMP
# ------------------------------------------------------------------------------------------

def test_acc_still_versus_shaking():
    starts = window_starts(60)
    t = np.arange(60 * 32) / 32
    rng = np.random.default_rng(0)
    still = np.stack([np.zeros_like(t), 0.3 * 64 * np.ones_like(t), 0.954 * 64 * np.ones_like(t)], axis=1)
    still = still + rng.normal(0, 0.3, still.shape)
    shaking = still.copy()
    shaking[:, 2] += 0.5 * 64 * np.sin(2 * np.pi * 2.0 * t)
    a, b = one("acc", still, 32, starts), one("acc", shaking, 32, starts)
    for name in ("acc_mag_std", "acc_activity", "acc_move_frac"):
        assert np.all(column(b, name) > column(a, name)), name
    assert np.all(column(a, "acc_mag_std") < 0.02)
    np.testing.assert_array_equal(column(a, "acc_move_frac"), 0.0)
    assert np.all(column(b, "acc_move_frac") > 0.4)
    np.testing.assert_allclose(column(b, "acc_mag_std"), 0.5 / np.sqrt(2), rtol=0.15)


@pytest.mark.parametrize("per_minute", [0.5, -0.5])
def test_temperature_slope_sign(per_minute):
    starts = window_starts(120)
    t = np.arange(480) / 4
    rng = np.random.default_rng(1)
    temp = 33.0 + per_minute * t / 60 + rng.normal(0, 0.002, t.shape)  # slope SE ~0.03 °C/min per 4-s window
    x = one("temp", temp[:, None], 4, starts)
    slope = column(x, "temp_slope")
    assert np.all(np.sign(slope) == np.sign(per_minute))
    np.testing.assert_allclose(slope, per_minute, atol=0.1)
    expected_mean = 33.0 + per_minute * (starts - T0 + SECONDS / 2 - 0.125) / 60
    np.testing.assert_allclose(column(x, "temp_mean"), expected_mean, atol=0.01)


# ------------------------------------------------------------------------------------------
# Speech
# ------------------------------------------------------------------------------------------

def test_f0_semitones_follow_tone_pitch():
    starts = window_starts(20)
    means = {}
    for f0 in (150.0, 250.0):
        x, names = speech_prosody(tone(f0, 20), SR, T0, starts, SECONDS)
        assert names == list(SPEECH_PROSODY_NAMES) and x.shape == (len(starts), 6) and x.dtype == np.float32
        assert np.all(np.isfinite(x))
        semitones = speech_column(x, "speech_f0_mean")
        np.testing.assert_allclose(semitones, 12 * np.log2(f0 / 100), atol=0.5)
        assert np.all(speech_column(x, "speech_f0_std") < 1.0)
        voiced = speech_column(x, "speech_voiced_frac")
        assert np.all((voiced > 0.3) & (voiced < 0.9)), voiced  # the envelope is silent half the time
        np.testing.assert_allclose(speech_column(x, "speech_rate"), 4.0, atol=0.5)  # 4 syllables / s
        means[f0] = semitones
    assert np.all(means[250.0] > means[150.0] + 8)


def test_louder_speech_has_higher_energy():
    starts = window_starts(20)
    quiet = speech_column(speech_prosody(tone(150, 20, 0.01), SR, T0, starts, SECONDS)[0], "speech_energy_mean")
    loud = speech_column(speech_prosody(tone(150, 20, 0.1), SR, T0, starts, SECONDS)[0], "speech_energy_mean")
    np.testing.assert_allclose(loud - quiet, 20.0, atol=0.5)


@pytest.mark.parametrize("kind", ["zeros", "noise"])
def test_silence_and_noise_are_unvoiced(kind):
    starts = window_starts(20)
    rng = np.random.default_rng(0)
    audio = np.zeros(20 * SR, np.float32) if kind == "zeros" else rng.normal(0, 0.01, 20 * SR).astype(np.float32)
    x, _ = speech_prosody(audio, SR, T0, starts, SECONDS)
    np.testing.assert_array_equal(speech_column(x, "speech_voiced_frac"), 0.0)
    assert np.all(np.isnan(speech_column(x, "speech_f0_mean")))
    assert np.all(np.isnan(speech_column(x, "speech_f0_std")))


def test_speech_gap_and_short_audio():
    starts = window_starts(20)
    audio = tone(150, 20)
    audio[8 * SR:9 * SR] = np.nan
    x, _ = speech_prosody(audio, SR, T0, starts, SECONDS)
    rel = starts - T0
    # Frames span 32 ms either side of their centre, so a window touches the gap slightly early.
    touching = (rel + SECONDS > 8 - 0.04) & (rel < 9 + 0.04)
    np.testing.assert_array_equal(np.isnan(x).all(axis=1), touching)
    assert np.all(np.isfinite(x[~touching]))
    short, _ = speech_prosody(np.zeros(100, np.float32), SR, T0, starts, SECONDS)
    assert np.all(np.isnan(short))


def test_same_input_gives_identical_output():
    starts = window_starts(120)
    signals = {"acc": (np.tile([0.0, 0.0, 64.0], (120 * 32, 1)).astype(np.float32), 32, T0),
               "bvp": (ppg(80).astype(np.float32), 64, T0),
               "eda": (eda(5).astype(np.float32), 4, T0),
               "temp": (np.full((480, 1), 33.0, np.float32), 4, T0)}
    a, names_a = wearable_physio(signals, starts, SECONDS)
    b, names_b = wearable_physio(signals, starts, SECONDS)
    assert names_a == names_b and np.all(np.isfinite(a))
    np.testing.assert_array_equal(a, b)
    audio = tone(200, 20) + np.random.default_rng(0).normal(0, 0.003, 20 * SR).astype(np.float32)
    s1, _ = speech_prosody(audio, SR, T0, window_starts(20), SECONDS)
    s2, _ = speech_prosody(audio.copy(), SR, T0, window_starts(20), SECONDS)
    np.testing.assert_array_equal(s1, s2)


def test_no_beat_interval_bridges_a_short_gap():
    from kfusion.data.physio import _beat_intervals

    signal = ppg(70, variability=False)[:, 0]
    gaps = [(40.0, 40.4), (80.2, 80.7)]  # shorter than one beat: a bridged interval would look valid
    for a, b in gaps:
        signal[int(a * 64):int(b * 64)] = np.nan
    first, last, ibi = _beat_intervals(signal, 64.0)
    assert len(ibi) > 100 and np.all(np.abs(60 / ibi - 70) < 5)
    nan_cum = np.concatenate([[0], np.cumsum(np.isnan(signal))])
    assert np.all(nan_cum[last + 1] - nan_cum[first] == 0)
    # Beats exist on both sides of each gap; only the interval across it is missing.
    for a, b in gaps:
        assert np.any((last / 64 < a) & (last / 64 > a - 2)) and np.any((first / 64 > b) & (first / 64 < b + 2))
