"""Windowing: starts, sample boundaries, resampling, drop reasons and zero-fill."""

from __future__ import annotations

import numpy as np
import pytest

from kfusion.config import DataConfig, WindowConfig
from kfusion.data.recording import Audio, Recording, Signal
from kfusion.data.windows import cut_windows, recording_span, resample, window_starts

T0 = 1_600_000_000.0  # a realistic UNIX time, so float error at that magnitude is exercised


def wearables(seconds: float, start: float = T0, eda_seconds: float | None = None) -> dict:
    """Ramp signals (value = sample index) at the nominal rates."""
    eda_seconds = seconds if eda_seconds is None else eda_seconds
    return {
        "acc": Signal(np.stack([np.arange(int(32 * seconds))] * 3, axis=1) * [1, 10, 100], 32, start, "ACC.csv"),
        "bvp": Signal(np.arange(int(64 * seconds)), 64, start, "BVP.csv"),
        "eda": Signal(np.arange(int(4 * eda_seconds)), 4, start, "EDA.csv"),
        "temp": Signal(np.arange(int(4 * seconds)), 4, start, "TEMP.csv"),
    }


# The ramps are sample-index markers, not physiology: the signal-quality checks (tests/test_quality.py)
# would rightly call them impossible, so these windowing tests switch them off.
E4 = DataConfig(quality_checks=False, modalities=("acc", "bvp", "eda", "temp"))


@pytest.mark.parametrize("length, expected", [
    (20.0, [0, 3, 6, 9, 12, 15]),
    (16.0, [0, 3, 6, 9, 12]),
    (18.9, [0, 3, 6, 9, 12]),
    (19.0, [0, 3, 6, 9, 12, 15]),
    (16.0 - 1e-9, [0, 3, 6, 9, 12]),  # float error tolerated
    (4.0, [0]),
    (3.9, []),
])
def test_window_starts_hand_counted(length, expected):
    starts = window_starts(T0, T0 + length, 4.0, 3.0)
    np.testing.assert_allclose(starts - T0, expected, atol=1e-6)


def test_window_starts_without_overlap_and_other_lengths():
    np.testing.assert_allclose(window_starts(0.0, 10.0, 2.0, 2.0), [0, 2, 4, 6, 8])
    np.testing.assert_allclose(window_starts(5.0, 12.0, 3.0, 1.5), [5, 6.5, 8])  # 9.5 + 3 > 12
    np.testing.assert_allclose(window_starts(5.0, 12.5, 3.0, 1.5), [5, 6.5, 8, 9.5])


def test_ramp_sample_boundaries_and_shapes():
    rec = Recording("p", signals=wearables(20.0), span=(T0, T0 + 20.0))
    w = cut_windows(rec, E4)
    assert w.total == 6 and w.kept == 6 and w.dropped == {}
    np.testing.assert_allclose(w.starts - T0, [0, 3, 6, 9, 12, 15], atol=1e-6)
    assert w.raw["acc"].shape == (6, 128, 3)
    assert w.raw["bvp"].shape == (6, 256, 1)
    assert w.raw["eda"].shape == (6, 16, 1) and w.raw["temp"].shape == (6, 16, 1)
    for k in range(6):
        # window k starts 3k s in: sample 3k*rate, n = 4*rate samples
        np.testing.assert_array_equal(w.raw["bvp"][k, :, 0], np.arange(192 * k, 192 * k + 256))
        np.testing.assert_array_equal(w.raw["eda"][k, :, 0], np.arange(12 * k, 12 * k + 16))
        np.testing.assert_array_equal(w.raw["acc"][k, :, 2], 100 * np.arange(96 * k, 96 * k + 128))
    assert all(p.all() for p in w.presence.values())


