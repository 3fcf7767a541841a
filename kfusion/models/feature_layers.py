"""The in-graph feature front end shared by training and export: MFCCs and per-window
normalisation as Keras layers.

:class:`MfccFrontEnd` computes the MFCCs of :func:`kfusion.data.features.mfcc` with TFLite
builtin operations only, its constants taken from :mod:`kfusion.data.features`
(``MFCC_SETTINGS``, ``analysis_window``, ``mel_filterbank``, ``dct_matrix``), so there is one
definition of the features. :class:`WindowNormalization` is
:func:`kfusion.data.features.zscore` (per window, along time): CMVN for speech, z-score for the
wearables. A model trained on raw buffers puts them in front of its encoders; an exported
features-input model gets them from :func:`kfusion.export.raw_inputs.raw_input_model`.

Why a DFT matrix and not ``tf.signal``: TFLite's builtin RFFT2D takes power-of-two lengths only
(``n_fft`` is 400) and ``tf.signal.mfccs_from_log_mel_spectrograms`` needs Flex ops. The
real DFT of a frame windowed by a symmetric window (``w[n] == w[N - n]``) splits into an even
and an odd half, ``Re X[k] = sum_n w[n] (x[n] + x[N-n]) cos(2 pi k n / N)`` and
``Im X[k] = -sum_n w[n] (x[n] - x[N-n]) sin(2 pi k n / N)`` over ``n <= N/2``, which halves the
matrix products (about 32 M multiply-adds per 4 s window).
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
from kfusion import checks
from kfusion.errors import ConfigError

PACKAGE = "kfusion"

__all__ = ["MfccFrontEnd", "WindowNormalization", "CalibratedLevels", "dft_matrices", "FRONT_END_LAYERS"]


def _check_settings(settings: MfccSettings) -> None:
    if not (settings.center and settings.pad_mode == "constant" and settings.dct_type == 2
            and settings.dct_norm == "ortho" and settings.lifter == 0 and settings.top_db is None
            and settings.n_fft % 2 == 0):
        raise ConfigError("MfccFrontEnd: implements center=True, pad_mode='constant', an even "
                          "n_fft, DCT-II ortho, lifter 0 and no top_db only")
    window = analysis_window(settings)
    if not np.allclose(window[1:], window[:0:-1], atol=1e-7):
        raise ConfigError("MfccFrontEnd: the analysis window must be symmetric (w[n] == w[N-n])")


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

    Builtin TFLite operations only: pad, reshape, strided slices, concatenation, reverse,
    fully connected (matrix products with constant matrices), mul/add, maximum, log.
    Every setting is :data:`MFCC_SETTINGS`; ``settings`` (stored in the layer config) only
    guards a saved model: loading one built with other settings raises ConfigError.
    """

    def __init__(self, settings: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        if settings is not None and dict(settings) != MFCC_SETTINGS.to_dict():
            changed = sorted(k for k in set(settings) | set(MFCC_SETTINGS.to_dict())
                             if dict(settings).get(k) != MFCC_SETTINGS.to_dict().get(k))
            raise ConfigError(f"MfccFrontEnd: this layer was built with other MFCC settings than "
                              f"this kfusion's MFCC_SETTINGS (differing: {', '.join(changed)}); "
                              "its model expects other features")
        settings = MFCC_SETTINGS
        _check_settings(settings)
        self.settings = settings
        cos_part, sin_part = dft_matrices(settings)
        self._cos = cos_part
        self._sin = sin_part
        self._mel = np.ascontiguousarray(mel_filterbank(settings).T)             # [bins, mels]
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

    def call(self, audio):
        s = self.settings
        n_samples = audio.shape[-1]
        n_frames, chunks, needed = self._frames_and_chunks(n_samples)
        half, hop = s.n_fft // 2, s.hop_length
        audio = ops.cast(audio, "float32")
        # Centre padding with zeros (and zeros after it up to a whole number of hops).
        padded = ops.pad(audio, [[0, 0], [half, max(needed - n_samples - half, half)]])
        padded = padded[:, :needed]
        blocks = ops.reshape(padded, (-1, chunks, hop))
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
        power = real * real + imag * imag
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
        return {**super().get_config(), "settings": self.settings.to_dict()}


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
    """A window's calibrated level: ``(x [B, T, C], calibration [B, 2, C])`` -> ``[B, 2C]``.

    ``calibration`` rows are the person's mean and standard deviation per channel
    (:func:`kfusion.data.calibration.recording_calibration`); the window is standardised by
    them, then its mean and ``log(std + eps)`` over time are returned per channel — the same
    numbers as :func:`kfusion.data.calibration.window_levels` of the calibrated window.
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
        return ops.concatenate([mean, ops.log(std + self.eps)], axis=-1)

    def compute_output_shape(self, x_shape, calibration_shape):
        return (x_shape[0], 2 * x_shape[-1])

    def get_config(self):
        return {**super().get_config(), "eps": self.eps}


FRONT_END_LAYERS = (MfccFrontEnd, WindowNormalization, CalibratedLevels)
