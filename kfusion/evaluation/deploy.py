"""A deployable model: one learned row of Table 1 trained on every labelled participant.

:func:`train_model` trains the row's trainable layers for each target exactly as a fold of the
protocol does (:mod:`kfusion.evaluation.protocol`: same builders, trainer, frozen-output cache,
initial weights from the seed), except that no participant is held out: a participant-wise
validation split (``EvaluationConfig.validation_fraction`` of the participants labelled for the
target, chosen by the seed) only stops training early. It then assembles **one** Keras model
with the real frozen parts inside and **one head per target**::

    modality windows (+ presence, levels) ─► frozen encoders (or the frozen fusion backbone),
        computed once ─► per target: the trained layers (fresh fusion + projection + head, the
        app head, or the head alone) ─► outputs {target: class probabilities}

The per-target parts are the very models trained on cached frozen outputs (embeddings fed
through an ``[B, D, 1]`` reshape into their identity stand-in encoders, or projections into
their projection stub), so the saved model gives the trained outputs on raw features with
nothing copied. Saved as ``<out>.keras`` with a JSON sidecar ``<out stem>.json`` (see
:func:`train_model`); ``kfusion export`` and ``kfusion predict`` take the ``.keras`` file.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import keras
import numpy as np

import kfusion
from kfusion.data.dataset import WindowedDataset
from kfusion.modalities import MODALITIES
from kfusion.errors import ConfigError, DataError
from kfusion.evaluation.folds import labelled_view, participant_split
from kfusion.evaluation.frozen import FrozenOutputs, levels_width
from kfusion.evaluation.protocol import (
    EvaluationConfig,
    Pretrained,
    _KerasRow,
    check_pretrained,
    check_run_arguments,
)
from kfusion.evaluation.rows import LEARNED_ROWS, get_row
from kfusion.models import LEVELS, PRESENCE, encoder_name, up_to_fusion
from kfusion.runs import package_versions, write_json_atomic
from kfusion.training.emotion import (
    FUSED_FEATURES,
    PROJECTION_FEATURES,
    TrainingHistory,
    copy_trainable_weights,
    derive_seed,
)
#: ``kind`` and ``format`` of the sidecar written beside a trained model.
SIDECAR_KIND = "kfusion-trained-model"
SIDECAR_FORMAT = 1

__all__ = ["LEARNED_ROWS", "TrainedModel", "train_model", "model_sidecar_path", "read_model_sidecar"]


@dataclass
class TrainedModel:
    """What :func:`train_model` made: the Keras ``model`` (outputs ``{target: [B, classes]}``),
    the file it was saved to (``path``, None when not saved), its ``sidecar`` dict and each
    target's :class:`~kfusion.training.emotion.TrainingHistory`."""

    model: keras.Model
    path: Path | None
    sidecar: dict
    histories: dict = field(default_factory=dict)


def model_sidecar_path(model_path) -> Path:
    """``model.keras`` -> ``model.json`` (the training sidecar beside it)."""
    return Path(model_path).with_suffix(".json")


