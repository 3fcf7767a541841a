"""Emotion training: the trainer (reset, early stopping, frozen layers) and the row models."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kfusion.errors import ConfigError
from kfusion.evaluation.folds import validation_participants
from kfusion.models import sigrep_encoder
from kfusion.training.emotion import (
    EmotionTrainer,
    auto_batch_size,
    EmotionTraining,
    copy_trainable_weights,
    derive_seed,
    fusion_emotion_model,
    identity_encoder,
    pretrained_emotion_model,
    projection_stub,
    train_emotion_model,
    wearable_only_model,
)

SHAPES = {"acc": (16, 3), "bvp": (16, 1)}


def _encoder(modality: str, dim: int = 10) -> keras.Model:
    inputs = keras.Input(SHAPES[modality], name=f"{modality}_in")
    x = keras.layers.GlobalAveragePooling1D()(inputs)
    return keras.Model(inputs, keras.layers.Dense(dim, activation="tanh")(x), name=f"{modality}_encoder")


def _data(n: int = 120, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = {m: (rng.normal(size=(n, *s)) + y[:, None, None]).astype("float32") for m, s in SHAPES.items()}
    x["presence"] = np.ones((n, len(SHAPES)), "float32")
    return x, y


@pytest.fixture(scope="module")
def fusion_model():
    keras.utils.set_random_seed(0)
    return fusion_emotion_model({m: _encoder(m) for m in SHAPES}, "arousal", 3, "unweighted",
                                projection_units=(8,), head_units=(8,))


def test_settings_validation():
    with pytest.raises(ConfigError, match="epochs"):
        EmotionTraining(epochs=0)
    with pytest.raises(ConfigError, match="learning_rate"):
        EmotionTraining(learning_rate=-1.0)
    with pytest.raises(ConfigError, match="batch_size"):
        EmotionTraining(batch_size=2.5)
    with pytest.raises(ConfigError, match='batch_size: expected a whole number >= 1 or "auto"'):
        EmotionTraining(batch_size="big")
    assert EmotionTraining().batch_size == "auto"
    assert EmotionTraining.from_dict(EmotionTraining().to_dict()) == EmotionTraining()
    assert EmotionTraining.from_dict(EmotionTraining(patience=3).to_dict()) == EmotionTraining(patience=3)


def test_auto_batch_size_gives_enough_steps_per_epoch():
    # large sets keep the usual 256; small ones get at least 32 steps per epoch, never below 16
    assert [auto_batch_size(n) for n in (50_000, 8192, 8191, 1100, 450, 10, 0)] == [256, 256, 128, 32, 16, 16, 16]


def test_auto_batch_size_is_resolved_per_fit_and_recorded(fusion_model):
    x, y = _data()
    # trainers made before any fit start from the same weights
    trainer = EmotionTrainer(fusion_model, "arousal", EmotionTraining(epochs=1))
    fixed = EmotionTrainer(fusion_model, "arousal", EmotionTraining(epochs=1, batch_size=8))
    explicit = EmotionTrainer(fusion_model, "arousal", EmotionTraining(epochs=1, batch_size=16))
    history = trainer.fit(x, y, np.arange(0, 80), np.arange(80, 120), seed=1)
    assert history.batch_size == 16 == trainer.batch_size(80)
    assert fixed.fit(x, y, np.arange(0, 80), np.arange(80, 120), seed=1).batch_size == 8
    # the same data and seed with the batch size written out give the same training
    assert explicit.fit(x, y, np.arange(0, 80), np.arange(80, 120), seed=1).loss == history.loss


def test_fit_keeps_best_weights_and_freezes_encoders(fusion_model):
    x, y = _data()
    encoder_before = [w.copy() for w in fusion_model.get_layer("acc_encoder").get_weights()]
    trainer = EmotionTrainer(fusion_model, "arousal",
                             EmotionTraining(epochs=6, patience=6, batch_size=16, monitor="loss"))
    train, validation = np.arange(0, 80), np.arange(80, 120)
    history = trainer.fit(x, y, train, validation, seed=1)
    assert history.epochs_run == 6 and not history.stopped_early
    assert history.loss[-1] < history.loss[0]
    # the model ends with the weights of the epoch whose validation loss was lowest
    assert trainer.loss(x, y, validation) == pytest.approx(min(history.val_loss), rel=1e-5)
    assert history.best_epoch == int(np.argmin(history.val_loss))
    for before, after in zip(encoder_before, fusion_model.get_layer("acc_encoder").get_weights()):
        np.testing.assert_array_equal(before, after)


def test_f1_monitor_keeps_the_epoch_with_the_best_validation_f1(fusion_model):
    x, y = _data()
    trainer = EmotionTrainer(fusion_model, "arousal", EmotionTraining(epochs=8, patience=8, batch_size=16))
    assert trainer.settings.monitor == "f1"   # the default
    validation = np.arange(80, 120)
    history = trainer.fit(x, y, np.arange(80), validation, seed=3)
    scores = list(zip(history.val_f1, [-v for v in history.val_loss]))
    assert history.best_epoch == max(range(len(scores)), key=lambda i: (scores[i], -i))
    loss, f1 = trainer._validation_scores(x, y, validation)
    assert f1 == pytest.approx(history.val_f1[history.best_epoch], abs=1e-6)
    assert loss == pytest.approx(history.val_loss[history.best_epoch], rel=1e-5)
    with pytest.raises(ConfigError, match="monitor: expected one of f1, loss"):
        EmotionTraining(monitor="accuracy")


def test_fit_resets_and_is_deterministic(fusion_model):
    x, y = _data()
    trainer = EmotionTrainer(fusion_model, "arousal", EmotionTraining(epochs=3, batch_size=16))
    first = trainer.fit(x, y, np.arange(80), np.arange(80, 120), seed=4)
    second = trainer.fit(x, y, np.arange(80), np.arange(80, 120), seed=4)   # from the same start
    other = trainer.fit(x, y, np.arange(80), np.arange(80, 120), seed=5)    # other batch order
    assert first.loss == second.loss and first.val_loss == second.val_loss
    assert other.loss != first.loss


def test_early_stopping_stops_after_patience():
    keras.utils.set_random_seed(2)
    model = pretrained_emotion_model(projection_stub(4), "valence", 2, head_units=(8,))
    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 4)).astype("float32")
    y = (features[:, 0] > 0).astype(np.int64)
    y[150:] = 1 - y[150:]                      # validation labels contradict the training ones
    history = train_emotion_model(model, "valence", {"projection_features": features}, y,
                                  np.arange(150), np.arange(150, 200),
                                  EmotionTraining(epochs=30, patience=3, batch_size=16, learning_rate=0.01))
    assert history.stopped_early
    assert history.epochs_run == history.best_epoch + 1 + 3
    assert history.epochs_run < 30


def test_wearable_only_model_matches_the_app_size():
    keras.utils.set_random_seed(0)
    encoders = {m: sigrep_encoder(m) for m in ("acc", "bvp", "eda", "temp")}
    model = wearable_only_model(encoders, "emotion", 3, use_presence=False)
    # DESIGN.md §2: about 14.5 k parameters (encoders 2,912 + 3 x 2,848 = 11,456; head 3,043)
    assert model.count_params() == 14_499
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    assert trainable == 3_043
    assert model.get_layer("emotion_modality_dense_1").output.shape == (None, 4, 32)
    gated = wearable_only_model(encoders, "emotion", 3, use_presence=True)
    assert gated.count_params() == 14_499 + 4 * 40


def test_copy_trainable_weights_makes_twins():
    keras.utils.set_random_seed(0)
    cached = fusion_emotion_model({m: identity_encoder(m, 10) for m in SHAPES}, "arousal", 3,
                                  "attention", projection_units=(8,), head_units=(8,))
    keras.utils.set_random_seed(99)
    full = fusion_emotion_model({m: _encoder(m) for m in SHAPES}, "arousal", 3, "attention",
                                projection_units=(8,), head_units=(8,))
    copied = copy_trainable_weights(cached, full)
    assert copied == len(full.trainable_variables)
    x, _ = _data(8)
    embeddings = {m: full.get_layer(f"{m}_encoder")(x[m]).numpy()[..., None] for m in SHAPES}
    embeddings["presence"] = x["presence"]
    np.testing.assert_allclose(full(x)["arousal"], cached(embeddings)["arousal"], rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="no layer"):
        copy_trainable_weights(projection_stub(8), full)


def test_validation_participants():
    ids = [f"P{i}" for i in range(20)]
    chosen = validation_participants(ids, 0.15, seed=3)
    assert len(chosen) == 3 and set(chosen) <= set(ids)
    assert chosen == validation_participants(list(reversed(ids)), 0.15, seed=3)
    assert validation_participants(["a", "b"], 0.9, seed=0) in (["a"], ["b"])  # one left to train
    assert len(validation_participants(ids[:3], 0.01, seed=0)) == 1           # at least one
    with pytest.raises(ConfigError, match="at least 2 training participants"):
        validation_participants(["a"], 0.15, seed=0)
    with pytest.raises(ConfigError, match="validation_fraction"):
        validation_participants(ids, 1.5, seed=0)
    assert derive_seed(0, "a", 1) == derive_seed(0, "a", 1) != derive_seed(1, "a", 1)


def test_balanced_class_weights_come_from_the_training_windows_only():
    keras.utils.set_random_seed(3)
    model = pretrained_emotion_model(projection_stub(4), "valence", 3, head_units=(8,))
    rng = np.random.default_rng(1)
    x = {"projection_features": rng.normal(size=(60, 4)).astype("float32")}
    y = np.array([0] * 30 + [1] * 10 + [2] * 20)
    train = np.arange(40)                           # classes 0 and 1 only: 30 and 10 windows
    trainer = EmotionTrainer(model, "valence", EmotionTraining(epochs=2, batch_size=8,
                                                                class_weight="balanced"))
    np.testing.assert_allclose(trainer.class_weights(y, train), [40 / 60, 40 / 20, 1.0])
    plain = EmotionTrainer(model, "valence", EmotionTraining(epochs=2, batch_size=8))
    np.testing.assert_array_equal(plain.class_weights(y, train), [1, 1, 1])
    history = trainer.fit(x, y, train, np.arange(40, 60), seed=0)
    # the validation loss is weighted with the training weights (class 2 -> 1.0): plain here
    assert history.val_loss[history.best_epoch] == pytest.approx(trainer.loss(x, y, np.arange(40, 60)), rel=1e-5)
    with pytest.raises(ConfigError, match="class_weight"):
        EmotionTraining(class_weight="inverse")


def test_balanced_weights_lift_the_minority_class():
    keras.utils.set_random_seed(4)
    rng = np.random.default_rng(2)
    y = np.array([0] * 270 + [1] * 30)
    features = (rng.normal(size=(300, 4)) + 0.8 * y[:, None]).astype("float32")
    x = {"projection_features": features}
    recalls = {}
    for weighting in ("none", "balanced"):
        keras.utils.set_random_seed(4)
        model = pretrained_emotion_model(projection_stub(4), "arousal", 2, head_units=(8,))
        trainer = EmotionTrainer(model, "arousal", EmotionTraining(epochs=15, patience=15, batch_size=32,
                                                                    learning_rate=0.01, class_weight=weighting))
        trainer.fit(x, y, np.arange(0, 300, 2), np.arange(1, 300, 2), seed=0)
        predicted = trainer.predict(x).argmax(1)
        recalls[weighting] = float(np.mean(predicted[y == 1] == 1))
    assert recalls["balanced"] > recalls["none"] + 0.2


def test_levels_are_standardised_with_training_windows_only(tmp_path):
    """The head's levels input is standardised by statistics of the rows it trains on, set at
    every fit (so a fold's held-out and validation windows never enter them), and saved."""
    from kfusion.models import LEVELS, LEVELS_STANDARDIZATION

    x, y = _data()
    rng = np.random.default_rng(1)
    x[LEVELS] = (rng.normal(5.0, 3.0, size=(len(y), 4)) + y[:, None]).astype("float32")
    encoders = {m: _encoder(m) for m in SHAPES}
    model = wearable_only_model(encoders, "arousal", 3, levels=4)
    trainer = EmotionTrainer(model, "arousal", EmotionTraining(epochs=2, batch_size=16))
    layer = model.get_layer(LEVELS_STANDARDIZATION)
    for train in (np.arange(0, 60), np.arange(60, 100)):
        trainer.fit(x, y, train, np.arange(100, 120))
        np.testing.assert_allclose(layer.mean.numpy(), x[LEVELS][train].mean(axis=0), rtol=1e-5)
        np.testing.assert_allclose(layer.std.numpy(), x[LEVELS][train].std(axis=0), rtol=1e-4)
    fused = fusion_emotion_model(encoders, "arousal", 3, projection_units=(8,), head_units=(8,), levels=4)
    assert {t.name for t in fused.inputs} >= {LEVELS, "presence", "acc", "bvp"}
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    np.testing.assert_allclose(loaded.get_layer(LEVELS_STANDARDIZATION).mean.numpy(), layer.mean.numpy())
    np.testing.assert_allclose(np.asarray(loaded(x)["arousal"]), np.asarray(model(x)["arousal"]), atol=1e-6)


def _speech_like(n: int = 150, classes: int = 3, seed: int = 0, label_in: str = "levels"):
    """One encoder (the speech-only row's shape) and levels; the label is carried linearly by the
    levels (``label_in="levels"``) or only by the encoder's input (``"embedding"``)."""
    from kfusion.models import LEVELS

    x, y = _data(n, seed)
    y = y % classes
    rng = np.random.default_rng(seed + 1)
    if label_in == "levels":  # the encoder's input becomes noise
        x["acc"] = rng.normal(size=x["acc"].shape).astype("float32")
    effect = 6.0 * y[:, None] * np.array([1, 0, -1, 0, 0.5]) if label_in == "levels" else 0.0
    x[LEVELS] = (rng.normal(2.0, 3.0, size=(n, 5)) + effect).astype("float32")
    keras.utils.set_random_seed(seed)
    model = fusion_emotion_model({"acc": _encoder("acc")}, "emotion", 4, projection_units=(8,), head_units=(8,),
                                 levels=5, linear_levels=True)
    return model, {k: v for k, v in x.items() if k != "bvp"} | {"presence": x["presence"][:, :1]}, y


@pytest.mark.parametrize("classes", [3, 2])
def test_linear_levels_start_is_a_logistic_regression_of_the_training_windows(classes):
    """The levels' linear logits start at scikit-learn's regression of the training rows (class
    4 never seen: probability ~0), so the model before training predicts exactly its probabilities."""
    from sklearn.linear_model import LogisticRegression

    from kfusion.models import LEVELS

    model, x, y = _speech_like(classes=classes)
    names = {layer.name for layer in model.layers}
    assert names >= {"emotion_logits", "emotion_levels_logits", "emotion_sum", "emotion"}
    trainer = EmotionTrainer(model, "emotion", EmotionTraining(epochs=1, batch_size=16))
    train = np.arange(0, 100)
    trainer.reset()
    trainer._standardizers[LEVELS].set_statistics(x[LEVELS][train])
    trainer.start_levels_logits(x, y, train)
    scaled = (x[LEVELS] - x[LEVELS][train].mean(axis=0)) / x[LEVELS][train].std(axis=0)
    expected = LogisticRegression(C=1.0, max_iter=300).fit(scaled[train], y[train]).predict_proba(scaled)
    got = trainer.predict(x)
    np.testing.assert_allclose(got[:, :classes], expected, atol=2e-4)
    assert got[:, classes:].max() < 1e-9


@pytest.mark.parametrize("label_in, learning_rate, epochs, kept", [("levels", 5.0, 1, True),
                                                                    ("embedding", 0.05, 8, False)])
def test_linear_levels_training_keeps_its_start_unless_validation_improves(label_in, learning_rate, epochs, kept):
    """fit scores the logistic-regression start on the validation windows: when no epoch beats
    it (the label in the levels, one epoch at a learning rate that wrecks the head) the start is restored
    (best_epoch -1, kept_start); when the label is only in the embedding, an epoch that learns
    it beats the start and is kept. Either way the kept state is the one scored."""
    from kfusion.training.emotion import macro_f1_score

    model, x, y = _speech_like(label_in=label_in)
    trainer = EmotionTrainer(model, "emotion", EmotionTraining(epochs=epochs, patience=8, batch_size=16,
                                                               learning_rate=learning_rate))
    history = trainer.fit(x, y, np.arange(0, 100), np.arange(100, 150))
    start_f1 = history.start_scores[1]
    assert history.kept_start is kept
    if kept:
        assert history.best_epoch == -1 and max(history.val_f1) <= start_f1
        assert history.at_best()["best_val_f1"] == pytest.approx(start_f1)
    else:
        assert history.best_epoch >= 0 and history.val_f1[history.best_epoch] > start_f1
    kept_f1 = macro_f1_score(y[100:], trainer.predict(x, np.arange(100, 150)).argmax(axis=1))
    assert kept_f1 == pytest.approx(history.at_best()["best_val_f1"])


def test_linear_levels_needs_levels_and_round_trips(tmp_path):
    from kfusion.evaluation.rows import ROWS

    with pytest.raises(ConfigError, match="linear_levels: expected a levels input"):
        fusion_emotion_model({"acc": _encoder("acc")}, "emotion", 4, projection_units=(8,), linear_levels=True)
    with pytest.raises(ConfigError, match="emotion_model: linear_levels: expected True or False, found 1"):
        fusion_emotion_model({"acc": _encoder("acc")}, "emotion", 4, projection_units=(8,), levels=5, linear_levels=1)
    assert ROWS["speech_only"].linear_levels and not ROWS["unweighted_without"].linear_levels
    model, x, _ = _speech_like()
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    np.testing.assert_allclose(np.asarray(loaded(x)["emotion"]), np.asarray(model(x)["emotion"]), atol=1e-6)
