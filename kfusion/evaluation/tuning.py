"""Hyperparameter search (KerasTuner) for the trainable part of one row of Table 1.

What is searched: the learning rate (log-uniform range) and, where the row has them, the units
of the emotion head's two Dense layers, the units of the fresh projection (speech-only and
"without fusion training" rows) and, for a "with fusion training" row, the projection and the
fusion-pretraining heads of a backbone pretrained for the trial (see :class:`TuningConfig`).
The objective (``"mean_f1"``, maximised) is the mean macro F1 over participant-wise *inner*
folds of the participants the tuner may see: each inner fold holds out a group of participants
as its test set, early-stops on a validation group of the others and trains on the rest. The
participants of ``held_out`` (the outer protocol's test participants) are removed from the data
set before anything is computed, so neither their windows nor their labels enter the search.

It tunes evaluation rows, so it uses what the protocol uses: the row descriptions
(:mod:`~kfusion.evaluation.rows`: models needed, modalities, how the trainable part is built),
the participant splits (:mod:`~kfusion.evaluation.folds`), the frozen-output cache and model
fingerprint (:mod:`~kfusion.evaluation.frozen`), macro F1 and mean ± standard error. Frozen
parts are run once per search and only the trainable layers are trained, on their cached
outputs; every inner fold of a trial starts from the same initial weights (from the seed).
``pretrained`` is any object with ``.encoders`` ``{modality: keras.Model}`` and
``.fusion_backbones`` ``{mechanism: keras.Model}`` (e.g. :class:`~kfusion.evaluation.Pretrained`);
the best configuration is written as plain dicts that ``EvaluationConfig`` / ``PipelineConfig`` read.

Distributed search uses KerasTuner's own mechanism: with ``KERASTUNER_TUNER_ID``,
``KERASTUNER_ORACLE_IP`` and ``KERASTUNER_ORACLE_PORT`` set, the process whose id contains
``chief`` serves the oracle (and writes the results once every trial is finished); the others
are workers that fetch trials from it and run them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import keras_tuner
import numpy as np
import pandas as pd
import tensorflow as tf

from kfusion import checks
from kfusion.config import _Config
from kfusion.errors import ConfigError, KfusionError
from kfusion.evaluation.folds import inner_folds, labelled_view
from kfusion.evaluation.frozen import FrozenOutputs, level_inputs, levels_width, models_fingerprint
from kfusion.evaluation.metrics import macro_f1
from kfusion.evaluation.protocol import EvaluationConfig
from kfusion.evaluation.rows import LEARNED_ROWS, get_row
from kfusion.evaluation.stats import mean_se
from kfusion.models import backbone_modalities
from kfusion.models.fusion import backbone_settings
from kfusion.runs import RunFolder, write_json_atomic
from kfusion.training.emotion import EmotionTrainer, EmotionTraining, check_batch_size, derive_seed
from kfusion.training.pretrain import FusionPretrainConfig, pretrain_fusion

ALGORITHMS: tuple[str, ...] = ("random", "bayesian", "hyperband")
OBJECTIVE = "mean_f1"
PROJECT_NAME = "keras_tuner"
TRIALS_CSV, TRIALS_MD = "trials.csv", "trials.md"
BEST_EVALUATION, BEST_PIPELINE = "best_evaluation.json", "best_pipeline.json"
LOGS_FOLDER = "logs"
PRETRAINING_FOLDER = "pretraining"
RUN_FORMAT = 1
#: Model settings taken from the evaluation config (not searched); defaults: its defaults.
MODEL_SETTINGS = {name: getattr(EvaluationConfig(), name) for name in
                  ("attention_tokens", "attention_heads", "use_presence", "use_levels", "fine_tune_projection")}


# --------------------------------------------------------------------------- configuration

def units_key(units) -> str:
    """Hyperparameter value of a layer-size list: ``(32, 16)`` -> ``"32-16"``, ``()`` -> ``"none"``."""
    return "-".join(str(int(u)) for u in units) or "none"


def parse_units(key: str) -> tuple[int, ...]:
    """Inverse of :func:`units_key`."""
    return () if key == "none" else tuple(int(u) for u in str(key).split("-"))


def _choices(where: str, value, allow_empty_units: bool = False) -> tuple[tuple[int, ...], ...]:
    """A non-empty list of distinct layer-size lists, e.g. ``[[32, 16], [64, 32]]``."""
    name = f"TuningConfig.{where}"
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value or any(
            isinstance(units, (str, bytes)) or not isinstance(units, Sequence) for units in value):
        raise ConfigError(f"{name}: expected a non-empty list of layer-size lists of positive whole "
                          f"numbers, e.g. [[32, 16], [64, 32]], found {value!r}")
    choices = [checks.units(f"{name}[{i}]", units, min_length=0 if allow_empty_units else 1)
               for i, units in enumerate(value)]
    if len(set(choices)) != len(choices):
        raise ConfigError(f"{name}: expected distinct choices, found {value!r}")
    return tuple(choices)


@dataclass(frozen=True)
class TuningConfig(_Config):
    """One search (saved in the run folder; ``kfusion tune --config FILE`` reads it).

    ``algorithm``: ``random`` | ``bayesian`` | ``hyperband``; ``trials``: how many trials at
    most (Hyperband: its brackets, cut at ``trials``); ``inner_folds``: participant-wise inner
    folds (fewer when there are fewer participants); ``epochs``, ``patience``, ``batch_size``,
    ``validation_fraction``: emotion training in every inner fold, as in the evaluation (batch size
    ``"auto"`` by default, from each inner fold's training windows; Hyperband
    uses ``epochs`` as its largest budget); ``seed`` fixes the inner folds, the oracle, initial
    weights and batch order.

    Search space: ``learning_rate`` = ``(low, high)`` searched log-uniformly (equal = fixed);
    ``head_units``, ``projection_units``, ``pretraining_head_units``: lists of choices (each a
    list of layer sizes; a single choice is fixed). ``projection_units`` applies to the fresh
    projection of the speech-only and "without" rows, and to "with" rows only when fusion
    pretraining is searched; ``pretraining_head_units`` only to "with" rows. Fusion pretraining
    is searched when pretraining sources are given (or ``pretraining_head_units`` differs from
    ``backbone_head_units``, which then requires them): a trial whose (projection, pretraining
    heads) differ from the given backbone's — projection read from the backbone, heads =
    ``backbone_head_units`` — pretrains one with ``pretraining`` (a short
    :class:`FusionPretrainConfig`; its sizes are replaced by the trial's).
    """

    algorithm: str = "random"
    trials: int = 10
    inner_folds: int = 3
    epochs: int = 32
    patience: int = 5
    batch_size: int | str = "auto"
    validation_fraction: float = 0.15
    seed: int = 0
    learning_rate: tuple = (1e-4, 1e-2)
    head_units: tuple = ((32, 16), (64, 32), (16, 8))
    projection_units: tuple = ((128, 64), (64, 32), (256, 128))
    pretraining_head_units: tuple = ((16,),)
    backbone_head_units: tuple = (16,)
    hyperband_factor: int = 3
    pretraining: FusionPretrainConfig = field(default_factory=lambda: FusionPretrainConfig(epochs=3))

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        checks.choice("TuningConfig.algorithm", self.algorithm, ALGORITHMS)
        for name, low in (("trials", 1), ("inner_folds", 2), ("epochs", 1), ("patience", 1),
                          ("seed", 0), ("hyperband_factor", 2)):
            set_(name, checks.whole(f"TuningConfig.{name}", getattr(self, name), low))
        set_("batch_size", check_batch_size("TuningConfig.batch_size", self.batch_size))
        checks.fraction("TuningConfig.validation_fraction", self.validation_fraction,
                        low_open=True, high_open=True)
        low, high = checks.pair("TuningConfig.learning_rate", self.learning_rate, 0.0, math.inf, low_open=True)
        checks.positive("TuningConfig.learning_rate[1]", high)  # finite
        set_("learning_rate", (low, high))
        set_("head_units", _choices("head_units", self.head_units))
        set_("projection_units", _choices("projection_units", self.projection_units))
        set_("pretraining_head_units", _choices("pretraining_head_units", self.pretraining_head_units,
                                                allow_empty_units=True))
        set_("backbone_head_units", _choices("backbone_head_units", [self.backbone_head_units],
                                             allow_empty_units=True)[0])
        if not isinstance(self.pretraining, FusionPretrainConfig):
            raise ConfigError(f"TuningConfig.pretraining: expected a FusionPretrainConfig, found "
                              f"{type(self.pretraining).__name__}")

    def to_dict(self) -> dict:
        out = super().to_dict()
        for name in ("head_units", "projection_units", "pretraining_head_units"):
            out[name] = [list(units) for units in getattr(self, name)]
        return out


# --------------------------------------------------------------------------- what is tuned

@contextlib.contextmanager
def _file_lock(path: Path):
    """An exclusive lock between processes (distributed workers sharing one folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock (one process at a time is then the user's job)
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class TuningProblem:
    """The windows, labels, inner folds and frozen outputs one search works on.

    ``dataset``: a ``WindowedDataset``; the windows of ``held_out`` participants are dropped
    first. ``model_settings``: ``attention_tokens``, ``attention_heads``, ``use_presence``, ``use_levels`` of the
    fresh fusion layers, and ``fine_tune_projection`` of the "with" rows (as in the evaluation config).
    """

    def __init__(self, dataset, pretrained, row: str, target: str, config: TuningConfig,
                 held_out: Sequence[str] = (), model_settings: Mapping | None = None,
                 pretraining_sources=None, out: str | Path | None = None, cache_dir=None):
        self.row, self.target, self.config = row, target, config
        self.out = Path(out) if out is not None else None
        self.cache_dir = cache_dir
        self.settings = {**MODEL_SETTINGS, **{k: v for k, v in dict(model_settings or {}).items()
                                              if k in MODEL_SETTINGS}}
        self.spec = get_row(row, "tune", LEARNED_ROWS)
        for name in ("inputs", "presence", "labels", "classes", "participants", "select"):
            if not hasattr(dataset, name):
                raise ConfigError(f"tune: dataset: expected a WindowedDataset (build_dataset), found "
                                  f"{type(dataset).__name__}")
        if target not in dataset.labels:
            raise ConfigError(f"tune: target: expected one of the data set's targets "
                              f"({', '.join(dataset.labels) or 'none'}), found {target!r}")
        if not hasattr(pretrained, "encoders") or not hasattr(pretrained, "fusion_backbones"):
            raise ConfigError(f"tune: pretrained: expected an object with .encoders and .fusion_backbones "
                              f"(kfusion.evaluation.Pretrained), found {type(pretrained).__name__}")
        self.pretrained = pretrained
        held_out = [held_out] if isinstance(held_out, str) else [str(p) for p in held_out]
        known = sorted(set(np.asarray(dataset.participants).astype(str).tolist()))
        unknown = [p for p in held_out if p not in known]
        if unknown:
            raise ConfigError(f"tune: held_out: participant(s) {', '.join(unknown)} not in the data set; "
                              f"expected some of {', '.join(known)}")
        self.held_out = tuple(sorted(set(held_out)))
        # Drop the held-out participants before anything else looks at the data.
        keep = ~np.isin(np.asarray(dataset.participants).astype(str), self.held_out)
        self.dataset = dataset.select(keep) if self.held_out else dataset
        view = labelled_view(self.dataset, target)
        self.index, self.y, self.n_classes, self.participants = view.index, view.y, view.n_classes, view.participants
        self.folds = inner_folds(self.participants, config.inner_folds, config.seed, config.validation_fraction,
                                 where=f"labels of target '{target}' (held out: {', '.join(self.held_out) or 'none'})")
        self.modalities = self.spec.modalities(self.dataset)
        self.pretraining_sources = pretraining_sources
        self._check_models()
        self.frozen = FrozenOutputs(self.dataset, pretrained, self.index)

    # ---- rows and models
    @property
    def mechanism(self) -> str | None:
        return self.spec.mechanism

    @property
    def with_fusion_training(self) -> bool:
        return self.spec.with_fusion_training

    def _check_models(self) -> None:
        config = self.config
        self.backbone = None
        self.backbone_key = None
        if self.with_fusion_training:
            self.backbone = self.spec.backbone(self.dataset, self.pretrained, "tune")
            if self.backbone is not None:
                self.modalities = tuple(backbone_modalities(self.backbone))
                self.backbone_key = (backbone_settings(self.backbone)["projection_units"], config.backbone_head_units)
            heads_differ = set(config.pretraining_head_units) != {config.backbone_head_units}
            self.search_pretraining = bool(self.pretraining_sources) or heads_differ or self.backbone is None
            if self.search_pretraining and not self.pretraining_sources:
                why = (f"there is no pretrained {self.mechanism} backbone" if self.backbone is None else
                       f"pretraining_head_units {[list(u) for u in config.pretraining_head_units]} differ from "
                       f"the given backbone's {list(config.backbone_head_units)}")
                raise ConfigError(f"tune: row {self.row!r}: {why}, so trials pretrain fusion backbones; "
                                  "give pretraining sources (pretraining_sources=..., CLI --pretraining SOURCE)")
            if self.search_pretraining:
                self.spec.check_encoders(self.modalities, self.dataset, self.pretrained, "tune")
            return
        self.search_pretraining = False
        self.spec.check_models(self.dataset, self.pretrained, "tune")

    # ---- frozen outputs

    def backbone_for(self, key) -> keras.Model:
        if self.backbone is not None and key == self.backbone_key:
            return self.backbone
        return self.pretrain_backbone(*key)

    def projections(self, key) -> np.ndarray:
        """Projection outputs of the backbone for ``key`` = (projection units, pretraining heads)."""
        return self.frozen.projections(self.mechanism, lambda: self.backbone_for(key), key)

    def pretraining_folder(self, projection_units, head_units) -> Path:
        key = f"{self.mechanism}_p{units_key(projection_units)}_h{units_key(head_units)}"
        return self.out / PRETRAINING_FOLDER / key

    def pretrain_backbone(self, projection_units, head_units) -> keras.Model:
        """A fusion backbone pretrained (self-supervised, no labels) on the pretraining sources with
        these sizes, into ``out/pretraining/<key>/`` (reused when already finished)."""
        if self.out is None:
            raise ConfigError("tune: pretraining a fusion backbone needs an output folder")
        folder = self.pretraining_folder(projection_units, head_units)
        window = self.dataset.config.window
        config = self.config.pretraining.replace(
            projection_units=tuple(projection_units), head_units=tuple(head_units),
            modalities=tuple(self.modalities), seed=self.config.seed,
            window_seconds=float(window.seconds), window_overlap=float(window.overlap))
        encoders = {m: self.pretrained.encoders[m] for m in self.modalities}  # pretrain_fusion copies them
        with _file_lock(folder.with_suffix(".lock")):
            paths = pretrain_fusion(self.pretraining_sources, folder, config, encoders=encoders,
                                    mechanisms=[self.mechanism], cache_dir=self.cache_dir,
                                    progress=False, verbose=0)
        return keras.saving.load_model(paths[self.mechanism]["backbone"], compile=False)

    def prepare(self) -> None:
        """Compute the frozen outputs every trial needs (so trial times compare)."""
        if self.with_fusion_training:
            if self.backbone is not None:
                self.inputs_for(self.backbone_key)
        else:
            for m in self.modalities:
                self.frozen.embeddings(m)

    def embedding_dim(self, modality: str) -> int:
        return int(self.pretrained.encoders[modality].output_shape[-1])

    def inputs_for(self, key=None) -> dict:
        """Model inputs over the tuned windows: cached projections or, with ``fine_tune_projection``,
        fusion-layer outputs (with rows, backbone ``key``), or embeddings ``[N, D, 1]`` per
        modality plus ``presence``."""
        backbone = (lambda: self.backbone_for(key)) if self.with_fusion_training else None
        x = self.frozen.inputs(self.spec, self.index, self.modalities, self.settings["use_presence"],
                               self.settings["fine_tune_projection"], backbone=backbone, key=key)
        return {**x, **level_inputs(self.dataset, self.modalities, self.index, self.settings["use_levels"])}


# --------------------------------------------------------------------------- the hypermodel

class EmotionHyperModel(keras_tuner.HyperModel):
    """Builds the trainable part of one row for a trial's hyperparameters and scores it.

    ``build(hp)``: the row's model on stand-ins for its frozen parts (as the evaluation does with
    cached outputs), initial weights from the seed. ``fit(hp, model)``: trains it on every inner
    fold from the same initial weights (:class:`EmotionTrainer`) and returns ``{"mean_f1",
    "f1_se", "f1_fold1", ..., "seconds"}`` (macro F1 on each fold's test participants).
    """

    def __init__(self, problem: TuningProblem, config: TuningConfig):
        super().__init__(name=f"{problem.row}_{problem.target}", tunable=True)
        self.problem, self.config = problem, config

    # ---- the search space
    def _units(self, hp, name: str, choices) -> tuple[int, ...]:
        keys = [units_key(u) for u in choices]
        value = hp.Fixed(name, keys[0]) if len(keys) == 1 else hp.Choice(name, keys, ordered=False)
        return parse_units(value)

    def backbone_key(self, hp):
        """(projection units, pretraining head units) of a "with" row's trial."""
        problem, config = self.problem, self.config
        if problem.search_pretraining:
            projection = self._units(hp, "projection_units", config.projection_units)
            heads = self._units(hp, "pretraining_head_units", config.pretraining_head_units)
            return projection, heads
        projection = self._units(hp, "projection_units", [problem.backbone_key[0]])
        heads = self._units(hp, "pretraining_head_units", [problem.backbone_key[1]])
        return projection, heads

    def declare(self, hp) -> dict:
        """Declare the hyperparameters on ``hp``; returns the trial's values (units as tuples)."""
        problem, config = self.problem, self.config
        low, high = config.learning_rate
        values = {"learning_rate": hp.Fixed("learning_rate", low) if low == high else
                  hp.Float("learning_rate", low, high, sampling="log")}
        if problem.spec.app_head:  # the wearable app head: fixed sizes
            return values
        values["head_units"] = self._units(hp, "head_units", config.head_units)
        if problem.with_fusion_training:
            values["projection_units"], values["pretraining_head_units"] = self.backbone_key(hp)
        else:
            values["projection_units"] = self._units(hp, "projection_units", config.projection_units)
        return values

    def build(self, hp) -> keras.Model:
        problem, settings = self.problem, self.problem.settings
        values = self.declare(hp)
        keras.utils.set_random_seed(derive_seed(self.config.seed, "init", problem.row, problem.target))
        dims = (values["projection_units"][-1] if problem.with_fusion_training
                else {m: problem.embedding_dim(m) for m in problem.modalities})
        sizes = {k: values[k] for k in ("head_units", "projection_units") if k in values}
        fine_tune = problem.with_fusion_training and settings["fine_tune_projection"]
        backbone = problem.backbone_for(self.backbone_key(hp)) if fine_tune else None
        stand_ins = problem.spec.stand_ins(dims, backbone, fine_tune)
        return problem.spec.build(problem.target, problem.n_classes, **stand_ins, **sizes,
                                  fine_tune_projection=fine_tune, use_presence=settings["use_presence"],
                                  attention_tokens=settings["attention_tokens"],
                                  attention_heads=settings["attention_heads"],
                                  levels=levels_width(problem.dataset, problem.modalities, settings["use_levels"]))

    def fit(self, hp, model, *args, epochs=None, **kwargs) -> dict:
        problem, config = self.problem, self.config
        started = time.perf_counter()
        key = self.backbone_key(hp) if problem.with_fusion_training else None
        x = {k: tf.convert_to_tensor(v) for k, v in problem.inputs_for(key).items()}
        settings = EmotionTraining(epochs=int(epochs or config.epochs), patience=config.patience,
                                   batch_size=config.batch_size,
                                   learning_rate=float(hp.get("learning_rate")))
        trainer = EmotionTrainer(model, problem.target, settings)
        scores = []
        for fold in problem.folds:
            trainer.fit(x, problem.y, fold.train, fold.validation,
                        seed=derive_seed(config.seed, "inner fold", problem.row, problem.target, fold.index))
            predicted = trainer.predict(x, fold.test).argmax(axis=-1)
            scores.append(macro_f1(problem.y[fold.test], predicted))
        mean, se = mean_se(scores)
        results = {OBJECTIVE: mean, "f1_se": se if len(scores) > 1 else 0.0}
        results.update({f"f1_fold{i + 1}": float(s) for i, s in enumerate(scores)})
        results["seconds"] = round(time.perf_counter() - started, 3)
        return results


# --------------------------------------------------------------------------- the tuner

def _role() -> str:
    """``single``, ``chief`` or ``worker`` from KerasTuner's environment variables."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "single"
    for name in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID"):
        if not os.environ.get(name):
            raise ConfigError(f"distributed tuning: KERASTUNER_ORACLE_IP is set but {name} is not; set "
                              "KERASTUNER_TUNER_ID ('chief' or e.g. 'tuner0'), KERASTUNER_ORACLE_IP and "
                              "KERASTUNER_ORACLE_PORT in every process")
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


class _InnerFoldTuner(keras_tuner.Tuner):
    """Runs a trial as build + :meth:`EmotionHyperModel.fit` (no Keras callbacks or checkpoints:
    a trial trains one model per inner fold; Hyperband's budget is the epoch limit, every trial
    trains from its initial weights). Logs each trial to ``out/logs/<tuner id>.jsonl``."""

    def __init__(self, *args, log_folder: Path, bar=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.log_folder, self.bar, self.user_error = log_folder, bar, None
        self.log_folder.mkdir(parents=True, exist_ok=True)

    def run_trial(self, trial, *args, **kwargs):
        hp = trial.hyperparameters
        record = {"trial": trial.trial_id, "tuner": self.tuner_id,
                  "hyperparameters": {k: v for k, v in hp.values.items()}}
        try:
            keras.backend.clear_session()
            model = self.hypermodel.build(hp)
            results = self.hypermodel.fit(hp, model, epochs=hp.values.get("tuner/epochs"))
        except KfusionError as err:  # a user-caused problem: stop the search, report it as such
            self.user_error = err
            RunFolder(self.log_folder).append_record(f"{self.tuner_id}.jsonl", {**record, "status": "FAILED",
                                                                                "message": str(err)})
            raise keras_tuner.errors.FatalError(str(err)) from err
        except Exception as err:
            RunFolder(self.log_folder).append_record(f"{self.tuner_id}.jsonl", {
                **record, "status": "FAILED", "message": f"{type(err).__name__}: {err}"})
            raise
        RunFolder(self.log_folder).append_record(f"{self.tuner_id}.jsonl", {**record, "status": "COMPLETED",
                                                                            **results})
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"last {OBJECTIVE} {results[OBJECTIVE]:.3f}")
        return results


def _oracle(config: TuningConfig):
    objective = keras_tuner.Objective(OBJECTIVE, "max")
    seed = derive_seed(config.seed, "oracle") or 1  # KerasTuner draws a random seed for 0
    if config.algorithm == "random":
        return keras_tuner.oracles.RandomSearchOracle(objective, max_trials=config.trials, seed=seed)
    if config.algorithm == "bayesian":
        return keras_tuner.oracles.BayesianOptimizationOracle(objective, max_trials=config.trials, seed=seed)
    oracle = keras_tuner.oracles.HyperbandOracle(objective, max_epochs=config.epochs,
                                                 factor=config.hyperband_factor, hyperband_iterations=None,
                                                 seed=seed)
    oracle.max_trials = config.trials  # brackets follow each other until this many trials
    return oracle


def _serve_oracle(tuner, bar=None, poll: float = 1.0) -> None:
    """Serve the tuner's oracle to the workers with KerasTuner's own chief (``Tuner.search`` in a
    process whose ``KERASTUNER_TUNER_ID`` contains ``chief``) until every trial is finished and
    every worker was told to stop. KerasTuner's chief checks every second until a worker is told
    to stop, then every 20 s until the others have stopped too, so a distributed search ends up to
    20 s after its last trial. ``bar`` follows the finished trials (checked every ``poll`` s)."""
    stop = threading.Event()

    def follow():
        while not stop.wait(poll):
            finished = sum(t.status in _FINISHED for t in list(tuner.oracle.trials.values()))
            if finished > bar.n:
                bar.update(finished - bar.n)

    follower = threading.Thread(target=follow, daemon=True) if bar is not None else None
    if follower is not None:
        follower.start()
    try:
        tuner.search(verbose=0)
    except RuntimeError as err:  # grpc: "Failed to bind to address ..."
        if "bind" not in str(err).lower():
            raise
        address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
        raise ConfigError(f"distributed tuning: the chief cannot listen on {address} "
                          "(KERASTUNER_ORACLE_IP / KERASTUNER_ORACLE_PORT; is the port in use?)") from err
    finally:
        stop.set()
        if follower is not None:
            follower.join()


_FINISHED = ("COMPLETED", "FAILED", "INVALID")


# --------------------------------------------------------------------------- results

@dataclass
class TuningResult:
    """A search's outcome. ``table``: one line per trial (id, status, tuner, hyperparameters,
    ``mean_f1``, ``f1_se``, ``f1_fold<k>``, ``seconds``), by trial id; ``best_hyperparameters``
    (units as lists); ``best_evaluation``: an ``EvaluationConfig`` dict with the tuned values;
    ``best_pipeline``: a ``PipelineConfig`` dict; ``complete``: all trials finished; ``role``:
    ``single``, ``chief`` or ``worker`` (a worker's table holds only the trials it ran and it
    writes no result files)."""

    out: Path
    row: str
    target: str
    table: pd.DataFrame
    best_hyperparameters: dict | None
    best_evaluation: dict | None
    best_pipeline: dict | None
    complete: bool
    role: str = "single"
    files: dict = field(default_factory=dict)


def _read_logs(folder: Path) -> dict:
    """``{trial id: last log record}`` from every process's log."""
    records = {}
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        for record in RunFolder(folder).read_records(path.name):
            records[record["trial"]] = record
    return records


def _hp_columns(values: Mapping) -> dict:
    columns = {k: v for k, v in values.items() if not k.startswith("tuner/")}
    if "tuner/epochs" in values:
        columns["budget_epochs"] = values["tuner/epochs"]
    return columns


def _table_from_oracle(oracle, logs: Mapping, folds: int) -> pd.DataFrame:
    lines = []
    for trial_id in sorted(oracle.trials):
        trial = oracle.trials[trial_id]
        line = {"trial": trial_id, "status": trial.status, "tuner": logs.get(trial_id, {}).get("tuner", "")}
        line.update(_hp_columns(trial.hyperparameters.values))
        for name in [OBJECTIVE, "f1_se", *[f"f1_fold{k + 1}" for k in range(folds)], "seconds"]:
            line[name] = (float(trial.metrics.get_last_value(name)) if trial.metrics.exists(name)
                          else math.nan)
        lines.append(line)
    return pd.DataFrame(lines)


def _table_from_logs(logs: Mapping, tuner_id: str, folds: int) -> pd.DataFrame:
    lines = []
    for trial_id in sorted(logs):
        record = logs[trial_id]
        if record.get("tuner") != tuner_id:
            continue
        line = {"trial": trial_id, "status": record.get("status"), "tuner": tuner_id}
        line.update(_hp_columns(record.get("hyperparameters", {})))
        for name in [OBJECTIVE, "f1_se", *[f"f1_fold{k + 1}" for k in range(folds)], "seconds"]:
            line[name] = float(record.get(name, math.nan))
        lines.append(line)
    return pd.DataFrame(lines)


def _best_line(table: pd.DataFrame):
    done = table[(table["status"] == "COMPLETED") & np.isfinite(table[OBJECTIVE].astype(float))] \
        if len(table) else table
    if not len(done):
        return None
    # Highest mean F1; ties go to the earlier trial (stable sort on trial ids).
    return done.sort_values(OBJECTIVE, ascending=False, kind="stable").iloc[0]


def _config_dict(value) -> dict:
    if value is None:
        return {}
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if not isinstance(value, Mapping):
        raise ConfigError(f"tune: expected a config dict or an object with to_dict(), found {type(value).__name__}")
    return json.loads(json.dumps(dict(value)))


def _best_configs(best, problem: TuningProblem, config: TuningConfig, evaluation_base: dict,
                  pipeline_base: dict) -> tuple[dict, dict, dict]:
    hyper = {"learning_rate": float(best["learning_rate"])}
    for name in ("head_units", "projection_units", "pretraining_head_units"):
        if name in best.index and isinstance(best[name], str):
            hyper[name] = list(parse_units(best[name]))
    evaluation = {**evaluation_base, **problem.settings,
                  "epochs": config.epochs, "patience": config.patience, "batch_size": config.batch_size,
                  "validation_fraction": config.validation_fraction,
                  "learning_rate": hyper["learning_rate"]}
    if "head_units" in hyper:
        evaluation["head_units"] = hyper["head_units"]
    if "projection_units" in hyper:
        evaluation["projection_units"] = hyper["projection_units"]
    pipeline = {**pipeline_base, "evaluation": evaluation, "rows": [problem.row], "targets": [problem.target],
                "seed": config.seed}
    if problem.with_fusion_training:
        fusion = dict(pipeline_base.get("fusion", {}))
        fusion["projection_units"] = hyper["projection_units"]
        fusion["head_units"] = hyper["pretraining_head_units"]
        pipeline["fusion"] = fusion
    return hyper, evaluation, pipeline


def _format_units(value) -> str:
    return str(value) if not isinstance(value, str) else value


def _markdown(table: pd.DataFrame, problem: TuningProblem, config: TuningConfig, best, total: int) -> str:
    folds = len(problem.folds)
    finished = int((table["status"] == "COMPLETED").sum()) if len(table) else 0
    lines = [f"# Tuning: {problem.row} / {problem.target}", "",
             f"Objective: mean macro F1 over {folds} participant-wise inner folds (maximised); "
             f"algorithm {config.algorithm}, seed {config.seed}; {finished} of {total} trials completed.",
             f"Held out (never seen): {', '.join(problem.held_out) or 'none'}.", ""]
    for fold in problem.folds:
        lines.append(f"- inner fold {fold.index + 1}: test {', '.join(fold.test_participants)}; "
                     f"validation {', '.join(fold.validation_participants)}")
    hp_names = [c for c in table.columns if c not in ("trial", "status", "tuner", OBJECTIVE, "f1_se", "seconds")
                and not c.startswith("f1_fold")]
    header = ["trial", *hp_names, "mean F1 (± se)", "F1 per inner fold", "seconds", "status", "tuner"]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, line in table.iterrows():
        mark = " **best**" if best is not None and line["trial"] == best["trial"] else ""
        values = [f"{line[name]:.3g}" if name == "learning_rate" else _format_units(line[name]) for name in hp_names]
        score = (f"{line[OBJECTIVE]:.4f} (± {line['f1_se']:.4f})" if np.isfinite(line[OBJECTIVE]) else "–")
        per_fold = ", ".join(f"{line[f'f1_fold{k + 1}']:.3f}" for k in range(folds)
                             if np.isfinite(line[f"f1_fold{k + 1}"])) or "–"
        seconds = f"{line['seconds']:.1f}" if np.isfinite(line["seconds"]) else "–"
        lines.append("| " + " | ".join([f"{line['trial']}{mark}", *values, score, per_fold, seconds,
                                        str(line["status"]), str(line["tuner"] or "")]) + " |")
    if best is not None:
        lines += ["", f"Best: trial {best['trial']}, mean F1 {best[OBJECTIVE]:.4f} (± {best['f1_se']:.4f}); "
                  f"see {BEST_EVALUATION} (kfusion evaluate --config) and {BEST_PIPELINE} "
                  f"(kfusion reproduce --config)."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the search

def tune(dataset, pretrained, row: str, target: str, out: str | Path, config: TuningConfig | None = None,
         held_out: Sequence[str] = (), pretraining_sources=None, progress: bool = True,
         evaluation: Mapping | None = None, pipeline: Mapping | None = None, cache_dir=None) -> TuningResult:
    """Search the hyperparameters of ``row`` for ``target`` (see the module docstring).

    ``dataset``: a ``WindowedDataset``; ``pretrained``: ``.encoders`` / ``.fusion_backbones``
    (kept frozen); ``held_out``: participant ids never seen (dropped first); ``pretraining_sources``:
    unlabelled sources for trials that pretrain a fusion backbone ("with" rows). ``evaluation`` /
    ``pipeline``: base ``EvaluationConfig`` / ``PipelineConfig`` (dicts or config objects) whose
    other values the best configs keep (``evaluation`` also gives ``attention_tokens``,
    ``attention_heads``, ``use_presence``, ``use_levels`` of the fresh fusion layers and heads).

    ``out``: the run folder: ``config.json`` (+ versions, data), KerasTuner's project folder
    ``keras_tuner/``, ``logs/<tuner>.jsonl`` (a line per trial run), ``pretraining/<key>/``,
    ``trials.csv``, ``trials.md``, ``best_evaluation.json``, ``best_pipeline.json``. Re-running
    resumes: finished trials are kept (a trial cut short is run again); ``config.trials`` may
    grow between runs, anything else changed is refused.
    """
    config = TuningConfig() if config is None else config
    if not isinstance(config, TuningConfig):
        raise ConfigError(f"tune: config: expected a TuningConfig, found {type(config).__name__}")
    role = _role()
    out = Path(out)
    evaluation_base, pipeline_base = _config_dict(evaluation), _config_dict(pipeline)
    if pretraining_sources is not None:
        pretraining_sources = [str(pretraining_sources)] if isinstance(pretraining_sources, (str, Path)) \
            else [str(s) for s in pretraining_sources]
    problem = TuningProblem(dataset, pretrained, row, target, config, held_out, evaluation_base,
                            pretraining_sources, out, cache_dir)
    identity = {"format": RUN_FORMAT, "row": row, "target": target,
                "tuning": {k: v for k, v in config.to_dict().items() if k != "trials"},
                "held_out": list(problem.held_out), "data_fingerprint": getattr(dataset, "fingerprint", None),
                "pretrained": models_fingerprint(pretrained.encoders, pretrained.fusion_backbones),
                "model_settings": problem.settings,
                "pretraining_sources": pretraining_sources if problem.search_pretraining else None}
    RunFolder(out).start(identity, getattr(dataset, "fingerprint", None), command="kfusion.evaluation.tuning.tune")
    write_json_atomic(out / "inner_folds.json", [
        {"fold": f.index + 1, "test": list(f.test_participants), "validation": list(f.validation_participants),
         "n_train": int(f.train.size), "n_validation": int(f.validation.size), "n_test": int(f.test.size)}
        for f in problem.folds])

    from tqdm.auto import tqdm

    hypermodel = EmotionHyperModel(problem, config)
    oracle = _oracle(config)
    bar = tqdm(total=config.trials if role != "worker" else None, desc=f"tuning {row}/{target}",
               unit="trial", disable=not progress)
    try:
        # KerasTuner prints "Reloading Tuner from ..." when it resumes; quiet without progress.
        with open(os.devnull, "w") as devnull, (contextlib.redirect_stdout(devnull) if not progress
                                               else contextlib.nullcontext()):
            tuner = _InnerFoldTuner(oracle=oracle, hypermodel=hypermodel, directory=str(out),
                                    project_name=PROJECT_NAME, overwrite=False, log_folder=out / LOGS_FOLDER,
                                    bar=bar)
        if role == "chief":
            tuner.oracle.verbose = 0
            done = sum(t.status in _FINISHED for t in tuner.oracle.trials.values())
            bar.update(done)
            if done < config.trials or any(t.status == "RUNNING" for t in tuner.oracle.trials.values()):
                _serve_oracle(tuner, bar if progress else None)
                bar.update(sum(t.status in _FINISHED for t in tuner.oracle.trials.values()) - bar.n)
        else:
            problem.prepare()
            if role == "single":
                bar.update(sum(t.status in _FINISHED for t in tuner.oracle.trials.values()))
            try:
                tuner.search(verbose=0)
            except keras_tuner.errors.FatalError:
                if tuner.user_error is not None:
                    raise tuner.user_error from None
                raise
    finally:
        bar.close()

    logs = _read_logs(out / LOGS_FOLDER)
    folds = len(problem.folds)
    if role == "worker":
        table = _table_from_logs(logs, tuner.tuner_id, folds)
        return TuningResult(out, row, target, table, None, None, None, False, role)
    table = _table_from_oracle(tuner.oracle, logs, folds)
    best = _best_line(table)
    files = {"trials_csv": out / TRIALS_CSV, "trials_md": out / TRIALS_MD}
    table.to_csv(files["trials_csv"], index=False)
    files["trials_md"].write_text(_markdown(table, problem, config, best, config.trials))
    hyper = evaluation_dict = pipeline_dict = None
    if best is not None:
        hyper, evaluation_dict, pipeline_dict = _best_configs(best, problem, config, evaluation_base, pipeline_base)
        files["best_evaluation"], files["best_pipeline"] = out / BEST_EVALUATION, out / BEST_PIPELINE
        write_json_atomic(files["best_evaluation"], evaluation_dict)
        write_json_atomic(files["best_pipeline"], pipeline_dict)
        write_json_atomic(out / "best.json", {"trial": best["trial"], OBJECTIVE: float(best[OBJECTIVE]),
                                              "f1_se": float(best["f1_se"]), "hyperparameters": hyper})
    # The search returned: every trial is finished (or the space was exhausted before ``trials``).
    complete = bool(len(table)) and bool(table["status"].isin(_FINISHED).all())
    return TuningResult(out, row, target, table, hyper, evaluation_dict, pipeline_dict, complete, role, files)


__all__ = ["TuningConfig", "TuningProblem", "EmotionHyperModel", "TuningResult", "tune", "units_key",
           "parse_units", "ALGORITHMS", "OBJECTIVE"]
