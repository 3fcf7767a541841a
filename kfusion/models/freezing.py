"""The two emotion-training configurations of paper §4.2, as trainable flags.

- :func:`freeze_for_fusion_training` ("with fusion training"): the model is frozen up to the
  projection head (inputs, encoders, presence gate, fusion layer); the projection and the heads
  train. ``train_projection=False`` freezes the projection too (only the heads train).
- :func:`freeze_encoders` ("without fusion training"): only the encoders are frozen; presence
  gate, fusion, projection and heads train.

Each sets every top-level layer's flag (frozen or not), so calling one after the other gives
exactly that configuration. Compile the model after changing flags (Keras reads them at compile).
"""

from __future__ import annotations

import keras

from kfusion.errors import ConfigError
from kfusion.models.fusion import FUSION_LAYER, PROJECTION_LAYER, backbone_inputs, backbone_modalities, encoder_name


def _check_model(model, where: str) -> None:
    if not isinstance(model, keras.Model):
        raise ConfigError(f"{where}: expected a keras.Model, found {type(model).__name__}")


def backbone_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The top-level layers of ``model`` the ``"projection"`` output depends on."""
    _check_model(model, "backbone_layers")
    try:
        projection = model.get_layer(PROJECTION_LAYER)
    except ValueError:
        raise ConfigError(f"model {model.name!r}: no layer named {PROJECTION_LAYER!r}; expected a "
                          "model built by kfusion.models.fusion_backbone") from None
    upstream = keras.Model(backbone_inputs(model), projection.output)
    return [layer for layer in upstream.layers]


def up_to_fusion(model: keras.Model, name: str | None = None) -> keras.Model:
    """The part of ``model`` (a fusion backbone, or a model built on one) from its backbone
    inputs to its fusion layer's output, sharing its layers."""
    _check_model(model, "up_to_fusion")
    return keras.Model(backbone_inputs(model), model.get_layer(FUSION_LAYER).output, name=name)


def freeze_for_fusion_training(model: keras.Model, train_projection: bool = True) -> keras.Model:
    """Freeze the backbone up to its fusion layer (paper §4.2: "froze the weights of the model up
    to the projection head"), or up to and including the projection with
    ``train_projection=False``; unfreeze every other layer; returns ``model``."""
    frozen = {id(layer) for layer in (up_to_fusion(model).layers if train_projection else backbone_layers(model))}
    for layer in model.layers:
        layer.trainable = id(layer) not in frozen
    return model


def freeze_encoders(model: keras.Model) -> keras.Model:
    """Freeze the encoder sub-models (``<modality>_encoder``), unfreeze every other layer;
    returns ``model``."""
    _check_model(model, "freeze_encoders")
    names = {encoder_name(m) for m in backbone_modalities(model)}
    found = {layer.name for layer in model.layers} & names
    if found != names:
        raise ConfigError(f"model {model.name!r}: expected encoder sub-models "
                          f"{', '.join(sorted(names))}, missing {', '.join(sorted(names - found))}")
    for layer in model.layers:
        layer.trainable = layer.name not in names
    return model