def read_model_sidecar(model_path) -> dict | None:
    """The training sidecar of ``model_path`` (see :func:`train_model`), or None when there is
    none (or the JSON beside it is something else)."""
    import json

    path = model_sidecar_path(model_path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(path, "contents", "the JSON written by kfusion train", f"unreadable ({err})") from None
    return data if isinstance(data, dict) and data.get("kind") == SIDECAR_KIND else None


# --------------------------------------------------------------------------- checks

def _check_arguments(dataset, pretrained, row, targets, out, config, seed):
    config, seed = check_run_arguments("train_model", dataset, config, seed)
    get_row(row, "train_model", LEARNED_ROWS)
    targets = (targets,) if isinstance(targets, str) else tuple(targets or ())
    unknown = [t for t in targets if t not in dataset.labels]
    if unknown or not targets or len(set(targets)) != len(targets):
        raise ConfigError(f"train_model: targets: expected distinct names among the data set's targets "
                          f"({', '.join(dataset.labels) or 'none'}), found {list(targets)}")
    if out is not None and Path(out).suffix != ".keras":
        raise ConfigError(f"train_model: out: expected a file name ending in .keras, found '{out}'")
    check_pretrained(pretrained, (row,), dataset, where="train_model")
    return config, targets, seed


# --------------------------------------------------------------------------- the model

def _frozen_part(row: str, pretrained: Pretrained, dataset: WindowedDataset, config: EvaluationConfig):
    """``(modalities, inputs, feed)``: the deployed model's inputs and what they give the
    trained heads (embeddings ``[B, D, 1]``, projections, or with ``fine_tune_projection`` the
    fusion layer's outputs, plus presence and levels)."""
    spec = get_row(row, "train_model", LEARNED_ROWS)
    modalities = spec.modalities(dataset, pretrained)
    if spec.with_fusion_training:
        backbone = pretrained.fusion_backbones[spec.mechanism]
        backbone.trainable = False
        wanted = [t.name for t in backbone.inputs]
        inputs = {name: keras.Input(tuple(t.shape[1:]), name=name)
                  for name, t in zip(wanted, backbone.inputs)}
        if config.fine_tune_projection:  # the heads hold the trained projection: feed the fusion layer's output
            upstream = up_to_fusion(backbone, name=f"{backbone.name}_to_fusion")
            upstream.trainable = False
            feed = {FUSED_FEATURES: upstream({k: inputs[k] for k in wanted})}
        else:
            feed = {PROJECTION_FEATURES: backbone({k: inputs[k] for k in wanted})}
    else:
        inputs, feed = {}, {}
        for m in modalities:
            encoder = pretrained.encoders[m]
            encoder.trainable = False
            inputs[m] = keras.Input(tuple(dataset.inputs[m].shape[1:]), name=m)
            if encoder.name != encoder_name(m):
                inner = keras.Input(tuple(encoder.input_shape[1:]), name=f"{encoder_name(m)}_input")
                encoder = keras.Model(inner, encoder(inner), name=encoder_name(m))
                encoder.trainable = False
            embedding = encoder(inputs[m])
            feed[m] = keras.layers.Reshape((int(embedding.shape[-1]), 1), name=f"{m}_embedding")(embedding)
        if config.use_presence:
            inputs[PRESENCE] = keras.Input((len(modalities),), name=PRESENCE)
            feed[PRESENCE] = inputs[PRESENCE]
    if config.use_levels:
        inputs[LEVELS] = keras.Input((levels_width(dataset, modalities),), name=LEVELS)
        feed[LEVELS] = inputs[LEVELS]
    return modalities, inputs, feed


def _assemble(row: str, heads: dict, pretrained: Pretrained, dataset: WindowedDataset,
              config: EvaluationConfig) -> tuple[keras.Model, tuple]:
    modalities, inputs, feed = _frozen_part(row, pretrained, dataset, config)
    outputs = {}
    for target, head in heads.items():
        names = [t.name for t in head.inputs]
        missing = [n for n in names if n not in feed]
        if missing:  # pragma: no cover - the builders and _frozen_part agree on names
            raise ConfigError(f"train_model: the {target} head takes {missing}, which the row does not give")
        out = head({n: feed[n] for n in names})[target]
        outputs[target] = keras.layers.Identity(name=target)(out)
    ordered = {k: inputs[k] for k in [m for m in MODALITIES if m in inputs] + [PRESENCE, LEVELS] if k in inputs}
    return keras.Model(ordered, outputs, name=f"{row}_model"), modalities


# --------------------------------------------------------------------------- training

def _history(history: TrainingHistory) -> dict:
    return {"epochs_run": history.epochs_run, "best_epoch": history.best_epoch, "batch_size": history.batch_size,
            **{key: None if value is None else round(value, 6) for key, value in history.at_best().items()},
            "stopped_early": history.stopped_early, "kept_start": history.kept_start,
            "loss": [round(v, 6) for v in history.loss], "val_loss": [round(v, 6) for v in history.val_loss]}


def train_model(dataset: WindowedDataset, pretrained: Pretrained, row: str, targets: Sequence[str] | str,
                out: str | Path | None = None, config: EvaluationConfig | None = None, seed: int = 0,
                command: str | None = None) -> TrainedModel:
    """Train ``row`` (one of :data:`LEARNED_ROWS`) for ``targets`` on every labelled participant
    of ``dataset`` and return one model with a head per target.

    Per target: its labelled windows; ``config.validation_fraction`` of its participants (at
    least one, one left to train on; chosen by ``seed`` alone, so targets labelled for the same
    participants share the split) validate for early stopping, the rest train. Training is the
    protocol's (``config``: epochs, patience, batch size, learning rate, class weight, head and
    projection sizes, presence and levels inputs; ``cache_frozen=False`` trains through the
    frozen parts, then copies the trained layers). Initial weights and batch order come from
    ``seed``, the row and the target.

    ``out``: a ``.keras`` path; the model is saved there and the sidecar ``<stem>.json`` beside
    it: ``kind``, ``format``, ``row``, ``targets`` (per target: ``classes`` in output order,
    windows, training and validation participants, ``training`` = epochs run, 0-based best epoch,
    best validation loss, loss curves), ``outputs`` (name, classes), ``inputs`` (name, shape),
    ``levels`` (modalities in column order, width; None without levels), ``calibration``
    (``DataConfig.calibration``, and ``calibration_description``), ``data`` (the DataConfig),
    ``features``, ``window``, ``sources``, ``data_fingerprint``, ``evaluation`` (the
    EvaluationConfig), ``seed``, ``pretrained`` (fingerprint), ``versions``, ``created``,
    ``command``.
    """
    config, targets, seed = _check_arguments(dataset, pretrained, row, targets, out, config, seed)
    views = {t: labelled_view(dataset, t) for t in targets}
    splits = {t: participant_split(views[t].participants, config.validation_fraction, seed,
                                   where=f"labels of target '{t}'") for t in targets}
    pool = np.unique(np.concatenate([v.index for v in views.values()]))
    frozen = FrozenOutputs(dataset, pretrained, pool)
    heads, histories = {}, {}
    for target in targets:
        view = views[target]
        runner = _KerasRow(row, view, dataset, pretrained, frozen, config, seed)
        train, validation, _, _ = splits[target]
        histories[target] = runner.trainer.fit(runner.x, view.y, train, validation,
                                                seed=derive_seed(seed, "deploy", row, target))
        head = runner.trainer.model
        if not config.cache_frozen:  # trained through the frozen parts: move the trained layers over
            head, _ = runner.cached()
            copy_trainable_weights(runner.trainer.model, head)
        heads[target] = head
    model, modalities = _assemble(row, heads, pretrained, dataset, config)
    sidecar = _sidecar(dataset, pretrained, row, targets, views, splits, histories, model, modalities,
                       config, seed, out, command)
    path = None
    if out is not None:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(path)
        write_json_atomic(model_sidecar_path(path), sidecar)
    return TrainedModel(model, path, sidecar, histories)


def _sidecar(dataset, pretrained, row, targets, views, splits, histories, model, modalities, config,
             seed, out, command) -> dict:
    data = dataset.config
    per_target = {}
    for t in targets:
        train, validation, train_ids, validation_ids = splits[t]
        per_target[t] = {"classes": list(dataset.classes[t]), "windows": int(views[t].index.size),
                         "train_windows": int(train.size), "validation_windows": int(validation.size),
                         "train_participants": train_ids, "validation_participants": validation_ids,
                         "training": _history(histories[t])}
    levels = None
    if config.use_levels:
        levels = {"modalities": list(modalities),
                  "widths": {m: int(dataset.levels[m].shape[1]) for m in modalities},
                  "layout": "per modality in this order: window mean per channel, then "
                            "log(std + 1e-3) per channel, of the calibrated window"}
    return {
        "kind": SIDECAR_KIND, "format": SIDECAR_FORMAT,
        "model": None if out is None else Path(out).name,
        "row": row, "targets": per_target,
        "outputs": [{"name": t, "classes": list(dataset.classes[t])} for t in targets],
        "inputs": [{"name": t.name, "shape": [None, *[int(s) for s in t.shape[1:]]]} for t in model.inputs],
        "levels": levels,
        "calibration": data.calibration.to_dict(),
        "calibration_description": data.calibration.describe(),
        "data": data.to_dict(), "features": data.features.to_dict(),
        "window": {"seconds": data.window.seconds, "hop_seconds": data.window.hop},
        "sources": list(dataset.report.get("sources", [])), "data_fingerprint": dataset.fingerprint,
        "evaluation": config.to_dict(), "seed": seed, "pretrained": pretrained.fingerprint(),
        "versions": package_versions(), "kfusion_version": kfusion.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command or " ".join(sys.argv),
    }
