"""Tiny models shared by the model, training and evaluation tests (fast to build)."""

from kfusion.data.modalities import MODALITIES
from kfusion.models import sigrep_encoder, speech_autoencoder


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
