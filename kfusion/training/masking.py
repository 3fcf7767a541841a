"""Fusion-pretraining targets (paper §3.2): mask a random span of every modality and predict
statistics of what was masked.

For every window and every signal modality, one contiguous span of the time axis is drawn (its
length a fraction of the window drawn from ``ratio_range``), set to zero in all channels of the
model input, and described by :data:`STATISTICS` computed on the ORIGINAL values of one series
per modality (:func:`modality_series`). Targets are named ``f"{modality}_{statistic}"`` and
shaped ``[B, 1]`` like the pretraining heads' outputs.

Everything is TensorFlow ops on whole batches (padded fixed-length tensors with a span mask;
no Python loop over time, no ``py_function``), so it runs inside ``tf.data.Dataset.map``.

Statistics, each matching its NumPy/SciPy reference on the span's values:

- ``mean``; ``std`` (population, ``ddof=0``); ``min``; ``max``; ``median`` (``numpy.median``:
  the two middle values averaged for an even count);
- ``skewness`` = m3 / m2^1.5 and ``kurtosis`` = m4 / m2^2 - 3 (``scipy.stats.skew`` and
  ``scipy.stats.kurtosis`` with their defaults: biased, Fisher). A span whose values are all
  equal (``std <= 1e-8 * max|x|``), including a one-sample span, has both defined as 0, where
  SciPy would return NaN;
- ``peaks``: the number of ``scipy.signal.find_peaks(span)`` with default arguments, i.e. strict
  local maxima inside the span, a flat-topped plateau counting once when the samples on both
  sides of it are lower; the span's first and last samples are never peaks.

Computed in float64, returned as float32.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

from kfusion import checks
from kfusion.modalities import ACC, MODALITIES, SPEECH, STATISTICS
from kfusion.errors import ConfigError, DataError

__all__ = [
    "STATISTICS", "check_statistics", "target_names", "span_length_bounds", "draw_spans",
    "modality_series", "span_statistics", "masked_statistics", "masked_statistics_dataset",
    "TargetScaler",
]

#: A span counts as constant when its population std is at most this times its largest |value|.
CONSTANT_TOLERANCE = 1e-8


def check_statistics(statistics: Sequence[str]) -> tuple[str, ...]:
    """Validate a statistic list: a non-empty subset of :data:`STATISTICS`, without repeats."""
    if isinstance(statistics, str):
        statistics = (statistics,)
    try:
        statistics = tuple(statistics)
    except TypeError:
        raise ConfigError(f"statistics: expected a list of names from {', '.join(STATISTICS)}, "
                          f"found {statistics!r}") from None
    unknown = [s for s in statistics if s not in STATISTICS]
    if unknown or not statistics:
        raise ConfigError(f"statistics: expected names from {', '.join(STATISTICS)}, "
                          f"found {list(statistics)!r}")
    if len(set(statistics)) != len(statistics):
        raise ConfigError(f"statistics: a name is given twice in {list(statistics)!r}")
    return statistics


def target_names(modalities: Sequence[str], statistics: Sequence[str] = STATISTICS) -> list[str]:
    """Target names ``f"{modality}_{statistic}"``, modality-major."""
    return [f"{m}_{s}" for m in modalities for s in check_statistics(statistics)]


def _check_ratio_range(ratio_range) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in ratio_range)
    except (TypeError, ValueError):
        raise ConfigError(f"ratio_range: expected a pair (low, high) of fractions, found {ratio_range!r}") from None
    if not 0.0 < low <= high <= 1.0:
        raise ConfigError(f"ratio_range: expected 0 < low <= high <= 1, found {ratio_range!r}")
    return low, high


def span_length_bounds(time_steps: int, ratio_range, modality: str = "window") -> tuple[int, int]:
    """Shortest and longest span (samples) with ``low <= length / time_steps <= high``, at least 1."""
    low, high = _check_ratio_range(ratio_range)
    shortest = max(1, math.ceil(low * time_steps - 1e-9))
    longest = min(time_steps, math.floor(high * time_steps + 1e-9))
    if longest < shortest:
        raise ConfigError(f"ratio_range: {ratio_range!r} allows no whole span length for {modality} "
                          f"windows of {time_steps} samples; widen the range")
    return shortest, longest


def _as_seed(seed) -> tf.Tensor:
    """A stateless-RNG seed ``[2]`` int64 from an int or a pair."""
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return tf.constant([checks.whole("seed", seed, 0, 2**63 - 1), 0], tf.int64)
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    if seed.shape != (2,):
        raise ConfigError(f"seed: expected an int or a pair of ints, found shape {seed.shape}")
    return seed


def draw_spans(batch_size, time_steps: int, ratio_range, seed) -> tuple[tf.Tensor, tf.Tensor]:
    """Random spans ``(start, length)``, each ``[batch_size]`` int32, from a stateless ``seed``.

    The length is uniform over the whole numbers allowed by :func:`span_length_bounds`; the start
    is uniform over the positions where the span fits.
    """
    shortest, longest = span_length_bounds(time_steps, ratio_range)
    length_seed, start_seed = tf.unstack(tf.random.experimental.stateless_split(_as_seed(seed), 2))
    length = tf.random.stateless_uniform([batch_size], length_seed, minval=shortest,
                                         maxval=longest + 1, dtype=tf.int32)
    room = time_steps - length + 1
    draw = tf.random.stateless_uniform([batch_size], start_seed, dtype=tf.float64)
    start = tf.minimum(tf.cast(tf.floor(draw * tf.cast(room, tf.float64)), tf.int32), room - 1)
    return start, length


def _span_mask(start, length, time_steps: int) -> tf.Tensor:
    t = tf.range(time_steps, dtype=tf.int32)[None, :]
    return (t >= start[:, None]) & (t < (start + length)[:, None])


def modality_series(modality: str, windows) -> tf.Tensor:
    """The one series ``[B, T]`` whose span statistics are the targets of ``modality``.

    ACC ``[B, T, 3]``: magnitude ``sqrt(x² + y² + z²)``. Speech MFCC ``[B, frames, n_mfcc]``: the
    first coefficient c0 of each frame, a per-frame energy summary (c0 is the frame's mean log
    mel energy up to scale). Other modalities: their single channel.
    """
    windows = tf.convert_to_tensor(windows)
    channels = windows.shape[-1]
    if windows.shape.rank != 3:
        raise DataError(None, modality, "windows [batch, time, channels]", f"shape {tuple(windows.shape)}")
    if modality == ACC:
        if channels != 3:
            raise DataError(None, modality, "3 channels (x, y, z)", f"{channels} channels")
        return tf.sqrt(tf.reduce_sum(tf.square(windows), axis=-1))
    if modality == SPEECH:
        return windows[:, :, 0]
    if channels != 1:
        raise DataError(None, modality, "1 channel", f"{channels} channels")
    return windows[:, :, 0]


def span_statistics(series, span, statistics: Sequence[str] = STATISTICS,
                    longest: int | None = None) -> dict[str, tf.Tensor]:
    """Statistics of ``series`` ``[B, T]`` over the samples where ``span`` ``[B, T]`` (bool) is
    True — a contiguous run with at least one sample per row. Returns ``{name: [B] float64}``.
    ``longest``: no span is longer (the median then reads only its ``longest // 2 + 1``
    smallest values; default ``T``).
    """
    statistics = check_statistics(statistics)
    x = tf.cast(series, tf.float64)
    span = tf.cast(span, tf.bool)
    zeros = tf.zeros_like(x)
    count = tf.reduce_sum(tf.cast(span, tf.float64), axis=1)
    mean = tf.reduce_sum(tf.where(span, x, zeros), axis=1) / count
    out = {}
    if "mean" in statistics:
        out["mean"] = mean
    if {"std", "skewness", "kurtosis"} & set(statistics):
        centred = tf.where(span, x - mean[:, None], zeros)
        squared = tf.square(centred)
        m2 = tf.reduce_sum(squared, axis=1) / count
        largest = tf.reduce_max(tf.where(span, tf.abs(x), zeros), axis=1)
        constant = m2 <= (CONSTANT_TOLERANCE * largest) ** 2
        safe_m2 = tf.where(constant, tf.ones_like(m2), m2)
        if "std" in statistics:
            out["std"] = tf.sqrt(m2)
        if "skewness" in statistics:
            m3 = tf.reduce_sum(squared * centred, axis=1) / count
            out["skewness"] = tf.where(constant, tf.zeros_like(m2), m3 / safe_m2 ** 1.5)
        if "kurtosis" in statistics:
            m4 = tf.reduce_sum(tf.square(squared), axis=1) / count
            out["kurtosis"] = tf.where(constant, tf.zeros_like(m2), m4 / safe_m2 ** 2 - 3.0)
    if "min" in statistics:
        out["min"] = tf.reduce_min(tf.where(span, x, tf.fill(tf.shape(x), tf.constant(np.inf, tf.float64))), axis=1)
    if "max" in statistics:
        out["max"] = tf.reduce_max(tf.where(span, x, tf.fill(tf.shape(x), tf.constant(-np.inf, tf.float64))), axis=1)
    if "median" in statistics:
        if x.shape[1] is None:
            ordered = tf.sort(tf.where(span, x, tf.constant(np.inf, tf.float64)), axis=1)
        else:  # only the longest // 2 + 1 smallest values, ascending: the median needs no more
            held = x.shape[1] if longest is None else min(int(longest), x.shape[1])
            ordered = -tf.math.top_k(tf.where(span, -x, tf.constant(-np.inf, tf.float64)),
                                     k=held // 2 + 1, sorted=True).values
        n = tf.cast(count, tf.int32)
        lower = tf.gather(ordered, ((n - 1) // 2)[:, None], batch_dims=1)[:, 0]
        upper = tf.gather(ordered, (n // 2)[:, None], batch_dims=1)[:, 0]
        out["median"] = (lower + upper) / 2.0
    if "peaks" in statistics:
        out["peaks"] = _count_peaks(x, span)
    return {name: out[name] for name in statistics}


def _count_peaks(x: tf.Tensor, span: tf.Tensor) -> tf.Tensor:
    """``len(find_peaks(row[span]))`` per row, vectorised.

    Between consecutive span samples there is a rise, a fall or no change. A peak (a single top
    or a plateau) is exactly a fall whose latest preceding change was a rise. The latest change
    before each position is found with a running count of changes and a binary search on it.
    """
    if x.shape[1] is not None and x.shape[1] < 3:
        return tf.zeros(tf.shape(x)[:1], tf.float64)
    both_in_span = span[:, :-1] & span[:, 1:]
    rise = both_in_span & (x[:, 1:] > x[:, :-1])
    fall = both_in_span & (x[:, 1:] < x[:, :-1])
    changes_so_far = tf.cumsum(tf.cast(rise | fall, tf.int32), axis=1)
    # First position whose running count reaches the current count = position of the latest change.
    latest_change = tf.searchsorted(changes_so_far, changes_so_far, side="left")
    direction = tf.cast(rise, tf.int32) - tf.cast(fall, tf.int32)
    latest_direction = tf.gather(direction, latest_change, batch_dims=1) * tf.cast(changes_so_far > 0, tf.int32)
    previous_direction = tf.pad(latest_direction[:, :-1], [[0, 0], [1, 0]])
    return tf.reduce_sum(tf.cast(fall & (previous_direction == 1), tf.float64), axis=1)


def _signal_names(keys) -> list[str]:
    for key in keys:
        if isinstance(key, str) and key not in MODALITIES and key.lower() in MODALITIES:
            raise ConfigError(f"input {key!r}: modality names are lower case; expected {key.lower()!r}")
    return [m for m in MODALITIES if m in keys]


def masked_statistics(inputs: Mapping, ratio_range=(0.1, 0.5), seed=0,
                      statistics: Sequence[str] = STATISTICS) -> tuple[dict, dict]:
    """Mask one random span per window and modality of a BATCH; return ``(masked, targets)``.

    ``inputs``: ``{modality: [B, T, C]}`` (modality names from ``MODALITIES``; any other entry,
    such as ``"presence"``, is passed through unchanged). ``seed``: an int or a stateless-RNG pair;
    the same seed gives the same spans. Each modality draws its spans independently.
    ``masked``: the inputs with each span set to 0 in every channel; ``targets``:
    ``{f"{modality}_{statistic}": [B, 1] float32}`` computed on the unmasked values.
    """
    statistics = check_statistics(statistics)
    signals = _signal_names(inputs)
    if not signals:
        raise ConfigError(f"inputs: expected at least one of {', '.join(MODALITIES)}, "
                          f"found {sorted(map(str, inputs))}")
    seed = _as_seed(seed)
    masked, targets = dict(inputs), {}
    for name in signals:
        windows = tf.convert_to_tensor(inputs[name])
        series = modality_series(name, windows)  # checks the shape
        time_steps = windows.shape[1]
        if time_steps is None:
            raise DataError(None, name, "a fixed number of time steps", "an unknown length")
        modality_seed = tf.random.experimental.stateless_fold_in(seed, MODALITIES.index(name))
        start, length = draw_spans(tf.shape(windows)[0], time_steps, ratio_range, modality_seed)
        span = _span_mask(start, length, time_steps)
        masked[name] = tf.where(span[:, :, None], tf.constant(0, windows.dtype), windows)  # broadcast zero
        values = span_statistics(series, span, statistics, span_length_bounds(time_steps, ratio_range)[1])
        for stat in statistics:
            targets[f"{name}_{stat}"] = tf.cast(values[stat], tf.float32)[:, None]
    return masked, targets


def _check_arrays(arrays: Mapping, ratio_range) -> tuple[dict[str, np.ndarray], list[str]]:
    if not isinstance(arrays, Mapping) or not arrays:
        raise ConfigError(f"arrays: expected a dict {{modality: [N, T, C] array}}, found {type(arrays).__name__}")
    signals = _signal_names(arrays)
    if not signals:
        raise ConfigError(f"arrays: expected at least one of {', '.join(MODALITIES)}, found {sorted(map(str, arrays))}")
    out, first = {}, None
    for name, value in arrays.items():
        field = f"arrays[{name!r}]"
        array = np.asarray(value)
        if name in signals:
            if array.ndim != 3:
                raise DataError(None, field, "windows [N, time, channels]", f"shape {array.shape}")
            if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
                raise DataError(None, field, "real numbers", f"dtype {array.dtype}")
            if not np.issubdtype(array.dtype, np.floating):
                array = array.astype(np.float32)
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            if bad:
                raise DataError(None, field, "finite values", f"{bad} NaN or infinite value(s)")
            modality_series(name, array[:0])  # channel checks
            span_length_bounds(array.shape[1], ratio_range, name)
        if array.ndim == 0:
            raise DataError(None, field, "one row per window", "a scalar")
        if first is None:
            first = (name, len(array))
        elif len(array) != first[1]:
            raise DataError(None, field, f"{first[1]} windows, as arrays[{first[0]!r}]", len(array))
        out[name] = array
    if first[1] == 0:
        raise DataError(None, f"arrays[{first[0]!r}]", "at least one window", "0")
    return out, signals


def _check_batch_size(batch_size) -> int:
    return checks.whole("batch_size", batch_size)


def masked_statistics_dataset(arrays: Mapping[str, np.ndarray], batch_size: int, ratio_range=(0.1, 0.5),
                              statistics: Sequence[str] = STATISTICS, seed: int = 0, shuffle: bool = True,
                              target_scaler: TargetScaler | None = None,
                              drop_remainder: bool = False, redraw_each_pass: bool = True,
                              stack_targets: Sequence[str] | None = None) -> tf.data.Dataset:
    """Batches ``(masked_inputs, targets)`` for ``model.fit`` of a fusion-pretraining model.

    ``arrays``: ``{modality: [N, T, C]}`` windows plus optional pass-through entries with N rows
    (e.g. ``"presence": [N, n_modalities]``), NumPy arrays or tensors (tensors are used as they
    are, so datasets of several epochs can share one copy). Targets are standardised by ``target_scaler`` when
    given. Every pass over the dataset (epoch) reshuffles and draws new spans; each batch's spans
    come from stateless ops keyed by ``(seed, k)``, with ``k`` drawn per batch from
    ``tf.data.Dataset.random(seed, rerandomize_each_iteration=True)``. The whole sequence of
    epochs is therefore fixed by ``seed`` (and TensorFlow's global seed, when one is set, as
    ``keras.utils.set_random_seed`` does, since ``tf.data`` combines the two).

    ``redraw_each_pass=False``: every pass gives the same batches, order and spans (a validation
    set: its loss then compares epochs, and is the same in a resumed or distributed run, whose
    passes over it are counted differently).

    ``stack_targets``: a list of target names; the targets then come as one ``[B, len]`` float32
    tensor with the columns in that order (the output of a ``fusion_pretraining_model`` built with
    the same list) instead of ``{name: [B, 1]}``.
    """
    given = dict(arrays) if isinstance(arrays, Mapping) else {}
    arrays, signals = _check_arrays(arrays, ratio_range)
    statistics = check_statistics(statistics)
    batch_size = _check_batch_size(batch_size)
    seed = checks.whole("seed", seed, 0, 2**63 - 1)
    if target_scaler is not None:
        if not isinstance(target_scaler, TargetScaler):
            raise ConfigError(f"target_scaler: expected a TargetScaler, found {type(target_scaler).__name__}")
        target_scaler.check_names(target_names(signals, statistics))
    if stack_targets is not None:
        stack_targets = _check_stack(stack_targets, target_names(signals, statistics))
    size = len(next(iter(arrays.values())))
    # The windows stay whole tensors; the pipeline shuffles and batches row numbers only and each
    # batch gathers its rows in one op (shuffling the numbers 0..N-1 with the seed gives the order
    # shuffling the windows themselves gave, without copying every window through the buffer).
    tensors = {name: given[name] if isinstance(given[name], tf.Tensor) and given[name].dtype == array.dtype
               else tf.convert_to_tensor(array) for name, array in arrays.items()}
    rows = tf.data.Dataset.range(size)
    if shuffle:
        rows = rows.shuffle(size, seed=seed, reshuffle_each_iteration=redraw_each_pass)
    rows = rows.batch(batch_size, drop_remainder=drop_remainder)
    batch_keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=redraw_each_pass)

    masker = _masker(_check_ratio_range(ratio_range), statistics, target_scaler, stack_targets)

    def mask_batch(index, key):
        batch = {name: tf.gather(tensor, index) for name, tensor in tensors.items()}
        return masker(batch, tf.stack([tf.constant(seed, tf.int64), key]))

    return (tf.data.Dataset.zip((rows, batch_keys))
            .map(mask_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(tf.data.AUTOTUNE))


_MASKERS: dict = {}


def _check_stack(names, available: list[str]) -> tuple[str, ...]:
    if isinstance(names, str) or not isinstance(names, Sequence) or not names:
        raise ConfigError(f"stack_targets: expected a non-empty list of target names, found {names!r}")
    names = tuple(str(n) for n in names)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ConfigError(f"stack_targets: {', '.join(unknown)} not among the targets of these arrays "
                          f"({', '.join(available)})")
    if len(set(names)) != len(names):
        raise ConfigError(f"stack_targets: expected unique names, found {list(names)}")
    return names


def _masker(ratio_range: tuple, statistics: tuple, target_scaler, stack: tuple | None = None):
    """One ``tf.function`` (batch, seed) -> (masked, targets) per setting, kept for the process:
    every epoch's dataset calls the same traced function instead of tracing the masking again
    (about a second per dataset for five modalities)."""
    scale = None if target_scaler is None else (tuple(sorted(target_scaler.mean.items())),
                                                tuple(sorted(target_scaler.std.items())))
    key = (ratio_range, statistics, scale, stack)
    if key not in _MASKERS:
        scaler = None if target_scaler is None else TargetScaler(target_scaler.mean, target_scaler.std)

        @tf.function
        def masker(batch, seed):
            masked, targets = masked_statistics(batch, ratio_range, seed, statistics)
            targets = targets if scaler is None else scaler.transform(targets)
            if stack is not None:
                targets = tf.concat([targets[name] for name in stack], axis=1)
            return masked, targets

        _MASKERS[key] = masker
    return _MASKERS[key]


class TargetScaler:
    """Standardises targets: ``(value - mean) / std`` per target name, fitted on training data.

    ``fit`` draws spans over the training windows exactly as the training dataset does (fixed
    seed, ``draws`` passes) and stores each target's mean and population std; a std of 0 (a
    target constant over the training data) is stored as 1. ``to_dict``/``from_dict`` give a
    JSON-ready form for run folders.
    """

    def __init__(self, mean: Mapping[str, float] | None = None, std: Mapping[str, float] | None = None,
                 fitted_with: Mapping | None = None):
        mean, std = dict(mean or {}), dict(std or {})
        if set(mean) != set(std):
            raise ConfigError(f"TargetScaler: mean and std name different targets: {sorted(set(mean) ^ set(std))}")
        for name in mean:
            if not (np.isfinite(mean[name]) and np.isfinite(std[name]) and std[name] > 0):
                raise ConfigError(f"TargetScaler: target {name!r}: expected a finite mean and a positive "
                                  f"std, found {mean[name]!r}, {std[name]!r}")
        self.mean = {k: float(v) for k, v in mean.items()}
        self.std = {k: float(v) for k, v in std.items()}
        self.fitted_with = dict(fitted_with or {})

    @property
    def names(self) -> list[str]:
        return list(self.mean)

    def fit(self, arrays: Mapping[str, np.ndarray], ratio_range=(0.1, 0.5),
            statistics: Sequence[str] = STATISTICS, seed: int = 0, batch_size: int = 256,
            draws: int = 1) -> TargetScaler:
        """Fit on the TRAINING windows only; returns ``self``."""
        draws = checks.whole("TargetScaler.fit: draws", draws)
        dataset = masked_statistics_dataset(arrays, batch_size, ratio_range, statistics, seed, shuffle=False)
        collected: dict[str, list[np.ndarray]] = {}
        for _ in range(draws):
            for _, targets in dataset:
                for name, value in targets.items():
                    collected.setdefault(name, []).append(value.numpy().astype(np.float64).ravel())
        values = {name: np.concatenate(parts) for name, parts in collected.items()}
        mean = {name: float(v.mean()) for name, v in values.items()}
        std = {}
        for name, v in values.items():
            spread = float(v.std())
            std[name] = spread if spread > 1e-12 * max(1.0, abs(mean[name])) else 1.0
        self.mean, self.std = mean, std
        self.fitted_with = {"ratio_range": list(_check_ratio_range(ratio_range)),
                            "statistics": list(check_statistics(statistics)), "seed": int(seed),
                            "draws": draws, "windows": len(next(iter(values.values()))) // draws}
        return self

    def check_names(self, names: Sequence[str]) -> None:
        if not self.mean:
            raise ConfigError("TargetScaler: not fitted; call fit(training_arrays) or from_dict(...) first")
        missing = [n for n in names if n not in self.mean]
        if missing:
            raise ConfigError(f"TargetScaler: no scale for target(s) {', '.join(missing)}; "
                              f"fitted on {', '.join(self.mean)}")

    def transform(self, targets: Mapping) -> dict:
        """``{name: (value - mean) / std}``; works on NumPy arrays and tensors alike."""
        self.check_names(list(targets))
        return {name: (value - self.mean[name]) / self.std[name] for name, value in targets.items()}

    def inverse_transform(self, targets: Mapping) -> dict:
        """Back to the statistics' own units: ``value * std + mean``."""
        self.check_names(list(targets))
        return {name: value * self.std[name] + self.mean[name] for name, value in targets.items()}

    def to_dict(self) -> dict:
        return {"mean": dict(self.mean), "std": dict(self.std), "fitted_with": dict(self.fitted_with)}

    @classmethod
    def from_dict(cls, data: Mapping) -> TargetScaler:
        if not isinstance(data, Mapping) or not {"mean", "std"} <= set(data) \
                or set(data) - {"mean", "std", "fitted_with"}:
            raise ConfigError("TargetScaler.from_dict: expected keys mean, std (and fitted_with), "
                              f"found {sorted(data) if isinstance(data, Mapping) else type(data).__name__}")
        return cls(data["mean"], data["std"], data.get("fitted_with"))
