"""The rows of Table 1, each described once.

A :class:`Row` says what a row is: its ``name`` (the key of every record and file), which
modalities it takes, its fusion ``mechanism``, whether its fusion layers were pretrained ("with
fusion training") or are fresh ("without"), which frozen outputs it trains on, how its title
reads, which pretrained models it needs, and how its trainable part is built. The protocol
(:mod:`kfusion.evaluation.protocol`), the deployable model (:mod:`kfusion.evaluation.deploy`)
and the tuner (:mod:`kfusion.evaluation.tuning`) look rows up in :data:`ROWS` and never parse
their names.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

from kfusion.modalities import MODALITIES, SPEECH, WEARABLES
from kfusion.errors import ConfigError
from kfusion.models import MECHANISMS, backbone_modalities, emotion_model, encoder_name
from kfusion.training.emotion import (
    fine_tuned_emotion_model,
    fused_stub,
    fusion_emotion_model,
    identity_encoder,
    pretrained_emotion_model,
    projection_stub,
    wearable_only_model,
)

#: What a modality is called in row titles.
MODALITY_TITLES: dict[str, str] = {"speech": "Speech", "acc": "ACC", "bvp": "BVP", "eda": "EDA",
                                   "temp": "TEMP"}
#: The hand-crafted row's classifier (``EvaluationConfig.handcrafted_classifier``) in its title.
CLASSIFIER_TITLES: dict[str, str] = {"logistic": "logistic regression", "boosting": "gradient boosting"}

#: What a row takes: ``speech``, ``wearables`` (those the data set holds), ``all`` (every
#: modality the data set holds), ``backbone`` (its pretrained backbone's), ``dataset`` (the
#: data set's modalities, for the hand-crafted features).
TAKES = ("speech", "wearables", "all", "backbone", "dataset")
#: Which frozen outputs a row trains on: encoder ``embeddings``, backbone ``projections``,
#: hand-crafted ``features``.
FROZEN = ("embeddings", "projections", "features")


def modalities_title(modalities) -> str:
    """``"Speech + Wearable (ACC+BVP+EDA+TEMP)"``, ``"Wearable (EDA+TEMP)"`` or ``"Speech"``."""
    modalities = [str(m) for m in modalities]
    wearables = [MODALITY_TITLES.get(m, m.upper()) for m in modalities if m != "speech"]
    parts = (["Speech"] if "speech" in modalities else []) + (
        [f"Wearable ({'+'.join(wearables)})"] if wearables else [])
    return " + ".join(parts) or "no modality"


@dataclass(frozen=True)
class Row:
    """One row of Table 1 (see the module docstring).

    ``mechanism``: the fusion mechanism of its (fresh or pretrained) fusion layers, None for rows
    without fusion layers; ``fusion_training``: True for "with fusion training" (a pretrained
    backbone frozen up to its projection), False for fresh fusion layers on frozen encoders,
    None for rows without fusion layers; ``takes``: one of :data:`TAKES`; ``frozen``: one of
    :data:`FROZEN`; ``min_modalities``: how many modalities the data set must give the row
    for it to be a default row of ``kfusion evaluate`` (a fusion of one modality is no fusion);
    ``linear_levels``: with levels, its head adds a linear readout of them started at a logistic
    regression (:func:`~kfusion.models.emotion_model`; the speech-only row).
    """

    name: str
    takes: str
    frozen: str
    mechanism: str | None = None
    fusion_training: bool | None = None
    min_modalities: int = 1
    linear_levels: bool = False

    @property
    def learned(self) -> bool:
        """True for rows with a Keras model (every row but the hand-crafted one)."""
        return self.frozen != "features"

    @property
    def with_fusion_training(self) -> bool:
        return self.fusion_training is True

    @property
    def app_head(self) -> bool:
        """True for the wearable app head on encoders (fixed sizes, no fusion layers)."""
        return self.learned and self.mechanism is None

    # ---- modalities and titles
    def modalities(self, dataset, pretrained=None) -> tuple[str, ...]:
        """The modalities the row takes on ``dataset`` (a "with" row: its pretrained backbone's
        when ``pretrained`` holds it, else every modality of the data set)."""
        inputs = dataset.inputs
        if self.takes == "speech":
            return (SPEECH,)
        if self.takes == "wearables":
            return tuple(m for m in WEARABLES if m in inputs)
        if self.takes == "dataset":
            return tuple(dataset.modalities)
        if self.takes == "backbone":
            backbone = getattr(pretrained, "fusion_backbones", {}).get(self.mechanism)
            if backbone is not None:
                return tuple(backbone_modalities(backbone))
        return tuple(m for m in MODALITIES if m in inputs)

    def title(self, modalities=MODALITIES, classifier: str = "logistic") -> str:
        """The human title after the modalities the row used, e.g. ``"Wearable
        (ACC+BVP+EDA+TEMP), unweighted fusion, w/o fusion training"``; ``classifier``: the
        hand-crafted row's. Titles only: files key rows by name."""
        if self.takes == "speech":
            return "Speech only"
        if self.takes == "wearables":
            wearables = [MODALITY_TITLES.get(m, m.upper()) for m in modalities if m != "speech"]
            return f"Wearable only ({'+'.join(wearables)})" if wearables else "Wearable only"
        if not self.learned:
            return (f"Hand-crafted features of {modalities_title(modalities)}, "
                    f"{CLASSIFIER_TITLES.get(classifier, classifier)} (ours)")
        return (f"{modalities_title(modalities)}, {self.mechanism} fusion, "
                f"{'w/' if self.with_fusion_training else 'w/o'} fusion training")

    # ---- the pretrained models it needs
    def check_models(self, dataset, pretrained, where: str = "evaluate") -> None:
        """Raise :class:`ConfigError` (messages start with ``where``) unless ``pretrained``
        (``.encoders``, ``.fusion_backbones``) holds the models the row needs, taking the data
        set's window shapes."""
        if not self.learned:
            return
        if self.with_fusion_training:
            if self.backbone(dataset, pretrained, where) is None:
                raise ConfigError(f"{where}: row {self.name!r} needs a pretrained {self.mechanism} fusion backbone "
                                  f"(Pretrained.fusion_backbones[{self.mechanism!r}], "
                                  f"file fusion_{self.mechanism}.keras)")
            return
        modalities = self.modalities(dataset)
        if not modalities or (self.takes == "speech" and SPEECH not in dataset.inputs):
            raise ConfigError(f"{where}: row {self.name!r} needs "
                              f"{'speech' if self.takes == 'speech' else 'wearable'} windows in the data set, "
                              f"which holds {', '.join(dataset.inputs)}")
        self.check_encoders(modalities, dataset, pretrained, where)

    def backbone(self, dataset, pretrained, where: str = "evaluate") -> keras.Model | None:
        """A "with" row's pretrained backbone (None when ``pretrained`` has none), checked
        against the data set."""
        backbone = pretrained.fusion_backbones.get(self.mechanism)
        if backbone is None:
            return None
        missing = [m for m in backbone_modalities(backbone) if m not in dataset.inputs]
        if missing:
            raise ConfigError(f"{where}: row {self.name!r}: the {self.mechanism} backbone takes "
                              f"{', '.join(missing)}, which the data set does not hold")
        shapes = {t.name: tuple(t.shape[1:]) for t in backbone.inputs}
        for m in backbone_modalities(backbone):
            self._check_shape(m, shapes[m], dataset, where)
        return backbone

    def check_encoders(self, modalities, dataset, pretrained, where: str = "evaluate") -> None:
        """The pretrained encoders of ``modalities`` exist and take the data set's windows."""
        missing = [m for m in modalities if m not in pretrained.encoders]
        if missing:
            raise ConfigError(f"{where}: row {self.name!r} needs pretrained encoders for "
                              f"{', '.join(missing)} (files {', '.join(encoder_name(m) + '.keras' for m in missing)})")
        for m in modalities:
            self._check_shape(m, tuple(pretrained.encoders[m].input_shape[1:]), dataset, where)

    def _check_shape(self, modality: str, shape: tuple, dataset, where: str) -> None:
        found = tuple(dataset.inputs[modality].shape[1:])
        if tuple(shape) != found:
            raise ConfigError(f"{where}: row {self.name!r}: the pretrained {modality} model takes windows of "
                              f"shape {list(shape)}, the data set holds {list(found)}")

    # ---- the trainable part
    def stand_ins(self, dims, backbone: keras.Model | None = None, fine_tune_projection: bool = False) -> dict:
        """Stand-ins for the frozen parts, fed their cached outputs
        (:meth:`~kfusion.evaluation.frozen.FrozenOutputs.inputs`), as :meth:`build` arguments:
        identity encoders of ``dims`` ``{modality: embedding size}`` (rows on encoders), a
        projection stub of ``dims`` (the projection size) or, fine-tuning, the fused stub of
        the pretrained ``backbone`` ("with" rows)."""
        if self.with_fusion_training:
            return {"backbone": fused_stub(backbone) if fine_tune_projection else projection_stub(dims),
                    "stand_in": True}
        return {"encoders": {m: identity_encoder(m, d) for m, d in dims.items()}, "stand_in": True}

    def build(self, target: str, n_classes: int, *, encoders=None, backbone=None, head_units=(32, 16),
              projection_units=(128, 64), use_presence: bool = True, attention_tokens: int = 5,
              attention_heads: int = 2, levels: int = 0, fine_tune_projection: bool = False,
              stand_in: bool = False) -> keras.Model:
        """The row's model for ``target``, output ``{target: [B, n_classes]}``.

        Rows on encoders take ``encoders`` ``{modality: model}`` (the pretrained ones, or
        stand-ins fed cached embeddings) and get fresh fusion layers (``projection_units``,
        ``use_presence``, ``attention_*``) and a head (``head_units``), or the wearable app
        head. A "with" row takes ``backbone``: the pretrained one (frozen up to its projection,
        or up to its fusion layer with ``fine_tune_projection``) or, with ``stand_in``, a stub
        fed cached outputs (``projection_stub``, or ``fused_stub`` when fine-tuning).
        ``levels``: width of the heads' ``levels`` input (0 = none).
        """
        if not self.learned:
            raise ConfigError(f"row {self.name!r} has no Keras model")
        if self.with_fusion_training:
            if not fine_tune_projection:
                return pretrained_emotion_model(backbone, target, n_classes, head_units, levels=levels)
            if stand_in:  # the fused stub's projection copies train with the head
                return emotion_model(backbone, {target: n_classes}, head_units, name=f"{target}_model",
                                     levels=levels)
            return fine_tuned_emotion_model(backbone, target, n_classes, head_units, levels=levels)
        if self.app_head:
            return wearable_only_model(encoders, target, n_classes, use_presence, levels=levels)
        return fusion_emotion_model(encoders, target, n_classes, self.mechanism, projection_units,
                                    head_units, use_presence, attention_tokens, attention_heads, levels=levels,
                                    linear_levels=self.linear_levels and bool(levels))


