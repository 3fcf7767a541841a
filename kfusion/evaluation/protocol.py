"""The paper's evaluation (§4.2, §5): leave-one-subject-out over the rows of Table 1.

For every row, target and held-out participant ("fold"): train on the other participants'
windows labelled for the target, early-stop on a validation set of some of those participants
(chosen by the seed, never the held-out one), and score accuracy and macro F1 on the held-out
participant's windows. Every finished fold is appended to ``folds.jsonl`` of the run folder at
once; calling :func:`evaluate` again with the same arguments skips finished folds (resume).

Speed: frozen parts are deterministic and were trained without these labels, so their outputs
are computed once per (data set, pretrained model) — encoder embeddings for the speech-only,
wearable-only and "without" rows, projection outputs for the "with" rows — and only the
trainable layers are trained per fold (``EvaluationConfig.cache_frozen``; switch it off to train
the whole model with its frozen layers in it, which gives the same numbers, only slower). One
model per row and target is built and reset between folds; every fold starts from the same
initial weights (drawn from the seed per row and target) and draws its batch order from the
seed, the row, the target and the held-out participant.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from kfusion import checks
from kfusion.config import _Config
from kfusion.data.dataset import WindowedDataset
from kfusion.data.labels import UNLABELLED
from kfusion.modalities import MODALITIES
from kfusion.errors import ConfigError, DataError
from kfusion.evaluation import baselines, report, stats
from kfusion.evaluation.folds import Fold, TargetView, labelled_view, loso_folds
from kfusion.evaluation.parallel import FoldWork, check_workers, run_fold, run_units, uses_workers
from kfusion.evaluation.frozen import (  # noqa: F401  (dataset_handcrafted_features: public here too)
    FrozenOutputs,
    backbone_inputs,
    dataset_handcrafted_features,
    level_inputs,
    levels_width,
    models_fingerprint,
)
from kfusion.evaluation.report import TARGETS
from kfusion.evaluation.rows import ALL_ROWS, FUSION_PAIRS, MECHANISMS, ROWS
from kfusion.models import PRESENCE, backbone_of, encoder_name, presence_array
from kfusion.runs import RunFolder
from kfusion.training.emotion import (
    PROJECTION_FEATURES,
    EmotionTrainer,
    EmotionTraining,
    copy_trainable_weights,
    derive_seed,
)

FOLDS_FILE = "folds.jsonl"
RUN_FORMAT = 1


# --------------------------------------------------------------------------- configuration

@dataclass(frozen=True)
class EvaluationConfig(_Config):
    """Everything that decides the numbers of an evaluation (saved as ``config.json``).

    Training (paper §4.2): ``epochs`` (at most), ``patience`` (early stopping, best weights
    restored; ``monitor``: on the validation macro F1, ``"f1"``, or cross-entropy, ``"loss"``),
    ``batch_size`` (a number, or ``"auto"``: from the fold's training windows,
    :func:`~kfusion.training.emotion.auto_batch_size`), ``learning_rate`` (Adam). ``validation_fraction``
    of the training participants (at least one, at least one left to train on) form the
    validation set. ``head_units``: the emotion head's hidden Dense layers (paper Fig. 1(f));
    ``projection_units``, ``attention_tokens``, ``attention_heads``, ``use_presence``: the fresh
    fusion layers of the "without" and speech-only rows (keep them as in the pretrained
    backbones). ``handcrafted_c``: inverse regularisation of the hand-crafted row's logistic
    regression; ``handcrafted_classifier``: ``"logistic"`` or ``"boosting"`` (scikit-learn's
    histogram gradient boosting). ``cache_frozen``: train on outputs of the frozen layers computed once (fast) or
    through the whole model (slow; same numbers). ``class_weight``: ``"none"`` (the paper's plain
    cross-entropy) or ``"balanced"`` (classes weighted by their share of the training windows, in
    every row, the hand-crafted one included). ``use_levels``: feed every learned row's head
    the windows' calibrated levels (``WindowedDataset.levels`` of the row's modalities) beside
    the projection, so the model sees both a window's shape and its level.
    ``fine_tune_projection``: in the "with fusion training" rows, the pretrained model is frozen
    up to the projection head, which trains with the emotion heads from its pretrained weights
    (default; the paper's "froze the weights of the model up to the projection head");
    False also freezes the projection (bench/RESULTS.md, "How much stays frozen").
    """

    epochs: int = 32
    patience: int = 5
    batch_size: int | str = "auto"
    learning_rate: float = 1e-3
    validation_fraction: float = 0.15
    head_units: tuple = (32, 16)
    projection_units: tuple = (128, 64)
    attention_tokens: int = 5
    attention_heads: int = 2
    use_presence: bool = True
    handcrafted_c: float = 1.0
    cache_frozen: bool = True
    class_weight: str = "none"
    use_levels: bool = True
    handcrafted_classifier: str = "logistic"
    fine_tune_projection: bool = True
    monitor: str = "f1"

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        training = self.training()  # checks epochs, patience, batch size, learning rate, class weight, monitor
        for name in ("epochs", "patience", "batch_size"):
            set_(name, getattr(training, name))  # "auto" batch size: per fit, from its windows
        checks.fraction("validation_fraction", self.validation_fraction, low_open=True, high_open=True)
        for name in ("head_units", "projection_units"):
            set_(name, checks.units(name, getattr(self, name)))
        for name in ("attention_tokens", "attention_heads"):
            set_(name, checks.whole(name, getattr(self, name)))
        for name in ("use_presence", "cache_frozen", "use_levels", "fine_tune_projection"):
            checks.flag(name, getattr(self, name))
        checks.choice("handcrafted_classifier", self.handcrafted_classifier, baselines.CLASSIFIERS)
        checks.positive("handcrafted_c", self.handcrafted_c)

    def training(self) -> EmotionTraining:
        return EmotionTraining(epochs=self.epochs, patience=self.patience,
                               batch_size=self.batch_size, learning_rate=self.learning_rate,
                               class_weight=self.class_weight, monitor=self.monitor)


# --------------------------------------------------------------------------- pretrained models

@dataclass
class Pretrained:
    """The self-supervised models the protocol starts from.

    ``encoders``: ``{modality: keras.Model [B, T, C] -> [B, D]}`` (stage 1: SigRep encoders,
    speech encoder); ``fusion_backbones``: ``{mechanism: backbone}`` from fusion pretraining
    (stage 2; a fusion-pretraining model with its heads is reduced to its backbone). Models are
    used frozen: their ``trainable`` flags are set to False where they are used.
    """

    encoders: dict = field(default_factory=dict)
    fusion_backbones: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.encoders, Mapping) or not isinstance(self.fusion_backbones, Mapping):
            raise ConfigError("Pretrained: expected dicts encoders={modality: model} and "
                              "fusion_backbones={mechanism: model}")
        encoders = {}
        for modality, model in self.encoders.items():
            if str(modality).lower() not in MODALITIES:
                raise ConfigError(f"Pretrained.encoders: unknown modality {modality!r}; expected some of "
                                  f"{', '.join(MODALITIES)}")
            if not isinstance(model, keras.Model):
                raise ConfigError(f"Pretrained.encoders[{modality!r}]: expected a keras.Model, "
                                  f"found {type(model).__name__}")
            encoders[str(modality).lower()] = model
        backbones = {}
        for mechanism, model in self.fusion_backbones.items():
            if mechanism not in MECHANISMS:
                raise ConfigError(f"Pretrained.fusion_backbones: unknown mechanism {mechanism!r}; "
                                  f"expected some of {', '.join(MECHANISMS)}")
            if not isinstance(model, keras.Model):
                raise ConfigError(f"Pretrained.fusion_backbones[{mechanism!r}]: expected a keras.Model, "
                                  f"found {type(model).__name__}")
            if not _has_layer(model, "projection"):
                raise ConfigError(f"Pretrained.fusion_backbones[{mechanism!r}]: expected a model built by "
                                  "kfusion.models.fusion_backbone (a layer named 'projection')")
            if len(model.outputs) != 1 or model.outputs[0] is not model.get_layer("projection").output:
                model = backbone_of(model, name=f"{mechanism}_backbone")
            backbones[mechanism] = model
        self.encoders, self.fusion_backbones = encoders, backbones

    def fingerprint(self) -> str:
        """Hex digest of every model's name, variable paths, shapes, dtypes and values."""
        return models_fingerprint(self.encoders, self.fusion_backbones)

    def save(self, folder: str | Path) -> Path:
        """Write ``<modality>_encoder.keras`` and ``fusion_<mechanism>.keras`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for modality, model in self.encoders.items():
            model.save(folder / f"{encoder_name(modality)}.keras")
        for mechanism, model in self.fusion_backbones.items():
            model.save(folder / f"fusion_{mechanism}.keras")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "Pretrained":
        """Read the ``.keras`` files of a folder: ``<modality>_encoder.keras`` (an encoder, or any
        model holding a layer of that name, e.g. an autoencoder) and ``fusion_<mechanism>.keras``
        (a backbone or a fusion-pretraining model)."""
        import kfusion.models  # noqa: F401  (registers the custom layers before loading)

        folder = Path(folder)
        if not folder.is_dir():
            raise DataError(folder, "folder", "a folder of pretrained .keras models", "nothing")
        encoders, backbones = {}, {}
        for modality in MODALITIES:
            path = folder / f"{encoder_name(modality)}.keras"
            if path.is_file():
                model = _load_model(path)
                if model.name != encoder_name(modality) and _has_layer(model, encoder_name(modality)):
                    model = model.get_layer(encoder_name(modality))
                encoders[modality] = model
        for mechanism in MECHANISMS:
            path = folder / f"fusion_{mechanism}.keras"
            if path.is_file():
                model = _load_model(path)
                if not _has_layer(model, "projection"):
                    raise DataError(path, "layers", "a fusion backbone with a layer named 'projection'",
                                    f"a model {model.name!r} without one")
                backbones[mechanism] = model
        if not encoders and not backbones:
            raise DataError(folder, "files", "<modality>_encoder.keras or fusion_<mechanism>.keras files",
                            ", ".join(sorted(p.name for p in folder.iterdir())) or "an empty folder")
        return cls(encoders, backbones)


def _has_layer(model: keras.Model, name: str) -> bool:
    return any(layer.name == name for layer in model.layers)


def _load_model(path: Path) -> keras.Model:
    import zipfile

    if not zipfile.is_zipfile(path):  # Keras itself would say "File not found"
        raise DataError(path, "model", "a Keras 3 .keras model file (a zip archive written by model.save)",
                        "a file that is not a zip archive (truncated or not a Keras model)")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as err:  # noqa: BLE001 - Keras raises many types for unreadable files
        raise DataError(path, "model", "a Keras 3 .keras model file",
                        f"unreadable ({type(err).__name__}: {err})") from None


# --------------------------------------------------------------------------- folds

def _target_view(dataset: WindowedDataset, target: str, seed: int, fraction: float) -> TargetView:
    view = labelled_view(dataset, target)
    view.folds = loso_folds(view.participants, seed, fraction, where=f"labels of target '{target}'")
    return view


# --------------------------------------------------------------------------- rows

def check_pretrained(pretrained: Pretrained | None, rows: Sequence[str], dataset: WindowedDataset,
                     where: str = "evaluate") -> None:
    """Raise :class:`ConfigError` unless ``pretrained`` holds the models ``rows`` need."""
    needs_models = [r for r in rows if ROWS[r].learned]
    if needs_models and not isinstance(pretrained, Pretrained):
        raise ConfigError(f"{where}: pretrained: rows {', '.join(needs_models)} need a Pretrained "
                          f"(encoders and fusion backbones), found {type(pretrained).__name__}")
    for row in needs_models:
        ROWS[row].check_models(dataset, pretrained, where)


def available_rows(dataset: WindowedDataset, pretrained: Pretrained | None) -> tuple[str, ...]:
    """The rows of :data:`ALL_ROWS` that can run on ``dataset`` with ``pretrained`` (the default
    of ``kfusion evaluate`` without ``--rows``): speech only needs speech, wearable only a
    wearable, a fusion row two modalities or more (and a "with" row its pretrained backbone),
    every learned row its pretrained models; the hand-crafted row always runs."""
    rows = []
    for name, row in ROWS.items():
        if len(row.modalities(dataset, pretrained)) < row.min_modalities:
            continue
        try:
            check_pretrained(pretrained, [name], dataset)
        except ConfigError:
            continue
        rows.append(name)
    return tuple(rows)


class _KerasRow:
    """A Keras row for one target: the model, its inputs over the target's windows, a trainer."""

    def __init__(self, row: str, view: TargetView, dataset: WindowedDataset, pretrained: Pretrained,
                 frozen: FrozenOutputs, config: EvaluationConfig, seed: int):
        self.row, self.view = ROWS[row], view
        self.dataset, self.pretrained, self.frozen, self.config = dataset, pretrained, frozen, config
        keras.utils.set_random_seed(derive_seed(seed, "init", row, view.target))
        cached_model, cached_x = self.cached()
        if config.cache_frozen:
            model, x = cached_model, cached_x
        else:
            model, x = self._uncached()
            copy_trainable_weights(cached_model, model)
        self.x = {k: tf.convert_to_tensor(v) for k, v in x.items()}
        self.trainer = EmotionTrainer(model, view.target, config.training())

    def _build(self, modalities, **parts) -> keras.Model:
        config = self.config
        return self.row.build(self.view.target, self.view.n_classes, head_units=config.head_units,
                              projection_units=config.projection_units, use_presence=config.use_presence,
                              attention_tokens=config.attention_tokens, attention_heads=config.attention_heads,
                              levels=levels_width(self.dataset, modalities, config.use_levels),
                              fine_tune_projection=config.fine_tune_projection, **parts)

    def _levels(self, modalities) -> dict:
        return level_inputs(self.dataset, modalities, self.view.index, self.config.use_levels)

    def cached(self) -> tuple[keras.Model, dict]:
        """The model on stand-ins for the frozen parts, and its cached inputs."""
        row, config = self.row, self.config
        modalities = row.modalities(self.dataset, self.pretrained)
        backbone = self.pretrained.fusion_backbones[row.mechanism] if row.with_fusion_training else None
        x = self.frozen.inputs(row, self.view.index, modalities, config.use_presence,
                               config.fine_tune_projection)
        if row.with_fusion_training:
            dims = None if config.fine_tune_projection else int(x[PROJECTION_FEATURES].shape[1])
        else:
            dims = {m: int(x[m].shape[1]) for m in modalities}
        model = self._build(modalities, **row.stand_ins(dims, backbone, config.fine_tune_projection))
        return model, {**x, **self._levels(modalities)}

    def _uncached(self) -> tuple[keras.Model, dict]:
        """The model with the frozen parts in it, and its inputs (the windows themselves)."""
        row, config, dataset, index = self.row, self.config, self.dataset, self.view.index
        modalities = row.modalities(dataset, self.pretrained)
        if row.with_fusion_training:
            backbone = self.pretrained.fusion_backbones[row.mechanism]
            model = self._build(modalities, backbone=backbone)
            return model, {**backbone_inputs(backbone, dataset, index), **self._levels(modalities)}
        x = {m: dataset.inputs[m][index] for m in modalities}
        if config.use_presence:
            x[PRESENCE] = presence_array(dataset.presence, modalities)[index]
        model = self._build(modalities, encoders={m: self.pretrained.encoders[m] for m in modalities})
        return model, {**x, **self._levels(modalities)}

    def run(self, fold: Fold, seed: int) -> tuple[dict, np.ndarray, object]:
        history = self.trainer.fit(self.x, self.view.y, fold.train, fold.validation, seed=seed)
        probabilities = self.trainer.predict(self.x, fold.test)
        extra = {"epochs_run": history.epochs_run, "best_epoch": history.best_epoch, **history.at_best(),
                 "batch_size": history.batch_size}
        return extra, probabilities, self.trainer


class _HandcraftedRow:
    def __init__(self, view: TargetView, frozen: FrozenOutputs, config: EvaluationConfig):
        self.view, self.config = view, config
        self.features = frozen.handcrafted()[frozen.position[view.index]]

    def run(self, fold: Fold, seed: int) -> tuple[dict, np.ndarray, object]:
        fitted_on = np.concatenate([fold.train, fold.validation])
        pipeline = baselines.fit_handcrafted(self.features, self.view.y, fitted_on,
                                             self.config.handcrafted_c, seed, self.config.class_weight,
                                             self.config.handcrafted_classifier)
        probabilities = baselines.predict_handcrafted(pipeline, self.features, fold.test, self.view.n_classes)
        return {}, probabilities, pipeline


# --------------------------------------------------------------------------- results

@dataclass
class FoldRun:
    """Passed to ``evaluate(on_fold=...)`` after every newly finished fold: the record written,
    the fold's indices (into ``windows``, the data-set indices of the target's labelled
    windows) and the fitted object (an :class:`EmotionTrainer` or a scikit-learn pipeline)."""

    row: str
    target: str
    fold: Fold
    windows: np.ndarray
    record: dict
    fitted: object


@dataclass
class Results:
    """An evaluation's outcome. ``table``: one line per row, target and metric (``mean``, ``se``,
    ``n_folds``, ``paper_mean``, ``paper_se``); ``tests``: paired t-tests with vs without fusion
    training; ``folds``: the fold records; ``complete``: every fold finished."""

    out: Path
    table: pd.DataFrame
    tests: pd.DataFrame
    folds: pd.DataFrame
    complete: bool
    files: dict = field(default_factory=dict)
    #: row -> human title after the modalities the row used (the reports' "Experiment" column)
    titles: dict = field(default_factory=dict)

    def wide(self, source: str = "ours") -> pd.DataFrame:
        """Table 1 layout: one line per row, ``"mean (± se)"`` per target and metric."""
        return report.wide_table(self.table, source, titles=self.titles)


def _check_rows(rows) -> tuple[str, ...]:
    rows = (rows,) if isinstance(rows, str) else tuple(rows)
    unknown = [r for r in rows if r not in ALL_ROWS]
    if unknown or not rows or len(set(rows)) != len(rows):
        raise ConfigError(f"evaluate: rows: expected distinct names among {', '.join(ALL_ROWS)}, "
                          f"found {list(rows)}")
    return tuple(r for r in ALL_ROWS if r in rows)


def _check_targets(dataset: WindowedDataset, targets) -> tuple[str, ...]:
    targets = (targets,) if isinstance(targets, str) else tuple(targets)
    unknown = [t for t in targets if t not in dataset.labels]
    if unknown or not targets or len(set(targets)) != len(targets):
        raise ConfigError(f"evaluate: targets: expected distinct names among the data set's targets "
                          f"({', '.join(dataset.labels) or 'none'}), found {list(targets)}")
    return targets


def collect_results(out: Path, records: Sequence[dict], rows: Sequence[str], targets: Sequence[str],
                    folds: Mapping[str, Sequence[str]]) -> Results:
    """Summaries of ``records`` restricted to ``rows``, ``targets`` and the held-out ids
    ``folds[target]`` (in that order, so the numbers do not depend on the order folds finished)."""
    order = {(t, pid): i for t in targets for i, pid in enumerate(folds[t])}
    kept = sorted((r for r in records if r["row"] in rows and (r["target"], r["fold"]) in order),
                  key=lambda r: (rows.index(r["row"]), targets.index(r["target"]), order[(r["target"], r["fold"])]))
    table = report.with_paper(stats.summarize(kept, rows, targets))
    pairs = {m: p for m, p in FUSION_PAIRS.items() if p[0] in rows and p[1] in rows}
    tests = stats.compare_rows(kept, pairs, targets)
    complete = len(kept) == len(rows) * sum(len(folds[t]) for t in targets)
    return Results(Path(out), table, tests, pd.DataFrame(kept), complete)


def check_run_arguments(where: str, dataset, config, seed) -> tuple[EvaluationConfig, int]:
    """The checks ``evaluate`` and ``train_model`` share: a WindowedDataset, an
    EvaluationConfig (default when None) and a whole-number seed."""
    if not isinstance(dataset, WindowedDataset):
        raise ConfigError(f"{where}: dataset: expected a WindowedDataset (build_dataset), found "
                          f"{type(dataset).__name__}")
    if len(dataset) == 0:  # say why, rather than fail later on its missing targets
        why = {**dataset.report.get("skipped", {}), **dataset.report.get("problems", {})}
        first = next(iter(why.items()), None)
        raise ConfigError(f"{where}: dataset: holds no windows"
                          + (f" ({len(why)} participant(s) without any; {first[0]}: {first[1]})" if first else "")
                          + "; see its report (kfusion data inspect)")
    config = EvaluationConfig() if config is None else config
    if not isinstance(config, EvaluationConfig):
        raise ConfigError(f"{where}: config: expected an EvaluationConfig, found {type(config).__name__}")
    return config, checks.whole(f"{where}: seed", seed, 0)


def run_header(dataset: WindowedDataset, config: EvaluationConfig, seed: int, targets=None,
               rows=()) -> list[str]:
    """The lines that open ``table.md``: data (sources, participants, windows, modalities,
    ``targets`` with their classes), calibration (per-person, from each participant's own
    unlabelled signals), levels, what the "with fusion training" ``rows`` train, seed."""
    calibration = dataset.config.calibration
    used = [m for m in dataset.modalities if calibration.method(m) != "none"]
    lines = [*report.data_header(dataset.report.get("sources", []), dataset.participant_ids(), len(dataset),
                                 dataset.config.window, dataset.modalities,
                                 {t: dataset.classes[t] for t in (targets or dataset.targets)},
                                 [*dataset.report.get("skipped", {}), *dataset.report.get("problems", {})]),
             f"Calibration: {calibration.describe()}" + (
                 " — per-person statistics from each participant's own unlabelled signals "
                 "(the held-out participant's included, as an app calibrates on its user)" if used else ""),
             f"Window levels fed to the learned rows: {'yes' if config.use_levels else 'no'}"
             + (", standardised by each person's own level statistics" if used and calibration.standardize_levels
                else "") + "; "
             f"hand-crafted classifier: {config.handcrafted_classifier}",
             f"Seed: {seed}"]
    if any(ROWS[r].with_fusion_training for r in rows):
        lines.insert(-1, "With fusion training: the pretrained model frozen up to the projection head, "
                     + ("which trains with the emotion heads" if config.fine_tune_projection
                        else "the projection frozen too; only the emotion heads train"))
    return lines


def evaluate(dataset: WindowedDataset, pretrained: Pretrained | None, rows: Sequence[str] = ALL_ROWS,
             targets: Sequence[str] = TARGETS, out: str | Path = "runs/evaluation", seed: int = 0,
             config: EvaluationConfig | None = None, progress: bool = True, verbose: int = 0,
             max_folds: int | None = None, on_fold: Callable[[FoldRun], None] | None = None,
             workers: int | None = 1, scheduler: str | None = None) -> Results:
    """Leave-one-subject-out evaluation of ``rows`` (see :data:`ALL_ROWS`) for ``targets``.

    ``out``: the run folder (``config.json``, ``versions.json``, ``data.json``, ``folds.jsonl``,
    ``table.md/.csv/.tex``, ``figure3.png``); a folder holding a run with another config, seed,
    data set or pretrained models is refused; one with the same resumes (finished folds are
    kept, the rest is run; more rows or targets may be added). ``progress``: a tqdm bar over
    folds; ``verbose``: 1 prints a line per finished fold (no Keras progress bars either way).
    ``max_folds``: stop after that many newly finished folds (the reports then cover what is
    finished and ``Results.complete`` is False). ``on_fold``: called with a :class:`FoldRun`
    after each newly finished fold, in this process.

    ``workers``: folds run in that many worker processes of a local Dask cluster, one thread
    each (1: in this process, one after the other; None: the cores available, at most one per
    32 folds to run);
    ``scheduler``: a Dask scheduler address (``tcp://HOST:PORT``) whose workers run the folds
    instead (``workers`` then unused). Records are the same whatever the workers (``seconds``
    aside), this process alone writes ``folds.jsonl``, and ``FoldRun.fitted`` is None for folds
    run in a worker (see :mod:`kfusion.evaluation.parallel`).
    """
    config, seed = check_run_arguments("evaluate", dataset, config, seed)
    max_folds = checks.optional_whole("evaluate: max_folds", max_folds, 0)
    workers, scheduler = check_workers("evaluate", workers, scheduler)
    rows = _check_rows(rows)
    targets = _check_targets(dataset, targets)
    check_pretrained(pretrained, rows, dataset)
    views = {t: _target_view(dataset, t, seed, config.validation_fraction) for t in targets}

    run_config = {"format": RUN_FORMAT, "evaluation": config.to_dict(), "seed": seed,
                  "data_fingerprint": dataset.fingerprint, "data": dataset.config.to_dict(),
                  "pretrained": pretrained.fingerprint() if isinstance(pretrained, Pretrained) else None}
    run = RunFolder(out).start(run_config, dataset.fingerprint, command="kfusion.evaluation.evaluate")
    done: dict = {}
    for record in run.read_records(FOLDS_FILE):
        done.setdefault((record["row"], record["target"], record["fold"]), record)
    held_out = {t: [f.held_out for f in views[t].folds] for t in targets}
    work = [(row, t, fold) for row in rows for t in targets for fold in views[t].folds
            if (row, t, fold.held_out) not in done]
    total = len(rows) * sum(len(held_out[t]) for t in targets)

    # Frozen outputs of every window labelled for any target of the data set, not only the
    # requested ones: the float rounding of batched frozen models depends on what is batched
    # together, so a fixed pool keeps a fold's numbers independent of the rows and targets
    # asked for (and a resumed run that adds a target consistent with the first).
    pool = np.flatnonzero(np.any([dataset.labels[t] != UNLABELLED for t in dataset.labels], axis=0))
    frozen = FrozenOutputs(dataset, pretrained, pool)
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=total - len(work), desc="LOSO folds", unit="fold",
               disable=not progress)
    units = [(row, t, fold.held_out) for row, t, fold in work][:max_folds]
    fold_work = FoldWork(views, dataset, pretrained, frozen, config, seed, _KerasRow, _HandcraftedRow)
    if uses_workers(workers, scheduler, len(units)):
        fold_work = fold_work.for_workers(units)
    try:
        # The main process is the only writer of folds.jsonl: a record is appended as its
        # unit finishes, wherever it ran (so resume works as for a sequential run).
        with contextlib.closing(run_units(run_fold, fold_work, units, workers, scheduler, where="evaluate",
                                          group=lambda unit: unit[:2])) as outcomes:
            for (row, target, pid), (record, fitted) in outcomes:
                run.append_record(FOLDS_FILE, record)
                done[(row, target, pid)] = record
                bar.set_postfix_str(f"{row} / {target}")
                bar.update(1)
                if verbose:
                    bar.write(f"{row} {target} fold {pid}: accuracy {record['accuracy']:.4f} "
                              f"F1 {record['f1']:.4f} (n={record['n_test']}, {record['seconds']:.1f} s)")
                if on_fold is not None:
                    view = views[target]
                    on_fold(FoldRun(row, target, fold_work.fold(target, pid), view.index, record, fitted))
    finally:
        bar.close()

    # The reports cover everything the folder holds: rows or targets of an earlier call to the
    # same run folder stay in table.md when this call adds others.
    earlier_targets = [t for t in dict.fromkeys(r["target"] for r in done.values())
                       if t not in targets and t in dataset.labels]
    for t in earlier_targets:
        held_out[t] = [f.held_out for f in _target_view(dataset, t, seed, config.validation_fraction).folds]
    report_rows = tuple(r for r in ALL_ROWS if r in rows or any(x["row"] == r for x in done.values()))
    results = collect_results(run.path, list(done.values()), report_rows, (*targets, *earlier_targets),
                              held_out)
    paper = report.paper_targets(dataset.classes, dataset.report.get("label_schemes"))
    results.table = report.with_paper(results.table, paper)
    results.titles = {r: ROWS[r].title(ROWS[r].modalities(dataset, pretrained), config.handcrafted_classifier)
                      for r in report_rows}
    results.files = report.write_report(run.path, results.table, results.tests, results.complete,
                                        run_header(dataset, config, seed, (*targets, *earlier_targets),
                                                   report_rows),
                                        results.titles, paper)
    return results
