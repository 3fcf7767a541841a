"""Pretraining and emotion heads, backbone extraction, and the two freezing configurations."""

from __future__ import annotations

import numpy as np
import pytest

import keras

from kfusion.modalities import MODALITIES, STATISTICS  # noqa: E402
from kfusion.errors import ConfigError  # noqa: E402
from model_helpers import tiny_encoders  # noqa: E402
from kfusion.models import (  # noqa: E402
    backbone_layers,
    backbone_of,
    emotion_model,
    freeze_encoders,
    freeze_for_fusion_training,
    fusion_backbone,
    fusion_pretraining_model,
    StatisticHeads,
    pretraining_targets,
    statistic_targets,
    summed_absolute_error,
)


def tiny_backbone(mechanism="unweighted", modalities=MODALITIES, use_presence=True):
    return fusion_backbone(tiny_encoders(modalities), mechanism, projection_units=(8, 4), use_presence=use_presence,
                           attention_tokens=4)


def test_statistics_constant_and_default_targets():
    assert STATISTICS == ("mean", "std", "min", "max", "skewness", "kurtosis", "peaks", "median")
    names = statistic_targets(MODALITIES)
    assert len(names) == 40 and names[0] == "speech_mean" and names[-1] == "temp_median"


def test_pretraining_model_has_one_linear_head_per_statistic():
    backbone = tiny_backbone()
    model = fusion_pretraining_model(backbone, head_units=(3,))
    assert model.output_shape == (None, 40)
    assert pretraining_targets(model) == statistic_targets(MODALITIES)
    heads = model.get_layer("statistics")
    assert isinstance(heads, StatisticHeads) and heads.units == (3,)
    assert StatisticHeads.from_config(heads.get_config()).get_config() == heads.get_config()
    # Heads read the projection; per head: 4*3+3 hidden + 3*1+1 output = 19 parameters.
    assert model.count_params() - backbone.count_params() == 40 * 19
    assert len(heads.trainable_variables) == 4                    # grouped, not 4 per target
    assert model.get_layer("fusion") is backbone.get_layer("fusion")  # shared, not copied


def _separate_heads(backbone, targets, units):
    """The heads as separate Dense stacks (one output per target), built as before the grouped
    layer (the output layer made before its hidden layers, as Python evaluated it)."""
    features = backbone.get_layer("projection").output

    def stack(target):
        x = features
        for i, width in enumerate(units, start=1):
            x = keras.layers.Dense(width, activation="relu", name=f"{target}_dense_{i}")(x)
        return x

    outputs = {t: keras.layers.Dense(1, name=t)(stack(t)) for t in targets}
    return keras.Model(backbone.input, outputs)


@pytest.mark.parametrize("units", [(5,), (), (4, 3)])
def test_grouped_heads_start_and_train_as_separate_dense_heads(units):
    """Same seed, same start; summed MAE over the grouped output = the sum of one MAE per head."""
    targets = statistic_targets(("eda", "temp"))
    rng = np.random.default_rng(0)
    predictions, losses = {}, {}
    for kind in ("separate", "grouped"):  # eager steps: tracing 16 heads took 12 s a case
        keras.utils.set_random_seed(3)
        backbone = tiny_backbone("weighted", modalities=("eda", "temp"))
        if kind == "separate":
            model = _separate_heads(backbone, targets, units)
            model.compile(keras.optimizers.Adam(0.01), loss={t: "mae" for t in targets}, run_eagerly=True)
        else:
            model = fusion_pretraining_model(backbone, targets, units)
            model.compile(keras.optimizers.Adam(0.01), loss=summed_absolute_error, run_eagerly=True)
        if not losses:
            x = {k: rng.normal(size=(6, *t.shape[1:])).astype("float32") for k, t in model.input.items()}
            y = rng.normal(size=(6, len(targets))).astype("float32")
        as_columns = (lambda out: np.concatenate([np.asarray(out[t]) for t in targets], axis=1)) \
            if kind == "separate" else np.asarray
        start = as_columns(model(x))
        given = {t: y[:, i:i + 1] for i, t in enumerate(targets)} if kind == "separate" else y
        losses[kind] = [np.ravel(model.train_on_batch(x, given))[0] for _ in range(4)]
        predictions[kind] = (start, as_columns(model(x)))
    np.testing.assert_allclose(predictions["grouped"][0], predictions["separate"][0], atol=1e-6)
    np.testing.assert_allclose(losses["grouped"], losses["separate"], rtol=1e-5)
    np.testing.assert_allclose(predictions["grouped"][1], predictions["separate"][1], atol=1e-4)
    assert losses["grouped"][-1] < losses["grouped"][0]