def _rows() -> dict[str, Row]:
    rows = [Row("speech_only", "speech", "embeddings", mechanism="unweighted", fusion_training=False,
                linear_levels=True),
            Row("wearable_only", "wearables", "embeddings")]
    rows += [Row(f"{m}_without", "all", "embeddings", mechanism=m, fusion_training=False, min_modalities=2)
             for m in MECHANISMS]
    rows += [Row(f"{m}_with", "backbone", "projections", mechanism=m, fusion_training=True)
             for m in MECHANISMS]
    rows.append(Row("handcrafted", "dataset", "features"))
    return {row.name: row for row in rows}


#: Every row by name, in Table 1's order, then our hand-crafted baseline.
ROWS: dict[str, Row] = _rows()
ALL_ROWS: tuple[str, ...] = tuple(ROWS)
#: The rows with a Keras model (what ``kfusion train`` deploys and ``kfusion tune`` tunes).
LEARNED_ROWS: tuple[str, ...] = tuple(name for name, row in ROWS.items() if row.learned)
#: The "with vs without fusion training" pairs, ``mechanism: (without row, with row)``.
FUSION_PAIRS: dict[str, tuple[str, str]] = {
    m: tuple(next(r.name for r in ROWS.values() if r.mechanism == m and r.fusion_training is t
                  and r.takes != "speech") for t in (False, True))
    for m in MECHANISMS}


def get_row(name, where: str, choices=ALL_ROWS) -> Row:
    """The :class:`Row` called ``name`` among ``choices``; :class:`ConfigError` otherwise."""
    if name not in choices:
        hint = " (the hand-crafted row has no Keras model)" if name in ROWS and not ROWS[name].learned else ""
        raise ConfigError(f"{where}: row: expected one of {', '.join(choices)}, found {name!r}{hint}")
    return ROWS[name]


def row_title(row: str, modalities=MODALITIES, classifier: str = "logistic") -> str:
    """:meth:`Row.title` of the row called ``row`` (the name itself for an unknown row)."""
    return ROWS[row].title(modalities, classifier) if row in ROWS else row


__all__ = ["Row", "ROWS", "ALL_ROWS", "LEARNED_ROWS", "FUSION_PAIRS", "MECHANISMS", "get_row", "row_title",
           "modalities_title", "MODALITY_TITLES", "CLASSIFIER_TITLES"]
