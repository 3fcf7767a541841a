"""Masked-span statistics: each statistic against NumPy/SciPy, the masking itself, the series
per modality, the target scaler and reproducibility."""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import scipy.signal
import scipy.stats

from kfusion.errors import ConfigError, DataError
from kfusion.training.masking import (
    STATISTICS, MaskedStatisticsEpochs, TargetScaler, masked_statistics, masked_statistics_dataset, modality_series,
    span_length_bounds, span_statistics, target_names,
)

# Statistics are computed in float64 from float32 inputs, like the references below.
ATOL = RTOL = 1e-9

SHAPES = {"speech": (50, 4), "acc": (32, 3), "bvp": (64, 1), "eda": (16, 1), "temp": (16, 1)}


def reference(values: np.ndarray) -> dict[str, float]:
    v = np.asarray(values, np.float64)
    constant = np.all(v == v[0])
    return {
        "mean": v.mean(), "std": v.std(), "min": v.min(), "max": v.max(),
        "skewness": 0.0 if constant else scipy.stats.skew(v),
        "kurtosis": 0.0 if constant else scipy.stats.kurtosis(v),
        "peaks": float(len(scipy.signal.find_peaks(v)[0])), "median": np.median(v),
    }


def spans(starts, lengths, time_steps) -> np.ndarray:
    t = np.arange(time_steps)
    starts, lengths = np.asarray(starts)[:, None], np.asarray(lengths)[:, None]
    return (t >= starts) & (t < starts + lengths)


def check_against_reference(series: np.ndarray, span: np.ndarray) -> None:
    got = {k: v.numpy() for k, v in span_statistics(series, span).items()}
    assert list(got) == list(STATISTICS)
    for i in range(len(series)):
        for name, expected in reference(series[i, span[i]]).items():
            assert got[name][i] == pytest.approx(expected, abs=ATOL, rel=RTOL), (i, name)


@pytest.mark.parametrize("length", [1, 2, 3, 5, 16, 41, 60])
def test_every_statistic_matches_numpy_and_scipy(length):
    rng = np.random.default_rng(length)
    series = (rng.normal(size=(24, 60)) * rng.uniform(0.1, 10, size=(24, 1))).astype("float32")
    starts = rng.integers(0, 60 - length + 1, size=24)
    check_against_reference(series, spans(starts, np.full(24, length), 60))


def test_statistics_with_mixed_span_lengths_in_one_batch():
    rng = np.random.default_rng(1)
    series = rng.gamma(2.0, size=(40, 30)).astype("float32")  # skewed data
    lengths = rng.integers(1, 31, size=40)
    starts = np.array([rng.integers(0, 31 - n) for n in lengths])
    check_against_reference(series, spans(starts, lengths, 30))


@pytest.mark.parametrize("longest", [1, 2, 7, 12])
def test_median_of_spans_no_longer_than_longest_reads_fewer_values(longest):
    rng = np.random.default_rng(longest)
    series = rng.normal(size=(50, 30)).astype("float32")
    lengths = rng.integers(1, longest + 1, size=50)
    starts = np.array([rng.integers(0, 31 - n) for n in lengths])
    mask = spans(starts, lengths, 30)
    short = span_statistics(series, mask, ["median"], longest=longest)["median"].numpy()
    np.testing.assert_array_equal(short, span_statistics(series, mask, ["median"])["median"].numpy())
    np.testing.assert_allclose(short, [np.median(row[m]) for row, m in zip(series.astype(np.float64), mask)])


@pytest.mark.parametrize("values, expected", [
    ([0, 1, 1, 1, 0], 1),             # plateau counted once
    ([0, 1, 1, 2, 1], 1),             # a step up is no peak
    ([0, 2, 2], 0),                   # plateau running into the end
    ([2, 2, 0], 0),
    ([0, 1, 0, 1, 0], 2),
    ([0, 1, 1, 0, 1, 1, 1, 0], 2),
    ([1, 1, 1, 1], 0),
    ([0, 1, 2, 2, 1, 1, 0], 1),
    ([3, 1, 2, 2, 3, 0], 1),          # a valley plateau is no peak
    ([0, 5], 0), ([7], 0),
])
def test_peak_count_with_plateaus(values, expected):
    values = np.asarray(values, "float32")
    assert len(scipy.signal.find_peaks(values)[0]) == expected  # the reference agrees
    padded = np.concatenate([[9.0], values, [9.0]]).astype("float32")[None]
    span = spans([1], [len(values)], padded.shape[1])
    assert span_statistics(padded, span, ["peaks"])["peaks"].numpy()[0] == expected


