"""Signal-quality checks shared by every reader: samples a sensor cannot have produced, or
produced while it was off the skin, never reach a model.

:func:`quality_flags` marks, per wearable signal as read (before resampling), the samples that
fail a check; :func:`~kfusion.data.windows.cut_windows` then treats every window touching a
flagged sample as lacking that modality (dropped, or zero-filled with ``presence = 0``) and
counts it under the check's reason in the data set's report. The checks (E4 units):

- physically impossible values, and infinities: EDA outside [-0.01, 100] µS, BVP beyond
  ±5000, TEMP outside [10, 45] °C, ACC beyond ±256 (1/64 g, i.e. ±4 g; the E4 measures ±2 g);
- EDA below 0.01 µS: no skin contact (an E4 off the wrist reads about zero; real skin
  conductance, even of a dry hand, stays above it; bench/RESULTS.md has the share below it);
- a flat signal: the same value for at least :data:`FLAT_SECONDS` (BVP, EDA, every ACC axis at
  once): a sensor that is off or saturated. TEMP is exempt (0.02 °C steps can sit still).
"""

from __future__ import annotations

import numpy as np

from kfusion.modalities import ACC, BVP, EDA, TEMP

#: Valid range per modality, in the E4's units.
RANGES: dict[str, tuple[float, float]] = {EDA: (-0.01, 100.0), BVP: (-5000.0, 5000.0),
                                          TEMP: (10.0, 45.0), ACC: (-256.0, 256.0)}
UNITS = {EDA: "µS", BVP: "", TEMP: "°C", ACC: "1/64 g"}
#: EDA below this (µS) counts as no skin contact.
EDA_OFF_SKIN = 0.01
#: A run of identical samples this long (s) counts as a flat, switched-off sensor.
FLAT_SECONDS = 60.0
FLAT_MODALITIES = (BVP, EDA, ACC)


def _flat_runs(values: np.ndarray, rate: float) -> np.ndarray:
    """Bool ``[n]``: samples inside a run of identical rows at least FLAT_SECONDS long."""
    n = values.shape[0]
    out = np.zeros(n, dtype=bool)
    minimum = int(np.ceil(FLAT_SECONDS * rate))
    if n < minimum or n < 2:
        return out
    same = np.all(values[1:] == values[:-1], axis=1)          # row k equals row k-1
    edges = np.diff(np.concatenate([[0], same.astype(np.int8), [0]]))
    for begin, end in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
        if end - begin + 1 >= minimum:                         # samples begin .. end
            out[begin:end + 1] = True
    return out


def quality_flags(modality: str, values: np.ndarray, rate: float,
                  flat_runs: bool = True) -> dict[str, np.ndarray]:
    """``{reason: bool [n]}`` of the samples of one wearable signal ``values [n, C]`` failing a
    check (only reasons with at least one sample). NaN samples (gaps) are not flagged here.
    ``flat_runs=False``: the per-sample checks only (a stream finds flat runs across chunks)."""
    if modality not in RANGES:
        return {}
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    flags: dict[str, np.ndarray] = {}
    low, high = RANGES[modality]
    with np.errstate(invalid="ignore"):
        impossible = np.any(np.isinf(x) | (x < low) | (x > high), axis=1)
    if impossible.any():
        unit = f" {UNITS[modality]}" if UNITS[modality] else ""
        flags[f"{modality} out of range (expected {low:g} to {high:g}{unit})"] = impossible
    if modality == EDA:
        with np.errstate(invalid="ignore"):
            off = np.all((x >= low) & (x < EDA_OFF_SKIN), axis=1)
        if off.any():
            flags[f"eda below {EDA_OFF_SKIN:g} µS (sensor off the skin)"] = off
    if flat_runs and modality in FLAT_MODALITIES:
        flat = _flat_runs(x, float(rate)) & np.all(np.isfinite(x), axis=1)
        if flat.any():
            flags[f"{modality} flat for {FLAT_SECONDS:g} s or more (sensor off)"] = flat
    return flags


class StreamQuality:
    """The checks of :func:`quality_flags` on a signal that arrives in chunks.

    :meth:`check` returns the chunk with failing samples set to NaN. Range and skin-contact
    checks are per sample, as in batch. A flat run is only known once it has lasted
    :data:`FLAT_SECONDS`: from then on its samples are NaN, and :meth:`check` also gives the
    absolute index where the run began (once per run), so samples still held by the caller can
    be set to NaN too; samples the caller already used cannot be revised (batch windowing would also drop the
    windows in the run's first :data:`FLAT_SECONDS`).
    """

    def __init__(self, modality: str, rate: float):
        self.modality, self.rate = modality, float(rate)
        self.minimum = int(np.ceil(FLAT_SECONDS * self.rate))
        self.seen = 0          # samples checked so far
        self.last = None       # the last sample (row) checked
        self.run = 0           # length of the run of identical rows ending at ``last``
        self.announced = None  # start of the last flat run returned by :meth:`check`

    def check(self, values: np.ndarray) -> tuple[np.ndarray, int | None]:
        """``(values with failing samples NaN, absolute start of a flat run to void or None)``."""
        x = np.array(values, dtype=np.float32, copy=True)
        if x.ndim == 1:
            x = x[:, None]
        n = x.shape[0]
        if n == 0 or self.modality not in RANGES:
            self.seen += n
            return x, None
        per_sample = quality_flags(self.modality, x, self.rate, flat_runs=False)
        bad = np.any(np.stack(list(per_sample.values())), axis=0) if per_sample else np.zeros(n, bool)
        void_from = None
        if self.modality in FLAT_MODALITIES:
            before = x[:1] if self.last is None else self.last[None]
            previous = np.concatenate([before, x[:-1]])
            finite = np.all(np.isfinite(x), axis=1)
            same = np.all(x == previous, axis=1) & finite
            if self.last is None:
                same[0] = False
            # run length ending at each row: rows since the last row that differs from its
            # predecessor, or the previous chunk's run carried on
            last_start = np.maximum.accumulate(np.where(~same, np.arange(n), -1))
            runs = np.where(last_start >= 0, np.arange(n) - last_start + 1, self.run + np.arange(n) + 1)
            runs = np.where(finite, runs, 0)
            flat = runs >= self.minimum
            if flat.any():
                first = int(np.argmax(flat))
                run_start = self.seen + first - int(runs[first]) + 1
                if run_start != self.announced:   # once per run: later samples are flagged here
                    void_from = self.announced = run_start
                bad |= flat
            self.run = int(runs[-1])
            self.last = x[-1].copy()
        x[bad] = np.nan
        self.seen += n
        return x, void_from


def quality_settings() -> dict:
    """Everything about the checks that changes the numbers (for cache keys)."""
    return {"ranges": {m: list(r) for m, r in RANGES.items()}, "eda_off_skin": EDA_OFF_SKIN,
            "flat_seconds": FLAT_SECONDS, "flat_modalities": list(FLAT_MODALITIES)}


def clean_signal(modality: str, signal):
    """``(signal with every flagged sample set to NaN, {reason: bool [n]})`` for a
    :class:`~kfusion.data.recording.Signal` (unchanged when nothing is flagged), so resampling,
    calibration and features never see a value a sensor could not have produced."""
    from kfusion.data.recording import Signal

    flags = quality_flags(modality, signal.values, signal.rate)
    if not flags:
        return signal, flags
    values = np.array(signal.values, dtype=np.float32, copy=True)
    bad = np.any(np.stack(list(flags.values())), axis=0)
    values[bad] = np.nan
    return Signal(values, signal.rate, signal.start, signal.source), flags
