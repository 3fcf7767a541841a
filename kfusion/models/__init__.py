"""Models: SigRep wearable encoders, the sparse MFCC autoencoder, the fusion backbone with its
three mechanisms, the pretraining and emotion heads, and the freezing configurations.

Imports only lower layers of the package (data flows one way: data -> models -> training ->
evaluation -> export): ``kfusion.modalities``, ``kfusion.checks``, ``kfusion.errors`` and, for
the in-model front end, ``kfusion.data``'s feature code.
"""

from __future__ import annotations

from kfusion.modalities import STATISTICS
from kfusion.models.freezing import backbone_layers, freeze_encoders, freeze_for_fusion_training, up_to_fusion
from kfusion.models.feature_layers import MfccFrontEnd, WindowNormalization
from kfusion.models.fusion import (
    DEFAULT_PROJECTION_UNITS,
    MECHANISMS,
    LEVELS,
    PRESENCE,
    backbone_modalities,
    backbone_inputs,
    backbone_of,
    build_fusion_model,
    encoder_name,
    fusion_backbone,
    fusion_weights,
    presence_array,
)
from kfusion.models.heads import (
    EMOTION_CLASSES,
    LEVELS_LOGITS,
    LEVELS_STANDARDIZATION,
    emotion_model,
    fusion_pretraining_model,
    pretraining_targets,
    statistic_targets,
    summed_absolute_error,
)
from kfusion.models.layers import (
    ActivityL1,
    ModalityWeights,
    PresenceGate,
    Standardization,
    StatisticHeads,
    TokenPositionEmbedding,
    find_layer,
)
from kfusion.models.sigrep import sigrep_encoder, sigrep_parameter_count
from kfusion.models.speech import speech_autoencoder

__all__ = [
    "STATISTICS", "EMOTION_CLASSES", "MECHANISMS", "PRESENCE", "LEVELS", "backbone_inputs", "DEFAULT_PROJECTION_UNITS",
    "sigrep_encoder", "sigrep_parameter_count", "speech_autoencoder",
    "fusion_backbone", "build_fusion_model", "backbone_of", "backbone_modalities", "encoder_name",
    "fusion_weights", "presence_array", "fusion_pretraining_model", "emotion_model", "statistic_targets",
    "summed_absolute_error", "pretraining_targets",
    "freeze_for_fusion_training", "freeze_encoders", "backbone_layers", "up_to_fusion",
    "ModalityWeights", "PresenceGate", "Standardization", "LEVELS_STANDARDIZATION", "LEVELS_LOGITS",
    "TokenPositionEmbedding",
    "ActivityL1", "StatisticHeads", "find_layer",
    "MfccFrontEnd", "WindowNormalization",
]