def test_peaks_ignore_samples_outside_the_span():
    series = np.array([[0, 1, 2, 1, 0]], "float32")
    assert span_statistics(series, spans([0], [5], 5), ["peaks"])["peaks"].numpy()[0] == 1
    assert span_statistics(series, spans([0], [3], 5), ["peaks"])["peaks"].numpy()[0] == 0  # top at the edge


def test_peaks_on_random_plateau_heavy_sequences():
    rng = np.random.default_rng(2)
    series = rng.integers(0, 3, size=(300, 25)).astype("float32")
    lengths = rng.integers(1, 26, size=300)
    starts = np.array([rng.integers(0, 26 - n) for n in lengths])
    span = spans(starts, lengths, 25)
    got = span_statistics(series, span, ["peaks", "median"])
    for i in range(300):
        values = series[i, span[i]]
        assert got["peaks"].numpy()[i] == len(scipy.signal.find_peaks(values)[0])
        assert got["median"].numpy()[i] == np.median(values)


def test_constant_span_has_zero_std_skewness_and_kurtosis():
    series = np.stack([np.full(12, 3.7), np.zeros(12), np.r_[np.full(6, -2.5), np.arange(6)]]).astype("float32")
    got = {k: v.numpy() for k, v in span_statistics(series, spans([2, 0, 0], [7, 12, 6], 12)).items()}
    value = np.float32(3.7)
    for name, expected in [("mean", value), ("min", value), ("max", value), ("median", value),
                           ("std", 0.0), ("skewness", 0.0), ("kurtosis", 0.0), ("peaks", 0.0)]:
        assert got[name][0] == pytest.approx(expected, abs=1e-12), name
    assert all(got[name][1] == 0 for name in STATISTICS)
    assert got["mean"][2] == pytest.approx(-2.5) and got["kurtosis"][2] == 0


def test_modality_series():
    acc = np.zeros((1, 4, 3), "float32")
    acc[0, :, 0], acc[0, :, 1], acc[0, :, 2] = [3, 0, 1, 2], [4, 0, 2, 3], [0, 5, 2, 6]
    np.testing.assert_allclose(modality_series("acc", acc).numpy()[0], [5, 5, 3, 7], atol=1e-6)
    speech = np.random.default_rng(3).normal(size=(2, 10, 40)).astype("float32")
    np.testing.assert_array_equal(modality_series("speech", speech).numpy(), speech[:, :, 0])
    bvp = speech[:, :, :1]
    np.testing.assert_array_equal(modality_series("bvp", bvp).numpy(), speech[:, :, 0])
    with pytest.raises(DataError, match="1 channel"):
        modality_series("bvp", speech)
    with pytest.raises(DataError, match="3 channels"):
        modality_series("acc", bvp)
    with pytest.raises(DataError, match="batch, time, channels"):
        modality_series("eda", speech[0])


