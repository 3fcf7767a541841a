"""Emotion training (paper §4.2, stage 3): the supervised models of Table 1 and their trainer.

Model builders (all take dict inputs keyed by modality plus ``"presence"``, and give a dict
output ``{target: [B, n_classes] softmax}``):

- :func:`fusion_emotion_model` — a fusion backbone on frozen encoders with fresh presence gate,
  fusion and projection, plus an emotion head (the "without fusion training" rows; with one
  speech encoder it is the speech-only row).
- :func:`pretrained_emotion_model` — a pretrained fusion backbone frozen up to and including the
  projection, plus an emotion head (the "with fusion training" rows).
- :func:`wearable_only_model` — the authors' wearable app head (DESIGN.md §2) on frozen SigRep
  encoders.
- :func:`identity_encoder` / :func:`projection_stub` stand in for frozen parts whose outputs
  were computed once, so the trainable layers can be trained on cached features.

:class:`EmotionTrainer` trains one such model many times (once per cross-validation fold) from
the same initial state: Adam, sparse categorical cross-entropy, at most ``epochs`` epochs,
early stopping on a validation loss with the best weights restored. The loop runs one
``tf.function`` per epoch (TensorFlow backend), so a fold costs no retracing.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from kfusion import checks
from kfusion.config import _Config
from kfusion.modalities import WEARABLES
from kfusion.errors import ConfigError
from kfusion.models import (
    LEVELS,
    LEVELS_LOGITS,
    LEVELS_STANDARDIZATION,
    Standardization,
    PRESENCE,
    PresenceGate,
    emotion_model,
    encoder_name,
    freeze_encoders,
    freeze_for_fusion_training,
    fusion_backbone,
)

#: Name of the single input of :func:`projection_stub` (cached projection outputs).
PROJECTION_FEATURES = "projection_features"
#: Name of the single input of :func:`fused_stub` (cached fusion-layer outputs).
FUSED_FEATURES = "fused_features"
#: The wearable app head (DESIGN.md §2): shared per-modality Dense units, then Dense units.
APP_MODALITY_UNITS = (32, 16)
APP_UNITS = (16, 8)
CLASS_WEIGHTS: tuple[str, ...] = ("none", "balanced")
#: What early stopping watches on the validation windows (see :class:`EmotionTraining`).
MONITORS: tuple[str, ...] = ("f1", "loss")
#: ``batch_size="auto"``: the largest power of two giving at least this many steps per epoch,
#: within [AUTO_BATCH_MIN, AUTO_BATCH_MAX] (bench/RESULTS.md, "Batch size by data size").
AUTO_BATCH_STEPS = 32
AUTO_BATCH_MIN, AUTO_BATCH_MAX = 16, 256


def auto_batch_size(n_train: int) -> int:
    """The ``"auto"`` batch size for ``n_train`` training windows: 256 from 8 192 windows on
    (K-EmoCon, WESAD, Stress-Predict), 32 for ~1 000, 16 for a few hundred (acted-speech corpora)."""
    n = checks.whole("auto_batch_size: n_train", n_train, 0)
    size = AUTO_BATCH_MAX
    while size > AUTO_BATCH_MIN and n < AUTO_BATCH_STEPS * size:
        size //= 2
    return size


def check_batch_size(name: str, value) -> int | str:
    """A whole number >= 1, or ``"auto"`` (:func:`auto_batch_size`)."""
    if isinstance(value, str):
        if value == "auto":
            return value
        raise ConfigError(f'{name}: expected a whole number >= 1 or "auto", found {value!r}')
    return checks.whole(name, value)


@dataclass(frozen=True)
class EmotionTraining(_Config):
    """How one emotion model is trained (paper §4.2): Adam at ``learning_rate``, categorical
    cross-entropy, at most ``epochs`` epochs of mini-batches of ``batch_size`` windows, stopped
    when the validation loss has not improved for ``patience`` epochs (best weights restored).
    ``batch_size="auto"`` (default) picks it from the number of training windows
    (:func:`auto_batch_size`): 256 on large sets, smaller on small ones so that an epoch has
    enough steps (at 256, a few hundred windows gave ~2 steps per epoch and untrained heads).

    ``class_weight``: ``"none"`` (plain cross-entropy) or ``"balanced"`` (each class weighted by
    ``n / (k * n_class)`` of the *training* windows, for training and validation loss alike).

    ``monitor``: what early stopping keeps the best epoch by: ``"f1"`` (validation macro F1,
    ties broken by the lower validation loss) or ``"loss"`` (validation cross-entropy). On
    held-out people the loss rises with over-confidence while the decisions still improve, so
    loss stopping keeps nearly untrained heads (bench/RESULTS.md, "Early stopping").
    """

    epochs: int = 32
    patience: int = 5
    batch_size: int | str = "auto"
    learning_rate: float = 1e-3
    class_weight: str = "none"
    monitor: str = "f1"

    def __post_init__(self):
        checks.choice("monitor", self.monitor, MONITORS)
        checks.choice("class_weight", self.class_weight, CLASS_WEIGHTS)
        for name in ("epochs", "patience"):
            object.__setattr__(self, name, checks.whole(name, getattr(self, name)))
        object.__setattr__(self, "batch_size", check_batch_size("batch_size", self.batch_size))
        checks.positive("learning_rate", self.learning_rate)


@dataclass
class TrainingHistory:
    """What one training did: mean training loss, validation loss and validation macro F1 per
    epoch run, the (0-based) epoch whose weights were kept, whether early stopping ended it, and
    the batch size used (``"auto"`` resolved)."""

    loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_f1: list = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False
    batch_size: int = 0
    #: A head with ``linear_levels``: validation (loss, F1) of its logistic-regression start,
    #: and whether that start was kept (``best_epoch`` then stays -1: before the first epoch).
    start_scores: tuple | None = None
    kept_start: bool = False

    @property
    def epochs_run(self) -> int:
        return len(self.loss)

    def at_best(self) -> dict:
        """``{"best_val_loss", "best_val_f1"}`` of the kept state (None when none was kept)."""
        if self.kept_start:
            return {"best_val_loss": float(self.start_scores[0]), "best_val_f1": float(self.start_scores[1])}
        kept = self.best_epoch >= 0
        return {"best_val_loss": float(self.val_loss[self.best_epoch]) if kept else None,
                "best_val_f1": float(self.val_f1[self.best_epoch]) if kept else None}


# --------------------------------------------------------------------------- model builders

def identity_encoder(modality: str, dim: int) -> keras.Model:
    """A stand-in encoder ``[B, dim, 1] -> [B, dim]`` named ``<modality>_encoder``: feed it the
    embeddings a frozen encoder gave (``embeddings[..., None]``)."""
    dim = checks.whole("identity_encoder: dim", dim)
    inputs = keras.Input((int(dim), 1), name=f"{encoder_name(modality)}_input")
    return keras.Model(inputs, keras.layers.Flatten(name="embedding")(inputs),
                       name=encoder_name(modality))


def projection_stub(dim: int) -> keras.Model:
    """A stand-in backbone whose ``"projection"`` layer passes through ``dim`` cached projection
    values (input ``{"projection_features": [B, dim]}``); put :func:`emotion_model` on it."""
    dim = checks.whole("projection_stub: dim", dim)
    inputs = keras.Input((int(dim),), name=PROJECTION_FEATURES)
    outputs = keras.layers.Identity(name="projection")(inputs)
    return keras.Model({PROJECTION_FEATURES: inputs}, outputs, name="projection_stub")


def _named_encoder(modality: str, encoder) -> keras.Model:
    if not isinstance(encoder, keras.Model):
        raise ConfigError(f"encoders[{modality!r}]: expected a keras.Model, found {type(encoder).__name__}")
    if encoder.name == encoder_name(modality):
        return encoder
    inputs = keras.Input(encoder.input_shape[1:], name=f"{encoder_name(modality)}_input")
    return keras.Model(inputs, encoder(inputs), name=encoder_name(modality))


def fusion_emotion_model(encoders: Mapping[str, keras.Model], target: str, n_classes: int,
                         mechanism: str = "unweighted", projection_units=(128, 64),
                         head_units=(32, 16), use_presence: bool = True,
                         attention_tokens: int = 5, attention_heads: int = 2,
                         levels: int = 0, linear_levels: bool = False) -> keras.Model:
    """Frozen ``encoders`` -> fresh presence gate, ``mechanism`` fusion and projection -> emotion
    head ``head_units`` -> ``Dense(n_classes, softmax)`` named ``target``.

    Only the encoders are frozen (paper §4.2, "without fusion training"); with a single speech
    encoder this is the speech-only model. ``levels``: width of the ``"levels"`` input fed
    to the head beside the projection (0 = none); ``linear_levels``: as in
    :func:`~kfusion.models.emotion_model`. Output ``{target: [B, n_classes]}``.
    """
    backbone = fusion_backbone(encoders, mechanism, projection_units, use_presence,
                               attention_tokens=attention_tokens, attention_heads=attention_heads)
    model = emotion_model(backbone, {target: n_classes}, head_units, name=f"{target}_model",
                          levels=levels, linear_levels=linear_levels)
    return freeze_encoders(model)


def pretrained_emotion_model(backbone: keras.Model, target: str, n_classes: int,
                             head_units=(32, 16), levels: int = 0) -> keras.Model:
    """A pretrained fusion ``backbone`` frozen up to and including its projection, plus a fresh
    emotion head (paper §4.2, "with fusion training"); ``levels`` as in
    :func:`fusion_emotion_model`. Output ``{target: [B, n_classes]}``."""
    model = emotion_model(backbone, {target: n_classes}, head_units, name=f"{target}_model",
                          levels=levels)
    return freeze_for_fusion_training(model, train_projection=False)


def fused_stub(backbone: keras.Model) -> keras.Model:
    """A stand-in for a pretrained backbone whose outputs up to its fusion layer were computed
    once: input ``{"fused_features": [B, F]}`` -> the backbone's own projection layers (copies
    holding its pretrained weights, trainable) -> ``"projection"``. Put :func:`emotion_model`
    on it to fine-tune the projection with the head."""
    from kfusion.models.fusion import FUSION_LAYER, PROJECTION_LAYER

    fused = backbone.get_layer(FUSION_LAYER).output
    inputs = keras.Input((int(fused.shape[-1]),), name=FUSED_FEATURES)
    x, i = inputs, 1
    while True:
        try:
            dense = backbone.get_layer(f"projection_{i}")
        except ValueError:
            break
        copy = keras.layers.Dense(dense.units, activation=dense.activation, name=f"projection_{i}")
        x = copy(x)
        copy.set_weights(dense.get_weights())
        i += 1
    if i == 1:
        raise ConfigError(f"fused_stub: backbone {backbone.name!r} has no projection_1 layer")
    outputs = keras.layers.Identity(name=PROJECTION_LAYER)(x)
    return keras.Model({FUSED_FEATURES: inputs}, outputs, name="fused_stub")


def fine_tuned_emotion_model(backbone: keras.Model, target: str, n_classes: int,
                             head_units=(32, 16), levels: int = 0) -> keras.Model:
    """A pretrained fusion ``backbone`` frozen up to and including its fusion layer; its
    projection (from its pretrained weights) and a fresh head train ("with fusion training",
    projection fine-tuned). Output ``{target: [B, n_classes]}``."""
    # A copy: training the projection must not change the pretrained backbone other rows use.
    copy = keras.models.clone_model(backbone)
    copy.set_weights(backbone.get_weights())
    model = emotion_model(copy, {target: n_classes}, head_units, name=f"{target}_model", levels=levels)
    return freeze_for_fusion_training(model)


def wearable_only_model(encoders: Mapping[str, keras.Model], target: str, n_classes: int,
                        use_presence: bool = True, modality_units=APP_MODALITY_UNITS,
                        units=APP_UNITS, levels: int = 0) -> keras.Model:
    """The authors' wearable-only app model (DESIGN.md §2) on frozen ``encoders`` (wearables
    only, all giving embeddings of one size D):

    stack the embeddings ``[B, k, D]`` -> ``Dense(u, ReLU)`` for ``u`` in ``modality_units``,
    shared by the k modalities -> flatten -> ``Dense(u, ReLU)`` for ``u`` in ``units`` ->
    ``Dense(n_classes, softmax)`` named ``target``. With ``use_presence`` an absent modality's
    embedding is replaced by a learned vector first (our addition; no effect when all are
    present). With the default sizes and four SigRep encoders the model has ~14.5 k parameters.
    ``levels``: width of a ``"levels"`` input concatenated after the flatten (0 = none).
    """
    if not isinstance(encoders, Mapping) or not encoders:
        raise ConfigError("wearable_only_model: encoders: expected a non-empty dict {modality: keras.Model}")
    unknown = [m for m in encoders if m not in WEARABLES]
    if unknown:
        raise ConfigError(f"wearable_only_model: encoders: expected wearable modalities "
                          f"({', '.join(WEARABLES)}), found {', '.join(map(str, unknown))}")
    modalities = [m for m in WEARABLES if m in encoders]
    named = {m: _named_encoder(m, encoders[m]) for m in modalities}
    dims = {m: named[m].output_shape[-1] for m in modalities}
    if len(set(dims.values())) != 1:
        raise ConfigError(f"wearable_only_model: encoders: expected embeddings of one size to stack, "
                          f"found {dims}")
    dim = next(iter(dims.values()))
    inputs = {m: keras.Input(named[m].input_shape[1:], name=m) for m in modalities}
    embeddings = [named[m](inputs[m]) for m in modalities]
    if use_presence:
        inputs[PRESENCE] = keras.Input((len(modalities),), name=PRESENCE)
        embeddings = PresenceGate(modalities, name="presence_gate")(embeddings + [inputs[PRESENCE]])
    rows = [keras.layers.Reshape((1, dim), name=f"row_{m}")(e) for m, e in zip(modalities, embeddings)]
    x = keras.layers.Concatenate(axis=1, name="stack")(rows) if len(rows) > 1 else rows[0]
    for i, width in enumerate(modality_units, start=1):
        x = keras.layers.Dense(int(width), activation="relu", name=f"{target}_modality_dense_{i}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    if levels:
        inputs[LEVELS] = keras.Input((int(levels),), name=LEVELS)
        scaled = Standardization(name=LEVELS_STANDARDIZATION)(inputs[LEVELS])
        x = keras.layers.Concatenate(name="with_levels")([x, scaled])
    for i, width in enumerate(units, start=1):
        x = keras.layers.Dense(int(width), activation="relu", name=f"{target}_dense_{i}")(x)
    outputs = keras.layers.Dense(int(n_classes), activation="softmax", name=target)(x)
    model = keras.Model(inputs, {target: outputs}, name=f"{target}_wearable_only")
    for m in modalities:
        model.get_layer(encoder_name(m)).trainable = False
    return model


def copy_trainable_weights(source: keras.Model, destination: keras.Model) -> int:
    """Copy the weights of every trainable layer of ``destination`` from the layer of the same
    name in ``source``; returns how many variables were copied. Raises when a trainable layer
    has no counterpart (the two models would not train the same layers)."""
    copied = 0
    for layer in destination.layers:
        if not layer.trainable or not layer.weights:
            continue
        try:
            twin = source.get_layer(layer.name)
        except ValueError:
            raise ConfigError(f"copy_trainable_weights: {source.name!r} has no layer {layer.name!r}") from None
        if len(twin.weights) != len(layer.weights):
            raise ConfigError(f"copy_trainable_weights: layer {layer.name!r} holds {len(twin.weights)} "
                              f"variables in {source.name!r} but {len(layer.weights)} in {destination.name!r}")
        layer.set_weights(twin.get_weights())
        copied += len(layer.weights)
    return copied


def frozen_outputs(model: keras.Model, x, chunk: int = 512) -> np.ndarray:
    """``model(x)`` of a frozen model in inference mode, eagerly in chunks of ``chunk`` windows
    (no ``tf.function`` traced per model), as float32; ``x`` an array or a dict of arrays."""
    arrays = x if isinstance(x, Mapping) else {None: x}
    count = len(next(iter(arrays.values())))
    parts = []
    for start in range(0, count, chunk):
        piece = {k: v[start:start + chunk] for k, v in arrays.items()}
        parts.append(np.asarray(model(piece if isinstance(x, Mapping) else piece[None], training=False)))
    return np.concatenate(parts).astype(np.float32)


# --------------------------------------------------------------------------- seeds

def derive_seed(seed: int, *parts) -> int:
    """A seed in ``[0, 2**31)`` derived from ``seed`` and any strings/numbers (stable across
    processes and Python versions, unlike ``hash``)."""
    text = "\x1f".join([str(int(seed)), *map(str, parts)])
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def macro_f1_score(y_true, y_pred) -> float:
    """Unweighted mean over classes of F1 = 2 TP / (2 TP + FP + FN), over the classes present in
    ``y_true`` or ``y_pred`` (scikit-learn's ``f1_score(average="macro")``, without its per-call
    overhead: the trainer scores every validation epoch). The checked public form, with the
    convention explained, is ``kfusion.evaluation.metrics.macro_f1``."""
    y_true, y_pred = np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)
    scores = []
    for label in np.union1d(y_true, y_pred):
        tp = np.sum((y_true == label) & (y_pred == label))
        fp = np.sum((y_true != label) & (y_pred == label))
        fn = np.sum((y_true == label) & (y_pred != label))
        scores.append(2.0 * tp / (2.0 * tp + fp + fn))
    return float(np.mean(scores))


# --------------------------------------------------------------------------- the trainer

_RESET, _SAVE_BEST, _RESTORE_BEST = 0, 1, 2


def _copier(plans):
    """One graph function ``copy(k)`` that assigns ``sources[i]`` to ``targets[i]`` for the
    ``k``-th ``(targets, sources)`` of ``plans`` (one function, traced once)."""
    def branch(targets, sources):
        def assign_all():
            for target, source in zip(targets, sources):
                target.assign(source.value if isinstance(source, keras.Variable) else source)
            return tf.constant(0)
        return assign_all

    @tf.function
    def copy(action):
        return tf.switch_case(action, [branch(t, s) for t, s in plans])

    return copy


def _as_tensors(x: Mapping) -> dict:
    return {k: v if isinstance(v, tf.Tensor) else tf.convert_to_tensor(v) for k, v in x.items()}


class EmotionTrainer:
    """Trains ``model`` (dict inputs, output ``{output: [B, n] softmax}``) repeatedly.

    Every :meth:`fit` starts from the state the model and a fresh Adam had when the trainer was
    made (weights and optimizer variables are restored, nothing is rebuilt or retraced); a
    ``levels_standardization`` layer gets the mean/std of the training rows' ``levels``. Only
    ``model.trainable_variables`` are updated. The model is called with ``training=True`` as in
    ``Model.fit``; the loss is the cross-entropy alone (``model.losses``, e.g. activity penalties,
    are not added — the kfusion emotion models have none in their trainable layers).
    """

    def __init__(self, model: keras.Model, output: str, settings: EmotionTraining | None = None):
        if not isinstance(model, keras.Model):
            raise ConfigError(f"EmotionTrainer: model: expected a keras.Model, found {type(model).__name__}")
        self.settings = settings or EmotionTraining()
        if not isinstance(self.settings, EmotionTraining):
            raise ConfigError("EmotionTrainer: settings: expected an EmotionTraining")
        self.model = model
        self.output = output
        # Input standardisers (levels): set from the training windows at every fit.
        found = [layer for layer in model.layers
                 if isinstance(layer, Standardization) and layer.name == LEVELS_STANDARDIZATION]
        self._standardizers = {LEVELS: found[-1]} if found else {}
        linear = [layer for layer in model.layers if layer.name == output + LEVELS_LOGITS]
        self._levels_logits = linear[0] if linear and LEVELS in self._standardizers else None
        self.variables = list(model.trainable_variables)
        if not self.variables:
            raise ConfigError(f"EmotionTrainer: model {model.name!r} has no trainable weights")
        self.optimizer = keras.optimizers.Adam(self.settings.learning_rate)
        self.optimizer.build(self.variables)
        # Shadow copies, written and read by one graph call each (eager assigns of a hundred
        # small variables would cost more than a whole epoch of a small model).
        state = self.variables + list(self.optimizer.variables)
        initial = [tf.Variable(tf.identity(v.value), trainable=False) for v in state]
        best = [tf.Variable(tf.identity(v.value), trainable=False) for v in self.variables]
        self._copy_fn = _copier([(state, initial), (best, self.variables), (self.variables, best)])
        self._loss = keras.losses.SparseCategoricalCrossentropy()
        self._epoch_fn = self._make_epoch_fn()
        self._predict_fn = tf.function(lambda x: self.model(x, training=False)[self.output],
                                       reduce_retracing=True)

    def reset(self) -> None:
        """Back to the initial weights and a fresh optimizer state."""
        self._copy_fn(tf.constant(_RESET))

    def _make_epoch_fn(self):
        model, variables, optimizer, output = self.model, self.variables, self.optimizer, self.output
        loss_fn = self._loss

        @tf.function(reduce_retracing=True)
        def run_epoch(x, y, order, class_weights, batch_size):
            count = tf.size(order)
            steps = (count + batch_size - 1) // batch_size
            total = tf.constant(0.0)
            for step in tf.range(steps):
                index = order[step * batch_size:tf.minimum((step + 1) * batch_size, count)]
                batch = {k: tf.gather(v, index) for k, v in x.items()}
                with tf.GradientTape() as tape:
                    probabilities = model(batch, training=True)[output]
                    labels = tf.gather(y, index)
                    loss = loss_fn(labels, probabilities, sample_weight=tf.gather(class_weights, labels))
                gradients = tape.gradient(loss, variables)
                optimizer.apply_gradients(zip(gradients, variables))
                total += loss * tf.cast(tf.size(index), tf.float32)
            return total / tf.cast(count, tf.float32)

        return run_epoch

    def predict(self, x: Mapping, index=None, chunk: int = 2048) -> np.ndarray:
        """Class probabilities ``[n, n_classes]`` of the rows ``index`` (default all) of ``x``."""
        x = _as_tensors(x)
        if index is None:
            index = np.arange(int(next(iter(x.values())).shape[0]))
        index = np.asarray(index, dtype=np.int64)
        parts = []
        for start in range(0, index.size, chunk):
            picked = tf.constant(index[start:start + chunk])
            parts.append(self._predict_fn({k: tf.gather(v, picked) for k, v in x.items()}).numpy())
        if not parts:
            return np.zeros((0, int(self.model.output[self.output].shape[-1])), dtype=np.float32)
        return np.concatenate(parts)

    def loss(self, x: Mapping, y, index, class_weights=None) -> float:
        """Mean cross-entropy on the rows ``index`` of ``x`` (labels ``y`` int ``[N]``),
        each window weighted by ``class_weights[label]`` if given."""
        return self._cross_entropy(*self._predicted(x, y, index), class_weights)

    def _predicted(self, x: Mapping, y, index) -> tuple[np.ndarray, np.ndarray]:
        """(labels ``[n]``, class probabilities ``[n, n_classes]``) of the rows ``index``."""
        return np.asarray(y)[np.asarray(index, dtype=np.int64)], self.predict(x, index)

    def _cross_entropy(self, labels, probabilities, class_weights=None) -> float:
        weights = None if class_weights is None else np.asarray(class_weights, np.float32)[labels]
        return float(self._loss(labels, probabilities, sample_weight=weights))

    def _validation_scores(self, x: Mapping, y, index, class_weights=None) -> tuple[float, float]:
        """(mean cross-entropy, macro F1 (:func:`macro_f1_score`)) from one prediction of the rows ``index``."""
        labels, probabilities = self._predicted(x, y, index)
        return (self._cross_entropy(labels, probabilities, class_weights),
                macro_f1_score(labels, probabilities.argmax(axis=1)))

    def class_weights(self, y, train) -> np.ndarray:
        """Per-class loss weights ``[n_classes]`` from the training labels (see
        :class:`EmotionTraining`); ones for ``class_weight="none"``."""
        n_classes = int(self.model.output[self.output].shape[-1])
        if self.settings.class_weight == "none":
            return np.ones(n_classes, dtype=np.float32)
        counts = np.bincount(np.asarray(y)[train], minlength=n_classes).astype(np.float64)
        present = counts > 0
        weights = np.ones(n_classes)
        weights[present] = counts.sum() / (present.sum() * counts[present])
        return weights.astype(np.float32)

    def batch_size(self, n_train: int) -> int:
        """The batch size a fit on ``n_train`` training windows uses."""
        size = self.settings.batch_size
        return auto_batch_size(n_train) if size == "auto" else int(size)

    def fit(self, x: Mapping, y, train, validation, seed: int = 0) -> TrainingHistory:
        """Reset, then train on the rows ``train`` of ``x`` / ``y`` (int labels ``[N]``), early
        stopping on the rows ``validation``; the best epoch's weights are kept.

        Batches: a fresh permutation of ``train`` per epoch from ``numpy.random.default_rng(seed)``,
        so the same seed gives the same batches whatever the inputs are.
        """
        train = np.asarray(train, dtype=np.int64)
        validation = np.asarray(validation, dtype=np.int64)
        if train.size == 0 or validation.size == 0:
            raise ConfigError(f"EmotionTrainer.fit: expected training and validation windows, found "
                              f"{train.size} and {validation.size}")
        x = _as_tensors(x)
        y_tensor = tf.convert_to_tensor(np.asarray(y, dtype=np.int64))
        self.reset()
        for name, layer in self._standardizers.items():
            layer.set_statistics(tf.gather(x[name], tf.constant(train)).numpy())
        rng = np.random.default_rng(seed)
        weights = self.class_weights(y, train)
        weights_tensor = tf.constant(weights)
        batch_size = self.batch_size(train.size)
        batch_tensor = tf.constant(batch_size, tf.int32)
        history = TrainingHistory(batch_size=batch_size)
        best, waited = None, 0
        val_weights = None if self.settings.class_weight == "none" else weights
        if self._levels_logits is not None:  # the regression start competes like an epoch
            self.start_levels_logits(x, y, train, weights)
            history.start_scores = self._validation_scores(x, y, validation, val_weights)
            if math.isfinite(history.start_scores[0]):
                best, history.kept_start = self._score(*history.start_scores), True
                self._copy_fn(tf.constant(_SAVE_BEST))
        for epoch in range(self.settings.epochs):
            order = tf.constant(train[rng.permutation(train.size)])
            history.loss.append(float(self._epoch_fn(x, y_tensor, order, weights_tensor, batch_tensor)))
            val_loss, val_f1 = self._validation_scores(x, y, validation, val_weights)
            history.val_loss.append(val_loss)
            history.val_f1.append(val_f1)
            score = self._score(val_loss, val_f1)
            if math.isfinite(val_loss) and (best is None or score > best):
                best, waited = score, 0
                self._copy_fn(tf.constant(_SAVE_BEST))
                history.best_epoch, history.kept_start = epoch, False
            else:
                waited += 1
                if waited >= self.settings.patience or not math.isfinite(val_loss):
                    history.stopped_early = epoch + 1 < self.settings.epochs
                    break
        if history.best_epoch >= 0 or history.kept_start:
            self._copy_fn(tf.constant(_RESTORE_BEST))
        return history

    def _score(self, val_loss: float, val_f1: float) -> tuple:
        """What early stopping maximises (larger is better; NaN losses never win)."""
        return (val_f1, -val_loss) if self.settings.monitor == "f1" else (-val_loss,)

    def start_levels_logits(self, x: Mapping, y, train, class_weights=None) -> None:
        """Set a ``linear_levels`` head's ``<output>_levels_logits`` to a logistic regression
        (scikit-learn, C = 1, lbfgs) of the training rows' standardised levels, each window
        weighted by ``class_weights[label]``; classes absent from ``train`` get a bias of -30.
        With the hidden logits' kernel at zero the model then predicts that regression's
        probabilities. Needs the levels standardiser's statistics set (as :meth:`fit` does)."""
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        train = np.asarray(train, dtype=np.int64)
        levels = np.asarray(self._standardizers[LEVELS](tf.gather(x[LEVELS], tf.constant(train))), np.float64)
        labels = np.asarray(y)[train]
        n_classes = int(self.model.output[self.output].shape[-1])
        weights = np.ones(n_classes) if class_weights is None else np.asarray(class_weights, np.float64)
        kernel = np.zeros((levels.shape[1], n_classes), np.float32)
        bias = np.full(n_classes, -30.0, np.float32)
        present = np.unique(labels)
        if present.size == 1:
            bias[present] = 0.0
        else:
            with warnings.catch_warnings():  # an unconverged regression is still a fair start
                warnings.simplefilter("ignore", ConvergenceWarning)
                regression = LogisticRegression(C=1.0, max_iter=300).fit(levels, labels,
                                                                         sample_weight=weights[labels])
            coef, intercept = regression.coef_, regression.intercept_
            if present.size == 2:  # one logit z: softmax over (-z/2, z/2) is the sigmoid of z
                coef, intercept = np.concatenate([-coef, coef]) / 2, np.array([-intercept[0], intercept[0]]) / 2
            kernel[:, regression.classes_] = coef.T
            bias[regression.classes_] = intercept
        self._levels_logits.set_weights([kernel, bias])


def train_emotion_model(model: keras.Model, output: str, x: Mapping, y, train, validation,
                        settings: EmotionTraining | None = None, seed: int = 0) -> TrainingHistory:
    """Train ``model`` once (see :class:`EmotionTrainer`); the model keeps the best weights."""
    return EmotionTrainer(model, output, settings).fit(x, y, train, validation, seed)


__all__ = ["EmotionTraining", "TrainingHistory", "EmotionTrainer", "train_emotion_model",
           "identity_encoder", "projection_stub", "fusion_emotion_model", "pretrained_emotion_model",
           "wearable_only_model", "copy_trainable_weights", "derive_seed", "macro_f1_score",
           "frozen_outputs", "fused_stub", "fine_tuned_emotion_model", "auto_batch_size",
           "PROJECTION_FEATURES", "FUSED_FEATURES"]
