"""Custom layers: get_config/from_config round-trips; `.keras` save -> load gives identical outputs."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import keras

from kfusion.models import (  # noqa: E402
    MECHANISMS,
    ActivityL1,
    ModalityWeights,
    PresenceGate,
    TokenPositionEmbedding,
    emotion_model,
    fusion_backbone,
    fusion_pretraining_model,
    pretraining_targets,
    fusion_weights,
    sigrep_encoder,
    speech_autoencoder,
)

BASE_KEYS = {"name", "trainable", "dtype"}


def _rng_array(rng, shape):
    return rng.normal(size=shape).astype("float32")


def _custom_layer_cases():
    rng = np.random.default_rng(0)
    two = [_rng_array(rng, (4, 3)), _rng_array(rng, (4, 5))]
    presence = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], "float32")
    return [
        (ModalityWeights, {"modalities": ["speech", "bvp"]}, two),
        (PresenceGate, {"modalities": ["speech", "bvp"]}, two + [presence]),
        (TokenPositionEmbedding, {"stddev": 0.5}, _rng_array(rng, (4, 5, 8))),
        (ActivityL1, {"l1": 0.25}, _rng_array(rng, (4, 6))),
    ]


@pytest.mark.parametrize("cls, kwargs, inputs", _custom_layer_cases(),
                         ids=[case[0].__name__ for case in _custom_layer_cases()])
def test_custom_layer_config_round_trip(cls, kwargs, inputs):
    layer = cls(name="under_test", **kwargs)
    out = layer(inputs)
    config = layer.get_config()
    constructor = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
    assert set(config) - BASE_KEYS == constructor
    for key, value in kwargs.items():
        assert config[key] == value
    # Perturb the weights so a fresh initialisation could not match by accident.
    for var in layer.weights:
        var.assign_add(np.random.default_rng(1).normal(size=var.shape).astype("float32"))
    out = layer(inputs)
    clone = cls.from_config(config)
    assert clone.get_config() == config
    clone(inputs)
    clone.set_weights(layer.get_weights())
    for a, b in zip(keras.tree.flatten(out), keras.tree.flatten(clone(inputs))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    registered = keras.saving.get_registered_object(f"kfusion>{cls.__name__}")
    assert registered is cls


def _tiny_backbone(mechanism):
    encoders = {
        "speech": speech_autoencoder((16, 4), code_dim=8, sparsity=0.1, filters=(4,))[1],
        "acc": sigrep_encoder("acc", (16, 3), filters=1, blocks=2, embedding_dim=8),
        "eda": sigrep_encoder("eda", (16, 1), filters=1, blocks=2, embedding_dim=8),
    }
    return fusion_backbone(encoders, mechanism, projection_units=(8, 4), attention_tokens=4)


def _inputs(model, batch=4, seed=2):
    rng = np.random.default_rng(seed)
    data = {k: _rng_array(rng, (batch, *t.shape[1:])) for k, t in model.input.items() if k != "presence"}
    data["presence"] = np.array([[1, 1, 1], [1, 0, 1], [0, 1, 0], [1, 1, 0]], "float32")[:batch]
    return data


def _perturb(model, seed=3):
    rng = np.random.default_rng(seed)
    for var in model.weights:
        var.assign_add(0.3 * rng.normal(size=var.shape).astype("float32"))


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_keras_file_round_trip_for_every_mechanism(mechanism, tmp_path):
    backbone = _tiny_backbone(mechanism)
    model = emotion_model(backbone, units=(4, 4))
    _perturb(model)
    x = _inputs(model)
    expected = {k: np.asarray(v) for k, v in model(x).items()}
    path = tmp_path / f"{mechanism}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    got = loaded(x)
    assert set(got) == {"arousal", "valence", "emotion"}
    for key, value in expected.items():
        np.testing.assert_array_equal(value, np.asarray(got[key]))
    assert type(loaded.get_layer("presence_gate")) is PresenceGate
    assert loaded.get_layer("speech_encoder").get_layer("sparse_code").l1 == pytest.approx(0.1)
    if mechanism == "weighted":
        assert isinstance(loaded.get_layer("fusion"), ModalityWeights)
        assert fusion_weights(loaded) == fusion_weights(model)
        assert fusion_weights(loaded) != {"speech": 1.0, "acc": 1.0, "eda": 1.0}
    if mechanism == "attention":
        assert isinstance(loaded.get_layer("position_acc"), TokenPositionEmbedding)


def test_pretraining_model_and_autoencoder_round_trip(tmp_path):
    model = fusion_pretraining_model(_tiny_backbone("unweighted"), head_units=(4,))
    _perturb(model)
    x = _inputs(model)
    expected = model(x)
    model.save(tmp_path / "pretrain.keras")
    loaded = keras.saving.load_model(tmp_path / "pretrain.keras")
    got = loaded(x)
    assert got.shape[1] == 24 and pretraining_targets(loaded) == pretraining_targets(model)
    assert "eda_median" in pretraining_targets(loaded)
    np.testing.assert_array_equal(np.asarray(expected), np.asarray(got))

    autoencoder, _ = speech_autoencoder((16, 4), code_dim=8, filters=(4,))
    _perturb(autoencoder)
    frames = _rng_array(np.random.default_rng(4), (2, 16, 4))
    autoencoder.save(tmp_path / "speech.keras")
    reloaded = keras.saving.load_model(tmp_path / "speech.keras")
    np.testing.assert_array_equal(np.asarray(autoencoder(frames)), np.asarray(reloaded(frames)))