def five_modalities(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Windows without zeros (so the mask is unambiguous) plus a presence array."""
    rng = np.random.default_rng(seed)
    arrays = {m: rng.uniform(0.5, 1.5, size=(n, *shape)).astype("float32") for m, shape in SHAPES.items()}
    arrays["presence"] = rng.integers(0, 2, size=(n, 5)).astype("float32")
    return arrays


def test_span_is_zeroed_in_every_channel_and_targets_use_the_original_values():
    inputs = five_modalities(12)
    masked, targets = masked_statistics(inputs, ratio_range=(0.2, 0.4), seed=5)
    assert set(targets) == set(target_names(SHAPES))
    assert all(v.shape == (12, 1) and v.dtype == "float32" for v in targets.values())
    np.testing.assert_array_equal(np.asarray(masked["presence"]), inputs["presence"])
    for modality, (time_steps, _) in SHAPES.items():
        original, out = inputs[modality], np.asarray(masked[modality])
        assert out.shape == original.shape
        series = np.asarray(modality_series(modality, original))
        for i in range(12):
            zero = out[i] == 0
            rows = np.flatnonzero(zero.all(axis=1))
            assert np.array_equal(zero.any(axis=1), zero.all(axis=1)), "partly zeroed sample"
            assert np.array_equal(rows, np.arange(rows[0], rows[0] + rows.size)), "span not contiguous"
            assert 0.2 <= rows.size / time_steps <= 0.4
            keep = np.ones(time_steps, bool)
            keep[rows] = False
            np.testing.assert_array_equal(out[i][keep], original[i][keep])
            for name, expected in reference(series[i, rows]).items():
                assert float(targets[f"{modality}_{name}"][i, 0]) == pytest.approx(expected, abs=1e-5, rel=1e-5)


def test_span_lengths_cover_the_whole_ratio_range():
    assert span_length_bounds(16, (0.1, 0.5)) == (2, 8)
    assert span_length_bounds(10, (0.3, 0.3)) == (3, 3)  # 0.3 * 10 is 3.0000000000000004
    assert span_length_bounds(400, (0.1, 0.5)) == (40, 200)
    _, targets = masked_statistics({"eda": np.ones((500, 16, 1), "float32") + np.arange(16)[:, None]},
                                   (0.1, 0.5), seed=0, statistics=["max", "min"])
    lengths = (targets["eda_max"] - targets["eda_min"]).numpy().ravel() + 1  # span of a ramp
    assert set(lengths.astype(int)) == set(range(2, 9))
    with pytest.raises(ConfigError, match="no whole span length"):
        span_length_bounds(16, (0.2, 0.22))


def as_numpy(dataset) -> list:
    return [keras.tree.map_structure(np.asarray, element) for element in dataset]


def assert_same(a, b) -> None:
    keras.tree.map_structure(np.testing.assert_array_equal, a, b)


def test_same_seed_same_masks_new_masks_each_epoch():
    arrays = five_modalities(20)
    first = masked_statistics_dataset(arrays, 8, seed=3)
    second = masked_statistics_dataset(arrays, 8, seed=3)
    epochs = [as_numpy(first), as_numpy(first)]
    assert_same(epochs, [as_numpy(second), as_numpy(second)])
    assert [len(e[0]["acc"]) for e in epochs[0]] == [8, 8, 4]
    assert not np.array_equal(epochs[0][0][1]["bvp_mean"], epochs[1][0][1]["bvp_mean"])
    other = as_numpy(masked_statistics_dataset(arrays, 8, seed=4))
    assert not np.array_equal(other[0][1]["bvp_mean"], epochs[0][0][1]["bvp_mean"])
    # Unshuffled: windows keep their order, and a new epoch still draws new spans.
    plain = masked_statistics_dataset(arrays, 20, seed=3, shuffle=False)
    one, two = as_numpy(plain)[0], as_numpy(plain)[0]
    np.testing.assert_array_equal(one[0]["presence"], arrays["presence"])
    assert not np.array_equal(one[0]["eda"], two[0]["eda"])
    # The batch function alone: same seed, same result.
    assert_same(masked_statistics(arrays, seed=9), masked_statistics(arrays, seed=9))


def test_a_validation_set_draws_its_masks_once():
    """redraw_each_pass=False: every pass the same batches (a resumed or distributed run, which
    counts passes differently, validates on the same spans)."""
    arrays = five_modalities(20)
    fixed = masked_statistics_dataset(arrays, 8, seed=3, shuffle=False, redraw_each_pass=False)
    passes = [as_numpy(fixed) for _ in range(3)]
    assert_same(passes[0], passes[1])
    assert_same(passes[0], passes[2])
    other = as_numpy(masked_statistics_dataset(arrays, 8, seed=4, shuffle=False, redraw_each_pass=False))
    assert not np.array_equal(other[0][1]["bvp_mean"], passes[0][0][1]["bvp_mean"])
    shuffled = masked_statistics_dataset(arrays, 8, seed=3, redraw_each_pass=False)
    assert_same(as_numpy(shuffled), as_numpy(shuffled))


def test_target_scaler_uses_only_the_data_it_is_fitted_on():
    train = five_modalities(40, seed=1)
    other = {k: (v * 3 + 2 if k in SHAPES else v) for k, v in five_modalities(40, seed=2).items()}
    scaler = TargetScaler().fit(train, seed=7, batch_size=16)
    # The same draws, collected by hand: the scaler's mean/std are theirs.
    collected = {}
    for _, targets in masked_statistics_dataset(train, 16, seed=7, shuffle=False):
        for name, value in targets.items():
            collected.setdefault(name, []).append(value.numpy().ravel())
    for name, parts in collected.items():
        values = np.concatenate(parts).astype(np.float64)
        assert scaler.mean[name] == pytest.approx(values.mean(), abs=1e-9)
        assert scaler.std[name] == pytest.approx(values.std() if values.std() > 0 else 1.0, abs=1e-9)
        scaled = scaler.transform({name: values})[name]
        assert abs(scaled.mean()) < 1e-9 and (values.std() == 0 or abs(scaled.std() - 1) < 1e-9)
    assert scaler.fitted_with["windows"] == 40 and scaler.fitted_with["seed"] == 7
    both = TargetScaler().fit({k: np.concatenate([train[k], other[k]]) for k in train}, seed=7, batch_size=16)
    assert abs(both.mean["bvp_mean"] - scaler.mean["bvp_mean"]) > 0.5
    # The training dataset applies exactly that scaler.
    raw = as_numpy(masked_statistics_dataset(train, 16, seed=7, shuffle=False))
    scaled = as_numpy(masked_statistics_dataset(train, 16, seed=7, shuffle=False, target_scaler=scaler))
    for (_, r), (_, s) in zip(raw, scaled):
        for name in r:
            np.testing.assert_allclose(s[name], (r[name] - scaler.mean[name]) / scaler.std[name], rtol=1e-5, atol=1e-5)


def test_target_scaler_round_trip_and_constant_targets():
    arrays = {"eda": np.repeat(np.arange(1, 9, dtype="float32")[:, None, None], 16, axis=1)}  # constant windows
    scaler = TargetScaler().fit(arrays, statistics=["mean", "std"], seed=0, batch_size=4, draws=2)
    assert scaler.std["eda_std"] == 1.0 and scaler.mean["eda_std"] == 0.0
    assert scaler.mean["eda_mean"] == pytest.approx(4.5)
    restored = TargetScaler.from_dict(json.loads(json.dumps(scaler.to_dict())))
    assert restored.to_dict() == scaler.to_dict()
    values = {"eda_mean": np.array([1.0, 8.0]), "eda_std": np.array([0.0, 2.0])}
    back = restored.inverse_transform(restored.transform(values))
    for name in values:
        np.testing.assert_allclose(back[name], values[name])


def test_dataset_feeds_a_multi_output_model():
    arrays = {"bvp": np.random.default_rng(0).normal(size=(32, 16, 1)).astype("float32"),
              "eda": np.random.default_rng(1).normal(size=(32, 8, 1)).astype("float32"),
              "presence": np.ones((32, 2), "float32")}
    names = target_names(["bvp", "eda"])
    scaler = TargetScaler().fit(arrays, batch_size=32)
    inputs = {"bvp": keras.Input((16, 1), name="bvp"), "eda": keras.Input((8, 1), name="eda"),
              "presence": keras.Input((2,), name="presence")}
    hidden = keras.layers.Concatenate()([keras.layers.Flatten()(inputs["bvp"]),
                                         keras.layers.Flatten()(inputs["eda"]), inputs["presence"]])
    outputs = {name: keras.layers.Dense(1, name=name)(hidden) for name in names}
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss={name: "mae" for name in names})
    history = model.fit(masked_statistics_dataset(arrays, 16, target_scaler=scaler), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


def test_stacked_targets_are_the_dict_targets_in_the_given_order():
    arrays = {"bvp": np.random.default_rng(0).normal(size=(24, 16, 1)).astype("float32"),
              "eda": np.random.default_rng(1).normal(size=(24, 8, 1)).astype("float32")}
    scaler = TargetScaler().fit(arrays, batch_size=24)
    order = ["eda_max", "bvp_mean", "eda_mean"]
    as_dict = list(masked_statistics_dataset(arrays, 8, target_scaler=scaler, seed=4))
    stacked = list(masked_statistics_dataset(arrays, 8, target_scaler=scaler, seed=4, stack_targets=order))
    for (inputs, targets), (masked, columns) in zip(as_dict, stacked):
        assert columns.shape == (8, 3) and columns.dtype.name == "float32"
        np.testing.assert_array_equal(columns.numpy(), np.concatenate([targets[n].numpy() for n in order], axis=1))
        np.testing.assert_array_equal(masked["bvp"].numpy(), inputs["bvp"].numpy())


@pytest.mark.parametrize("global_seed", [None, 0, 11])
def test_passes_of_a_list_of_seeds_are_the_single_seed_datasets_chained(global_seed):
    """One pipeline for several epochs gives, batch for batch, the datasets of each seed one after
    the other (global seed 0 included: tf.data treats a zero seed pair specially). The dataset
    options do not touch the seeds: they are checked once, without a global seed."""
    if global_seed is not None:
        keras.utils.set_random_seed(global_seed)
    arrays = five_modalities(20)
    names = target_names(SHAPES)
    scaler = TargetScaler().fit(arrays, batch_size=20)
    seeds = [4_012_345_678, 17, 0]  # above 2**31 too (pretraining's epoch seeds are uint32)
    options = ({}, {"stack_targets": names[::-1], "target_scaler": scaler}, {"shuffle": False},
               {"drop_remainder": True})
    for kwargs in options if global_seed is None else options[:1]:
        chained = as_numpy(masked_statistics_dataset(arrays, 8, seed=seeds, **kwargs))
        one_by_one = [batch for s in seeds
                      for batch in as_numpy(masked_statistics_dataset(arrays, 8, seed=s, **kwargs))]
        assert len(chained) == len(one_by_one) == (6 if kwargs.get("drop_remainder") else 9)
        assert_same(chained, one_by_one)
    if global_seed is not None:
        return
    epochs = MaskedStatisticsEpochs(arrays, 8, epoch_seed=lambda epoch: 100 + epoch, stack_targets=names)
    assert_same(as_numpy(epochs(2)), as_numpy(masked_statistics_dataset(arrays, 8, seed=102, stack_targets=names)))
    assert_same(as_numpy(epochs.chain(1, 3)), as_numpy(epochs(1)) + as_numpy(epochs(2)))
    assert_same(as_numpy(epochs.chain(3, 3)), as_numpy(epochs(3)))  # at least one epoch


def test_training_chains_the_epochs_of_masked_statistics_as_one_pipeline():
    """train_resumable's chain of MaskedStatisticsEpochs: the per-epoch datasets, from any epoch."""
    from kfusion.training.pretrain import _EpochChain

    arrays = five_modalities(20)
    epochs = MaskedStatisticsEpochs(arrays, 8, epoch_seed=lambda epoch: 7 * epoch)
    for first in (0, 2):
        chain = _EpochChain.of(epochs, first, 4)
        assert chain.steps_per_epoch == 3
        chain.started = first
        assert_same(as_numpy(chain.dataset), [b for e in range(first, 4) for b in as_numpy(epochs(e))])

    class NotADataset(MaskedStatisticsEpochs):
        def chain(self, first, total):
            return [self(e) for e in range(first, total)]

    with pytest.raises(ConfigError, match=r"epoch_data.chain\(first, total\): expected a tf.data.Dataset.*list"):
        _EpochChain.of(NotADataset(arrays, 8, epoch_seed=lambda epoch: epoch), 0, 2)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(stack_targets=["eda_mean", "temp_mean"]), ConfigError, "temp_mean not among"),
    (dict(stack_targets="eda_mean"), ConfigError, "stack_targets"),
    (dict(stack_targets=["eda_mean", "eda_mean"]), ConfigError, "unique"),
    (dict(ratio_range=(0.0, 0.5)), ConfigError, "ratio_range"),
    (dict(ratio_range=(0.6, 0.5)), ConfigError, "ratio_range"),
    (dict(ratio_range=(0.1, 1.5)), ConfigError, "ratio_range"),
    (dict(ratio_range="ab"), ConfigError, "ratio_range"),
    (dict(ratio_range=(0.2, 0.22)), ConfigError, "no whole span length for eda"),
    (dict(statistics=["mean", "mode"]), ConfigError, "statistics"),
    (dict(statistics=[]), ConfigError, "statistics"),
    (dict(statistics=["mean", "mean"]), ConfigError, "twice"),
    (dict(batch_size=0), ConfigError, "batch_size"),
    (dict(seed=-1), ConfigError, "seed"),
    (dict(seed=1.5), ConfigError, "seed"),
    (dict(seed=[]), ConfigError, "non-empty list"),
    (dict(seed=[3, -1]), ConfigError, r"seed\[1\]"),
    (dict(target_scaler=TargetScaler()), ConfigError, "not fitted"),
    (dict(target_scaler=TargetScaler({"eda_mean": 0.0}, {"eda_mean": 1.0})), ConfigError, "eda_std"),
    (dict(target_scaler={"eda_mean": 0.0}), ConfigError, "TargetScaler"),
])
def test_bad_dataset_arguments(kwargs, error, match):
    arrays = {"eda": np.ones((4, 16, 1), "float32"), "bvp": np.ones((4, 64, 1), "float32")}
    with pytest.raises(error, match=match):
        masked_statistics_dataset(arrays, **{"batch_size": 2, **kwargs})


