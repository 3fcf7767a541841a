"""Window prosody of speech: pitch (f0) from a normalised autocorrelation, and voicing.

Emotion in speech lives in prosody as much as in the spectral envelope: pitch level, pitch
range and movement, how much is voiced. The MFCC levels beside the speech embedding carry the
envelope and loudness but no pitch, so every speech window also gets :data:`PROSODY_NAMES`,
computed by :func:`window_prosody` here and by
:class:`kfusion.models.feature_layers.ProsodyFrontEnd` in a phone's graph, step by step the
same (:data:`PROSODY_SETTINGS` pins every number):

1. The window's mean is removed; it is low-passed (a 31-tap Hamming-window FIR at 900 Hz, the
   window zero-padded by 15 samples on both sides) and kept every 4th sample: 4 kHz.
2. Frames of 240 samples (60 ms) every 80 (20 ms), from the start; a 4 s window has 197.
3. Per frame ``f`` starting at ``s`` and lag ``l`` of 8-80 samples (500-50 Hz): the
   normalised cross-correlation ``r / sqrt(e0 el)``, ``r = sum_t y[s+t] y[s+t+l]``,
   ``e0 = sum_t y[s+t]^2``, ``el = sum_t y[s+t+l]^2`` over the frame's 240 samples ``t``.
4. The best lag maximises the correlation weighted down linearly by 30 % over the lag range
   (a period beats its multiples, the octave errors of a plain maximum), and is refined by a
   parabola through its neighbours (not at the ends of the lag range); f0 is ``4000 / lag`` Hz,
   in semitones above 100 Hz.
5. A frame is voiced when its peak correlation is at least ``voicing_threshold``, the best lag
   is a local maximum inside the lag range (not at its ends), its energy is within
   ``silence_db`` of the window's loudest frame, and its pitch is within
   ``pitch_gate_semitones`` (an octave) of the window's pitch, the voiced frames' semitones
   weighted by their power: quiet frames whose correlation peaks at a formant's period (a
   first formant near 500 Hz) or at half or twice the period are not f0.
6. Window features over voiced frames: f0 mean and standard deviation (semitones), the voiced
   fraction, the mean peak correlation (periodicity) and the mean absolute f0 change between
   consecutive voiced frames (semitones per 20 ms); 0 where nothing is voiced.

Like the other levels they are standardised per person by calibration
(:mod:`kfusion.data.calibration`). Measured in bench/RESULTS.md ("Pitch in the speech levels").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from kfusion.modalities import AUDIO_RATE

#: Column names of :func:`window_prosody`.
PROSODY_NAMES: tuple[str, ...] = ("f0_mean", "f0_std", "voiced_fraction", "periodicity", "f0_change")


@dataclass(frozen=True)
class ProsodySettings:
    """Every number of the pitch tracker (module docstring)."""

    sample_rate: int = AUDIO_RATE
    decimation: int = 4            # 16 kHz -> 4 kHz
    fir_taps: int = 31
    fir_cutoff_hz: float = 900.0    # the lowest harmonics: fewer octave errors
    block: int = 80                # hop: 20 ms at 4 kHz
    frame_blocks: int = 3          # frame: 240 samples, 60 ms
    min_lag: int = 8               # 500 Hz
    max_lag: int = 80              # 50 Hz
    lag_penalty: float = 0.3       # best lag: of nccf * (1 - 0.3 (l - min) / (max - min))
    voicing_threshold: float = 0.7
    silence_db: float = 35.0
    pitch_gate_semitones: float = 12.0  # voiced frames further from the window's pitch: unvoiced
    reference_hz: float = 100.0    # semitone 0
    eps: float = 1e-10

    def __post_init__(self):
        if not 0 < self.min_lag < self.max_lag <= self.block:
            raise ValueError("ProsodySettings: expected 0 < min_lag < max_lag <= block (a block and the "
                             f"next hold every lag), found {self.min_lag}, {self.max_lag}, {self.block}")

    @property
    def rate(self) -> float:
        return self.sample_rate / self.decimation

    @property
    def frame(self) -> int:
        return self.block * self.frame_blocks

    @property
    def lags(self) -> np.ndarray:
        return np.arange(self.min_lag, self.max_lag + 1)

    def decimated(self, n_samples: int) -> int:
        """Samples at the low rate from ``n_samples`` at the audio rate."""
        return -(-int(n_samples) // self.decimation)

    def frames(self, n_samples: int) -> int:
        """Frames of a window of ``n_samples`` audio samples (0 if too short)."""
        usable = self.decimated(n_samples) - self.frame - self.max_lag
        return usable // self.block + 1 if usable >= 0 else 0

    def to_dict(self) -> dict:
        return asdict(self)


PROSODY_SETTINGS = ProsodySettings()


@lru_cache(maxsize=4)
def lowpass_filter(settings: ProsodySettings = PROSODY_SETTINGS) -> np.ndarray:
    """The decimation filter ``[fir_taps]`` (float64, symmetric, unit gain at 0 Hz)."""
    from scipy.signal import firwin

    return firwin(settings.fir_taps, settings.fir_cutoff_hz, fs=settings.sample_rate)


def lag_weights(settings: ProsodySettings = PROSODY_SETTINGS) -> np.ndarray:
    """``[L]`` weights of the lags when picking the best one: 1 at the shortest, falling
    linearly by ``lag_penalty`` to the longest, so a period wins over its multiples."""
    lags = settings.lags
    return 1.0 - settings.lag_penalty * (lags - lags[0]) / max(lags[-1] - lags[0], 1)


def _decimate(x: np.ndarray, settings: ProsodySettings) -> np.ndarray:
    """``[N, n]`` -> ``[N, ceil(n / decimation)]``: mean removed, then ``y[j] = sum_k h[k]
    x[d j + k - taps // 2]`` (zeros outside the window; ``h`` symmetric), computed by
    ``scipy.signal.upfirdn`` (a full convolution kept every ``d``-th sample from the right start)."""
    from scipy.signal import upfirdn

    h = lowpass_filter(settings)
    d, half = settings.decimation, settings.fir_taps // 2
    lead = (d - half % d) % d  # zeros in front so that output ``half + d j`` falls on the grid
    x = x - x.mean(axis=1, keepdims=True)
    full = upfirdn(h, np.pad(x, ((0, 0), (lead, 0))), down=d, axis=1)
    first = (half + lead) // d
    return full[:, first:first + settings.decimated(x.shape[1])]


def _prosody(audio: np.ndarray, settings: ProsodySettings) -> np.ndarray:
    """``[N, n]`` windows of the same length -> ``[N, 5]`` (float64)."""
    n_frames = settings.frames(audio.shape[1])
    if n_frames == 0:
        return np.zeros((audio.shape[0], len(PROSODY_NAMES)))
    y = _decimate(audio.astype(np.float64), settings)
    block, lags = settings.block, settings.lags
    n_blocks = n_frames + settings.frame_blocks - 1
    span = n_blocks * block

    # As the graph (ProsodyFrontEnd): sums over 80-sample blocks ``u`` and the block with the
    # next one, ``v``: r_block[l] = sum_i u[i] v[i + l] (one small matrix product per block).
    u = y[:, :span].reshape(y.shape[0], n_blocks, block)
    v = np.concatenate([u, y[:, block:span + block].reshape(y.shape[0], n_blocks, block)], axis=2)
    shifted = sliding_window_view(v, lags.size, axis=2)[:, :, lags[0]:lags[0] + block, :]  # v[i + lag]
    r = np.matmul(u[:, :, None, :], shifted)[:, :, 0, :]
    energy = np.concatenate([np.zeros(v.shape[:2] + (1,)), np.cumsum(v * v, axis=2)], axis=2)
    el = energy[:, :, lags + block] - energy[:, :, lags]

    def frame_sums(z):  # [N, blocks, ...] -> [N, F, ...]
        return sum(z[:, j:j + n_frames] for j in range(settings.frame_blocks))

    r, e0, el = frame_sums(r), frame_sums((u * u).sum(axis=2)), frame_sums(el)
    nccf = r / np.sqrt(e0[..., None] * el + settings.eps)                        # [N, F, L]
    k = (nccf * lag_weights(settings)).argmax(axis=-1)
    peak = np.take_along_axis(nccf, k[..., None], -1)[..., 0]
    below = np.take_along_axis(nccf, np.clip(k - 1, 0, lags.size - 1)[..., None], -1)[..., 0]
    above = np.take_along_axis(nccf, np.clip(k + 1, 0, lags.size - 1)[..., None], -1)[..., 0]
    curve = below - 2.0 * peak + above
    inner = (k > 0) & (k < lags.size - 1) & (curve < 0.0)
    shift = np.where(inner, 0.5 * (below - above) / np.where(inner, curve, -1.0), 0.0)
    lag = lags[k] + np.clip(shift, -0.5, 0.5)
    semitones = 12.0 * np.log2(settings.rate / lag / settings.reference_hz)
    energy_db = 10.0 * np.log10(e0 / settings.frame + settings.eps)
    voiced = (peak >= settings.voicing_threshold) & inner & (
        energy_db >= energy_db.max(axis=1, keepdims=True) - settings.silence_db)
    # The window's pitch: the voiced frames' semitones weighted by their power (loud vowels
    # carry it); frames more than an octave away are a formant or half/double period, not f0.
    power = voiced * (e0 / settings.frame)
    pitch = (power * semitones).sum(axis=1, keepdims=True) / np.maximum(power.sum(axis=1, keepdims=True), settings.eps)
    voiced &= np.abs(semitones - pitch) <= settings.pitch_gate_semitones
    weight = voiced.astype(np.float64)
    count = weight.sum(axis=1)
    per = np.maximum(count, 1.0)
    mean = (weight * semitones).sum(axis=1) / per
    std = np.sqrt((weight * (semitones - mean[:, None]) ** 2).sum(axis=1) / per)
    pairs = weight[:, 1:] * weight[:, :-1]
    change = (pairs * np.abs(np.diff(semitones, axis=1))).sum(axis=1) / np.maximum(pairs.sum(axis=1), 1.0)
    periodicity = (weight * peak).sum(axis=1) / per
    return np.stack([mean, std, count / n_frames, periodicity, change], axis=1)


def window_prosody(windows: np.ndarray, lengths: np.ndarray | None = None,
                   settings: ProsodySettings = PROSODY_SETTINGS, chunk: int = 64) -> np.ndarray:
    """Prosody ``[N, 5]`` (:data:`PROSODY_NAMES`, float32) of 16 kHz audio windows ``[N, n]``.

    ``lengths``: ``[N]`` real samples per window (zero-padded short utterances: the tracker
    sees those samples only); None = all. Windows too short for one frame give zeros."""
    windows = np.asarray(windows, dtype=np.float32).reshape(np.shape(windows)[0], -1)
    full = windows.shape[1]
    lengths = np.full(windows.shape[0], full) if lengths is None else np.clip(
        np.asarray(lengths, dtype=np.int64), 0, full)
    out = np.zeros((windows.shape[0], len(PROSODY_NAMES)))
    for size in np.unique(lengths):
        rows = np.flatnonzero(lengths == size)
        for i in range(0, rows.size, chunk):
            part = rows[i:i + chunk]
            out[part] = _prosody(windows[part, :size], settings)
    return out.astype(np.float32)


def prosody_settings() -> dict:
    """Everything about the prosody features that changes the numbers (for cache keys)."""
    return {**PROSODY_SETTINGS.to_dict(), "names": list(PROSODY_NAMES)}
