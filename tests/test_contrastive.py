"""NT-Xent against an independent NumPy version; the contrastive model trains, saves, and
hands back an encoder without its projection head."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf

from kfusion.errors import ConfigError
from kfusion.training.augment import RandomNoise, RandomScaling
from kfusion.training.contrastive import ContrastiveModel, nt_xent_loss, projection_head

T, C, D = 32, 2, 8


def nt_xent_reference(z1: np.ndarray, z2: np.ndarray, temperature: float) -> float:
    """SimCLR NT-Xent written out anchor by anchor in float64."""
    z = np.concatenate([z1, z2]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        scores = {j: np.exp(z[i] @ z[j] / temperature) for j in range(2 * n) if j != i}
        total += -np.log(scores[positive] / sum(scores.values()))
    return total / (2 * n)


@pytest.mark.parametrize("temperature", [0.05, 0.1, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("n, dim", [(2, 3), (7, 5), (16, 4)])
def test_nt_xent_matches_numpy_reference(temperature, n, dim):
    rng = np.random.default_rng(n * 100 + dim)
    z1 = rng.normal(size=(n, dim)).astype("float32")
    z2 = (z1 + 0.5 * rng.normal(size=(n, dim))).astype("float32")
    got = float(nt_xent_loss(z1, z2, temperature))
    assert got == pytest.approx(nt_xent_reference(z1, z2, temperature), abs=1e-5, rel=1e-5)


def test_nt_xent_hand_computed_case():
    # Two orthogonal unit vectors seen twice: each anchor has its positive at cosine 1 and two
    # negatives at cosine 0, so every anchor's loss is log(1 + 2 exp(-1 / t)).
    z = np.array([[1.0, 0.0], [0.0, 3.0]], "float32")  # scale must not matter
    for t in (1.0, 0.5):
        assert float(nt_xent_loss(z, 2 * z, t)) == pytest.approx(np.log(1 + 2 * np.exp(-1 / t)), abs=1e-6)
    # Swapped views: the positive is now at cosine 0 and one negative at cosine 1.
    swapped = z[::-1].copy()
    assert float(nt_xent_loss(z, swapped, 1.0)) == pytest.approx(np.log(2 + np.e), abs=1e-6)


def test_nt_xent_bad_arguments():
    z = np.ones((4, 3), "float32")
    for t in (0.0, -1.0, "x", float("nan")):
        with pytest.raises(ConfigError, match="temperature"):
            nt_xent_loss(z, z, t)
    with pytest.raises(ConfigError, match=r"\[N, D\]"):
        nt_xent_loss(z, np.ones((4, 2), "float32"))


def test_projection_head_shape_and_bad_arguments():
    head = projection_head(D, units=(16, 4))
    assert head.output_shape == (None, 4)
    assert head.layers[0].activation.__name__ == "relu" and head.layers[-1].activation.__name__ == "linear"
    for bad in [dict(input_dim=0), dict(input_dim=4, units=()), dict(input_dim=4, units=(8, -1))]:
        with pytest.raises(ConfigError):
            projection_head(**bad)


def tiny_encoder() -> keras.Model:
    return keras.Sequential([
        keras.Input((T, C)), keras.layers.Conv1D(6, 3, activation="relu"),
        keras.layers.GlobalMaxPooling1D(), keras.layers.Dense(D, name="bottleneck"),
    ], name="tiny_encoder")


def simple_augmenter() -> keras.Sequential:
    return keras.Sequential([RandomNoise(0.2, seed=1), RandomScaling((0.8, 1.2), seed=2)])


def fixed_view_loss(model: ContrastiveModel, x: np.ndarray) -> float:
    """NT-Xent on two fixed noisy views, so before/after values are comparable."""
    rng = np.random.default_rng(99)
    views = [x + 0.2 * rng.normal(size=x.shape).astype("float32") for _ in range(2)]
    z = [model.head(model.encoder(v, training=False), training=False) for v in views]
    return float(nt_xent_loss(z[0], z[1], model.temperature))


@pytest.fixture()
def data() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(64, T, C)).astype("float32")


def test_training_reduces_the_loss_and_changes_the_encoder_only(data, tmp_path):
    keras.utils.set_random_seed(0)
    model = ContrastiveModel(tiny_encoder(), head=projection_head(D, (16, 8)),
                             augmenter=simple_augmenter(), temperature=0.2)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    encoder_before = [w.copy() for w in model.encoder.get_weights()]
    loss_before = fixed_view_loss(model, data)
    history = model.fit(data, batch_size=32, epochs=8, verbose=0)
    assert set(history.history) == {"loss"}
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert fixed_view_loss(model, data) < loss_before - 0.1
    assert any(not np.allclose(a, b) for a, b in zip(encoder_before, model.encoder.get_weights()))
    # The extracted encoder holds none of the head's weights and saves on its own.
    encoder = model.encoder
    head_ids = {id(w) for w in model.head.weights}
    assert head_ids and not head_ids & {id(w) for w in encoder.weights}
    assert [layer.name for layer in encoder.layers][-1] == "bottleneck"
    path = tmp_path / "encoder.keras"
    encoder.save(path)
    reloaded = keras.saving.load_model(path)
    assert reloaded.count_params() == encoder.count_params()
    np.testing.assert_allclose(reloaded.predict(data, verbose=0), encoder.predict(data, verbose=0), atol=1e-6)
    # Calling the model gives the representation, not the projection.
    assert model(data[:4]).shape == (4, D)


def test_fit_on_tf_data_with_validation_and_default_augmenter(data):
    keras.utils.set_random_seed(1)
    model = ContrastiveModel(tiny_encoder(), seed=3)  # default head and augmenter
    model.compile(optimizer="adam")
    train = tf.data.Dataset.from_tensor_slices(data).batch(16)
    history = model.fit(train, validation_data=data[:16], epochs=2, verbose=0)
    assert set(history.history) == {"loss", "val_loss"}
    assert all(np.isfinite(v) for values in history.history.values() for v in values)


def test_whole_model_saves_and_loads(data, tmp_path):
    keras.utils.set_random_seed(2)
    model = ContrastiveModel(tiny_encoder(), head=projection_head(D, (8,)),
                             augmenter=simple_augmenter(), temperature=0.3)
    model.compile(optimizer="adam")
    model.fit(data, batch_size=32, epochs=1, verbose=0)
    path = tmp_path / "contrastive.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, ContrastiveModel) and loaded.temperature == pytest.approx(0.3)
    np.testing.assert_allclose(loaded.predict(data, verbose=0), model.predict(data, verbose=0), atol=1e-6)
    embedding = np.random.default_rng(5).normal(size=(3, D)).astype("float32")
    np.testing.assert_allclose(loaded.head(embedding), model.head(embedding), atol=1e-6)
    # Training resumes; labelled data works too (the labels are ignored).
    loaded.fit(data, np.zeros(len(data)), batch_size=32, epochs=1, verbose=0)


def test_bad_model_arguments():
    with pytest.raises(ConfigError, match="keras.Model"):
        ContrastiveModel("not a model")
    with pytest.raises(ConfigError, match="temperature"):
        ContrastiveModel(tiny_encoder(), temperature=0)
    unbuilt = keras.Sequential([keras.layers.Dense(4)])
    with pytest.raises(ConfigError, match="head="):
        ContrastiveModel(unbuilt)
