"""Training targets from annotation intervals, and one label per window.

K-EmoCon scheme (``LabelIntervals.scheme == "kemocon"``):

* ``arousal`` / ``valence`` (1-5) -> 3 levels: 1-2 -> 0 ``low``, 3 -> 1 ``neutral``,
  4-5 -> 2 ``high``. Non-integer values (averaged ratings) are binned by the same cut points:
  ``< 2.5`` low, ``2.5 .. 3.5`` neutral, ``> 3.5`` high.
* ``emotion``: the highest-rated of ``cheerful, happy, angry, nervous, sad`` (ratings 1-4);
  ``neutral`` when all five are 1. **Ties** between the highest ratings go to the class that
  comes first in the fixed order cheerful, happy, angry, nervous, sad (e.g. happy = angry = 3
  -> happy). A row with any of the five ratings missing (NaN) is unlabelled for ``emotion``.

Values outside their range raise :class:`~kfusion.errors.DataError`; NaN means unlabelled (-1).

``"classes"`` scheme: each column already holds class indices ``0..k-1`` named by
``LabelIntervals.classes[column]``.

A window gets the label of the annotation interval that overlaps it most (the earlier one on
a tie); if that interval covers less than ``min_coverage`` of the window (of its real length,
for a zero-padded window of a short utterance) it is unlabelled.
"""

from __future__ import annotations

import numpy as np

from kfusion.data.recording import LabelIntervals
from kfusion.errors import DataError

LEVELS = ("low", "neutral", "high")
EMOTION_RATINGS = ("cheerful", "happy", "angry", "nervous", "sad")
TARGET_CLASSES: dict[str, tuple[str, ...]] = {
    "arousal": LEVELS,
    "valence": LEVELS,
    "emotion": EMOTION_RATINGS + ("neutral",),
}
UNLABELLED = -1
LEVEL_RANGE = (1.0, 5.0)
RATING_RANGE = (1.0, 4.0)


def _check_range(values: np.ndarray, low: float, high: float, source: str, column: str) -> None:
    finite = np.isfinite(values)
    outside = finite & ((values < low) | (values > high))
    inf = np.isinf(values)
    if outside.any() or inf.any():
        i = int(np.argmax(outside | inf))
        raise DataError(source or None, f"column '{column}', annotation row {i + 1}",
                        f"a rating from {low:g} to {high:g} (or empty)", repr(float(values[i])))


def bin_levels(values: np.ndarray, source: str = "", column: str = "arousal") -> np.ndarray:
    """Arousal/valence ratings 1-5 -> int64 levels 0 low (1-2), 1 neutral (3), 2 high (4-5); NaN -> -1."""
    values = np.asarray(values, dtype=np.float64)
    _check_range(values, *LEVEL_RANGE, source, column)
    out = np.full(values.shape, UNLABELLED, dtype=np.int64)
    finite = np.isfinite(values)
    out[finite] = np.where(values[finite] < 2.5, 0, np.where(values[finite] <= 3.5, 1, 2))
    return out


def emotion_classes(ratings: np.ndarray, source: str = "") -> np.ndarray:
    """``[k, 5]`` ratings (cheerful, happy, angry, nervous, sad; 1-4) -> int64 ``[k]`` class.

    Classes index ``TARGET_CLASSES["emotion"]``: the highest rating wins, ties go to the
    earliest of the five in that order, 5 (``neutral``) when all five are 1, -1 when any is NaN.
    """
    ratings = np.asarray(ratings, dtype=np.float64).reshape(-1, len(EMOTION_RATINGS))
    for c, name in enumerate(EMOTION_RATINGS):
        _check_range(ratings[:, c], *RATING_RANGE, source, name)
    out = np.full(ratings.shape[0], UNLABELLED, dtype=np.int64)
    complete = np.isfinite(ratings).all(axis=1)
    best = np.argmax(np.where(complete[:, None], ratings, 0.0), axis=1)  # argmax: first wins
    neutral = complete & (ratings <= RATING_RANGE[0]).all(axis=1)
    out[complete] = best[complete]
    out[neutral] = len(EMOTION_RATINGS)
    return out


