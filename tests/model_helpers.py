"""Tiny models shared by the model, training and evaluation tests (fast to build)."""

import keras

from kfusion.modalities import MODALITIES
from kfusion.models import sigrep_encoder, speech_autoencoder

#: Window shapes of the small five-modality data sets the protocol and tuning tests build.
SMALL_SHAPES = {"speech": (20, 4), "acc": (16, 3), "bvp": (16, 1), "eda": (4, 1), "temp": (4, 1)}


def tiny_encoders(modalities=MODALITIES):
    """Encoders with 8-d embeddings; speech input [16, 4], wearables [16, C]."""
    encoders = {}
    for m in modalities:
        if m == "speech":
            encoders[m] = speech_autoencoder((16, 4), code_dim=8, filters=(4,))[1]
        else:
            encoders[m] = sigrep_encoder(m, (16, 3 if m == "acc" else 1), filters=1, blocks=2,
                                         embedding_dim=8)
    return encoders


def pooled_encoder(modality: str, dim: int, shapes=SMALL_SHAPES) -> keras.Model:
    """Average over time, then Dense(dim, tanh): ``[B, *shapes[modality]] -> [B, dim]``, named
    ``<modality>_encoder``."""
    inputs = keras.Input(shapes[modality], name=f"{modality}_in")
    x = keras.layers.GlobalAveragePooling1D()(inputs)
    return keras.Model(inputs, keras.layers.Dense(dim, activation="tanh")(x), name=f"{modality}_encoder")


def pooled_pretrained(seed: int, dim: int, mechanisms, shapes=SMALL_SHAPES):
    """``Pretrained`` of :func:`pooled_encoder` encoders (``dim``-d) and one fusion backbone per
    mechanism (projection 8) on its own such encoders, built after ``set_random_seed(seed)``."""
    from kfusion.evaluation import Pretrained
    from kfusion.models import fusion_backbone

    keras.utils.set_random_seed(seed)
    encoders = {m: pooled_encoder(m, dim, shapes) for m in shapes}
    backbones = {mechanism: fusion_backbone({m: pooled_encoder(m, dim, shapes) for m in shapes}, mechanism,
                                            projection_units=(8,))
                 for mechanism in mechanisms}
    return Pretrained(encoders, backbones)