@pytest.mark.parametrize("arrays, error, match", [
    ({}, ConfigError, "arrays"),
    ({"presence": np.ones((4, 5))}, ConfigError, "at least one of"),
    ({"ACC": np.ones((4, 32, 3))}, ConfigError, "lower case"),
    ({"eda": np.ones((4, 16, 1)), "bvp": np.ones((3, 64, 1))}, DataError, r"arrays\['bvp'\].*4 windows"),
    ({"eda": np.ones((4, 16))}, DataError, r"windows \[N, time, channels\]"),
    ({"eda": np.full((4, 16, 1), np.nan)}, DataError, "finite values.*64 NaN"),
    ({"eda": np.array([[["a"]] * 16] * 4)}, DataError, "real numbers"),
    ({"bvp": np.ones((4, 64, 2))}, DataError, "1 channel"),
    ({"acc": np.ones((4, 96, 1))}, DataError, "3 channels"),
    ({"eda": np.ones((0, 16, 1))}, DataError, "at least one window"),
    ({"eda": np.ones((4, 16, 1)), "presence": np.float32(1)}, DataError, "one row per window"),
])
def test_bad_arrays(arrays, error, match):
    with pytest.raises(error, match=match):
        masked_statistics_dataset(arrays, 2)


def test_bad_scaler_arguments():
    with pytest.raises(ConfigError, match="draws"):
        TargetScaler().fit({"eda": np.ones((4, 16, 1), "float32")}, draws=0)
    with pytest.raises(ConfigError, match="positive std"):
        TargetScaler({"a": 0.0}, {"a": 0.0})
    with pytest.raises(ConfigError, match="different targets"):
        TargetScaler({"a": 0.0}, {"b": 1.0})
    with pytest.raises(ConfigError, match="expected keys"):
        TargetScaler.from_dict({"mean": {}})
    with pytest.raises(ConfigError, match="no scale"):
        TargetScaler({"a": 0.0}, {"a": 1.0}).transform({"b": np.zeros(2)})
    with pytest.raises(ConfigError, match="at least one of"):
        masked_statistics({"presence": np.ones((2, 5))})
