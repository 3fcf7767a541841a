"""Cepstral flux of speech windows: how fast the spectral envelope moves.

The speech levels hold where the envelope sits (mean and log-std of each MFCC coefficient) and
the pitch (:mod:`kfusion.data.prosody`), but not how quickly it changes: the articulation rate
and the crispness of syllables, which rise with arousal and differ between emotions. Spectral
flux is the field's measure of it (eGeMAPS keeps its mean; delta-MFCC functionals are in every
speech-emotion baseline). Here, per window and for each of the first :data:`FLUX_COEFFICIENTS`
MFCC coefficients: the coefficient is z-scored over the window's frames (the CMVN of
:func:`kfusion.data.features.zscore`, all zeros when flat), and the flux is the mean absolute
change between consecutive 10 ms frames of it. Z-scoring makes it a rate, free of loudness and
microphone gain; like the other levels it is then standardised per person by calibration.

:func:`window_flux` computes it in numpy (data sets, calibration) and
:class:`kfusion.models.feature_layers.SpectralFlux` in a phone's graph, from the same MFCCs.
Measured in bench/RESULTS.md ("Cepstral flux in the speech levels").
"""

from __future__ import annotations

import numpy as np

#: MFCC coefficients whose flux enters the levels (0-12: the envelope; higher ones are detail).
FLUX_COEFFICIENTS = 13
#: Column names of :func:`window_flux`.
FLUX_NAMES: tuple[str, ...] = tuple(f"flux_{k}" for k in range(FLUX_COEFFICIENTS))


def window_flux(windows: np.ndarray, frames: np.ndarray | None = None) -> np.ndarray:
    """Cepstral flux ``[N, 13]`` (:data:`FLUX_NAMES`, float32) of raw MFCC windows ``[N, T, C]``
    (:func:`kfusion.data.features.mfcc`; the z-score makes any per-coefficient scale or offset
    irrelevant, but its flatness rule is relative to the raw values, as in the graph).

    ``frames``: ``[N]`` real frames per window (zero-padded short utterances: the flux of those
    frames only); None = all. A window with fewer than two frames has flux 0."""
    from kfusion.data.features import zscore

    windows = np.asarray(windows, dtype=np.float32)
    if windows.ndim != 3 or windows.shape[2] < FLUX_COEFFICIENTS:
        raise ValueError(f"window_flux: expected MFCC windows [N, T, >= {FLUX_COEFFICIENTS}], "
                         f"found shape {windows.shape}")
    x = windows[:, :, :FLUX_COEFFICIENTS]
    total = x.shape[1]
    frames = np.full(x.shape[0], total) if frames is None else np.clip(np.asarray(frames, np.int64), 0, total)
    out = np.zeros((x.shape[0], FLUX_COEFFICIENTS), dtype=np.float32)
    for n in np.unique(frames):
        if n < 2:
            continue
        rows = np.flatnonzero(frames == n)
        z = zscore(x[rows, :n], axis=1).astype(np.float64)
        out[rows] = np.abs(np.diff(z, axis=1)).mean(axis=1)
    return out


def flux_settings() -> dict:
    """Everything about the flux levels that changes the numbers (for cache keys)."""
    return {"coefficients": FLUX_COEFFICIENTS, "names": list(FLUX_NAMES),
            "definition": "mean |z[t+1] - z[t]| of each window-z-scored MFCC coefficient"}
