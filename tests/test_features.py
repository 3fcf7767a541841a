"""Features: MFCC front end (pinned settings, librosa agreement, speed), z-score, CMVN."""

from __future__ import annotations

import dataclasses
import time

import librosa
import numpy as np
import pytest
import scipy.fft

from kfusion.config import FeatureConfig
from kfusion.data.features import (MFCC_SETTINGS, dct_matrix, mfcc, speech_features, wearable_features,
                                   window_features, zscore)

# Largest |difference| in dB-scaled cepstral units accepted against librosa (values reach ~150;
# float32 spectra differ in the last bits, observed differences are ~1e-4).
LIBROSA_ATOL = 2e-3


def librosa_reference(y: np.ndarray) -> np.ndarray:
    """librosa's MFCC with every argument set to MFCC_SETTINGS (no top_db clipping)."""
    s = MFCC_SETTINGS
    mel = librosa.feature.melspectrogram(
        y=y, sr=s.sample_rate, n_fft=s.n_fft, hop_length=s.hop_length, win_length=s.win_length,
        window=s.window, center=s.center, pad_mode=s.pad_mode, power=s.power, n_mels=s.n_mels,
        fmin=s.fmin, fmax=s.fmax, htk=s.htk, norm=s.mel_norm)
    log_mel = librosa.power_to_db(mel, ref=s.ref, amin=s.amin, top_db=s.top_db)
    coefficients = librosa.feature.mfcc(S=log_mel, n_mfcc=s.n_mfcc, dct_type=s.dct_type,
                                        norm=s.dct_norm, lifter=s.lifter)
    return coefficients.T  # [frames, n_mfcc]


def speech_like(seconds: float = 4.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    voiced = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((140, 280, 420, 1100), start=1))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 3 * t))
    return (0.2 * envelope * voiced + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def test_settings_are_pinned():
    s = MFCC_SETTINGS
    assert (s.sample_rate, s.n_fft, s.win_length, s.hop_length) == (16000, 400, 400, 160)
    assert (s.window, s.center, s.pad_mode, s.power) == ("hann", True, "constant", 2.0)
    assert (s.n_mels, s.fmin, s.fmax, s.htk, s.mel_norm) == (40, 0.0, 8000.0, False, "slaney")
    assert (s.log_scale, s.ref, s.amin, s.top_db) == (10.0, 1.0, 1e-10, None)
    assert (s.dct_type, s.dct_norm, s.n_mfcc, s.lifter) == (2, "ortho", 40, 0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.n_fft = 512  # frozen


def test_mfcc_shape_400_by_40_and_batches():
    assert mfcc(speech_like()).shape == (400, 40)
    batch = np.stack([speech_like(seed=k) for k in range(3)])
    out = mfcc(batch, chunk=2)
    assert out.shape == (3, 400, 40) and out.dtype == np.float32
    np.testing.assert_allclose(out[2], mfcc(batch[2]), atol=1e-4)


@pytest.mark.parametrize("signal", ["speech", "noise", "silence", "short-burst"])
def test_mfcc_matches_librosa(signal):
    rng = np.random.default_rng(1)
    y = {"speech": speech_like(),
         "noise": (0.3 * rng.standard_normal(64000)).astype(np.float32),
         "silence": np.zeros(64000, np.float32),
         "short-burst": np.pad(speech_like(0.5), (20000, 64000 - 20000 - 8000))}[signal]
    ours = mfcc(y)
    reference = librosa_reference(y)
    assert reference.shape == (401, 40)  # centre padding: 1 + 64000 // 160 frames
    np.testing.assert_allclose(ours, reference[:400], atol=LIBROSA_ATOL, rtol=0)


def test_dct_matrix_is_scipy_ortho_dct2():
    x = np.random.default_rng(2).standard_normal((5, 40))
    np.testing.assert_allclose(x @ dct_matrix().T, scipy.fft.dct(x, type=2, norm="ortho", axis=1),
                               atol=1e-5)


def test_zscore_per_window_and_channel():
    rng = np.random.default_rng(3)
    x = rng.normal(5.0, 3.0, size=(4, 128, 3)).astype(np.float32)
    x[1, :, 2] = 7.0        # constant channel -> zeros, not NaN
    x[2] *= 100.0           # scale of one window must not affect the others
    z = wearable_features(x, "zscore")
    assert z.shape == x.shape and np.isfinite(z).all()
    np.testing.assert_allclose(z[1, :, 2], 0.0)
    mask = np.ones((4, 3), bool)
    mask[1, 2] = False
    np.testing.assert_allclose(z.mean(axis=1)[mask], 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=1)[mask], 1.0, atol=1e-4)
    expected = (x[0, :, 0] - x[0, :, 0].mean()) / x[0, :, 0].std()
    np.testing.assert_allclose(z[0, :, 0], expected, atol=1e-5)
    np.testing.assert_array_equal(wearable_features(x, "none"), x)


def test_cmvn_per_coefficient_over_frames():
    batch = np.stack([speech_like(seed=k) for k in range(2)])
    normalised = speech_features(batch, "cmvn")
    raw = speech_features(batch, "none")
    np.testing.assert_allclose(raw, mfcc(batch), atol=1e-5)
    np.testing.assert_allclose(normalised.mean(axis=1), 0.0, atol=1e-4)
    np.testing.assert_allclose(normalised.std(axis=1), 1.0, atol=1e-3)
    np.testing.assert_allclose(normalised, zscore(raw, axis=1), atol=1e-6)


def test_window_features_zero_where_absent():
    rng = np.random.default_rng(4)
    raw = {"speech": rng.standard_normal((3, 64000)).astype(np.float32) * 0.1,
           "eda": rng.standard_normal((3, 16, 1)).astype(np.float32)}
    presence = {"speech": np.array([True, False, True]), "eda": np.array([False, True, True])}
    out = window_features(raw, presence, FeatureConfig())
    assert out["speech"].shape == (3, 400, 40) and out["eda"].shape == (3, 16, 1)
    assert not out["speech"][1].any() and out["speech"][0].any()
    assert not out["eda"][0].any() and out["eda"][1].any()


def test_mfcc_speed_per_window():
    """5600 windows (28 participants x 10 min) must take well under a minute on one core."""
    batch = np.random.default_rng(5).standard_normal((100, 64000)).astype(np.float32) * 0.1
    mfcc(batch[:2])  # warm up (filterbank, FFT plans)
    begin = time.process_time()
    mfcc(batch)
    per_window = (time.process_time() - begin) / 100
    # measured ~1 ms of CPU per window (about 6 s for 5600); 8 ms would still be 45 s
    assert per_window < 8e-3, f"{per_window * 1e3:.1f} ms per window"
