"""Custom Keras layers of the fusion graph, all registered so ``.keras`` files round-trip.

- :class:`ModalityWeights` — weighted fusion (paper Fig. 2(b)): one trainable scalar per modality.
- :class:`PresenceGate` — replaces the embedding of an absent modality by a learned vector.
- :class:`TokenPositionEmbedding` — adds a learned position vector to each token of a sequence.
- :class:`ActivityL1` — identity that adds an L1 activity penalty (the sparse speech code).
- :class:`Standardization` — ``(x - mean) / std`` with statistics set from training data.
- :class:`StatisticHeads` — the fusion-pretraining heads (paper Fig. 1(e)), one small MLP per
  target, held as grouped weights.

``get_config()`` of each returns exactly its constructor arguments (plus the base layer's
``name``/``trainable``/``dtype``).
"""

from __future__ import annotations

import keras
from keras import ops

from kfusion import checks
from kfusion.errors import ConfigError

PACKAGE = "kfusion"


def _modality_list(layer: str, modalities) -> list[str]:
    if isinstance(modalities, str) or not hasattr(modalities, "__iter__"):
        raise ConfigError(f"{layer}: modalities: expected a list of modality names, found {modalities!r}")
    names = [str(m) for m in modalities]
    if not names:
        raise ConfigError(f"{layer}: modalities: expected at least one modality name")
    if len(set(names)) != len(names):
        raise ConfigError(f"{layer}: modalities: expected unique names, found {names}")
    return names


def _shape_list(layer: str, input_shape, count: int) -> list[tuple]:
    """``input_shape`` as a list of ``count`` shapes of rank 2 with a known last size."""
    shapes = list(input_shape) if isinstance(input_shape, (list, tuple)) and input_shape and \
        isinstance(input_shape[0], (list, tuple)) else None
    if shapes is None or len(shapes) != count:
        raise ConfigError(f"{layer}: expected a list of {count} input tensors, found shapes {input_shape!r}")
    for shape in shapes:
        if len(shape) != 2 or shape[-1] is None:
            raise ConfigError(f"{layer}: expected inputs of shape [batch, features], found {tuple(shape)}")
    return [tuple(s) for s in shapes]


@keras.saving.register_keras_serializable(package=PACKAGE)
class ModalityWeights(keras.layers.Layer):
    """Weighted fusion: ``concat(a_1 * e_1, ..., a_n * e_n)`` with one trainable scalar ``a_i``
    per modality, initialised to 1.

    Call on a list of ``n`` embeddings ``[B, D_i]`` in the order of ``modalities``; returns
    ``[B, sum(D_i)]``. Read the learned scalars with :meth:`weights_by_modality`.
    """

    def __init__(self, modalities, **kwargs):
        super().__init__(**kwargs)
        self.modalities = _modality_list("ModalityWeights", modalities)
        self.scalars: dict[str, keras.Variable] = {}

    def build(self, input_shape):
        _shape_list("ModalityWeights", input_shape, len(self.modalities))
        for modality in self.modalities:
            self.scalars[modality] = self.add_weight(
                shape=(), initializer="ones", trainable=True, name=f"weight_{modality}")

    def call(self, inputs):
        scaled = [ops.cast(self.scalars[m], e.dtype) * e for m, e in zip(self.modalities, inputs)]
        return ops.concatenate(scaled, axis=-1)

    def compute_output_shape(self, input_shape):
        shapes = _shape_list("ModalityWeights", input_shape, len(self.modalities))
        return (shapes[0][0], sum(s[-1] for s in shapes))

    def weights_by_modality(self) -> dict[str, float]:
        """The current scalar of every modality, e.g. ``{"speech": 1.13, "acc": 0.92}``."""
        if not self.built:
            raise ConfigError("ModalityWeights: the layer has no weights yet (call it on inputs first)")
        return {m: float(ops.convert_to_numpy(self.scalars[m])) for m in self.modalities}

    def get_config(self):
        return {**super().get_config(), "modalities": list(self.modalities)}


