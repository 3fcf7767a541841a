"""The in-graph feature front end shared by training and export: MFCCs and per-window
normalisation as Keras layers.

:class:`MfccFrontEnd` computes the MFCCs of :func:`kfusion.data.features.mfcc` with TFLite
builtin operations only, its constants taken from :mod:`kfusion.data.features`
(``MFCC_SETTINGS``, ``analysis_window``, ``mel_filterbank``, ``dct_matrix``), so there is one
definition of the features. :class:`WindowNormalization` is
:func:`kfusion.data.features.zscore` (per window, along time): CMVN for speech, z-score for the
wearables. A model trained on raw buffers puts them in front of its encoders; an exported
features-input model gets them from :func:`kfusion.export.raw_inputs.raw_input_model`.

How the spectrum is computed (``MfccFrontEnd(method=...)``; sizes and speed in
bench/RESULTS.md, "Phones: factored-DFT front end"):

- ``"fft"`` (default): one step of a mixed-radix (Cooley-Tukey) FFT written as two small
  constant matrix products. ``n_fft = N1 * N2`` (400 = 20 x 20, ``N1`` dividing the hop), the
  frame read as ``x[n1 + N1 n2]``; ``Y[n1, k2] = sum_n2 x[n1 + N1 n2] W_N2^(n2 k2)`` for every
  ``n1`` (one ``[N2, 2 N2]`` matrix), then ``X[N2 k1 + k2] = sum_n1 Y[n1, k2] W_N^(n1 (N2 k1 +
  k2))`` for every ``k2`` (a batched product with ``[N2, 2 N1, 2 K1]`` matrices, the twiddle
  factors folded in). About 32 k multiply-adds per frame (13 M per 4 s window) and ~110 KB of
  constants (window, both products, mel, DCT), against 80 k and ~360 KB for the DFT matrix.
- ``"dft"``: the previous design, the real DFT as two ``[N/2, N/2 + 1]`` matrices. A frame
  windowed by a symmetric window (``w[n] == w[N - n]``) splits into an even and an odd half,
  ``Re X[k] = sum_n w[n] (x[n] + x[N-n]) cos(2 pi k n / N)`` and
  ``Im X[k] = -sum_n w[n] (x[n] - x[N-n]) sin(2 pi k n / N)`` over ``n <= N/2`` (32 M
  multiply-adds per 4 s window). Kept for comparison (``bench/export.py``) and for a runtime
  or delegate without BATCH_MATMUL or 5-D TRANSPOSE.

Not ``tf.signal``: TFLite's builtin RFFT2D takes power-of-two lengths only (``n_fft`` is 400)
and, measured with ``n_fft`` 512, takes ~1.4 ms per window on one x86 core (its kernel
transforms each frame on its own, in double precision), three times the DFT matrix;
``tf.signal.mfccs_from_log_mel_spectrograms`` needs Flex ops.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from kfusion.data.calibration import LEVEL_EPS
from kfusion.data.features import (
    MFCC_SETTINGS,
    ZSCORE_EPS,
    MfccSettings,
    analysis_window,
    dct_matrix,
    mel_filterbank,
)
from kfusion.data.prosody import PROSODY_NAMES, PROSODY_SETTINGS, lag_weights, lowpass_filter
from kfusion.data.spectral_flux import FLUX_COEFFICIENTS
from kfusion import checks
from kfusion.errors import ConfigError

PACKAGE = "kfusion"

__all__ = ["MfccFrontEnd", "WindowNormalization", "CalibratedLevels", "ProsodyFrontEnd", "SpectralFlux",
           "dft_matrices", "fft_factors",
           "fft_matrices", "FRONT_END_LAYERS", "FRONT_END_METHODS"]

#: Ways :class:`MfccFrontEnd` computes the spectrum (module docstring).
FRONT_END_METHODS = ("fft", "dft")


def _check_settings(settings: MfccSettings, method: str) -> None:
    if not (settings.center and settings.pad_mode == "constant" and settings.dct_type == 2
            and settings.dct_norm == "ortho" and settings.lifter == 0 and settings.top_db is None
            and settings.n_fft % 2 == 0):
        raise ConfigError("MfccFrontEnd: implements center=True, pad_mode='constant', an even "
                          "n_fft, DCT-II ortho, lifter 0 and no top_db only")
    if method == "fft" and fft_factors(settings) is None:
        raise ConfigError(f"MfccFrontEnd: method 'fft' needs n_fft ({settings.n_fft}) to be a product "
                          f"N1 * N2 (both >= 2) with N1 dividing the hop ({settings.hop_length}); use 'dft'")
    window = analysis_window(settings)
    if method == "dft" and not np.allclose(window[1:], window[:0:-1], atol=1e-7):
        raise ConfigError("MfccFrontEnd: the analysis window must be symmetric (w[n] == w[N-n])")


def fft_factors(settings: MfccSettings = MFCC_SETTINGS) -> tuple[int, int] | None:
    """``(N1, N2)`` with ``n_fft = N1 * N2``, ``N1`` dividing the hop (so every frame starts on
    a block of ``N1`` samples) and ``N1 + N2`` smallest (the work is ~``2 n_fft (N1 + N2)``
    multiply-adds per frame); None when there is none. ``(20, 20)`` for 400 / 160."""
    n, hop = settings.n_fft, settings.hop_length
    found = [(n1 + n // n1, -n1, n1) for n1 in range(2, n // 2 + 1) if n % n1 == 0 and hop % n1 == 0]
    if not found:
        return None
    n1 = min(found)[2]
    return n1, n // n1


def fft_matrices(settings: MfccSettings = MFCC_SETTINGS, n_bins: int | None = None) -> dict[str, np.ndarray]:
    """The constants of the factored DFT (``method="fft"``), float32, for ``(N1, N2) =
    fft_factors(settings)`` and ``K1 = ceil(n_bins / N2)``, enough for DFT bins
    ``0 .. n_bins - 1`` (default ``n_fft // 2 + 1``, all of them):

    - ``window [N1, 1, N2]``: ``w[n1 + N1 n2]``;
    - ``first [N2, 2 N2]``: ``[cos, -sin](2 pi n2 k2 / N2)``, so ``frame_n1 @ first`` is
      ``[Re, Im] Y[n1, k2]``;
    - ``second [N2, 2 N1, 2 K1]``: per ``k2``, ``[Re Y, Im Y] (over n1) @ second[k2]`` is
      ``[Re, Im] X[N2 k1 + k2]`` (``theta = -2 pi n1 (N2 k1 + k2) / n_fft``: rows ``Re Y`` ->
      ``[cos, sin]``, rows ``Im Y`` -> ``[-sin, cos]``);
    - ``bins [N2 * K1]``: the DFT bin ``N2 k1 + k2`` of column ``k2 K1 + k1`` of the power
      spectrum (bins from ``n_bins`` on are computed and left out by the mel matrix).
    """
    n_fft = settings.n_fft
    n1_count, n2_count = fft_factors(settings)
    n_bins = n_fft // 2 + 1 if n_bins is None else int(n_bins)
    k1_count = -(-n_bins // n2_count)
    window = analysis_window(settings).astype(np.float64)
    n1 = np.arange(n1_count)
    n2 = np.arange(n2_count)
    framed = window[n1[:, None] + n1_count * n2[None, :]][:, None, :]          # [N1, 1, N2]
    angle = 2 * np.pi * ((n2[:, None] * n2[None, :]) % n2_count) / n2_count
    first = np.concatenate([np.cos(angle), -np.sin(angle)], axis=1)            # [N2, 2 N2]
    k1 = np.arange(k1_count)
    bins = n2_count * k1[None, :] + n2[:, None]                                  # [k2, k1]
    theta = -2 * np.pi * ((n1[None, :, None] * bins[:, None, :]) % n_fft) / n_fft  # [k2, n1, k1]
    cos, sin = np.cos(theta), np.sin(theta)
    second = np.concatenate([np.concatenate([cos, sin], axis=2),
                             np.concatenate([-sin, cos], axis=2)], axis=1)       # [N2, 2 N1, 2 K1]
    return {"window": framed.astype(np.float32), "first": first.astype(np.float32),
            "second": second.astype(np.float32), "bins": bins.reshape(-1)}


def dft_matrices(settings: MfccSettings = MFCC_SETTINGS) -> tuple[np.ndarray, np.ndarray]:
    """``(cos_part [N/2 + 1, bins], sin_part [N/2 - 1, bins])`` float32, the window folded in.

    ``re = [x[0], x[n] + x[N-n] (n = 1..N/2-1), x[N/2]] @ cos_part`` and
    ``im = [x[n] - x[N-n] (n = 1..N/2-1)] @ sin_part`` give the real DFT of the windowed frame
    (the sign of ``im`` does not matter for the power spectrum).
    """
    n_fft = settings.n_fft
    half = n_fft // 2
    bins = np.arange(half + 1)[None, :]
    window = analysis_window(settings).astype(np.float64)
    n_even = np.arange(half + 1)[:, None]
    cos_part = window[n_even] * np.cos(2 * np.pi * ((n_even * bins) % n_fft) / n_fft)
    n_odd = np.arange(1, half)[:, None]
    sin_part = window[n_odd] * np.sin(2 * np.pi * ((n_odd * bins) % n_fft) / n_fft)
    return cos_part.astype(np.float32), sin_part.astype(np.float32)


@keras.saving.register_keras_serializable(package=PACKAGE)
class MfccFrontEnd(keras.layers.Layer):
    """MFCCs of raw audio windows: ``[B, n_samples]`` float32 in [-1, 1] at 16 kHz ->
    ``[B, n_samples // hop, n_mfcc]`` (``[B, 64000] -> [B, 400, 40]``), equal to
    :func:`kfusion.data.features.mfcc` up to float32 rounding.

    Builtin TFLite operations only: pad, reshape, transpose, strided slices, concatenation,
    fully connected / batch matmul (products with constant matrices), mul/add, maximum, log.
    ``method``: ``"fft"`` (default, a factored DFT) or ``"dft"`` (the DFT as one matrix, the
    previous design); both give the same MFCCs up to float32 rounding (module docstring).
    Every setting is :data:`MFCC_SETTINGS`; ``settings`` (stored in the layer config) only
    guards a saved model: loading one built with other settings raises ConfigError.
    """

    def __init__(self, settings: dict | None = None, method: str = "fft", **kwargs):
        super().__init__(**kwargs)
        self.method = checks.choice("MfccFrontEnd: method", method, FRONT_END_METHODS)
        if settings is not None and dict(settings) != MFCC_SETTINGS.to_dict():
            changed = sorted(k for k in set(settings) | set(MFCC_SETTINGS.to_dict())
                             if dict(settings).get(k) != MFCC_SETTINGS.to_dict().get(k))
            raise ConfigError(f"MfccFrontEnd: this layer was built with other MFCC settings than "
                              f"this kfusion's MFCC_SETTINGS (differing: {', '.join(changed)}); "
                              "its model expects other features")
        settings = MFCC_SETTINGS
        _check_settings(settings, self.method)
        self.settings = settings
        mel_t = mel_filterbank(settings).T                                       # [bins, mels]
        if self.method == "dft":
            self._cos, self._sin = dft_matrices(settings)
            self._mel = np.ascontiguousarray(mel_t)
        else:
            # Only the bins the mel filterbank uses (for 0-8 kHz it gives the Nyquist bin no
            # weight: 200 bins, K1 = 10, instead of 201 and 11).
            used = np.flatnonzero(np.abs(mel_t).max(axis=1) > 0)
            self._fft = fft_matrices(settings, n_bins=int(used.max()) + 1 if used.size else 1)
            bins = self._fft["bins"]
            valid = bins <= settings.n_fft // 2
            mel = np.zeros((bins.size, mel_t.shape[1]), dtype=np.float32)       # rows in FFT order
            mel[valid] = mel_t[bins[valid]]
            self._mel = mel
        # 10 log10(S / ref) = (10 / ln 10) (ln S - ln ref): the scale goes into the DCT.
        scale = settings.log_scale / math.log(10.0)
        dct_t = dct_matrix(settings.n_mfcc, settings.n_mels).T.astype(np.float64)  # [mels, mfcc]
        self._dct = (scale * dct_t).astype(np.float32)
        self._offset = (scale * math.log(settings.ref) * dct_t.sum(axis=0)).astype(np.float32)

    def _frames_and_chunks(self, n_samples: int) -> tuple[int, int, int]:
        s = self.settings
        n_frames = s.frames(n_samples)
        chunks = n_frames - 1 + -(-s.n_fft // s.hop_length)          # ceil(n_fft / hop) more
        return n_frames, chunks, chunks * s.hop_length

    def build(self, input_shape):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ConfigError(f"MfccFrontEnd: expected inputs [batch, samples] with a known number "
                              f"of samples, found {tuple(input_shape)}")
        if input_shape[-1] < self.settings.hop_length:
            raise ConfigError(f"MfccFrontEnd: expected at least {self.settings.hop_length} samples "
                              f"per window, found {input_shape[-1]}")

    def _padded(self, audio):
        """Centre padding with zeros (and zeros after it up to a whole number of hops):
        ``[B, chunks * hop]``, frame ``k`` = samples ``[k hop, k hop + n_fft)``."""
        s = self.settings
        n_samples = audio.shape[-1]
        _, _, needed = self._frames_and_chunks(n_samples)
        half = s.n_fft // 2
        padded = ops.pad(ops.cast(audio, "float32"), [[0, 0], [half, max(needed - n_samples - half, half)]])
        return padded[:, :needed]

    def _power_fft(self, audio):
        """Power spectrum ``[B, F, N2 * K1]`` (columns in FFT order) by the factored DFT."""
        s = self.settings
        n_frames, chunks, _ = self._frames_and_chunks(audio.shape[-1])
        n1, n2 = fft_factors(s)
        k1 = self._fft["second"].shape[-1] // 2
        per_hop = s.hop_length // n1
        # Blocks of N1 samples, transposed once: blocks[b, n1, m] = padded[b, N1 m + n1].
        blocks = ops.reshape(self._padded(audio), (-1, chunks * per_hop, n1))
        blocks = ops.reshape(ops.transpose(blocks, (0, 2, 1)), (-1, n1, chunks, per_hop))
        # Frame k, row n1 = x_k[n1 + N1 n2], n2 = 0..N2-1: blocks k * per_hop ... (whole hops, then a part).
        whole, rest = divmod(n2, per_hop)
        parts = [blocks[:, :, j:j + n_frames, :] for j in range(whole)]
        if rest:
            parts.append(blocks[:, :, whole:whole + n_frames, :rest])
        frames = ops.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]  # [B, N1, F, N2]
        frames = frames * ops.convert_to_tensor(self._fft["window"])
        first = ops.matmul(frames, ops.convert_to_tensor(self._fft["first"]))     # [B, N1, F, 2 N2]
        first = ops.reshape(first, (-1, n1, n_frames, 2, n2))
        first = ops.reshape(ops.transpose(first, (4, 0, 2, 3, 1)), (n2, -1, 2 * n1))  # [N2, B F, 2 N1]
        spectrum = ops.matmul(first, ops.convert_to_tensor(self._fft["second"]))  # [N2, B F, 2 K1]
        real, imag = spectrum[:, :, :k1], spectrum[:, :, k1:]
        power = ops.transpose(real * real + imag * imag, (1, 0, 2))              # [B F, N2, K1]
        return ops.reshape(power, (-1, n_frames, n2 * k1))

    def _power_dft(self, audio):
        """Power spectrum ``[B, F, 1 + n_fft // 2]`` by the DFT matrices."""
        s = self.settings
        n_frames, chunks, _ = self._frames_and_chunks(audio.shape[-1])
        half, hop = s.n_fft // 2, s.hop_length
        blocks = ops.reshape(self._padded(audio), (-1, chunks, hop))
        # Frame k = samples [k hop, k hop + n_fft) = whole chunks k, k+1, ... and part of one more.
        whole, rest = divmod(s.n_fft, hop)
        parts = [blocks[:, j:j + n_frames, :] for j in range(whole)]
        if rest:
            parts.append(blocks[:, whole:whole + n_frames, :rest])
        frames = ops.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]  # [B, F, n_fft]
        head = frames[:, :, 1:half]                                   # x[n],     n = 1..N/2-1
        tail = ops.flip(frames[:, :, half + 1:], axis=-1)             # x[N - n], n = 1..N/2-1
        even = ops.concatenate([frames[:, :, :1], head + tail, frames[:, :, half:half + 1]], axis=-1)
        odd = head - tail
        real = ops.matmul(even, ops.convert_to_tensor(self._cos))
        imag = ops.matmul(odd, ops.convert_to_tensor(self._sin))
        return real * real + imag * imag

    def call(self, audio):
        s = self.settings
        power = self._power_fft(audio) if self.method == "fft" else self._power_dft(audio)
        if s.power != 2.0:
            power = ops.power(power, s.power / 2.0)
        mel = ops.matmul(power, ops.convert_to_tensor(self._mel))
        log_mel = ops.log(ops.maximum(mel, s.amin))
        out = ops.matmul(log_mel, ops.convert_to_tensor(self._dct))
        if np.any(self._offset):
            out = out - ops.convert_to_tensor(self._offset)
        return out

    def compute_output_shape(self, input_shape):
        n_samples = input_shape[-1]
        return (input_shape[0], self.settings.frames(n_samples), self.settings.n_mfcc)

    def get_config(self):
        return {**super().get_config(), "settings": self.settings.to_dict(), "method": self.method}


@keras.saving.register_keras_serializable(package=PACKAGE)
class WindowNormalization(keras.layers.Layer):
    """Per-window z-score along time: ``[B, T, C] -> [B, T, C]``, each window and channel
    ``(x - mean) / std`` over its ``T`` steps, all zeros where the window is flat
    (``std <= eps * (1 + max|x|)``) — the same rule as :func:`kfusion.data.features.zscore`
    (speech MFCCs: CMVN; wearables: z-score)."""

    def __init__(self, eps: float = ZSCORE_EPS, **kwargs):
        super().__init__(**kwargs)
        self.eps = checks.positive("WindowNormalization: eps", eps)

    def build(self, input_shape):
        if len(input_shape) != 3:
            raise ConfigError(f"WindowNormalization: expected inputs [batch, time, channels], "
                              f"found {tuple(input_shape)}")

    def call(self, x):
        x = ops.cast(x, "float32")
        scale = ops.max(ops.abs(x), axis=1, keepdims=True)
        # The z-score does not change when a constant is subtracted. Subtracting the first
        # sample makes a constant window exactly zero (a float32 mean of equal values is not
        # always exact, and 1/std would blow its rounding up to +-1) and removes large offsets
        # (33 °C) before summing.
        x = x - x[:, :1, :]
        mean = ops.mean(x, axis=1, keepdims=True)
        centred = x - mean
        std = ops.sqrt(ops.mean(centred * centred, axis=1, keepdims=True))
        flat = std <= self.eps * (1.0 + scale)
        return ops.where(flat, 0.0, centred / ops.where(flat, 1.0, std))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "eps": self.eps}


@keras.saving.register_keras_serializable(package=PACKAGE)
class CalibratedLevels(keras.layers.Layer):
    """A window's calibrated level: ``(x [B, T, C], calibration [B, R, C])`` -> ``[B, 2C]``.

    ``calibration`` rows (:meth:`kfusion.data.calibration.ChannelStats.rows`) are the person's
    mean and standard deviation per channel; the window is standardised by them, then its mean
    and ``log(std + eps)`` over time are returned per channel — the same numbers as
    :func:`kfusion.data.calibration.window_levels` of the calibrated window. With ``R = 6`` the
    level is then standardised by rows 2-3 (level mean: means half, log-std half) and 4-5
    (level std), as :func:`kfusion.data.calibration.standardize_levels`; ``R = 2``: files
    exported before level standardisation.
    """

    def __init__(self, eps: float = LEVEL_EPS, **kwargs):
        super().__init__(**kwargs)
        self.eps = checks.positive("CalibratedLevels: eps", eps)

    def call(self, x, calibration):
        x = ops.cast(x, "float32")
        calibration = ops.cast(calibration, "float32")
        y = (x - calibration[:, :1, :]) / calibration[:, 1:2, :]
        mean = ops.mean(y, axis=1)
        centred = y - ops.expand_dims(mean, 1)
        std = ops.sqrt(ops.mean(centred * centred, axis=1))
        level = ops.concatenate([mean, ops.log(std + self.eps)], axis=-1)
        if calibration.shape[1] is not None and calibration.shape[1] >= 6:
            level_mean = ops.concatenate([calibration[:, 2, :], calibration[:, 3, :]], axis=-1)
            level_std = ops.concatenate([calibration[:, 4, :], calibration[:, 5, :]], axis=-1)
            level = (level - level_mean) / level_std
        return level

    def compute_output_shape(self, x_shape, calibration_shape):
        return (x_shape[0], 2 * x_shape[-1])

    def get_config(self):
        return {**super().get_config(), "eps": self.eps}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ProsodyFrontEnd(keras.layers.Layer):
    """Window prosody of raw audio: ``audio [B, n]`` (16 kHz, [-1, 1]) and optionally
    ``calibration [B, R, C]`` -> ``[B, 5]`` (:data:`kfusion.data.prosody.PROSODY_NAMES`), the
    numbers of :func:`kfusion.data.prosody.window_prosody` up to float32 rounding (a frame
    whose correlation sits on the voicing threshold or between two lags can fall the other
    way). With ``R >= 8`` calibration rows (:meth:`ChannelStats.rows`), the features are
    standardised by rows 6 and 7 (the person's prosody level mean and std).

    Builtin TFLite operations only: pad, a strided 1-D convolution (the decimation filter),
    strided slices, reshape, concatenation, mul/add/sum, sqrt, log, max, cumulative sums,
    comparisons. Each frame's sums are three 80-sample block sums.
    ``settings`` (stored in the config) guards a saved model as :class:`MfccFrontEnd` does.
    """

    def __init__(self, settings: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        if settings is not None and dict(settings) != PROSODY_SETTINGS.to_dict():
            raise ConfigError("ProsodyFrontEnd: this layer was built with other prosody settings than "
                              "this kfusion's PROSODY_SETTINGS; its model expects other features")
        self.settings = PROSODY_SETTINGS
        self._filter = lowpass_filter(self.settings).astype(np.float32).reshape(-1, 1, 1)
        self._lag_weights = lag_weights(self.settings).astype(np.float32)

    def build(self, audio_shape, calibration_shape=None):
        if len(audio_shape) != 2 or audio_shape[-1] is None:
            raise ConfigError(f"ProsodyFrontEnd: expected audio [batch, samples] with a known number "
                              f"of samples, found {tuple(audio_shape)}")
        if self.settings.frames(audio_shape[-1]) < 1:
            raise ConfigError(f"ProsodyFrontEnd: a window of {audio_shape[-1]} samples is too short "
                              "for one pitch frame")

    def _correlations(self, y, n_blocks: int, n_frames: int):
        """``r [B, F, L]``, ``e0 [B, F]``, ``el [B, F, L]`` of the 4 kHz signal ``y``, as sums
        over 80-sample blocks: block ``u`` and it with the next block, ``v``, give
        ``r_block[l] = sum_i u[i] v[i + l]`` as one small multiply-add per sample of the block
        (4x faster in LiteRT than one product tensor over every lag, bench/RESULTS.md) and
        ``el`` from a cumulative sum over the 160 values of ``v^2`` (short: exact enough)."""
        s = self.settings
        block, low, high = s.block, int(s.lags[0]), int(s.lags[-1])
        span = n_blocks * block
        u = ops.reshape(y[:, :span], (-1, n_blocks, block))
        v = ops.concatenate([u, ops.reshape(y[:, block:span + block], (-1, n_blocks, block))], axis=-1)
        r = sum(u[:, :, i:i + 1] * v[:, :, i + low:i + high + 1] for i in range(block))
        energy = ops.cumsum(ops.concatenate([ops.zeros_like(v[:, :, :1]), v * v], axis=-1), axis=-1)
        el = energy[:, :, low + block:high + block + 1] - energy[:, :, low:high + 1]

        def frame_sums(z):  # [B, blocks, ...] -> [B, F, ...]: a frame is frame_blocks blocks
            return sum(z[:, j:j + n_frames] for j in range(s.frame_blocks))

        return frame_sums(r), frame_sums(ops.sum(u * u, axis=-1)), frame_sums(el)

    def call(self, audio, calibration=None):
        s = self.settings
        x = ops.cast(audio, "float32")
        n = x.shape[-1]
        n_frames = s.frames(n)
        n_blocks = n_frames + s.frame_blocks - 1
        lags = [int(v) for v in s.lags]
        x = x - ops.mean(x, axis=1, keepdims=True)
        half = s.fir_taps // 2
        x = ops.pad(x, [[0, 0], [half, half]])
        y = ops.conv(ops.expand_dims(x, -1), ops.convert_to_tensor(self._filter), strides=s.decimation,
                     padding="valid")[..., 0]                                      # [B, ceil(n / 4)]
        r, e0, el = self._correlations(y, n_blocks, n_frames)
        nccf = r / ops.sqrt(ops.expand_dims(e0, -1) * el + s.eps)                  # [B, F, L]
        # The first best lag as a one-hot mask (as numpy's argmax; Keras' argmax brings a
        # BitwiseAnd that is no TFLite builtin): the maxima, then only the first of them.
        score = nccf * ops.convert_to_tensor(self._lag_weights)
        best = ops.cast(score >= ops.max(score, axis=-1, keepdims=True), "float32")
        pick = best * ops.cast(ops.cumsum(best, axis=-1) <= 1.0, "float32")
        peak = ops.sum(nccf * pick, axis=-1)
        below = ops.sum(ops.concatenate([nccf[..., :1], nccf[..., :-1]], axis=-1) * pick, axis=-1)
        above = ops.sum(ops.concatenate([nccf[..., 1:], nccf[..., -1:]], axis=-1) * pick, axis=-1)
        curve = below - 2.0 * peak + above
        edge = pick[..., 0] + pick[..., -1]
        inner = ops.cast(curve < 0.0, "float32") * (1.0 - edge)
        shift = inner * 0.5 * (below - above) / ops.where(inner > 0.0, curve, -1.0)
        lag = ops.sum(pick * ops.convert_to_tensor(np.asarray(lags, np.float32)), axis=-1) + ops.clip(shift, -0.5, 0.5)
        semitones = (12.0 / math.log(2.0)) * ops.log(s.rate / s.reference_hz / lag)
        energy_db = (10.0 / math.log(10.0)) * ops.log(e0 / s.frame + s.eps)
        loud = ops.max(energy_db, axis=1, keepdims=True) - s.silence_db
        v = ops.cast(peak >= s.voicing_threshold, "float32") * ops.cast(energy_db >= loud, "float32") * inner
        # frames more than pitch_gate_semitones from the window's power-weighted pitch: unvoiced
        power = v * e0 / s.frame
        pitch = ops.sum(power * semitones, axis=1, keepdims=True) / ops.maximum(
            ops.sum(power, axis=1, keepdims=True), s.eps)
        v = v * ops.cast(ops.abs(semitones - pitch) <= s.pitch_gate_semitones, "float32")
        count = ops.sum(v, axis=1)
        per = ops.maximum(count, 1.0)
        mean = ops.sum(v * semitones, axis=1) / per
        centred = semitones - ops.expand_dims(mean, 1)
        std = ops.sqrt(ops.sum(v * centred * centred, axis=1) / per)
        pairs = v[:, 1:] * v[:, :-1]
        change = ops.sum(pairs * ops.abs(semitones[:, 1:] - semitones[:, :-1]), axis=1) / ops.maximum(
            ops.sum(pairs, axis=1), 1.0)
        periodicity = ops.sum(v * peak, axis=1) / per
        out = ops.stack([mean, std, count / n_frames, periodicity, change], axis=-1)
        if calibration is not None and calibration.shape[1] is not None and calibration.shape[1] >= 8:
            width = len(PROSODY_NAMES)
            calibration = ops.cast(calibration, "float32")
            out = (out - calibration[:, 6, :width]) / calibration[:, 7, :width]
        return out

    def compute_output_shape(self, audio_shape, calibration_shape=None):
        return (audio_shape[0], len(PROSODY_NAMES))

    def get_config(self):
        return {**super().get_config(), "settings": self.settings.to_dict()}


@keras.saving.register_keras_serializable(package=PACKAGE)
class SpectralFlux(keras.layers.Layer):
    """Cepstral flux of CMVN'd MFCC windows: ``z [B, T, C]`` (:class:`WindowNormalization` of
    :class:`MfccFrontEnd`'s output) and optionally ``calibration [B, R, C]`` -> ``[B, 13]``
    (:data:`kfusion.data.spectral_flux.FLUX_NAMES`), the mean absolute frame-to-frame change of
    coefficients 0-12, as :func:`kfusion.data.spectral_flux.window_flux`. With ``R >= 8``
    calibration rows the flux is standardised by rows 6 and 7, columns ``offset`` to
    ``offset + 13`` (after the prosody's 5 when the levels hold prosody)."""

    def __init__(self, offset: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.offset = checks.whole("SpectralFlux: offset", offset, 0)

    def build(self, z_shape, calibration_shape=None):
        if len(z_shape) != 3 or z_shape[-1] is None or z_shape[-1] < FLUX_COEFFICIENTS or (z_shape[1] or 2) < 2:
            raise ConfigError(f"SpectralFlux: expected MFCC windows [batch, frames >= 2, >= {FLUX_COEFFICIENTS}], "
                              f"found {tuple(z_shape)}")

    def call(self, z, calibration=None):
        z = ops.cast(z[:, :, :FLUX_COEFFICIENTS], "float32")
        out = ops.mean(ops.abs(z[:, 1:] - z[:, :-1]), axis=1)
        if calibration is not None and calibration.shape[1] is not None and calibration.shape[1] >= 8:
            calibration = ops.cast(calibration, "float32")
            cut = slice(self.offset, self.offset + FLUX_COEFFICIENTS)
            out = (out - calibration[:, 6, cut]) / calibration[:, 7, cut]
        return out

    def compute_output_shape(self, z_shape, calibration_shape=None):
        return (z_shape[0], FLUX_COEFFICIENTS)

    def get_config(self):
        return {**super().get_config(), "offset": self.offset}


FRONT_END_LAYERS = (MfccFrontEnd, WindowNormalization, CalibratedLevels, ProsodyFrontEnd, SpectralFlux)
