"""Random signal augmentations for contrastive pretraining, as Keras layers.

Every layer takes float windows ``[batch, time, channels]`` and returns the same shape. It acts
only when called with ``training=True`` and is the identity otherwise (inference, export).
Each example draws its own random parameters, and with ``probability < 1`` each example is
transformed or left unchanged on its own draw. Randomness comes from a
``keras.random.SeedGenerator(seed)``: two layers built with the same seed produce the same
sequence of outputs; successive calls of one layer differ.
"""

from __future__ import annotations

import keras
from keras import ops

from kfusion import checks
from kfusion.errors import ConfigError

__all__ = [
    "RandomNoise", "RandomScaling", "RandomNegation", "RandomTimeReversal",
    "RandomSegmentPermutation", "RandomTimeWarp", "RandomSpanZeroing", "default_augmenter",
]

#: Key of a layer's random state in weight files.
SEED_STATE = "seed_state"


class _RandomWindowAugmentation(keras.layers.Layer):
    """Shared machinery: training switch, per-example probability, seed, shape checks."""

    min_time_steps = 1

    def __init__(self, probability: float = 1.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.probability = checks.fraction(f"{type(self).__name__}.probability", probability)
        self.seed = checks.optional_whole(f"{type(self).__name__}.seed", seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def build(self, input_shape):
        if len(input_shape) != 3:
            raise ConfigError(f"{type(self).__name__}: expected windows [batch, time, channels], "
                              f"found shape {tuple(input_shape)}")
        time_steps = input_shape[1]
        if time_steps is not None and time_steps < self.min_time_steps:
            raise ConfigError(f"{type(self).__name__}: expected at least {self.min_time_steps} time "
                              f"steps, found {time_steps}")
        super().build(input_shape)

    def call(self, inputs, training=None):
        if not training:
            return inputs
        x = ops.convert_to_tensor(inputs, dtype=self.compute_dtype)
        augmented = self.augment(x)
        if self.probability >= 1.0:
            return augmented
        batch = ops.shape(x)[0]
        chosen = keras.random.uniform((batch,), seed=self.seed_generator) < self.probability
        return ops.where(chosen[:, None, None], augmented, x)

    def augment(self, x):  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        return input_shape

    # The random state travels with the weights (``save_weights``, ``.keras`` files), so training
    # restored from a backup (``keras.callbacks.BackupAndRestore``) draws what an uninterrupted run
    # would have drawn. Files without it (written before it was saved) leave the state as it is.
    def save_own_variables(self, store):
        for i, variable in enumerate(self.weights):
            store[f"{i}"] = variable
        store[SEED_STATE] = self.seed_generator.state

    def load_own_variables(self, store):
        for i, variable in enumerate(self.weights):
            variable.assign(store[f"{i}"])
        if SEED_STATE in store.keys():
            self.seed_generator.state.assign(store[SEED_STATE])

    def get_config(self):
        config = super().get_config()
        config.update(probability=self.probability, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="kfusion")
class RandomNoise(_RandomWindowAugmentation):
    """Add Gaussian noise of standard deviation ``stddev`` (in the window's units) to every sample."""

    def __init__(self, stddev: float = 0.05, probability: float = 1.0, seed: int | None = None, **kwargs):
        super().__init__(probability=probability, seed=seed, **kwargs)
        self.stddev = checks.non_negative("RandomNoise.stddev", stddev)

    def augment(self, x):
        return x + self.stddev * keras.random.normal(ops.shape(x), dtype=x.dtype, seed=self.seed_generator)

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev}


@keras.saving.register_keras_serializable(package="kfusion")
class RandomScaling(_RandomWindowAugmentation):
    """Multiply each window (all channels) by one factor drawn uniformly from ``factor_range``."""

    def __init__(self, factor_range=(0.8, 1.2), probability: float = 1.0, seed: int | None = None,
                 **kwargs):
        super().__init__(probability=probability, seed=seed, **kwargs)
        self.factor_range = checks.pair("RandomScaling.factor_range", factor_range, 0.0, float("inf"))

    def augment(self, x):
        low, high = self.factor_range
        factor = keras.random.uniform((ops.shape(x)[0],), low, high, dtype=x.dtype, seed=self.seed_generator)
        return x * factor[:, None, None]

    def get_config(self):
        return {**super().get_config(), "factor_range": list(self.factor_range)}


@keras.saving.register_keras_serializable(package="kfusion")
class RandomNegation(_RandomWindowAugmentation):
    """Negate the window (``-x``) with the given probability per example."""

    def __init__(self, probability: float = 0.5, seed: int | None = None, **kwargs):
        super().__init__(probability=probability, seed=seed, **kwargs)

    def augment(self, x):
        return -x


@keras.saving.register_keras_serializable(package="kfusion")
class RandomTimeReversal(_RandomWindowAugmentation):
    """Reverse the time axis (``x[:, ::-1]``) with the given probability per example."""

    def __init__(self, probability: float = 0.5, seed: int | None = None, **kwargs):
        super().__init__(probability=probability, seed=seed, **kwargs)

    def augment(self, x):
        return ops.flip(x, axis=1)


@keras.saving.register_keras_serializable(package="kfusion")
class RandomSegmentPermutation(_RandomWindowAugmentation):
    """Cut the time axis into ``segments`` consecutive pieces and put them in a random order.

    Piece ``i`` covers samples ``[i*T//k, (i+1)*T//k)``, so the pieces differ by at most one sample
    when ``T`` is not a multiple of ``k``; every sample appears exactly once in the output.
    """

    def __init__(self, segments: int = 4, probability: float = 1.0, seed: int | None = None, **kwargs):
        super().__init__(probability=probability, seed=seed, **kwargs)
        self.segments = checks.whole("RandomSegmentPermutation.segments", segments, 2)
        self.min_time_steps = segments

    def augment(self, x):
        k = self.segments
        batch, time_steps = ops.shape(x)[0], ops.shape(x)[1]
        piece = ops.arange(k + 1, dtype="int32")
        bounds = (piece * time_steps) // k
        source_starts, lengths = bounds[:-1], bounds[1:] - bounds[:-1]
        order = ops.argsort(keras.random.uniform((batch, k), seed=self.seed_generator), axis=-1)
        placed_lengths = ops.take(lengths, order)                       # [B, k]
        placed_sources = ops.take(source_starts, order)                 # [B, k]
        placed_starts = ops.cumsum(placed_lengths, axis=-1) - placed_lengths
        t = ops.arange(time_steps, dtype="int32")
        # Output sample t falls in the last placed piece that starts at or before t.
        slot = ops.sum(ops.cast(placed_starts[:, None, :] <= t[None, :, None], "int32"), axis=-1) - 1
        offset = t[None, :] - ops.take_along_axis(placed_starts, slot, axis=1)
        source = ops.take_along_axis(placed_sources, slot, axis=1) + offset   # [B, T]
        return ops.take_along_axis(x, ops.broadcast_to(source[:, :, None], ops.shape(x)), axis=1)

    def get_config(self):
        return {**super().get_config(), "segments": self.segments}


@keras.saving.register_keras_serializable(package="kfusion")
class RandomTimeWarp(_RandomWindowAugmentation):
    """Smooth random time distortion, resampled back to the window's length.

    A playback speed ``exp(strength * N(0, 1))`` is drawn at ``knots`` evenly spaced points and
    interpolated linearly over the window; its running sum, rescaled to run from 0 to ``T - 1``,
    is a monotone warped time axis (first and last samples stay in place). The output reads the
    input at those fractional times by linear interpolation between neighbouring samples; all
    channels share the warp. ``strength=0`` gives the identity.
    """

    min_time_steps = 2

    def __init__(self, strength: float = 0.2, knots: int = 4, probability: float = 1.0,
                 seed: int | None = None, **kwargs):
        super().__init__(probability=probability, seed=seed, **kwargs)
        self.strength = checks.non_negative("RandomTimeWarp.strength", strength)
        self.knots = checks.whole("RandomTimeWarp.knots", knots, 2)

    def augment(self, x):
        batch, time_steps = ops.shape(x)[0], ops.shape(x)[1]
        speed_at_knots = ops.exp(self.strength * keras.random.normal(
            (batch, self.knots), dtype=x.dtype, seed=self.seed_generator))
        # Piecewise-linear speed curve over the T samples.
        last = ops.cast(time_steps - 1, x.dtype)
        knot_pos = ops.arange(time_steps, dtype=x.dtype) * (self.knots - 1) / last
        left = ops.clip(ops.cast(ops.floor(knot_pos), "int32"), 0, self.knots - 2)
        frac = knot_pos - ops.cast(left, x.dtype)
        speed = (ops.take(speed_at_knots, left, axis=1) * (1.0 - frac)
                 + ops.take(speed_at_knots, left + 1, axis=1) * frac)         # [B, T]
        warped = ops.cumsum(speed, axis=1) - speed[:, :1]
        warped = ops.clip(warped / warped[:, -1:] * last, 0.0, last)
        return _read_at(x, warped)

    def get_config(self):
        return {**super().get_config(), "strength": self.strength, "knots": self.knots}


def _read_at(x, positions):
    """Linear interpolation of ``x`` [B, T, C] at fractional time ``positions`` [B, T] in [0, T-1]."""
    time_steps = ops.shape(x)[1]
    left = ops.clip(ops.cast(ops.floor(positions), "int32"), 0, time_steps - 2)
    frac = (positions - ops.cast(left, positions.dtype))[:, :, None]
    shape = ops.shape(x)
    x_left = ops.take_along_axis(x, ops.broadcast_to(left[:, :, None], shape), axis=1)
    x_right = ops.take_along_axis(x, ops.broadcast_to(left[:, :, None] + 1, shape), axis=1)
    return x_left * (1.0 - frac) + x_right * frac


@keras.saving.register_keras_serializable(package="kfusion")
class RandomSpanZeroing(_RandomWindowAugmentation):
    """Simulated signal loss: zero one random contiguous span, in every channel.

    The span length is a whole number of samples drawn uniformly from
    ``1 .. max(1, floor(max_ratio * T))`` and its start uniformly among the positions where it fits.
    """

    def __init__(self, max_ratio: float = 0.25, probability: float = 1.0, seed: int | None = None,
                 **kwargs):
        super().__init__(probability=probability, seed=seed, **kwargs)
        self.max_ratio = checks.fraction("RandomSpanZeroing.max_ratio", max_ratio, low_open=True)

    def augment(self, x):
        batch, time_steps = ops.shape(x)[0], ops.shape(x)[1]
        max_length = ops.maximum(
            ops.cast(ops.floor(self.max_ratio * ops.cast(time_steps, "float32") + 1e-6), "int32"), 1)
        draw = keras.random.uniform((batch, 2), seed=self.seed_generator)
        length = ops.minimum(1 + ops.cast(draw[:, 0] * ops.cast(max_length, "float32"), "int32"), max_length)
        room = time_steps - length + 1
        start = ops.minimum(ops.cast(draw[:, 1] * ops.cast(room, "float32"), "int32"), room - 1)
        t = ops.arange(time_steps, dtype="int32")[None, :]
        in_span = (t >= start[:, None]) & (t < (start + length)[:, None])
        return ops.where(in_span[:, :, None], ops.zeros_like(x), x)

    def get_config(self):
        return {**super().get_config(), "max_ratio": self.max_ratio}


def default_augmenter(seed: int | None = 0, *, noise_stddev: float = 0.05, scaling_range=(0.8, 1.2),
                      warp_strength: float = 0.2, segments: int = 4, max_zero_ratio: float = 0.25,
                      name: str = "default_augmenter") -> keras.Sequential:
    """The augmentation chain used for contrastive pretraining of E4 windows (z-scored units).

    Order and per-example probabilities: time warp 0.5, segment permutation 0.3, time reversal
    0.3, negation 0.3, scaling 0.8, noise 0.8, span zeroing 0.5. Amplitude changes are mild and
    frequent; order-changing ones rarer, since they break the shape of slow physiological
    responses (an EDA rise and decay); zeroing comes last so a lost span stays exactly zero, as
    on the device. Layer ``i`` is seeded ``seed + i`` (all unseeded when ``seed`` is None).
    """
    seed = checks.optional_whole("default_augmenter.seed", seed)

    def sub_seed(i: int):
        return None if seed is None else seed + i

    return keras.Sequential([
        RandomTimeWarp(warp_strength, probability=0.5, seed=sub_seed(0)),
        RandomSegmentPermutation(segments, probability=0.3, seed=sub_seed(1)),
        RandomTimeReversal(probability=0.3, seed=sub_seed(2)),
        RandomNegation(probability=0.3, seed=sub_seed(3)),
        RandomScaling(scaling_range, probability=0.8, seed=sub_seed(4)),
        RandomNoise(noise_stddev, probability=0.8, seed=sub_seed(5)),
        RandomSpanZeroing(max_zero_ratio, probability=0.5, seed=sub_seed(6)),
    ], name=name)