@keras.saving.register_keras_serializable(package=PACKAGE)
class PresenceGate(keras.layers.Layer):
    """Replaces the embedding of every absent modality by a learned "missing" vector.

    Call on ``[e_1, ..., e_n, presence]``: embeddings ``[B, D_i]`` in the order of
    ``modalities`` and ``presence [B, n]`` (1 = present, 0 = absent; > 0.5 counts as present).
    Returns the list ``[g_1, ..., g_n]`` with ``g_i = e_i`` where present and ``m_i`` (a
    trainable vector initialised to zeros) where absent. The selection is a ``where``, not a
    product, so an absent modality's input cannot leak in, not even as NaN or inf.
    """

    def __init__(self, modalities, **kwargs):
        super().__init__(**kwargs)
        self.modalities = _modality_list("PresenceGate", modalities)
        self.missing: dict[str, keras.Variable] = {}

    def build(self, input_shape):
        count = len(self.modalities)
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != count + 1:
            raise ConfigError(f"PresenceGate: expected {count} embeddings and a presence tensor, "
                              f"found shapes {input_shape!r}")
        shapes = _shape_list("PresenceGate", list(input_shape[:-1]), count)
        presence = tuple(input_shape[-1])
        if len(presence) != 2 or presence[-1] != count:
            raise ConfigError(f"PresenceGate: presence: expected shape [batch, {count}] "
                              f"(one column per modality: {', '.join(self.modalities)}), found {presence}")
        for modality, shape in zip(self.modalities, shapes):
            self.missing[modality] = self.add_weight(
                shape=(shape[-1],), initializer="zeros", trainable=True, name=f"missing_{modality}")

    def call(self, inputs):
        *embeddings, presence = inputs
        gated = []
        for index, (modality, embedding) in enumerate(zip(self.modalities, embeddings)):
            present = presence[:, index:index + 1] > 0.5
            missing = ops.cast(self.missing[modality], embedding.dtype)
            gated.append(ops.where(present, embedding, missing[None, :]))
        return gated

    def compute_output_shape(self, input_shape):
        return [tuple(s) for s in input_shape[:-1]]

    def get_config(self):
        return {**super().get_config(), "modalities": list(self.modalities)}


@keras.saving.register_keras_serializable(package=PACKAGE)
class TokenPositionEmbedding(keras.layers.Layer):
    """Adds a learned vector per position to a token sequence ``[B, T, d]`` (shape kept).

    Tokens cut from one embedding are otherwise interchangeable to self-attention; the
    position vector tells the attention which slice of the embedding a token is.
    """

    def __init__(self, stddev: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        self.stddev = float(stddev)

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[1] is None or input_shape[2] is None:
            raise ConfigError(f"TokenPositionEmbedding: expected inputs [batch, tokens, features] "
                              f"with known sizes, found {tuple(input_shape)}")
        self.positions = self.add_weight(
            shape=(input_shape[1], input_shape[2]),
            initializer=keras.initializers.RandomNormal(stddev=self.stddev),
            trainable=True, name="positions")

    def call(self, inputs):
        return inputs + ops.cast(self.positions, inputs.dtype)[None, :, :]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ActivityL1(keras.layers.Layer):
    """Identity on ``[B, ...]`` that adds ``l1 * mean_over_batch(sum |x|)`` to the model loss.

    The penalty is added only while training and only while the layer is trainable, so a
    frozen encoder inside a larger model does not add a constant to that model's loss.
    """

    def __init__(self, l1: float = 1e-4, **kwargs):
        super().__init__(**kwargs)
        self.l1 = checks.non_negative("ActivityL1: l1", l1, "a finite number >= 0")

    def call(self, inputs, training=None):
        if training and self.trainable and self.l1 > 0:
            flat = ops.reshape(ops.abs(inputs), (ops.shape(inputs)[0], -1))
            self.add_loss(self.l1 * ops.mean(ops.sum(flat, axis=-1)))
        return inputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "l1": self.l1}


