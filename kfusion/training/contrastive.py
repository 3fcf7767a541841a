"""Contrastive (SimCLR-style) pretraining of one wearable encoder with the NT-Xent loss.

Stage 1 of the pipeline for ACC, BVP, EDA and TEMP: two random augmentations of every window
are encoded and projected, and NT-Xent pulls each pair together against the rest of the batch.
The projection head is a training aid only; :attr:`ContrastiveModel.encoder` is what is kept.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from kfusion import checks
from kfusion.errors import ConfigError
from kfusion.training.augment import default_augmenter

__all__ = ["nt_xent_loss", "projection_head", "ContrastiveModel"]


def nt_xent_loss(z1, z2, temperature: float = 0.1):
    """NT-Xent (normalised temperature-scaled cross-entropy) of two views, a scalar.

    ``z1``, ``z2``: ``[N, D]`` projections of the same N windows under two augmentations. The
    2N vectors are L2-normalised; each one's positive is its counterpart in the other view and
    its negatives are the other 2N - 2 vectors; the loss is the mean over the 2N anchors of
    ``-log softmax(cosine / temperature)`` at the positive, the anchor itself excluded.
    """
    temperature = checks.positive("temperature", temperature)
    z1, z2 = ops.convert_to_tensor(z1), ops.convert_to_tensor(z2)
    if len(z1.shape) != 2 or tuple(z1.shape) != tuple(z2.shape):
        raise ConfigError(f"nt_xent_loss: expected two [N, D] arrays of one shape, "
                          f"found {tuple(z1.shape)} and {tuple(z2.shape)}")
    z = ops.concatenate([z1, z2], axis=0)
    z = z / ops.sqrt(ops.maximum(ops.sum(ops.square(z), axis=1, keepdims=True), 1e-12))
    n = ops.shape(z1)[0]
    logits = ops.matmul(z, ops.transpose(z)) / temperature
    self_pair = ops.cast(ops.eye(2 * n), "bool")
    logits = ops.where(self_pair, ops.full_like(logits, -1e9), logits)
    positive = ops.sum(z[:n] * z[n:], axis=1) / temperature
    positive = ops.concatenate([positive, positive], axis=0)
    return ops.mean(ops.logsumexp(logits, axis=1) - positive)


def projection_head(input_dim: int, units=(64, 32), name: str = "projection_head") -> keras.Sequential:
    """MLP mapping an embedding ``[B, input_dim]`` to the contrastive space ``[B, units[-1]]``.

    Hidden layers are Dense + ReLU, the last one linear (as in SimCLR). Used only during
    contrastive training and dropped afterwards.
    """
    input_dim = checks.whole("projection_head.input_dim", input_dim)
    units = checks.units("projection_head.units", units)
    layers = [keras.Input((input_dim,))]
    for i, width in enumerate(units):
        last = i == len(units) - 1
        layers.append(keras.layers.Dense(width, activation=None if last else "relu",
                                         name=f"{name}_dense_{i}"))
    return keras.Sequential(layers, name=name)


@keras.saving.register_keras_serializable(package="kfusion")
class ContrastiveModel(keras.Model):
    """Encoder + projection head trained with NT-Xent on two augmented views of each window.

    ``encoder``: any Keras model ``[B, T, C] -> [B, D]`` (built, so D is known, unless a
    ``head`` is given). ``head``: projection head (default ``projection_head(D)``).
    ``augmenter``: layer or model applied with ``training=True`` to make each view (default
    ``default_augmenter(seed)``). Train with ``compile(optimizer=...)`` and ``fit(windows)``
    on an unlabelled NumPy array or ``tf.data`` dataset (labels, if present, are ignored);
    the reported metric is ``loss`` (NT-Xent). Calling the model returns the encoder's
    embedding. ``test_step`` reports the same loss on two augmented views, without updates.
    """

    def __init__(self, encoder: keras.Model, head: keras.Model | None = None,
                 augmenter: keras.layers.Layer | None = None, temperature: float = 0.1,
                 seed: int | None = 0, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(encoder, keras.layers.Layer):
            raise ConfigError(f"ContrastiveModel.encoder: expected a keras.Model, found {type(encoder).__name__}")
        self.encoder = encoder
        if head is None:
            try:
                dim = encoder.output_shape[-1]
            except (AttributeError, ValueError):
                dim = None
            if not isinstance(dim, int):
                raise ConfigError("ContrastiveModel.encoder: expected a built model with a known output "
                                  "size [B, D] (or pass head=...), found none")
            head = projection_head(dim)
        self.head = head
        self.augmenter = augmenter if augmenter is not None else default_augmenter(seed)
        self.temperature = checks.positive("temperature", temperature)
        self.seed = seed
        self.loss_tracker = keras.metrics.Mean(name="loss")
        # Encoder and head carry all the weights; marking the wrapper built lets it be saved
        # (and its optimizer state restored) without a dummy call first.
        self.built = bool(getattr(self.encoder, "built", False) and getattr(self.head, "built", False))

    def call(self, inputs, training=None):
        return self.encoder(inputs, training=training)

    @property
    def metrics(self):
        return [self.loss_tracker]

    def _views_loss(self, x, training: bool):
        view1 = self.augmenter(x, training=True)
        view2 = self.augmenter(x, training=True)
        z1 = self.head(self.encoder(view1, training=training), training=training)
        z2 = self.head(self.encoder(view2, training=training), training=training)
        return nt_xent_loss(z1, z2, self.temperature)

    def train_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        weights = self.encoder.trainable_weights + self.head.trainable_weights
        with tf.GradientTape() as tape:
            loss = self._views_loss(x, training=True)
            # Under a tf.distribute strategy the replicas' gradients are summed: each replica
            # takes its share so the update is that of the mean loss (as Keras does for compiled losses).
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = loss / replicas if replicas > 1 else loss
        gradients = tape.gradient(scaled, weights)
        self.optimizer.apply_gradients(zip(gradients, weights))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        self.loss_tracker.update_state(self._views_loss(x, training=False))
        return {"loss": self.loss_tracker.result()}

    def get_config(self):
        config = super().get_config()
        config.update(
            encoder=keras.saving.serialize_keras_object(self.encoder),
            head=keras.saving.serialize_keras_object(self.head),
            augmenter=keras.saving.serialize_keras_object(self.augmenter),
            temperature=self.temperature,
            seed=self.seed,
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for key in ("encoder", "head", "augmenter"):
            config[key] = keras.saving.deserialize_keras_object(config[key], custom_objects=custom_objects)
        return cls(**config)