def interval_targets(labels: LabelIntervals) -> tuple[dict, dict]:
    """Per-interval targets: ``({target: int64 [k]}, {target: class names})`` (-1 unlabelled)."""
    source = labels.source
    if labels.scheme == "kemocon":
        targets, classes = {}, {}
        for level in ("arousal", "valence"):
            if level in labels.columns:
                targets[level] = bin_levels(labels.columns[level], source, level)
                classes[level] = TARGET_CLASSES[level]
        if all(name in labels.columns for name in EMOTION_RATINGS):
            ratings = np.stack([labels.columns[name] for name in EMOTION_RATINGS], axis=1)
            targets["emotion"] = emotion_classes(ratings, source)
            classes["emotion"] = TARGET_CLASSES["emotion"]
        if not targets:
            raise DataError(source or None, "columns",
                            "arousal, valence and/or cheerful, happy, angry, nervous, sad",
                            ", ".join(labels.columns) or "no columns")
        return targets, classes
    if labels.scheme == "classes":
        targets, classes = {}, {}
        for column, values in labels.columns.items():
            names = tuple(str(n) for n in labels.classes.get(column, ()))
            if not names:
                raise DataError(source or None, f"classes of column '{column}'",
                                "the class names of the column", "none")
            finite = np.isfinite(values)
            bad = finite & ((values < 0) | (values >= len(names)) | (values != np.round(values)))
            bad |= np.isinf(values)
            if bad.any():
                i = int(np.argmax(bad))
                raise DataError(source or None, f"column '{column}', annotation row {i + 1}",
                                f"a class index 0..{len(names) - 1} ({', '.join(names)})",
                                repr(float(values[i])))
            out = np.full(values.shape, UNLABELLED, dtype=np.int64)
            out[finite] = values[finite].astype(np.int64)
            targets[column], classes[column] = out, names
        return targets, classes
    raise DataError(source or None, "scheme", "'kemocon' or 'classes'", repr(labels.scheme))


def best_intervals(starts: np.ndarray, seconds, labels: LabelIntervals,
                   min_coverage: float, chunk: int = 512) -> np.ndarray:
    """Index of the interval covering most of each window (-1 if below ``min_coverage``).
    ``seconds``: the window length, or ``[N]`` real lengths (a zero-padded window of a short
    utterance is judged on its real part only)."""
    starts = np.asarray(starts, dtype=np.float64)
    out = np.full(starts.shape[0], UNLABELLED, dtype=np.int64)
    if len(labels) == 0 or starts.size == 0:
        return out
    per_window = np.ndim(seconds) > 0
    if per_window:
        seconds = np.asarray(seconds, dtype=np.float64).reshape(-1)
    order = np.argsort(labels.start, kind="stable")
    first, last = labels.start[order][None, :], labels.end[order][None, :]
    for begin in range(0, starts.shape[0], chunk):
        t0 = starts[begin:begin + chunk, None]
        length = seconds[begin:begin + chunk, None] if per_window else seconds
        overlap = np.minimum(last, t0 + length) - np.maximum(first, t0)
        best = np.argmax(overlap, axis=1)  # the earliest interval wins a tie
        covered = overlap[np.arange(best.size), best]
        # small slack so 2.0 s of a 4 s window counts as 0.5 despite float error
        ok = covered >= min_coverage * (length[:, 0] if per_window else length) - 1e-5
        out[begin:begin + chunk] = np.where(ok, order[best], UNLABELLED)
    return out


def window_labels(starts: np.ndarray, seconds, labels: LabelIntervals | None,
                  min_coverage: float = 0.5) -> tuple[dict, dict]:
    """Labels of windows starting at ``starts`` (UNIX s), ``seconds`` long (or ``[N]`` real
    lengths of segment windows, see :func:`best_intervals`).

    Returns ``({target: int64 [N]}, {target: class names})``; -1 where unlabelled.
    """
    if labels is None:
        return {}, {}
    targets, classes = interval_targets(labels)
    best = best_intervals(starts, seconds, labels, min_coverage)
    out = {}
    for target, per_interval in targets.items():
        values = np.full(best.shape[0], UNLABELLED, dtype=np.int64)
        has = best >= 0
        values[has] = per_interval[best[has]]
        out[target] = values
    return out, classes
