"""Per-window features: z-scored wearable windows and MFCC frames of speech.

The MFCC front end is pinned in :data:`MFCC_SETTINGS`; every number of it is listed there so
that an in-graph re-implementation (TensorFlow, for phones) can match it exactly. It is
written as explicit steps (centre padding, periodic Hann window, power spectrum, Slaney mel
filterbank, ``10 log10``, orthonormal DCT-II as a matrix) and agrees with
``librosa.feature.mfcc`` given the same settings.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.fft
import scipy.signal

from kfusion.config import FeatureConfig
from kfusion.modalities import AUDIO_RATE, N_MFCC, SPEECH

#: Standard deviations below this give an all-zero window / coefficient instead of NaN or
#: amplified noise.
ZSCORE_EPS = 1e-6


@dataclass(frozen=True)
class MfccSettings:
    """Every setting of the MFCC front end (librosa names in brackets).

    A window of ``n`` samples is padded with ``n_fft // 2`` zeros on both sides
    (``center=True``, ``pad_mode="constant"``), cut into frames of ``n_fft`` samples every
    ``hop_length`` samples, and only the first ``n // hop_length`` frames are kept: centre
    padding yields ``1 + n // hop_length`` frames (401 for 4 s at 16 kHz) and the last one,
    centred on the sample just after the window, is dropped, giving exactly 400 frames, the
    k-th centred on sample ``k * hop_length``. Each frame is multiplied by a periodic Hann
    window (``scipy.signal.get_window("hann", n_fft, fftbins=True)``), its power spectrum
    ``|rfft|^power`` (``1 + n_fft // 2 = 201`` bins) is mapped by a Slaney-style mel filterbank
    (``htk=False``, ``norm="slaney"``, ``librosa.filters.mel``), turned into decibels
    ``log_scale * log10(max(S, amin) / ref)`` with no ``top_db`` clipping, and an orthonormal
    DCT-II (``dct_type=2``, ``norm="ortho"``) keeps ``n_mfcc`` coefficients, no liftering.
    """

    sample_rate: int = AUDIO_RATE
    n_fft: int = 400            # 25 ms
    win_length: int = 400       # = n_fft: no zero padding inside a frame
    hop_length: int = 160       # 10 ms
    window: str = "hann"        # periodic (fftbins=True), as librosa
    center: bool = True
    pad_mode: str = "constant"  # zeros
    power: float = 2.0
    n_mels: int = 40
    fmin: float = 0.0
    fmax: float = 8000.0
    htk: bool = False           # Slaney mel scale
    mel_norm: str = "slaney"    # each triangle scaled to unit area in Hz
    log_scale: float = 10.0
    ref: float = 1.0
    amin: float = 1e-10
    top_db: float | None = None
    dct_type: int = 2
    dct_norm: str = "ortho"
    n_mfcc: int = N_MFCC
    lifter: float = 0.0
    dtype: str = "float32"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def frames(self, n_samples: int) -> int:
        """Frames kept for a window of ``n_samples`` (400 for 64000)."""
        return int(n_samples) // self.hop_length


MFCC_SETTINGS = MfccSettings()


@lru_cache(maxsize=4)
def mel_filterbank(settings: MfccSettings = MFCC_SETTINGS) -> np.ndarray:
    """``[n_mels, 1 + n_fft // 2]`` mel filterbank (float32)."""
    import librosa

    return librosa.filters.mel(sr=settings.sample_rate, n_fft=settings.n_fft, n_mels=settings.n_mels,
                               fmin=settings.fmin, fmax=settings.fmax, htk=settings.htk,
                               norm=settings.mel_norm, dtype=np.float32)


@lru_cache(maxsize=4)
def dct_matrix(n_mfcc: int = N_MFCC, n_mels: int = 40) -> np.ndarray:
    """``[n_mfcc, n_mels]`` orthonormal DCT-II: ``mfcc = D @ log_mel``.

    ``D[k, j] = s_k cos(pi k (2j + 1) / (2 n_mels))`` with ``s_0 = sqrt(1 / n_mels)`` and
    ``s_k = sqrt(2 / n_mels)`` otherwise (``scipy.fft.dct(type=2, norm="ortho")``).
    """
    k = np.arange(n_mfcc)[:, None]
    j = np.arange(n_mels)[None, :]
    basis = np.cos(np.pi * k * (2 * j + 1) / (2 * n_mels)) * np.sqrt(2.0 / n_mels)
    basis[0] *= np.sqrt(0.5)
    return basis.astype(np.float32)


@lru_cache(maxsize=4)
def analysis_window(settings: MfccSettings = MFCC_SETTINGS) -> np.ndarray:
    """Periodic Hann window of ``win_length`` samples, centred in ``n_fft`` (float32)."""
    window = scipy.signal.get_window(settings.window, settings.win_length, fftbins=True)
    pad = settings.n_fft - settings.win_length
    window = np.pad(window, (pad // 2, pad - pad // 2))
    return window.astype(np.float32)


def _check_settings(settings: MfccSettings) -> None:
    if not (settings.center and settings.pad_mode == "constant" and settings.dct_type == 2
            and settings.dct_norm == "ortho" and settings.lifter == 0 and settings.top_db is None):
        raise NotImplementedError("kfusion's MFCC implements center=True, pad_mode='constant', "
                                  "DCT-II ortho, lifter 0 and no top_db only")


def _one_blas_thread():
    """The small matrix products below run 5-10x slower (in CPU time) when a multithreaded BLAS
    spins up threads for them on a busy machine; keep BLAS to one thread while computing."""
    try:
        from threadpoolctl import threadpool_limits  # installed with scikit-learn
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def mfcc(audio: np.ndarray, settings: MfccSettings = MFCC_SETTINGS, chunk: int = 32) -> np.ndarray:
    """MFCCs of audio windows: ``[..., n]`` samples at 16 kHz -> ``[..., n // hop, n_mfcc]``.

    ``[64000]`` -> ``[400, 40]``; ``[N, 64000]`` -> ``[N, 400, 40]`` (float32). Windows are
    processed ``chunk`` at a time to bound memory (its speed: bench/RESULTS.md).
    """
    _check_settings(settings)
    with _one_blas_thread():
        return _mfcc(audio, settings, chunk)


def _mfcc(audio: np.ndarray, settings: MfccSettings, chunk: int) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    single = audio.ndim == 1
    batch = audio.reshape(-1, audio.shape[-1])
    n_samples = batch.shape[1]
    n_frames = settings.frames(n_samples)
    fb_t = mel_filterbank(settings).T                      # [bins, mels]
    dct_t = dct_matrix(settings.n_mfcc, settings.n_mels).T  # [mels, mfcc]
    window = analysis_window(settings)
    half = settings.n_fft // 2
    out = np.empty((batch.shape[0], n_frames, settings.n_mfcc), dtype=np.float32)
    for begin in range(0, batch.shape[0], chunk):
        part = np.pad(batch[begin:begin + chunk], ((0, 0), (half, half)))
        frames = np.lib.stride_tricks.sliding_window_view(part, settings.n_fft, axis=1)
        frames = frames[:, ::settings.hop_length][:, :n_frames] * window
        spectrum = scipy.fft.rfft(frames, n=settings.n_fft, axis=-1)
        power = np.abs(spectrum) ** settings.power if settings.power != 2.0 else (
            spectrum.real ** 2 + spectrum.imag ** 2)
        mel = power.astype(np.float32) @ fb_t
        log_mel = settings.log_scale * np.log10(np.maximum(mel, settings.amin) / settings.ref)
        out[begin:begin + chunk] = log_mel @ dct_t
    return out[0] if single else out.reshape(audio.shape[:-1] + out.shape[1:])


def zscore(windows: np.ndarray, axis: int = -2, eps: float = ZSCORE_EPS) -> np.ndarray:
    """Z-score along ``axis`` (time): ``(x - mean) / std``; a flat window -> zeros.

    ``[N, T, C]`` wearable windows are normalised per window and channel; ``[N, frames, 40]``
    MFCCs per window and coefficient (CMVN). A window counts as flat when
    ``std <= eps * (1 + max|x|)``: relative, because rounding leaves noise of ~1e-5 on MFCC
    values of ~600 in digital silence, which an absolute threshold would blow up to +-1. The
    in-graph front end (:class:`kfusion.models.feature_layers.WindowNormalization`) uses the same rule.
    """
    x = np.asarray(windows, dtype=np.float64)
    scale = np.abs(x).max(axis=axis, keepdims=True)
    x = x - np.take(x, [0], axis=axis)  # shift-invariant; a constant window becomes exact zeros
    mean = x.mean(axis=axis, keepdims=True)
    std = x.std(axis=axis, keepdims=True)
    flat = std <= eps * (1.0 + scale)
    out = (x - mean) / np.where(flat, 1.0, std)
    return np.where(flat, 0.0, out).astype(np.float32)


def wearable_features(windows: np.ndarray, norm: str = "zscore") -> np.ndarray:
    """``[N, T, C]`` raw wearable windows -> model inputs (``"zscore"`` or ``"none"``)."""
    windows = np.asarray(windows, dtype=np.float32)
    return zscore(windows, axis=1) if norm == "zscore" else windows


def speech_features(windows: np.ndarray, norm: str = "cmvn") -> np.ndarray:
    """``[N, n]`` 16 kHz audio windows -> ``[N, n // 160, 40]`` MFCCs (``"cmvn"`` or ``"none"``)."""
    coefficients = mfcc(np.asarray(windows, dtype=np.float32).reshape(-1, np.shape(windows)[-1]))
    return zscore(coefficients, axis=1) if norm == "cmvn" else coefficients


def real_steps(lengths: np.ndarray, modality: str, steps: int) -> np.ndarray:
    """Time steps of the model input ``[N]`` that hold real signal in windows with ``lengths``
    seconds of it (the rest is zero padding after a short utterance): speech frames whose
    centre lies in the real samples, wearable samples at the nominal rate; at most ``steps``."""
    from kfusion.modalities import NOMINAL_RATES

    lengths = np.asarray(lengths, dtype=np.float64)
    if modality == SPEECH:
        samples = np.rint(lengths * AUDIO_RATE).astype(np.int64)
        count = -(-samples // MFCC_SETTINGS.hop_length)
    else:
        count = np.rint(lengths * NOMINAL_RATES[modality]).astype(np.int64)
    return np.clip(count, 1, steps)


def _padded_windows(steps: np.ndarray, full: int):
    """``(row, real steps)`` of the windows that hold padding."""
    return [(int(i), int(k)) for i, k in enumerate(steps) if k < full]


def featurize(raw: dict, presence: dict, features: FeatureConfig | None = None,
              calibration: dict | None = None, lengths: np.ndarray | None = None,
              with_levels: bool = True) -> tuple[dict, dict]:
    """Model inputs and window levels per modality from raw windows
    (:class:`~kfusion.data.windows.RecordingWindows` ``raw``/``presence``).

    ``calibration``: ``{modality: ChannelStats}`` of the participant
    (:func:`kfusion.data.calibration.recording_calibration`); a modality without one is used as
    recorded. Inputs: with per-window normalisation on, the normalised window (of the raw
    values: normalisation removes any calibration); with it off, the calibrated window. Levels:
    ``[N, 2C]`` mean and log-std per channel of the calibrated window (speech: of its MFCC
    coefficients, ``2 * 40``, then with ``features.speech_prosody`` the window's
    :func:`~kfusion.data.prosody.window_prosody` and with ``features.speech_flux`` its
    :func:`~kfusion.data.spectral_flux.window_flux`, ``98`` in all), standardised by the
    statistics' level mean/std when they hold them. Windows where a modality is absent are
    zeros in both.

    ``lengths``: ``[N]`` seconds of real signal per window
    (:attr:`~kfusion.data.windows.RecordingWindows.lengths`, for zero-padded windows of short
    utterances): normalisation and levels then use the real time steps only
    (:func:`real_steps`) and the padded steps of the input are zeros; None = all real.
    ``with_levels=False``: the inputs only (levels ``{}``, no pitch tracking).
    """
    from kfusion.data.calibration import calibrate, speech_extra_names, standardize_levels, window_levels
    from kfusion.data.prosody import PROSODY_NAMES, window_prosody
    from kfusion.data.spectral_flux import FLUX_NAMES, window_flux

    features = features or FeatureConfig()
    calibration = calibration or {}
    inputs, levels = {}, {}
    for modality, block in raw.items():
        present = np.asarray(presence[modality], dtype=bool)
        stats = calibration.get(modality)
        if modality == SPEECH:
            n_frames = MFCC_SETTINGS.frames(block.shape[1])
            values = np.zeros((block.shape[0], n_frames, MFCC_SETTINGS.n_mfcc), dtype=np.float32)
            extra = len(speech_extra_names(features.speech_prosody, features.speech_flux)) if with_levels else 0
            first = 2 * MFCC_SETTINGS.n_mfcc  # the extra columns: prosody, then flux
            level = np.zeros((block.shape[0], first + extra), dtype=np.float32)
            normalise = features.speech_norm == "cmvn"
            if present.any():
                windows = mfcc(np.asarray(block[present], dtype=np.float32))
                samples = None if lengths is None else np.rint(
                    np.asarray(lengths)[present] * AUDIO_RATE).astype(np.int64)
                if extra and features.speech_prosody:
                    level[present, first:first + len(PROSODY_NAMES)] = window_prosody(
                        np.asarray(block[present]).reshape(int(present.sum()), -1), samples)
                if extra and features.speech_flux:
                    frames = None if samples is None else real_steps(np.asarray(lengths)[present], SPEECH,
                                                                     windows.shape[1])
                    level[present, first + extra - len(FLUX_NAMES):] = window_flux(windows, frames)
        else:
            values = np.zeros(block.shape, dtype=np.float32)
            level = np.zeros((block.shape[0], 2 * block.shape[2]), dtype=np.float32)
            normalise = features.wearable_norm == "zscore"
            if present.any():
                windows = np.asarray(block[present], dtype=np.float32)
        if present.any():
            calibrated = calibrate(windows, stats)
            width = 2 * calibrated.shape[-1]
            if with_levels:
                level[present, :width] = window_levels(calibrated)
            values[present] = zscore(windows, axis=1) if normalise else calibrated
            if lengths is not None:  # padded windows: their real steps only, zeros after
                rows = np.flatnonzero(present)
                steps = real_steps(np.asarray(lengths)[rows], modality, values.shape[1])
                for i, k in _padded_windows(steps, values.shape[1]):
                    real = calibrated[i:i + 1, :k]
                    if with_levels:
                        level[rows[i], :width] = window_levels(real)[0]
                    values[rows[i]] = 0.0
                    values[rows[i], :k] = (zscore(windows[i:i + 1, :k], axis=1) if normalise else real)[0]
            if with_levels:
                level[present] = standardize_levels(level[present], stats)
        inputs[modality] = values
        if with_levels:
            levels[modality] = level
    return inputs, levels


def window_features(raw: dict, presence: dict, features: FeatureConfig | None = None,
                    calibration: dict | None = None) -> dict:
    """Model inputs per modality (the first half of :func:`featurize`, without its levels)."""
    return featurize(raw, presence, features, calibration, with_levels=False)[0]


def feature_settings() -> dict:
    """Everything about feature extraction that changes the numbers (for cache keys)."""
    from importlib.metadata import PackageNotFoundError, version

    from kfusion.data.calibration import calibration_settings
    from kfusion.data.physio import PHYSIO_SETTINGS
    from kfusion.data.prosody import prosody_settings
    from kfusion.data.spectral_flux import flux_settings
    from kfusion.data.quality import quality_settings

    def installed(name):
        try:
            return version(name)
        except PackageNotFoundError:  # pragma: no cover
            return None

    return {"mfcc": MFCC_SETTINGS.to_dict(), "zscore_eps": ZSCORE_EPS, "zscore_rule": "relative",
            "calibration": calibration_settings(), "prosody": prosody_settings(), "flux": flux_settings(),
            "physio": PHYSIO_SETTINGS,
            "quality": quality_settings(),
            "physio_libraries": {"neurokit2": installed("neurokit2"), "librosa": installed("librosa")}}
