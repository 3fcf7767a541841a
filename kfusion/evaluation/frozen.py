"""The frozen pretrained parts: their fingerprint and their outputs, computed once.

Frozen parts are deterministic and were trained without the labels, so the protocol, the
deployable model and the tuner compute their outputs once per (data set, pretrained models) and
train only a row's trainable layers on them: encoder embeddings (speech-only, wearable-only and
"without" rows), backbone projections ("with" rows), fusion-layer outputs ("with" rows whose
projection is fine-tuned) and the hand-crafted features. :class:`FrozenOutputs` holds them for a
pool of windows; :meth:`FrozenOutputs.inputs` gives a row's cached inputs and
:meth:`~kfusion.evaluation.rows.Row.stand_ins` the stand-ins its model is built on.
"""

from __future__ import annotations

import hashlib

import keras
import numpy as np

from kfusion.modalities import SPEECH
from kfusion.evaluation import baselines
from kfusion.models import LEVELS, PRESENCE, backbone_modalities, presence_array, up_to_fusion
from kfusion.training.emotion import FUSED_FEATURES, PROJECTION_FEATURES, frozen_outputs

__all__ = ["FrozenOutputs", "models_fingerprint", "backbone_inputs", "dataset_handcrafted_features",
           "level_inputs", "levels_width"]


def models_fingerprint(encoders, fusion_backbones) -> str:
    """Hex digest of every model's name, variable paths, shapes, dtypes and values (what a run
    folder records to refuse resuming with other pretrained models)."""
    digest = hashlib.sha256()
    for kind, models in (("encoder", encoders), ("fusion", fusion_backbones)):
        for key in sorted(models):
            digest.update(f"{kind}:{key}".encode())
            for variable in models[key].weights:
                value = np.ascontiguousarray(variable.numpy())
                digest.update(f"{variable.path}{value.shape}{value.dtype}".encode())
                digest.update(value.tobytes())
    return digest.hexdigest()[:32]


def backbone_inputs(backbone: keras.Model, dataset, index: np.ndarray) -> dict:
    """A fusion backbone's inputs on the windows ``index`` (its modalities, presence if it takes it)."""
    modalities = backbone_modalities(backbone)
    x = {m: dataset.inputs[m][index] for m in modalities}
    if PRESENCE in [t.name for t in backbone.inputs]:
        x[PRESENCE] = presence_array(dataset.presence, modalities)[index]
    return x


def levels_width(dataset, modalities, use_levels: bool = True) -> int:
    """Width of the learned heads' ``levels`` input: ``modalities``' window levels side by side
    (0 without levels)."""
    return sum(int(dataset.levels[m].shape[1]) for m in modalities) if use_levels else 0


def level_inputs(dataset, modalities, index: np.ndarray, use_levels: bool = True) -> dict:
    """``{"levels": [n, levels_width]}`` of the data-set windows ``index`` (empty without levels)."""
    return {LEVELS: dataset.level_matrix(modalities, index)} if use_levels else {}


def dataset_handcrafted_features(dataset) -> tuple[np.ndarray, list[str]]:
    """The hand-crafted row's features ``[N, F]`` of every window of ``dataset``, calibrated per
    participant as its ``config.calibration`` says (speech columns by the speech method, the
    others by the wearable one)."""
    features, names = baselines.handcrafted_features(
        dataset.inputs, dataset.presence, dataset.levels, dataset.physio, dataset.physio_names)
    calibration = dataset.config.calibration
    speech = np.array([n.startswith(SPEECH) for n in names])
    out = np.empty_like(features)
    for columns, method in ((speech, calibration.speech), (~speech, calibration.wearable)):
        if columns.any():
            out[:, columns] = baselines.calibrate_features(features[:, columns], dataset.participants,
                                                           dataset.starts, method, calibration.head_minutes)
    return out, names


class FrozenOutputs:
    """Outputs of the frozen models of ``pretrained`` (``.encoders``, ``.fusion_backbones``) on
    the windows ``pool`` of ``dataset``, computed on first use and kept. ``position[i]``: where
    data-set window ``i`` sits in the pool (-1 outside it).

    The float rounding of batched frozen models depends on what is batched together, so a fixed
    pool keeps numbers independent of which rows and targets use it."""

    def __init__(self, dataset, pretrained, pool: np.ndarray):
        self.dataset, self.pretrained, self.pool = dataset, pretrained, np.asarray(pool, dtype=np.int64)
        self.position = np.full(len(dataset.participants), -1, dtype=np.int64)
        self.position[self.pool] = np.arange(self.pool.size)
        self._outputs: dict = {}

    def _cached(self, key, compute):
        if key not in self._outputs:
            self._outputs[key] = compute()
        return self._outputs[key]

    def embeddings(self, modality: str) -> np.ndarray:
        """``[pool, D]`` embeddings of the pretrained ``modality`` encoder."""
        return self._cached(("embeddings", modality), lambda: frozen_outputs(
            self.pretrained.encoders[modality], self.dataset.inputs[modality][self.pool]))

    def projections(self, mechanism: str, backbone=None, key=None) -> np.ndarray:
        """``[pool, P]`` projections of the pretrained ``mechanism`` backbone, or of ``backbone``
        (a model, or a function giving one when the outputs are not kept yet; kept under ``key``:
        the tuner's backbones pretrained for a trial)."""
        def compute():
            model = self._backbone(mechanism, backbone)
            return frozen_outputs(model, backbone_inputs(model, self.dataset, self.pool))
        return self._cached(("projections", mechanism, key), compute)

    def fused(self, mechanism: str, backbone=None, key=None) -> np.ndarray:
        """Outputs of the pretrained ``mechanism`` backbone's fusion layer (its projection then
        trains), or of ``backbone``'s, kept under ``key`` (as in :meth:`projections`)."""
        def compute():
            model = self._backbone(mechanism, backbone)
            return frozen_outputs(up_to_fusion(model), backbone_inputs(model, self.dataset, self.pool))
        return self._cached(("fused", mechanism, key), compute)

    def _backbone(self, mechanism: str, backbone) -> keras.Model:
        """``backbone`` (a model, or a function giving one), else the pretrained ``mechanism`` one."""
        if backbone is None:
            return self.pretrained.fusion_backbones[mechanism]
        return backbone if isinstance(backbone, keras.Model) else backbone()

    def handcrafted(self) -> np.ndarray:
        return self._cached(("handcrafted",), lambda: dataset_handcrafted_features(self.dataset)[0][self.pool])

    def inputs(self, row, index: np.ndarray, modalities, use_presence: bool = True,
               fine_tune_projection: bool = False, backbone: keras.Model | None = None, key=None) -> dict:
        """The cached inputs of ``row``'s model (built on :meth:`Row.stand_ins`) for the data-set
        windows ``index``: embeddings ``[n, D, 1]`` of ``modalities`` and ``presence`` (rows on
        encoders), or projections / fusion-layer outputs ("with" rows). No ``levels``."""
        positions = self.position[index]
        if row.with_fusion_training:
            if fine_tune_projection:
                return {FUSED_FEATURES: self.fused(row.mechanism, backbone, key)[positions]}
            return {PROJECTION_FEATURES: self.projections(row.mechanism, backbone, key)[positions]}
        x = {m: self.embeddings(m)[positions][..., None] for m in modalities}
        if use_presence:
            x[PRESENCE] = presence_array(self.dataset.presence, modalities)[index]
        return x
