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
    "TargetScaler", "MaskedStatisticsEpochs",
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
    series = tf.convert_to_tensor(series)
    # Ordering statistics (median, peaks) read the values as given: sorting and comparing float32
    # is exact and faster than in float64; sums and moments are taken in float64.
    ordered_dtype = series.dtype if series.dtype in (tf.float32, tf.float64) else tf.float64
    raw = tf.cast(series, ordered_dtype)
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
        out["median"] = _span_median(raw, span, count, longest)
    if "peaks" in statistics:
        out["peaks"] = _count_peaks(raw, span)
    return {name: out[name] for name in statistics}


def _span_median(values: tf.Tensor, span: tf.Tensor, count: tf.Tensor, longest: int | None) -> tf.Tensor:
    """``numpy.median`` of each row's span values ``[B]`` float64 (``count``: span sizes ``[B]``)."""
    infinity = tf.constant(np.inf, values.dtype)
    if values.shape[1] is None:
        ordered = tf.sort(tf.where(span, values, infinity), axis=1)
    else:  # only the longest // 2 + 1 smallest values, ascending: the median needs no more
        held = values.shape[1] if longest is None else min(int(longest), values.shape[1])
        ordered = -tf.math.top_k(tf.where(span, -values, -infinity), k=held // 2 + 1, sorted=True).values
    n = tf.cast(count, tf.int32)
    lower = tf.cast(tf.gather(ordered, ((n - 1) // 2)[:, None], batch_dims=1)[:, 0], tf.float64)
    upper = tf.cast(tf.gather(ordered, (n // 2)[:, None], batch_dims=1)[:, 0], tf.float64)
    return (lower + upper) / 2.0


def _count_peaks(x: tf.Tensor, span: tf.Tensor) -> tf.Tensor:
    """``len(find_peaks(row[span]))`` per row, vectorised.

    Between consecutive span samples there is a rise, a fall or no change. A peak (a single top
    or a plateau) is exactly a fall whose latest preceding change was a rise, i.e. a rise followed
    by a fall in the row's sequence of changes with the no-changes left out. That sequence is
    built by one segment sum (change k of a row goes to slot k), and its rise-fall pairs counted.
    """
    if x.shape[1] is not None and x.shape[1] < 3:
        return tf.zeros(tf.shape(x)[:1], tf.float64)
    both_in_span = span[:, :-1] & span[:, 1:]
    direction = (tf.cast(both_in_span & (x[:, 1:] > x[:, :-1]), tf.int32)
                 - tf.cast(both_in_span & (x[:, 1:] < x[:, :-1]), tf.int32))
    rows, steps = tf.shape(direction)[0], tf.shape(direction)[1]
    # Slot of each change: the changes before it; a no-change adds 0 to its row's slot 0.
    slot = tf.maximum(tf.cumsum(tf.abs(direction), axis=1) - 1, 0) + tf.range(rows)[:, None] * steps
    changes = tf.reshape(tf.math.unsorted_segment_sum(tf.reshape(direction, [-1]), tf.reshape(slot, [-1]),
                                                      rows * steps), [rows, steps])
    return tf.reduce_sum(tf.cast((changes[:, :-1] == 1) & (changes[:, 1:] == -1), tf.float64), axis=1)


def _signal_names(keys) -> list[str]:
    for key in keys:
        if isinstance(key, str) and key not in MODALITIES and key.lower() in MODALITIES:
            raise ConfigError(f"input {key!r}: modality names are lower case; expected {key.lower()!r}")
    return [m for m in MODALITIES if m in keys]


def masked_statistics(inputs: Mapping, ratio_range=(0.1, 0.5), seed=0,
                      statistics: Sequence[str] = STATISTICS) -> tuple[dict, dict]:
    """Mask one random span per window and modality of a BATCH; return ``(masked, targets)``.

    ``inputs``: ``{modality: [B, T, C]}`` of finite values (modality names from ``MODALITIES``;
    any other entry, such as ``"presence"``, is passed through unchanged). ``seed``: an int or a
    stateless-RNG pair; the same seed gives the same spans. Each modality draws its spans
    independently. ``masked``: the inputs with each span set to 0 in every channel; ``targets``:
    ``{f"{modality}_{statistic}": [B, 1] float32}`` computed on the unmasked values.
    """
    statistics = check_statistics(statistics)
    masked, values, signals = _masked_statistic_matrix(inputs, ratio_range, seed, statistics)
    columns = tf.unstack(tf.cast(values, tf.float32), axis=1)
    return masked, {name: column[:, None] for name, column in zip(target_names(signals, statistics), columns)}


def _masked_statistic_matrix(inputs: Mapping, ratio_range, seed, statistics: tuple):
    """``(masked, values [B, M*S] float64, signals)``: :func:`masked_statistics` with the targets
    as one matrix whose columns follow ``target_names(signals, statistics)``.

    Every modality's statistics come from one :func:`span_statistics` call (a few hundred ops
    instead of a few hundred per modality: in ``tf.data`` the per-op cost, not the arithmetic,
    bounds the pipeline). Each span is read from its start over the longest span's room, padded
    to the longest room of all modalities; the padding lies outside every span.
    """
    signals = _signal_names(inputs)
    if not signals:
        raise ConfigError(f"inputs: expected at least one of {', '.join(MODALITIES)}, "
                          f"found {sorted(map(str, inputs))}")
    seed = _as_seed(seed)
    masked, rooms, lengths, widths = dict(inputs), [], [], []
    for name in signals:
        windows = tf.convert_to_tensor(inputs[name])
        series = modality_series(name, windows)  # checks the shape
        time_steps = windows.shape[1]
        if time_steps is None:
            raise DataError(None, name, "a fixed number of time steps", "an unknown length")
        modality_seed = tf.random.experimental.stateless_fold_in(seed, MODALITIES.index(name))
        start, length = draw_spans(tf.shape(windows)[0], time_steps, ratio_range, modality_seed)
        span = _span_mask(start, length, time_steps)
        # A product, not a broadcast where (2.5x slower on [B, T, C]): the inputs are finite.
        masked[name] = windows * tf.cast(~span, windows.dtype)[:, :, None]
        longest = span_length_bounds(time_steps, ratio_range)[1]
        steps = tf.range(longest, dtype=tf.int32)[None, :]
        rooms.append(tf.gather(series, tf.minimum(start[:, None] + steps, time_steps - 1), batch_dims=1))
        lengths.append(length)
        widths.append(longest)
    width = max(widths)
    dtype = tf.float32 if all(r.dtype == tf.float32 for r in rooms) else tf.float64
    room = tf.concat([tf.pad(tf.cast(r, dtype), [[0, 0], [0, width - w]]) for r, w in zip(rooms, widths)], axis=0)
    inside = tf.range(width, dtype=tf.int32)[None, :] < tf.concat(lengths, axis=0)[:, None]
    values = span_statistics(room, inside, statistics, width)  # {stat: [M*B]}, modality-major rows
    # [S, M*B] -> [S, M, B] -> [B, M, S] -> [B, M*S]: modality-major columns, as target_names.
    count = len(signals)
    stacked = tf.reshape(tf.stack([values[s] for s in statistics]), [len(statistics), count, -1])
    matrix = tf.reshape(tf.transpose(stacked, [2, 1, 0]), [-1, count * len(statistics)])
    return masked, matrix, signals


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
                              statistics: Sequence[str] = STATISTICS, seed: int | Sequence[int] = 0,
                              shuffle: bool = True, target_scaler: TargetScaler | None = None,
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

    ``seed`` a list ``[s_1, ..., s_k]``: the first passes of the datasets of ``seed=s_1``, ...,
    ``seed=s_k``, one after the other, batch for batch, as one pipeline (several epochs without a
    pipeline start per epoch; every iteration gives the same batches).
    """
    given = dict(arrays) if isinstance(arrays, Mapping) else {}
    arrays, signals = _check_arrays(arrays, ratio_range)
    statistics = check_statistics(statistics)
    batch_size = _check_batch_size(batch_size)
    if isinstance(seed, Sequence) and not isinstance(seed, str):
        if not seed:
            raise ConfigError("seed: expected an int or a non-empty list of ints, found []")
        seeds = [checks.whole(f"seed[{i}]", value, 0, 2**63 - 1) for i, value in enumerate(seed)]
    else:
        seeds = [checks.whole("seed", seed, 0, 2**63 - 1)]
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

    def pass_of(pass_seed):
        """(row numbers [b], key [2]) of every batch of one pass drawn with ``pass_seed``."""
        rows = tf.data.Dataset.range(size)
        if shuffle:
            rows = rows.shuffle(size, seed=pass_seed, reshuffle_each_iteration=redraw_each_pass)
        rows = rows.batch(batch_size, drop_remainder=drop_remainder)
        keys = tf.data.Dataset.random(seed=pass_seed, rerandomize_each_iteration=redraw_each_pass)
        return tf.data.Dataset.zip((rows, keys.map(lambda key: tf.stack([tf.constant(pass_seed, tf.int64), key]))))

    # Several passes: their batch plans (row numbers, keys; cheap) are chained, and the masking
    # below maps the chain, so its function is instantiated once, not once per pass (~0.15 s a
    # start, more than the masking of a small epoch).
    batches = pass_of(seeds[0])
    for pass_seed in seeds[1:]:
        batches = batches.concatenate(pass_of(pass_seed))

    masker = _masker(_check_ratio_range(ratio_range), statistics, target_scaler, stack_targets)

    def mask_batch(index, key):
        return masker({name: tf.gather(tensor, index) for name, tensor in tensors.items()}, key)

    return batches.map(mask_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)


class MaskedStatisticsEpochs:
    """The training batches of fusion pretraining, epoch by epoch, for
    :func:`kfusion.training.pretrain.train_resumable`.

    ``epochs(epoch)`` (calling the object) is ``masked_statistics_dataset(arrays, ...,
    seed=epoch_seed(epoch), shuffle=True)``; :meth:`chain` gives the epochs ``first .. total - 1``
    batch for batch as one pipeline (``seed`` as a list), which ``train_resumable`` uses instead
    of chaining one dataset per epoch. Arguments as :func:`masked_statistics_dataset`.
    """

    def __init__(self, arrays: Mapping, batch_size: int, ratio_range=(0.1, 0.5),
                 statistics: Sequence[str] = STATISTICS, epoch_seed=None,
                 target_scaler: TargetScaler | None = None, stack_targets: Sequence[str] | None = None):
        if not callable(epoch_seed):
            raise ConfigError(f"MaskedStatisticsEpochs: epoch_seed: expected a function epoch -> seed, "
                              f"found {epoch_seed!r}")
        self.arrays, self.epoch_seed = arrays, epoch_seed
        self.settings = {"batch_size": batch_size, "ratio_range": ratio_range, "statistics": statistics,
                         "shuffle": True, "target_scaler": target_scaler, "stack_targets": stack_targets}

    def __call__(self, epoch: int) -> tf.data.Dataset:
        return masked_statistics_dataset(self.arrays, seed=self.epoch_seed(epoch), **self.settings)

    def chain(self, first: int, total: int) -> tf.data.Dataset:
        """Epochs ``first .. total - 1`` (at least one) in one pipeline."""
        seeds = [self.epoch_seed(epoch) for epoch in range(first, max(total, first + 1))]
        return masked_statistics_dataset(self.arrays, seed=seeds, **self.settings)


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
            masked, values, signals = _masked_statistic_matrix(batch, ratio_range, seed, statistics)
            names = target_names(signals, statistics)
            picked = names if stack is None else list(stack)
            columns = tf.gather(tf.cast(values, tf.float32), [names.index(n) for n in picked], axis=1)
            if scaler is not None:  # one vector op, not two per target (names checked by the dataset)
                columns = ((columns - np.array([scaler.mean[n] for n in picked], np.float32))
                           / np.array([scaler.std[n] for n in picked], np.float32))
            if stack is not None:
                return masked, columns
            return masked, {name: column[:, None] for name, column in zip(picked, tf.unstack(columns, axis=1))}

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