def test_pretraining_targets_follow_the_backbone_modalities():
    model = fusion_pretraining_model(tiny_backbone(modalities=("eda", "temp")))
    assert pretraining_targets(model) == statistic_targets(("eda", "temp"))
    custom = fusion_pretraining_model(tiny_backbone(modalities=("eda",)), targets=["eda_mean"],
                                      head_units=())
    x = {"eda": np.zeros((2, 16, 1), "float32"), "presence": np.ones((2, 1), "float32")}
    assert custom(x).shape == (2, 1)
    with pytest.raises(ConfigError, match="statistics"):
        pretraining_targets(tiny_backbone())


def test_emotion_model_outputs_softmax_per_target():
    model = emotion_model(tiny_backbone(), units=(6, 5))
    rng = np.random.default_rng(0)
    x = {k: rng.normal(size=(3, *t.shape[1:])).astype("float32") for k, t in model.input.items()}
    x["presence"] = np.ones((3, 5), "float32")
    out = model(x)
    assert {k: tuple(v.shape) for k, v in out.items()} == {"arousal": (3, 3), "valence": (3, 3),
                                                          "emotion": (3, 6)}
    for value in out.values():
        np.testing.assert_allclose(np.asarray(value).sum(axis=1), 1.0, rtol=1e-5)
    assert model.get_layer("emotion_dense_1").units == 6 and model.get_layer("emotion_dense_2").units == 5
    subset = emotion_model(tiny_backbone(modalities=("bvp",)), targets=["valence"])
    assert list(subset.output) == ["valence"]
    stress = emotion_model(tiny_backbone(modalities=("bvp",)), targets={"stress": 2})
    assert stress.get_layer("stress").units == 2


@pytest.mark.parametrize("build, kwargs, words", [
    (emotion_model, {"targets": {"arousal": 1}}, "whole number >= 2"),
    (emotion_model, {"targets": ["arousal", "stress"]}, "no default class count"),
    (emotion_model, {"targets": {}}, "at least one target"),
    (emotion_model, {"targets": {"fusion": 3}}, "already name layers"),
    (emotion_model, {"targets": {"bvp": 3}}, "already name layers"),
    (emotion_model, {"units": (0,)}, "units"),
    (emotion_model, {"targets": {"a b": 3}}, "target"),
    (fusion_pretraining_model, {"targets": []}, "non-empty list"),
    (fusion_pretraining_model, {"targets": ["x", "x"]}, "unique"),
    (fusion_pretraining_model, {"targets": "bvp_mean"}, "non-empty list"),
    (fusion_pretraining_model, {"targets": ["a b"]}, "target"),
    (fusion_pretraining_model, {"head_units": (0,)}, "head_units"),
])
def test_heads_reject_bad_arguments(build, kwargs, words):
    with pytest.raises(ConfigError) as err:
        build(tiny_backbone(modalities=("bvp",)), **kwargs)
    assert words in str(err.value)


def test_heads_need_a_fusion_backbone():
    inputs = keras.Input((3,))
    with pytest.raises(ConfigError, match="projection"):
        emotion_model(keras.Model(inputs, keras.layers.Dense(2)(inputs)))
    with pytest.raises(ConfigError, match="keras.Model"):
        fusion_pretraining_model("backbone")