def test_signal_starting_before_the_span_is_offset():
    # BVP starts 0.5 s before the span: window 0 begins at sample round(0.5 * 64) = 32
    signals = wearables(21.0, start=T0 - 0.5)
    rec = Recording("p", signals=signals, span=(T0, T0 + 16.0))
    w = cut_windows(rec, E4)
    assert w.kept == 5
    np.testing.assert_array_equal(w.raw["bvp"][0, :, 0], np.arange(32, 32 + 256))
    np.testing.assert_array_equal(w.raw["bvp"][4, :, 0], np.arange(32 + 4 * 192, 32 + 4 * 192 + 256))
    np.testing.assert_array_equal(w.raw["eda"][1, :, 0], np.arange(2 + 12, 2 + 12 + 16))


def test_span_is_union_of_requested_coverage_without_reader_span():
    signals = wearables(10.0)
    signals["eda"] = Signal(np.arange(4 * 10), 4, T0 + 6.0, "EDA.csv")  # 6..16 s
    rec = Recording("p", signals=signals)
    assert recording_span(rec, ("bvp", "eda")) == (T0, T0 + 16.0)
    assert recording_span(rec, ("bvp",)) == (T0, T0 + 10.0)
    w = cut_windows(rec, DataConfig(quality_checks=False, modalities=("bvp", "eda")))
    # starts 0,3,6,9,12; bvp covers windows starting 0,3,6; eda covers 6,9,12
    assert w.total == 5 and w.kept == 1
    np.testing.assert_allclose(w.starts - T0, [6.0])
    assert w.dropped == {"eda not covered": 2, "bvp not covered": 2}


def test_drop_reasons_counted_by_first_failing_modality():
    signals = wearables(20.0, eda_seconds=13.0)   # eda covers windows starting 0, 3, 6, 9
    bvp = signals["bvp"].values.copy()
    bvp[int(7.5 * 64)] = np.nan                   # 7.5 s: inside windows starting 6 (and 3? no: 3..7)
    signals["bvp"] = Signal(bvp, 64, T0, "BVP.csv")
    rec = Recording("p", signals=signals, span=(T0, T0 + 20.0))
    w = cut_windows(rec, E4)
    # window starts 0,3,6,9,12,15: gap at 7.5 s hits [6,10) only; eda missing for 12, 15
    assert w.total == 6
    assert w.dropped == {"gap in bvp": 1, "eda not covered": 2}
    np.testing.assert_allclose(w.starts - T0, [0, 3, 9])
    assert w.kept + sum(w.dropped.values()) == w.total


def test_missing_modality_reason_and_fill_mode_presence():
    signals = wearables(20.0)
    del signals["eda"]
    rec = Recording("p", signals=signals, span=(T0, T0 + 20.0))
    dropped = cut_windows(rec, E4)
    assert dropped.kept == 0 and dropped.dropped == {"no eda data": 6}

    fill = DataConfig(quality_checks=False, modalities=E4.modalities, window=WindowConfig(missing="fill"))
    w = cut_windows(rec, fill)
    assert w.kept == 6 and w.dropped == {}
    assert not w.presence["eda"].any() and w.presence["bvp"].all()
    assert w.raw["eda"].shape == (6, 16, 1) and not w.raw["eda"].any()


def test_fill_mode_zero_fills_gaps_and_uncovered_windows():
    signals = wearables(20.0, eda_seconds=13.0)
    bvp = signals["bvp"].values.copy()
    bvp[int(7.5 * 64)] = np.nan
    signals["bvp"] = Signal(bvp, 64, T0, "BVP.csv")
    rec = Recording("p", signals=signals, span=(T0, T0 + 20.0))
    w = cut_windows(rec, DataConfig(quality_checks=False, modalities=E4.modalities,
                                    window=WindowConfig(missing="fill")))
    assert w.kept == 6
    np.testing.assert_array_equal(w.presence["bvp"], [True, True, False, True, True, True])
    np.testing.assert_array_equal(w.presence["eda"], [True, True, True, True, False, False])
    assert not w.raw["bvp"][2].any() and not np.isnan(w.raw["bvp"]).any()
    assert not w.raw["eda"][4:].any()
    np.testing.assert_array_equal(w.raw["bvp"][3, :, 0], np.arange(9 * 64, 9 * 64 + 256))


