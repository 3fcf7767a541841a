"""Signal augmentation layers: shape, inference identity, the specific change, seeding, config."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf

from kfusion.errors import ConfigError
from kfusion.training.augment import (
    RandomNegation, RandomNoise, RandomScaling, RandomSegmentPermutation, RandomSpanZeroing,
    RandomTimeReversal, RandomTimeWarp, default_augmenter,
)

B, T, C = 16, 24, 3


def windows(low=0.5, high=1.5, shape=(B, T, C), seed=0) -> np.ndarray:
    """Random windows with no zero and distinct values (so changes are unambiguous)."""
    return np.random.default_rng(seed).uniform(low, high, size=shape).astype("float32")


def run(layer, x):
    return np.asarray(layer(x, training=True))


ALL_LAYERS = [
    lambda seed: RandomNoise(0.1, seed=seed),
    lambda seed: RandomScaling((0.5, 2.0), seed=seed),
    lambda seed: RandomNegation(0.5, seed=seed),
    lambda seed: RandomTimeReversal(0.5, seed=seed),
    lambda seed: RandomSegmentPermutation(4, seed=seed),
    lambda seed: RandomTimeWarp(0.5, seed=seed),
    lambda seed: RandomSpanZeroing(0.3, seed=seed),
]


@pytest.mark.parametrize("make", ALL_LAYERS)
def test_shape_kept_inference_identity_and_seeding(make):
    x = windows()
    layer = make(7)
    out = run(layer, x)
    assert out.shape == x.shape and out.dtype == np.float32
    assert not np.allclose(out, x)
    # Inference (training False or not given) is the identity.
    np.testing.assert_array_equal(np.asarray(layer(x)), x)
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    # Same seed -> same output; a second call of one layer draws anew.
    np.testing.assert_array_equal(run(make(7), x), out)
    assert not np.array_equal(run(layer, x), out)
    # Config = constructor arguments: a rebuilt layer gives the same output.
    rebuilt = type(layer).from_config(layer.get_config())
    assert rebuilt.get_config() == layer.get_config()
    np.testing.assert_array_equal(run(rebuilt, x), out)


@pytest.mark.parametrize("make", ALL_LAYERS)
def test_works_in_graph_with_unknown_batch(make):
    layer = make(3)
    fn = tf.function(lambda a: layer(a, training=True), input_signature=[tf.TensorSpec([None, T, C])])
    assert fn(windows(shape=(5, T, C))).shape == (5, T, C)


def test_noise_is_additive_with_the_given_std():
    x = windows(shape=(64, 64, 2))
    noise = run(RandomNoise(0.2, seed=1), x) - x
    assert abs(noise.std() - 0.2) < 0.01 and abs(noise.mean()) < 0.01


def test_scaling_multiplies_each_example_by_one_factor_in_range():
    x = windows(low=-1.0, high=1.0)
    out = run(RandomScaling((0.5, 2.0), seed=2), x)
    factor = out / x
    per_example = factor[:, 0, 0]
    np.testing.assert_allclose(factor, np.broadcast_to(per_example[:, None, None], x.shape), rtol=1e-5)
    assert np.all((per_example >= 0.5) & (per_example <= 2.0))
    assert np.unique(per_example.round(4)).size > B // 2  # random per example
    np.testing.assert_allclose(out.std(axis=(1, 2)), per_example * x.std(axis=(1, 2)), rtol=1e-5)


def test_negation_and_reversal_hit_chosen_examples_only():
    x = windows()
    for layer, changed in [(RandomNegation(0.5, seed=3), -x), (RandomTimeReversal(0.5, seed=3), x[:, ::-1])]:
        out = run(layer, x)
        is_changed = np.array([np.array_equal(out[i], changed[i]) for i in range(B)])
        is_same = np.array([np.array_equal(out[i], x[i]) for i in range(B)])
        assert np.all(is_changed ^ is_same)
        assert 0 < is_changed.sum() < B


def test_probability_zero_and_one():
    x = windows()
    np.testing.assert_array_equal(run(RandomTimeReversal(0.0, seed=1), x), x)
    np.testing.assert_array_equal(run(RandomTimeReversal(1.0, seed=1), x), x[:, ::-1])


@pytest.mark.parametrize("time_steps, k", [(24, 4), (25, 4), (7, 3)])
def test_segment_permutation_preserves_the_multiset_of_segments(time_steps, k):
    x = windows(shape=(B, time_steps, 2))
    out = run(RandomSegmentPermutation(k, seed=4), x)
    bounds = [i * time_steps // k for i in range(k + 1)]
    moved = 0
    for i in range(B):
        pieces = [x[i, a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        # Walk the output: each position must start one unused piece of the input.
        position, used = 0, set()
        while position < time_steps:
            match = [j for j, p in enumerate(pieces) if j not in used
                     and np.array_equal(out[i, position:position + len(p)], p)]
            assert match, f"example {i}: output at {position} is no input piece"
            used.add(match[0])
            position += len(pieces[match[0]])
        assert used == set(range(k))
        moved += not np.array_equal(out[i], x[i])
    assert moved > B // 2


def test_time_warp_is_a_monotone_resampling_with_fixed_ends():
    ramp = np.broadcast_to(np.arange(T, dtype="float32")[None, :, None], (B, T, 1))
    wave = np.sin(np.linspace(0, 6, T, dtype="float32"))[None, :, None] * np.ones((B, 1, 1), "float32")
    out = run(RandomTimeWarp(0.5, seed=5), np.concatenate([ramp, wave], axis=-1))
    path = out[:, :, 0]  # the warp of a ramp is the warped time axis itself
    assert np.all(np.diff(path, axis=1) > 0)
    np.testing.assert_allclose(path[:, 0], 0.0, atol=1e-5)
    np.testing.assert_allclose(path[:, -1], T - 1, atol=1e-4)
    assert np.abs(path - ramp[:, :, 0]).max() > 0.5
    # Other channels are read at the same times with linear interpolation.
    for i in range(B):
        np.testing.assert_allclose(out[i, :, 1], np.interp(path[i], np.arange(T), wave[i, :, 0]), atol=1e-5)
    flat = run(RandomTimeWarp(0.0, seed=5), windows())
    np.testing.assert_allclose(flat, windows(), atol=1e-5)


@pytest.mark.parametrize("max_ratio", [0.1, 0.3, 1.0])
def test_span_zeroing_makes_one_contiguous_run_in_every_channel(max_ratio):
    x = windows()
    out = run(RandomSpanZeroing(max_ratio, seed=6), x)
    lengths = []
    for i in range(B):
        zero = out[i] == 0
        rows = np.flatnonzero(zero.all(axis=1))
        assert np.array_equal(zero.any(axis=1), zero.all(axis=1))  # all channels or none
        assert rows.size >= 1 and np.array_equal(rows, np.arange(rows[0], rows[-1] + 1))
        keep = np.ones(T, bool)
        keep[rows] = False
        np.testing.assert_array_equal(out[i][keep], x[i][keep])
        lengths.append(rows.size)
    assert max(lengths) <= max(1, int(np.floor(max_ratio * T + 1e-6)))
    if max_ratio == 1.0:
        assert len(set(lengths)) > 3


def test_default_augmenter_chains_and_is_reproducible():
    x = windows(shape=(8, 32, 1))
    a, b = default_augmenter(seed=11), default_augmenter(seed=11)
    out = run(a, x)
    assert out.shape == x.shape and not np.allclose(out, x)
    np.testing.assert_array_equal(run(b, x), out)
    np.testing.assert_array_equal(np.asarray(a(x, training=False)), x)
    assert not np.array_equal(run(default_augmenter(seed=12), x), out)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(default_augmenter(seed=11)))
    np.testing.assert_array_equal(run(restored, x), out)


@pytest.mark.parametrize("make", [
    lambda: RandomNoise(-1.0), lambda: RandomNoise("a"), lambda: RandomScaling((2.0, 1.0)),
    lambda: RandomScaling((1.0,)), lambda: RandomNegation(1.5), lambda: RandomTimeReversal(-0.1),
    lambda: RandomSegmentPermutation(1), lambda: RandomSegmentPermutation(2.5),
    lambda: RandomTimeWarp(knots=1), lambda: RandomTimeWarp(strength=float("nan")),
    lambda: RandomSpanZeroing(0.0), lambda: RandomSpanZeroing(1.5), lambda: RandomNoise(seed="x"),
    lambda: default_augmenter(seed=1.5),
])
def test_bad_arguments_raise_config_error(make):
    with pytest.raises(ConfigError):
        make()


def test_bad_input_shapes_raise_config_error():
    with pytest.raises(ConfigError, match="batch, time, channels"):
        RandomNoise()(np.ones((4, 8), "float32"), training=True)
    with pytest.raises(ConfigError, match="at least 4 time steps"):
        RandomSegmentPermutation(4)(np.ones((2, 3, 1), "float32"), training=True)