@keras.saving.register_keras_serializable(package=PACKAGE)
class Standardization(keras.layers.Layer):
    """``[B, D] -> [B, D]``: ``(x - mean) / std`` per feature, with non-trainable ``mean`` and
    ``std`` (0 and 1 until :meth:`set_statistics`; the trainer sets them from the training
    windows of each fit, so no held-out window enters them). Saved with the model."""

    def build(self, input_shape):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ConfigError(f"Standardization: expected inputs [batch, features], found {tuple(input_shape)}")
        width = int(input_shape[-1])
        self.mean = self.add_weight(shape=(width,), initializer="zeros", trainable=False, name="mean")
        self.std = self.add_weight(shape=(width,), initializer="ones", trainable=False, name="std")

    def set_statistics(self, values) -> None:
        """Set ``mean``/``std`` from ``values [N, D]`` (a constant feature keeps std 1)."""
        import numpy as np

        values = np.asarray(values, dtype=np.float64)
        std = values.std(axis=0)
        self.mean.assign(values.mean(axis=0).astype("float32"))
        self.std.assign(np.where(std > 1e-8, std, 1.0).astype("float32"))

    def call(self, x):
        return (ops.cast(x, "float32") - self.mean) / self.std

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


@keras.saving.register_keras_serializable(package=PACKAGE)
class StatisticHeads(keras.layers.Layer):
    """``[B, D] -> [B, T]``: one regression head per target, ``Dense(u, ReLU)`` per ``units``
    then ``Dense(1)``, column ``t`` = ``targets[t]``.

    The T heads are independent (no weight is shared) but held as grouped weights (``kernel_i``
    ``[T, fan_in, fan_out]``, ``bias_i`` ``[T, fan_out]``) and computed with one ``einsum`` per
    layer, so Keras traces and Adam updates ``2 * (len(units) + 1)`` variables instead of that
    many per target. Each head's kernels start as a Glorot-uniform ``Dense`` layer's would, with
    one initializer per head and layer drawn in the order the separate ``Dense`` layers of earlier
    versions drew them (per target: the output layer's, then the hidden layers'): with the same
    seed, the heads start from the weights those separate layers had.
    """

    def __init__(self, targets, units=(16,), **kwargs):
        super().__init__(**kwargs)
        if isinstance(targets, str) or not hasattr(targets, "__iter__"):
            raise ConfigError(f"StatisticHeads: targets: expected a list of names, found {targets!r}")
        self.targets = [str(t) for t in targets]
        if not self.targets or len(set(self.targets)) != len(self.targets):
            raise ConfigError(f"StatisticHeads: targets: expected unique names, found {self.targets}")
        self.units = checks.units("StatisticHeads: units", units, min_length=0)
        self._initializers = []
        for _ in self.targets:
            output = keras.initializers.GlorotUniform()
            self._initializers.append([keras.initializers.GlorotUniform() for _ in self.units] + [output])

    def build(self, input_shape):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ConfigError(f"StatisticHeads: expected inputs [batch, features], found {tuple(input_shape)}")
        widths = [int(input_shape[-1]), *self.units, 1]
        self.kernels, self.biases = [], []
        for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
            def start(shape, dtype=None, i=i, fan_in=fan_in, fan_out=fan_out):
                return ops.stack([heads[i]((fan_in, fan_out), dtype=dtype) for heads in self._initializers])
            self.kernels.append(self.add_weight(shape=(len(self.targets), fan_in, fan_out), initializer=start,
                                                name=f"kernel_{i}"))
            self.biases.append(self.add_weight(shape=(len(self.targets), fan_out), initializer="zeros",
                                               name=f"bias_{i}"))

    def call(self, x):
        h = ops.einsum("bd,tdu->btu", x, self.kernels[0]) + self.biases[0]
        for kernel, bias in zip(self.kernels[1:], self.biases[1:]):
            h = ops.einsum("btd,tdu->btu", ops.relu(h), kernel) + bias
        return h[..., 0]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], len(self.targets))

    def get_config(self):
        return {**super().get_config(), "targets": list(self.targets), "units": list(self.units)}


def find_layer(model: keras.Model, name: str) -> keras.layers.Layer:
    """The layer called ``name`` in ``model`` or any model nested in it (depth first)."""
    for layer in model.layers:
        if layer.name == name:
            return layer
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            try:
                return find_layer(layer, name)
            except ConfigError:
                pass
    raise ConfigError(f"model {model.name!r}: no layer named {name!r}")