def _trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize("mechanism", ["weighted", "attention"])
def test_freezing_configurations_set_exactly_the_paper_trainable_parts(mechanism):
    backbone = tiny_backbone(mechanism)
    model = emotion_model(backbone, units=(4, 4))
    encoders = sum(model.get_layer(f"{m}_encoder").count_params() for m in MODALITIES)
    heads = model.count_params() - backbone.count_params()
    total = model.count_params()
    assert _trainable_count(model) == total

    projection = sum(layer.count_params() for layer in model.layers if layer.name.startswith("projection_"))
    assert projection > 0
    assert freeze_for_fusion_training(model) is model  # frozen up to the projection head
    assert _trainable_count(model) == heads + projection
    assert not model.get_layer("fusion").trainable and not model.get_layer("presence_gate").trainable
    assert freeze_for_fusion_training(model, train_projection=False) is model
    assert _trainable_count(model) == heads
    assert len(model.trainable_weights) == 3 * 3 * 2  # 3 targets x 3 Dense x (kernel, bias)

    assert freeze_encoders(model) is model
    assert _trainable_count(model) == total - encoders
    assert not model.get_layer("speech_encoder").get_layer("conv_1").trainable
    assert model.get_layer("presence_gate").trainable and model.get_layer("fusion").trainable

    freeze_for_fusion_training(model)  # switching back gives the first configuration again
    assert _trainable_count(model) == heads + projection


def test_frozen_backbone_does_not_change_while_heads_train():
    keras.utils.set_random_seed(1)
    model = freeze_for_fusion_training(emotion_model(tiny_backbone("weighted", ("eda", "temp")),
                                                     targets=["arousal"], units=(4, 4)), train_projection=False)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="categorical_crossentropy",
                  run_eagerly=True)
    rng = np.random.default_rng(2)
    x = {k: rng.normal(size=(8, *t.shape[1:])).astype("float32") for k, t in model.input.items()}
    x["presence"] = np.ones((8, 2), "float32")
    y = {"arousal": np.eye(3, dtype="float32")[rng.integers(0, 3, 8)]}
    frozen_before = [w.numpy().copy() for layer in backbone_layers(model) for w in layer.weights]
    head_before = model.get_layer("arousal").get_weights()[0].copy()
    model.train_on_batch(x, y)
    frozen_after = [w.numpy() for layer in backbone_layers(model) for w in layer.weights]
    assert all(np.array_equal(a, b) for a, b in zip(frozen_before, frozen_after))
    assert not np.array_equal(head_before, model.get_layer("arousal").get_weights()[0])

    # The default trains the projection head too; the fusion layer keeps its weights.
    freeze_for_fusion_training(model)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="categorical_crossentropy", run_eagerly=True)
    fusion_before = [w.copy() for w in model.get_layer("fusion").get_weights()]
    projection_before = model.get_layer("projection_1").get_weights()[0].copy()
    model.train_on_batch(x, y)
    assert all(np.array_equal(a, b) for a, b in zip(fusion_before, model.get_layer("fusion").get_weights()))
    assert not np.array_equal(projection_before, model.get_layer("projection_1").get_weights()[0])


def test_backbone_of_a_pretraining_model_carries_its_weights_to_emotion_heads():
    pretrain = fusion_pretraining_model(tiny_backbone(), head_units=(2,))
    backbone = backbone_of(pretrain)
    assert backbone.output_shape == (None, 4)
    assert {layer.name for layer in backbone.layers} & {"speech_mean", "speech_mean_dense_1"} == set()
    emotion = emotion_model(backbone)
    assert emotion.get_layer("projection_2") is pretrain.get_layer("projection_2")
    with pytest.raises(ConfigError, match="projection"):
        inputs = keras.Input((3,))
        backbone_of(keras.Model(inputs, keras.layers.Dense(2)(inputs)))


def test_freeze_encoders_needs_named_encoders():
    inputs = keras.Input((3,), name="bvp")
    bare = keras.Model(inputs, keras.layers.Identity(name="projection")(inputs))
    with pytest.raises(ConfigError, match="bvp_encoder"):
        freeze_encoders(bare)
    with pytest.raises(ConfigError, match="keras.Model"):
        freeze_for_fusion_training(None)