def test_fill_mode_drops_windows_with_no_modality_at_all():
    rec = Recording("p", signals={"eda": Signal(np.ones(4 * 8), 4, T0, "EDA.csv")}, span=(T0, T0 + 20.0))
    w = cut_windows(rec, DataConfig(quality_checks=False, modalities=("eda", "bvp"),
                                    window=WindowConfig(missing="fill")))
    assert w.total == 6 and w.kept == 2
    assert w.dropped == {"no requested modality present": 4}


def test_resample_128hz_bvp_to_64hz_keeps_the_waveform():
    t128 = np.arange(128 * 30) / 128
    bvp = np.sin(2 * np.pi * 1.2 * t128)
    rec = Recording("p", signals={"bvp": Signal(bvp, 128, T0, "BVP.csv")})
    w = cut_windows(rec, DataConfig(quality_checks=False, modalities=("bvp",)))
    assert w.raw["bvp"].shape == (9, 256, 1)
    t64 = 3.0 + np.arange(256) / 64  # window 1 starts at 3 s
    np.testing.assert_allclose(w.raw["bvp"][1, :, 0], np.sin(2 * np.pi * 1.2 * t64), atol=2e-3)


def test_resample_1000hz_skin_conductance_to_4hz_without_edge_droop():
    t = np.arange(1000 * 12) / 1000
    eda = 5.0 + 0.1 * t  # a large offset: zero padding would pull the edges towards 0
    out = resample(eda, 1000, 4)
    assert out.shape == (48,)
    np.testing.assert_allclose(out, 5.0 + 0.1 * np.arange(48) / 4, atol=1e-3)


def test_resample_keeps_gaps_local():
    values = np.sin(np.arange(128 * 20) / 10.0)
    values[1000:1064] = np.nan  # 7.8125 .. 8.3047 s at 128 Hz
    out = resample(values, 128, 64)
    nan = np.flatnonzero(np.isnan(out))
    assert nan.min() >= 499 and nan.max() <= 532          # gap 500..531 at 64 Hz, +-1 sample at most
    assert np.isfinite(out[:498]).all() and np.isfinite(out[534:]).all()
    np.testing.assert_allclose(out[:490], np.sin(np.arange(490) * 2 / 10.0), atol=2e-2)


def test_audio_is_resampled_to_16k_and_cut():
    rate = 44_100
    t = np.arange(rate * 10) / rate
    audio = Audio(0.5 * np.sin(2 * np.pi * 300 * t), rate, T0, "debate.wav")
    rec = Recording("p", audio=audio)
    w = cut_windows(rec, DataConfig(quality_checks=False, modalities=("speech",)))
    assert w.raw["speech"].shape == (3, 64000)  # starts 0, 3, 6 in 10 s
    spectrum = np.abs(np.fft.rfft(w.raw["speech"][1]))
    assert abs(np.argmax(spectrum) * 16000 / 64000 - 300) < 1
    expected = 0.5 * np.sin(2 * np.pi * 300 * (3.0 + np.arange(64000) / 16000))
    np.testing.assert_allclose(w.raw["speech"][1, 100:-100], expected[100:-100], atol=5e-3)


def test_audio_shorter_than_signals_drops_windows_as_not_covered():
    audio = Audio(np.zeros(16000 * 10), 16000, T0 + 2.0, "debate.wav")  # 2 .. 12 s
    rec = Recording("p", signals=wearables(20.0), audio=audio, span=(T0, T0 + 20.0))
    w = cut_windows(rec, DataConfig(quality_checks=False))
    # starts 0..15: audio covers [3,7) and [6,10) only ([9,13) ends past 12)
    assert w.kept == 2 and w.dropped == {"speech not covered": 4}
    np.testing.assert_allclose(w.starts - T0, [3, 6])


def test_recording_without_requested_modalities_has_no_windows():
    rec = Recording("p", signals={"bvp": Signal(np.zeros(640), 64, T0)})
    w = cut_windows(rec, DataConfig(quality_checks=False, modalities=("eda",)))
    assert w.total == 0 and w.kept == 0 and w.raw["eda"].shape == (0, 16, 1)
