"""The fusion backbone (paper Fig. 1(d), Fig. 2): encoders -> fusion -> projection.

Graph (five modalities, ``use_presence=True``)::

    speech [400,40]  acc [128,3]  bvp [256,1]  eda [16,1]  temp [16,1]     presence [5]
       |                |            |            |           |               |
    speech_encoder  acc_encoder  bvp_encoder  eda_encoder  temp_encoder        |
       |  [B,40] each                                                          |
    presence_gate  (absent modality -> learned "missing" vector) <-------------+
       |
    fusion   unweighted: Concatenate
             weighted:   ModalityWeights (a_i * e_i, concatenated)
             attention:  per modality: tokens_<m> (40 -> 5 x 8) -> position_<m>
                         -> attention_<m> (MultiHeadAttention, self) -> attended_<m>; Concatenate
       |  [B, 200]
    projection_1 (Dense 128, ReLU) -> projection_2 (Dense 64, ReLU) -> projection (identity)

The output layer ``projection`` (:class:`Projection`, an identity) records the builder's
arguments (mechanism, modalities, projection units, presence, attention sizes) in its config, so
they are saved with the model and survive ``backbone_of``, ``clone_model`` and loading; read them
with :func:`backbone_settings` instead of re-deriving them from layer names.

Inputs are a dict keyed by modality (and ``"presence"``); the modalities always appear in the
canonical order speech, acc, bvp, eda, temp — that is also the column order of ``presence``.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np

from kfusion.modalities import MODALITIES, SPEECH, check_modalities, input_shape
from kfusion.errors import ConfigError
from kfusion import checks
from kfusion.models.layers import PACKAGE, ModalityWeights, PresenceGate, TokenPositionEmbedding
from kfusion.models.sigrep import sigrep_encoder
from kfusion.models.speech import speech_autoencoder

MECHANISMS: tuple[str, ...] = ("unweighted", "weighted", "attention")
PRESENCE = "presence"
#: Name of the optional emotion-head input: each modality's window level (calibrated mean and
#: log-std per channel), concatenated in the order of the model's modalities.
LEVELS = "levels"
FUSION_LAYER = "fusion"
PROJECTION_LAYER = "projection"
DEFAULT_PROJECTION_UNITS = (128, 64)


@keras.saving.register_keras_serializable(package=PACKAGE)
class Projection(keras.layers.Identity):
    """The backbone's output layer: an identity whose config holds ``settings``, the arguments
    :func:`fusion_backbone` was built with (JSON types), so they travel with the model."""

    def __init__(self, settings=None, **kwargs):
        super().__init__(**kwargs)
        self.settings = dict(settings or {})

    def get_config(self):
        return {**super().get_config(), "settings": dict(self.settings)}


def encoder_name(modality: str) -> str:
    """Name of the encoder sub-model of ``modality`` inside a backbone (``"bvp_encoder"``)."""
    return f"{modality}_encoder"


def _as_named_encoder(modality: str, encoder) -> keras.Model:
    """``encoder`` itself if it is a one-input model named ``<modality>_encoder``, else a wrapper
    model of that name around it (the encoder's weights are shared, not copied)."""
    if not isinstance(encoder, keras.Model):
        raise ConfigError(f"fusion_backbone: encoders[{modality!r}]: expected a keras.Model, "
                          f"found {type(encoder).__name__}")
    try:
        shape = encoder.input_shape
        out_shape = encoder.output_shape
    except (AttributeError, ValueError):
        raise ConfigError(f"fusion_backbone: encoders[{modality!r}]: expected a built model with "
                          "known input and output shapes (a functional or Sequential model)") from None
    if not (isinstance(shape, tuple) and len(shape) == 3 and None not in shape[1:]):
        raise ConfigError(f"fusion_backbone: encoders[{modality!r}]: expected one input of shape "
                          f"[batch, time, channels] with known sizes, found {shape}")
    if not (isinstance(out_shape, tuple) and len(out_shape) == 2 and out_shape[1] is not None):
        raise ConfigError(f"fusion_backbone: encoders[{modality!r}]: expected one output of shape "
                          f"[batch, features], found {out_shape}")
    if encoder.name == encoder_name(modality):
        return encoder
    inputs = keras.Input(shape[1:], name=f"{encoder_name(modality)}_input")
    return keras.Model(inputs, encoder(inputs), name=encoder_name(modality))


def fusion_backbone(encoders: Mapping[str, keras.Model], mechanism: str = "unweighted",
                    projection_units=DEFAULT_PROJECTION_UNITS, use_presence: bool = True,
                    attention_tokens: int = 5, attention_heads: int = 2,
                    attention_key_dim: int | None = None,
                    name: str = "fusion_backbone") -> keras.Model:
    """The fusion graph over ``encoders`` (``{modality: encoder}``, any subset of the five).

    Inputs: a dict ``{modality: [B, T_m, C_m]}`` (shapes taken from each encoder) plus
    ``"presence": [B, n]`` float (1 present, 0 absent, columns in canonical modality order)
    when ``use_presence``. Output ``"projection"``: ``[B, projection_units[-1]]``.

    ``mechanism``: ``"unweighted"`` (concatenation), ``"weighted"`` (one trainable scalar per
    modality) or ``"attention"`` (self-attention per modality over ``attention_tokens`` tokens
    cut from its embedding, each with a learned position vector; ``attention_heads`` heads of
    ``attention_key_dim`` size, default the token size). Encoders not named
    ``<modality>_encoder`` are wrapped in a model of that name (weights shared).
    """
    if not isinstance(encoders, Mapping) or not encoders:
        raise ConfigError("fusion_backbone: encoders: expected a non-empty dict {modality: keras.Model}, "
                          f"found {encoders!r}")
    given = check_modalities(list(encoders))
    modalities = [m for m in MODALITIES if m in given]
    lookup = {str(k).lower(): v for k, v in encoders.items()}
    checks.choice("fusion_backbone: mechanism", mechanism, MECHANISMS)
    projection_units = checks.units("fusion_backbone: projection_units", projection_units)
    use_presence = checks.flag("fusion_backbone: use_presence", use_presence)
    name = checks.layer_name("fusion_backbone: name", name)
    named = {m: _as_named_encoder(m, lookup[m]) for m in modalities}
    if mechanism == "attention":
        attention_tokens = checks.whole("fusion_backbone: attention_tokens", attention_tokens, 2)
        attention_heads = checks.whole("fusion_backbone: attention_heads", attention_heads)
        for m in modalities:
            dim = named[m].output_shape[-1]
            if dim % attention_tokens:
                raise ConfigError(
                    f"fusion_backbone: attention_tokens: the {m} embedding has {dim} values, which "
                    f"do not split into {attention_tokens} equal tokens; pick a divisor of {dim}")
        if attention_key_dim is not None:
            attention_key_dim = checks.whole("fusion_backbone: attention_key_dim", attention_key_dim)

    inputs = {m: keras.Input(named[m].input_shape[1:], name=m) for m in modalities}
    embeddings = [named[m](inputs[m]) for m in modalities]
    if use_presence:
        inputs[PRESENCE] = keras.Input((len(modalities),), name=PRESENCE)
        embeddings = PresenceGate(modalities, name="presence_gate")(embeddings + [inputs[PRESENCE]])

    if mechanism == "unweighted":
        fused = keras.layers.Concatenate(name=FUSION_LAYER)(embeddings)
    elif mechanism == "weighted":
        fused = ModalityWeights(modalities, name=FUSION_LAYER)(embeddings)
    else:
        attended = []
        for m, embedding in zip(modalities, embeddings):
            dim = named[m].output_shape[-1]
            token_dim = dim // attention_tokens
            tokens = keras.layers.Reshape((attention_tokens, token_dim), name=f"tokens_{m}")(embedding)
            tokens = TokenPositionEmbedding(name=f"position_{m}")(tokens)
            mixed = keras.layers.MultiHeadAttention(
                num_heads=attention_heads, key_dim=attention_key_dim or token_dim,
                name=f"attention_{m}")(tokens, tokens)
            attended.append(keras.layers.Flatten(name=f"attended_{m}")(mixed))
        fused = keras.layers.Concatenate(name=FUSION_LAYER)(attended)

    x = fused
    for i, units in enumerate(projection_units, start=1):
        x = keras.layers.Dense(units, activation="relu", name=f"projection_{i}")(x)
    settings = {"mechanism": mechanism, "modalities": list(modalities),
                "projection_units": list(projection_units), "use_presence": use_presence}
    if mechanism == "attention":
        settings.update(attention_tokens=attention_tokens, attention_heads=attention_heads,
                        attention_key_dim=attention_key_dim)
    outputs = Projection(settings, name=PROJECTION_LAYER)(x)
    return keras.Model(inputs, outputs, name=name)


def backbone_settings(model: keras.Model) -> dict:
    """The arguments a backbone (or a model holding its layers, e.g. a fusion-pretraining model)
    was built with: ``mechanism``, ``modalities``, ``projection_units`` (a tuple),
    ``use_presence`` and, for attention, ``attention_tokens``, ``attention_heads``,
    ``attention_key_dim``; read from its :class:`Projection` layer.

    Files saved before the layer recorded them (kfusion before issue 14) have a plain identity
    there: their ``projection_units`` are the units of the Dense layers between the ``fusion`` and
    ``projection`` layers (layer order), and only that key is returned with ``"recorded": False``.
    """
    try:
        projection = model.get_layer(PROJECTION_LAYER)
    except ValueError:
        raise ConfigError(f"model {model.name!r}: no layer named {PROJECTION_LAYER!r}; expected a model "
                          "built by kfusion.models.fusion_backbone") from None
    if isinstance(projection, Projection) and projection.settings:
        settings = dict(projection.settings)
        settings["projection_units"] = tuple(int(u) for u in settings["projection_units"])
        settings["modalities"] = tuple(settings["modalities"])
        return {**settings, "recorded": True}
    layers = list(model.layers)
    names = [layer.name for layer in layers]
    start = names.index(FUSION_LAYER) + 1 if FUSION_LAYER in names else 0
    units = tuple(int(layer.units) for layer in layers[start:names.index(PROJECTION_LAYER)]
                  if isinstance(layer, keras.layers.Dense))
    return {"projection_units": units, "recorded": False}


def build_fusion_model(modalities=MODALITIES, mechanism: str = "unweighted",
                       projection_units=DEFAULT_PROJECTION_UNITS, use_presence: bool = True,
                       embedding_dim: int = 40, window_seconds: float = 4.0,
                       **backbone_options) -> keras.Model:
    """A :func:`fusion_backbone` with fresh default encoders for ``modalities``: SigRep for the
    wearables, the sparse MFCC encoder for speech, all giving ``embedding_dim`` values, input
    shapes for ``window_seconds`` windows. Further keyword arguments go to ``fusion_backbone``."""
    modalities = check_modalities(modalities)
    embedding_dim = checks.whole("build_fusion_model: embedding_dim", embedding_dim)
    window_seconds = checks.positive("build_fusion_model: window_seconds", window_seconds)
    encoders = {}
    for m in modalities:
        shape = input_shape(m, window_seconds)
        if m == SPEECH:
            encoders[m] = speech_autoencoder(shape, code_dim=embedding_dim, name=encoder_name(m))[1]
        else:
            encoders[m] = sigrep_encoder(m, shape, embedding_dim=embedding_dim)
    return fusion_backbone(encoders, mechanism, projection_units, use_presence, **backbone_options)


def backbone_modalities(model: keras.Model) -> tuple[str, ...]:
    """The modalities a backbone (or a model built on one) takes, in canonical order (the
    column order of its ``presence`` input)."""
    names = [tensor.name for tensor in model.inputs]
    found = tuple(m for m in MODALITIES if m in names)
    if not found:
        raise ConfigError(f"model {model.name!r}: no input named by a modality "
                          f"({', '.join(MODALITIES)}); found inputs {names}")
    return found


def presence_array(presence: Mapping[str, object], modalities) -> np.ndarray:
    """The ``presence`` model input ``[N, n]`` float32 from ``{modality: bool [N]}`` (as kept by
    the data sets), columns in the order of ``modalities`` (use :func:`backbone_modalities`)."""
    modalities = check_modalities(modalities)
    missing = [m for m in modalities if m not in presence]
    if missing:
        raise ConfigError(f"presence: expected a column for every modality of the model "
                          f"({', '.join(modalities)}), missing {', '.join(missing)}")
    columns = [np.asarray(presence[m]).reshape(-1) for m in modalities]
    if len({c.shape[0] for c in columns}) != 1:
        raise ConfigError(f"presence: expected one value per window for every modality, found "
                          f"lengths {dict(zip(modalities, (c.shape[0] for c in columns)))}")
    return np.stack(columns, axis=1).astype("float32")


def backbone_of(model: keras.Model, name: str = "fusion_backbone") -> keras.Model:
    """The backbone (inputs -> ``"projection"``) of a model built by this package, sharing its
    layers and weights: e.g. take the backbone of a loaded fusion-pretraining model and put
    emotion heads on it."""
    try:
        projection = model.get_layer(PROJECTION_LAYER)
    except ValueError:
        raise ConfigError(f"model {model.name!r}: no layer named {PROJECTION_LAYER!r}; "
                          "expected a model built by kfusion.models.fusion_backbone") from None
    return keras.Model(backbone_inputs(model), projection.output, name=name)


def backbone_inputs(model: keras.Model):
    """``model.input`` without the emotion head's :data:`LEVELS` input (which bypasses the
    backbone)."""
    inputs = model.input
    if isinstance(inputs, dict):
        return {k: v for k, v in inputs.items() if k != LEVELS}
    return inputs


def fusion_weights(model: keras.Model) -> dict[str, float]:
    """The learned scalar of every modality of a weighted-fusion model."""
    try:
        layer = model.get_layer(FUSION_LAYER)
    except ValueError:
        raise ConfigError(f"model {model.name!r}: no layer named {FUSION_LAYER!r}") from None
    if not isinstance(layer, ModalityWeights):
        raise ConfigError(f"model {model.name!r}: fusion weights exist only for the weighted "
                          f"mechanism; this model's fusion layer is a {type(layer).__name__}")
    return layer.weights_by_modality()
