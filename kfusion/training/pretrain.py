"""The self-supervised pretraining stages (paper §3.1-3.2), resumable run folders.

- :func:`pretrain_encoders` (stage 1a): one SigRep encoder per wearable modality, contrastive
  (two augmented views, projection head, NT-Xent), on every window where the modality is present.
- :func:`pretrain_speech` (stage 1b): the sparse MFCC autoencoder (reconstruction MSE plus the
  encoder's own L1 activity penalty) on speech windows of data sets or audio folders.
- :func:`pretrain_fusion` (stage 2): per fusion mechanism, the fusion backbone on the pretrained
  encoders (frozen by default) plus one regression head per masked-span statistic (40 for five
  modalities; one grouped layer), MAE per head summed, Adam; targets standardised with a scaler
  fitted on the training participants only; a participant-level validation split is monitored,
  and ``results.jsonl`` records each statistic's validation MAE at the end (``val_mae``).

Every stage writes a run folder (:class:`kfusion.runs.RunFolder`: ``config.json``,
``versions.json``, ``data.json``) with one sub-folder per trained model holding
``progress.json`` and, while it trains, a Keras backup (weights + optimizer + augmenter random
state) after every epoch. Each model trains in one ``fit``, so callbacks (``EarlyStopping``,
``ReduceLROnPlateau``) work. A re-run with the same config continues after the last finished
epoch and skips finished models. Each epoch's data order (and masking draws) is a function of
``(seed, epoch)``, so a resumed run ends with the same weights as an uninterrupted one.

The stages read only the windows' inputs, presence and participants: their data sets are built
with ``build_dataset(..., contents="inputs")`` (no labels, window levels, calibration the inputs
do not use, or whole-recording physiology; the same inputs, so the same results, issue 15).

Every stage takes ``strategy``: ``"default"`` (one process) or ``"multiworker"``
(``tf.distribute.MultiWorkerMirroredStrategy`` over the workers ``TF_CONFIG`` names; the batch
size is the global batch and only the chief writes ``out``; the models train in a loop of
``strategy.run(model.train_step)`` instead of ``fit``, backed up by a ``tf.train.Checkpoint`` per
epoch; see :mod:`kfusion.training.distributed`).
"""

from __future__ import annotations

import functools
import json
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from kfusion import checks
from kfusion.config import DataConfig, FeatureConfig, WindowConfig, _Config
from kfusion.modalities import MODALITIES, SPEECH, STATISTICS, WEARABLES, check_modalities, input_shape
from kfusion.errors import ConfigError, DataError
from kfusion.runs import RunFolder, write_json_atomic
from kfusion.training.distributed import EpochCheckpoint, distributable, fit_distributed, shard_by_data

__all__ = [
    "EncoderPretrainConfig", "SpeechPretrainConfig", "FusionPretrainConfig",
    "pretrain_encoders", "pretrain_speech", "pretrain_fusion", "train_resumable",
    "split_participants", "encoder_path", "speech_encoder_path", "fusion_paths", "git_commit",
]

PROGRESS_FILE = "progress.json"


class _StageConfig(_Config):
    """Common fields and checks of the three stage configs."""

    def _check(self, field: str, check, *args, **kwargs) -> None:
        """Check and normalise ``field`` with ``check`` (a :mod:`kfusion.checks` function)."""
        value = check(f"{type(self).__name__}.{field}", getattr(self, field), *args, **kwargs)
        object.__setattr__(self, field, value)  # frozen dataclass

    def _check_common(self):
        for field, check, args in (("epochs", checks.whole, ()), ("batch_size", checks.whole, (2,)),
                                   ("learning_rate", checks.positive, ()), ("seed", checks.whole, (0,)),
                                   ("max_windows", checks.whole, (0,)), ("window_seconds", checks.positive, ())):
            self._check(field, check, *args)
        self._check("window_overlap", checks.number, 0.0, self.window_seconds, high_open=True)

    def data_config(self, modalities, **features) -> DataConfig:
        window = WindowConfig(seconds=self.window_seconds, overlap=self.window_overlap, missing="fill")
        return DataConfig(modalities=tuple(modalities), window=window, features=FeatureConfig(**features))


@dataclass(frozen=True)
class EncoderPretrainConfig(_StageConfig):
    """Stage 1a. ``max_windows``: at most this many windows per modality (0 = all), drawn with
    ``seed``. Augmentation strengths go to :func:`kfusion.training.augment.default_augmenter`;
    ``projection_units``: the projection head used in training and dropped afterwards."""

    epochs: int = 10
    batch_size: int = 256
    learning_rate: float = 1e-3
    temperature: float = 0.1
    seed: int = 0
    max_windows: int = 0
    noise_stddev: float = 0.05
    scaling_range: tuple = (0.8, 1.2)
    warp_strength: float = 0.2
    segments: int = 4
    max_zero_ratio: float = 0.25
    projection_units: tuple = (64, 32)
    embedding_dim: int = 40
    window_seconds: float = 4.0
    window_overlap: float = 1.0

    def __post_init__(self):
        self._check_common()
        self._check("temperature", checks.positive)
        self._check("scaling_range", checks.pair, 0.0, float("inf"))
        self._check("max_zero_ratio", checks.fraction)
        self._check("noise_stddev", checks.non_negative)
        self._check("warp_strength", checks.non_negative)
        self._check("segments", checks.whole, 2)
        self._check("embedding_dim", checks.whole)
        self._check("projection_units", checks.units)


@dataclass(frozen=True)
class SpeechPretrainConfig(_StageConfig):
    """Stage 1b. ``sparsity``: L1 weight on the code; ``local_dim``: the autoencoder's timing
    code (see :func:`kfusion.models.speech_autoencoder`); ``validation_fraction``: share of
    speakers/participants held out for monitoring (0 = none)."""

    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 1e-3
    seed: int = 0
    max_windows: int = 0
    code_dim: int = 40
    sparsity: float = 1e-6
    local_dim: int = 40
    validation_fraction: float = 0.1
    max_windows_per_file: int = 0
    window_seconds: float = 4.0
    window_overlap: float = 1.0

    def __post_init__(self):
        self._check_common()
        self._check("code_dim", checks.whole)
        self._check("local_dim", checks.whole, 0)
        self._check("sparsity", checks.non_negative)
        self._check("validation_fraction", checks.fraction, 0.0, 0.9)
        self._check("max_windows_per_file", checks.whole, 0)


@dataclass(frozen=True)
class FusionPretrainConfig(_StageConfig):
    """Stage 2. ``mask_ratio``: span length as a fraction of the window, (low, high);
    ``freeze_encoders``: keep the pretrained encoders fixed (only the fusion layers, projection
    and heads learn); ``scaler_draws``: passes of random spans used to fit the target scaler."""

    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 1e-3
    seed: int = 0
    max_windows: int = 0
    mask_ratio: tuple = (0.1, 0.5)
    statistics: tuple = STATISTICS
    modalities: tuple = MODALITIES
    validation_fraction: float = 0.2
    freeze_encoders: bool = True
    projection_units: tuple = (128, 64)
    head_units: tuple = (16,)
    scaler_draws: int = 2
    window_seconds: float = 4.0
    window_overlap: float = 1.0

    def __post_init__(self):
        from kfusion.training.masking import check_statistics

        self._check_common()
        self._check("mask_ratio", checks.pair, 0.0, 1.0, low_open=True)
        object.__setattr__(self, "statistics", check_statistics(self.statistics))
        object.__setattr__(self, "modalities", check_modalities(self.modalities))
        self._check("validation_fraction", checks.fraction, 0.0, 0.9)
        self._check("freeze_encoders", checks.flag)
        self._check("projection_units", checks.units)
        self._check("head_units", checks.units, min_length=0)
        self._check("scaler_draws", checks.whole)


def _check_config(config, cls):
    if config is None:
        return cls()
    if isinstance(config, Mapping):
        return cls.from_dict(config, cls.__name__)
    if not isinstance(config, cls):
        raise ConfigError(f"config: expected a {cls.__name__}, found {type(config).__name__}")
    return config


def _check_sources(sources) -> list[str]:
    if isinstance(sources, (str, Path)):
        sources = [sources]
    try:
        sources = [str(s) for s in sources]
    except TypeError:
        raise ConfigError(f"sources: expected one or more data sources, found {sources!r}") from None
    if not sources:
        raise ConfigError("sources: expected at least one data source (SCHEME:PATH), found none")
    return sources


def git_commit(directory: str | Path | None = None) -> str | None:
    """``git rev-parse HEAD`` of the repository holding ``directory`` (this package by default)."""
    directory = Path(directory or Path(__file__).resolve().parent)
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True,
                             text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


# --------------------------------------------------------------------------- resumable training

def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint32)[0])


def _build_optimizer(model) -> None:
    from kfusion.training.contrastive import ContrastiveModel

    if model.optimizer.built:
        return
    if isinstance(model, ContrastiveModel):  # its train_step updates exactly these, in this order
        variables = model.encoder.trainable_weights + model.head.trainable_weights
    else:
        variables = model.trainable_variables
    model.optimizer.build(variables)


def read_progress(stage_dir: str | Path) -> dict:
    """A stage folder's ``progress.json`` (``epochs_done``, ``history``, ``trained``: the fit
    ended, ``finished``: the products are saved), or the empty state."""
    path = Path(stage_dir) / PROGRESS_FILE
    if not path.is_file():
        return {"epochs_done": 0, "history": [], "trained": False, "finished": False}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(path, "contents", "the JSON progress record of a kfusion stage",
                        f"unreadable ({err}); delete the folder to start this model again") from None


def train_resumable(model, epoch_data: Callable[[int], object], epochs: int, stage_dir: str | Path,
                    validation_data=None, tensorboard: bool = False, verbose="auto",
                    callbacks=()) -> list[dict]:
    """Fit a compiled ``model`` for ``epochs`` epochs in one ``fit``, backed up after every epoch.

    ``epoch_data(epoch)``: a ``tf.data.Dataset`` of the training batches of that (0-based) epoch,
    already in its order (it is not shuffled again; every epoch has as many batches). It is
    called for every epoch still to run when the fit starts (the datasets are lazy: let them
    share one copy of the windows) and the epochs are chained into one ``tf.data`` pipeline, so
    no batch passes through Python. An ``epoch_data`` with a method ``chain(first, total)``
    giving those epochs batch for batch as one dataset (e.g.
    :class:`~kfusion.training.masking.MaskedStatisticsEpochs`) supplies the pipeline itself.
    A ``keras.callbacks.BackupAndRestore`` in ``stage_dir/backup`` saves the weights, the
    optimizer and the random state of the augmentation layers (saved with their weights) after
    every epoch, and ``progress.json`` records the epochs done and their logs. A new call after a
    crash continues from the next epoch and, each epoch's data being a function of the epoch,
    ends with the weights an uninterrupted run would have; a call after the fit ended only
    restores the weights.
    ``callbacks`` work as in any ``fit`` (``EarlyStopping`` ends the run; their own counters start
    again after a resume). Returns the per-epoch logs of every epoch, across resumes.

    Under a ``tf.distribute`` strategy the model trains in :func:`kfusion.training.distributed.fit_distributed`
    (a loop of ``strategy.run(model.train_step)``, one distributed dataset per epoch) and the
    backup is a ``tf.train.Checkpoint`` per epoch (:class:`~kfusion.training.distributed.EpochCheckpoint`),
    with the same ``progress.json``.
    """
    import keras
    import tensorflow as tf

    stage_dir = Path(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    if tf.distribute.has_strategy():
        return _train_distributed(model, epoch_data, epochs, stage_dir, validation_data, tensorboard, verbose,
                                  callbacks)
    backup = _backup(stage_dir, read_progress(stage_dir))
    total = backup.epochs_done if backup.trained else int(epochs)
    passes = _EpochChain.of(epoch_data, backup.epochs_done, total)
    if passes is None:  # one epoch per pass through a generator: epochs of unknown length
        passes = _EpochPasses(epoch_data, backup.epochs_done)
    _build_optimizer(model)  # so a restored optimizer state maps onto the variables train_step updates
    _build_compiled_loss(model, passes.element_spec)  # so train_step is traced once, not twice
    all_callbacks = [passes.callback(), *callbacks]
    if tensorboard:
        all_callbacks.append(keras.callbacks.TensorBoard(log_dir=str(stage_dir / "logs")))
    all_callbacks.append(backup)  # last: it saves what the other callbacks did at the epoch's end
    # Every epoch's data is already in its own seeded order; shuffle=True on a tf.data dataset
    # would only print a warning. A fit that ended (early stopping too) runs no more epochs.
    model.fit(passes.dataset, epochs=total, shuffle=False, steps_per_epoch=passes.steps_per_epoch,
              validation_data=shard_by_data(validation_data), callbacks=all_callbacks, verbose=verbose)
    return read_progress(stage_dir)["history"]


def _build_compiled_loss(model, element_spec) -> None:
    """Build the compiled loss (its per-output loss trackers) eagerly from zeros shaped like one
    batch. Keras builds it lazily in the first trace of ``train_step`` when no ``tf.distribute``
    strategy is set, and a function that creates variables while tracing is traced again: for a
    fusion-pretraining model (40 heads) that second trace was the largest cost of a short run.
    The trackers' values are reset when each epoch begins. Models without a compiled loss (their
    own ``train_step``) and models whose outputs are not known are left as they are."""
    import keras
    import tensorflow as tf

    if tf.distribute.has_strategy() or getattr(model, "loss", None) is None:
        return
    if not (isinstance(element_spec, tuple) and len(element_spec) == 2):
        return
    try:
        outputs = model.output
    except (AttributeError, ValueError):
        return

    def zeros(spec):
        return tf.zeros([1, *spec.shape[1:]], spec.dtype)

    try:
        y_true = keras.tree.map_structure(zeros, element_spec[1])
        y_pred = keras.tree.map_structure(zeros, outputs)
        model.compute_loss(y=y_true, y_pred=y_pred)
    except (TypeError, ValueError):  # structures Keras would match otherwise: let it build when tracing
        return


def _train_distributed(model, epoch_data, epochs: int, stage_dir: Path, validation_data, tensorboard: bool,
                       verbose, callbacks) -> list[dict]:
    """:func:`train_resumable` under a ``tf.distribute`` strategy: the epochs still to run in
    :func:`~kfusion.training.distributed.fit_distributed`, a checkpoint of the weights, the
    optimizer and the layers' random state after every epoch (``stage_dir/backup``), then
    ``progress.json``. A re-run restores the checkpoint of the epochs ``progress.json`` records
    (kept with the one before, so a crash between the two writes redoes one epoch and keeps the
    logs in step); progress without its checkpoint starts again."""
    import keras

    state = read_progress(stage_dir)
    _build_optimizer(model)  # so a restored optimizer state maps onto the variables train_step updates
    checkpoint = EpochCheckpoint(model, stage_dir / BACKUP_FOLDER)
    done = checkpoint.restore(int(state.get("epochs_done", 0)))
    history = list(state.get("history", []))[:done]
    total = done if (state.get("trained") and done) else int(epochs)

    class Progress(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            checkpoint.save(epoch + 1)
            history.append({key: float(value) for key, value in (logs or {}).items()})
            self.write(epoch + 1, trained=False)

        def on_train_end(self, logs=None):
            self.write(len(history), trained=True)

        def write(self, epochs_done: int, trained: bool):
            write_json_atomic(stage_dir / PROGRESS_FILE, {"epochs_done": epochs_done, "history": history,
                                                          "trained": trained, "finished": False})

    all_callbacks = [*callbacks]
    if tensorboard:
        all_callbacks.append(keras.callbacks.TensorBoard(log_dir=str(stage_dir / "logs")))
    all_callbacks.append(Progress())  # last: it saves what the other callbacks did at the epoch's end
    fit_distributed(model, epoch_data, total, initial_epoch=done, validation_data=validation_data,
                    callbacks=all_callbacks, verbose=verbose)
    return read_progress(stage_dir)["history"]


class _EpochChain:
    """The epochs ``first .. total - 1`` of ``epoch_data`` as one ``tf.data`` pipeline, for ``fit``
    with ``steps_per_epoch`` = the batches of one epoch (one iterator for the whole fit).

    The pipeline starts at the epoch ``fit`` starts with, read by :meth:`callback` when that
    epoch begins (before ``fit`` reads any batch): ``BackupAndRestore`` decides it from its own
    record, which can be one epoch ahead of ``progress.json`` after a crash between the two
    writes; the epochs in between are then skipped."""

    @classmethod
    def of(cls, epoch_data: Callable[[int], object], first: int, total: int):
        """The chain, or None when the epochs' datasets do not all have one known number of
        batches (``fit`` then needs a pass per epoch)."""
        import tensorflow as tf

        epochs = range(first, max(total, first + 1))
        chain = getattr(epoch_data, "chain", None)
        if callable(chain):  # the epochs as one pipeline, built by the data's owner
            data = chain(first, total)
            if not isinstance(data, tf.data.Dataset):
                raise ConfigError(f"train_resumable: epoch_data.chain(first, total): expected a tf.data.Dataset "
                                  f"of batches, found {type(data).__name__}")
            batches = int(data.cardinality())  # every epoch has as many batches
            steps = batches // len(epochs) if batches > 0 and batches % len(epochs) == 0 else 0
            return cls([data], first, steps) if steps > 0 else None
        datasets = []
        for epoch in epochs:
            data = epoch_data(epoch)
            if not isinstance(data, tf.data.Dataset):
                raise ConfigError(f"train_resumable: epoch_data(epoch): expected a tf.data.Dataset of batches, "
                                  f"found {type(data).__name__}")
            datasets.append(data)
        batches = {int(data.cardinality()) for data in datasets}
        return cls(datasets, first) if len(batches) == 1 and min(batches) > 0 else None

    def __init__(self, datasets: list, first: int, steps_per_epoch: int | None = None):
        import tensorflow as tf

        self.first, self.started = first, None
        self.element_spec = datasets[0].element_spec
        self.steps_per_epoch = int(datasets[0].cardinality()) if steps_per_epoch is None else steps_per_epoch
        chain = datasets[0]
        for data in datasets[1:]:
            chain = chain.concatenate(data)
        steps = tf.constant(self.steps_per_epoch, tf.int64)
        skipped = tf.data.Dataset.from_generator(lambda: iter([self._skipped_epochs()]),
                                                 output_signature=tf.TensorSpec((), tf.int64))
        self.dataset = skipped.flat_map(lambda count: chain.skip(count * steps))

    def _skipped_epochs(self) -> int:
        if self.started is None:
            raise RuntimeError("train_resumable: fit read the training data before its first epoch began")
        if self.started < self.first:
            raise RuntimeError(f"train_resumable: fit restored epoch {self.started} from the backup, before the "
                               f"{self.first} epochs progress.json records; delete the stage folder's backup")
        return self.started - self.first

    def callback(self):
        return _first_epoch_callback(self, "started")


def _first_epoch_callback(owner, attribute: str):
    """A callback setting ``owner.<attribute>`` (while None) to the epoch ``fit`` starts with."""
    import keras

    class FirstEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if getattr(owner, attribute) is None:
                setattr(owner, attribute, epoch)

    return FirstEpoch()


class _EpochPasses:
    """One ``tf.data`` dataset for a whole ``fit`` whose k-th pass is ``epoch_data(first + k)``:
    Keras starts a new pass for every epoch (sometimes at the end of the one before), so passes
    are counted from the epoch ``fit`` starts with, which :meth:`callback` reads."""

    def __init__(self, epoch_data: Callable[[int], object], first: int):
        import tensorflow as tf

        self.epoch_data, self.next_epoch = epoch_data, None
        data = epoch_data(first)
        if not isinstance(data, tf.data.Dataset):
            raise ConfigError(f"train_resumable: epoch_data(epoch): expected a tf.data.Dataset of batches, "
                              f"found {type(data).__name__}")
        self.first = (first, data)  # built once to read its structure; used for its own epoch
        self.element_spec, self.steps_per_epoch = data.element_spec, None
        self.dataset = tf.data.Dataset.from_generator(self._batches, output_signature=data.element_spec)
        batches = int(data.cardinality())
        if batches >= 0:
            self.dataset = self.dataset.apply(tf.data.experimental.assert_cardinality(batches))
        self.dataset = shard_by_data(self.dataset)  # under a multi-worker strategy: its part of each batch

    def _batches(self):
        if self.next_epoch is None:
            raise RuntimeError("train_resumable: fit read the training data before its first epoch began")
        epoch, self.next_epoch = self.next_epoch, self.next_epoch + 1
        if self.first is not None and self.first[0] == epoch:
            data, self.first = self.first[1], None
        else:
            data = self.epoch_data(epoch)
        yield from data

    def callback(self):
        return _first_epoch_callback(self, "next_epoch")


BACKUP_FOLDER = "backup"


def _backup(stage_dir: Path, state: dict):
    """Keras's ``BackupAndRestore`` in ``stage_dir/backup``, plus ``progress.json`` (epochs done,
    their logs, whether the fit ended) written after each backup."""
    import keras

    class Backup(keras.callbacks.BackupAndRestore):
        def __init__(self):
            # Kept when the fit ends (a crash before the products are saved restores it);
            # _finish deletes it.
            super().__init__(backup_dir=str(stage_dir / BACKUP_FOLDER), delete_checkpoint=False)
            # Progress without a backup (lost, or written by an older kfusion): start again.
            restorable = (stage_dir / BACKUP_FOLDER / "latest.weights.h5").is_file()
            self.epochs_done = int(state.get("epochs_done", 0)) if restorable else 0
            self.trained = bool(state.get("trained")) and restorable
            self.history = list(state.get("history", []))[:self.epochs_done]
            self.started = False

        def on_epoch_begin(self, epoch, logs=None):
            if not self.started:  # fit restarts from the last backup: logs of later epochs are void
                self.started, self.history = True, self.history[:epoch]

        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            self.history.append({key: float(value) for key, value in (logs or {}).items()})
            self.epochs_done = epoch + 1
            self._write(trained=False)

        def on_train_end(self, logs=None):
            super().on_train_end(logs)
            self._write(trained=True)

        def _write(self, trained: bool):
            write_json_atomic(stage_dir / PROGRESS_FILE, {"epochs_done": self.epochs_done, "history": self.history,
                                                          "trained": trained, "finished": False})

    return Backup()


def _finish(stage_dir: Path, history: list[dict], products: dict) -> None:
    import shutil

    state = read_progress(stage_dir)
    state.update(finished=True, products={k: str(v) for k, v in products.items()}, history=history)
    write_json_atomic(stage_dir / PROGRESS_FILE, state)
    shutil.rmtree(stage_dir / BACKUP_FOLDER, ignore_errors=True)  # the products hold the weights now


def _finished(stage_dir: Path, products) -> bool:
    return read_progress(stage_dir).get("finished", False) and all(Path(p).is_file() for p in products)


def _progress_bar(items, desc: str, show: bool):
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="model", disable=not show)


def _subsample(index: np.ndarray, limit: int, rng) -> np.ndarray:
    if limit and index.size > limit:
        return np.sort(rng.choice(index, limit, replace=False))
    return index


def split_participants(participants: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, list[str]]:
    """A bool training mask ``[N]`` and the held-out participant ids: ``round(fraction * P)``
    participants (at least one when ``fraction > 0`` and there are two or more), drawn with ``seed``."""
    ids = sorted(set(map(str, participants)))
    count = int(round(fraction * len(ids)))
    if fraction > 0 and len(ids) >= 2:
        count = min(max(count, 1), len(ids) - 1)
    else:
        count = 0
    held = sorted(np.random.default_rng(seed).choice(ids, count, replace=False).tolist()) if count else []
    return ~np.isin(participants.astype(str), held), held


def _command_line() -> str:
    import sys

    return " ".join(sys.argv)


# --------------------------------------------------------------------------- stage 1a

def encoder_path(out: str | Path, modality: str) -> Path:
    """Where :func:`pretrain_encoders` saves the encoder of ``modality``."""
    return Path(out) / f"{modality}_encoder.keras"


@distributable
def pretrain_encoders(sources, out: str | Path, config: EncoderPretrainConfig | None = None,
                      modalities=WEARABLES, cache_dir=None, tensorboard: bool = False,
                      verbose="auto", progress: bool = True, callbacks=(), strategy=None) -> dict[str, Path]:
    """Contrastively pretrain one SigRep encoder per wearable modality; returns
    ``{modality: path of the saved encoder (.keras, encoder alone, no projection head)}``.

    ``sources``: one or more ``SCHEME:PATH`` sources read together; every window in which a
    modality is present is a training window for that modality's encoder. ``strategy``:
    ``"default"`` or ``"multiworker"`` (module docstring); with several workers each replica's
    NT-Xent takes its negatives from its own part of the batch.
    """
    import keras

    from kfusion.data.dataset import build_dataset
    from kfusion.models import sigrep_encoder
    from kfusion.training.augment import default_augmenter
    from kfusion.training.contrastive import ContrastiveModel, projection_head

    config = _check_config(config, EncoderPretrainConfig)
    sources = _check_sources(sources)
    modalities = check_modalities(modalities)
    if SPEECH in modalities:
        raise ConfigError("pretrain_encoders: modalities: speech is pretrained by pretrain_speech; "
                          f"expected some of {', '.join(WEARABLES)}")
    out = Path(out)
    products = {m: encoder_path(out, m) for m in modalities}
    data = build_dataset(sources, config.data_config(modalities), cache_dir=cache_dir, contents="inputs")
    run = RunFolder(out).start({"stage": "encoders", "sources": sources, "modalities": list(modalities),
                                "config": config.to_dict()}, data.fingerprint, _command_line())
    for modality in _progress_bar(modalities, "encoders", progress):
        stage_dir = out / modality
        if _finished(stage_dir, [products[modality]]):
            continue
        present = np.flatnonzero(np.asarray(data.presence[modality], dtype=bool))
        index = _subsample(present, config.max_windows, np.random.default_rng(config.seed))
        if index.size < config.batch_size:
            raise DataError(sources[0], modality, f"at least batch_size={config.batch_size} windows "
                            "with this modality present", f"{index.size}")
        windows = _shared(data.inputs[modality][index], strategy)
        keras.utils.set_random_seed(config.seed)
        encoder = sigrep_encoder(modality, input_shape(modality, config.window_seconds),
                                 embedding_dim=config.embedding_dim)
        augmenter = default_augmenter(config.seed, noise_stddev=config.noise_stddev,
                                      scaling_range=config.scaling_range, warp_strength=config.warp_strength,
                                      segments=config.segments, max_zero_ratio=config.max_zero_ratio,
                                      name=f"{modality}_augmenter")
        model = ContrastiveModel(encoder, projection_head(config.embedding_dim, config.projection_units),
                                 augmenter, temperature=config.temperature, seed=config.seed,
                                 name=f"{modality}_contrastive")
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
        history = train_resumable(
            model, lambda epoch, windows=windows: _shuffled_batches(windows, config.batch_size, config.seed, epoch),
            config.epochs, stage_dir, tensorboard=tensorboard, verbose=verbose, callbacks=callbacks)
        encoder.save(products[modality])
        _finish(stage_dir, history, {"encoder": products[modality]})
        run.append_record("results.jsonl", {"modality": modality, "windows": int(index.size),
                                            "final_loss": history[-1]["loss"], "epochs": len(history)})
    return products


def _shared(windows: np.ndarray, strategy):
    """``windows`` as one tensor every epoch's batches gather from, or (under a ``tf.distribute``
    strategy, where train_resumable builds each epoch's data when it begins) the array itself: a
    two-worker run on gathered batches ended 7e-3 away from one worker in tests/test_multiworker.py
    where copied batches agree to 1e-7 (not understood yet)."""
    import tensorflow as tf

    return windows if strategy is not None else tf.convert_to_tensor(windows)


def _shuffled_batches(windows, batch_size: int, seed: int, epoch: int, targets=None):
    """Batches of one epoch in an order fixed by ``(seed, epoch)``; the last short batch is
    dropped so every NT-Xent batch has the same number of negatives. ``windows``: an array (each
    epoch copies it in its order) or a tensor (one copy shared by every epoch, each batch gathers
    its rows: what train_resumable's single-process path wants, as it builds every epoch's
    dataset when the fit starts)."""
    import tensorflow as tf

    order = np.random.default_rng(_epoch_seed(seed, epoch)).permutation(int(windows.shape[0]))
    if not isinstance(windows, tf.Tensor):  # a copy of the windows in this epoch's order
        x = np.asarray(windows)[order]
        data = (x, x) if targets == "self" else x
        return tf.data.Dataset.from_tensor_slices(data).batch(batch_size, drop_remainder=targets is None).prefetch(2)
    rows = tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder=targets is None)
    if targets == "self":
        return rows.map(lambda index: (tf.gather(windows, index),) * 2).prefetch(2)
    return rows.map(lambda index: tf.gather(windows, index)).prefetch(2)


# --------------------------------------------------------------------------- stage 1b

def speech_encoder_path(out: str | Path) -> Path:
    """Where :func:`pretrain_speech` saves the speech encoder."""
    return Path(out) / "speech_encoder.keras"


def _is_audio_folder(source: str) -> bool:
    from kfusion.data.sources import reader_schemes

    scheme, sep, rest = source.partition(":")
    if sep and scheme == "audio":
        return True
    return not (sep and scheme in reader_schemes())


def _speech_windows(sources: list[str], config: SpeechPretrainConfig, cache_dir):
    from kfusion.data.dataset import build_dataset
    from kfusion.training.audio_corpus import read_audio_corpus

    blocks, groups, prints, reports = [], [], [], []
    for position, source in enumerate(sources):
        if _is_audio_folder(source):
            root = source.partition(":")[2] if source.startswith("audio:") else source
            corpus = read_audio_corpus(root, config.window_seconds, config.window_overlap,
                                       max_windows_per_file=config.max_windows_per_file or None,
                                       seed=config.seed)
            blocks.append(corpus.inputs)
            groups.append(np.char.add(f"{position}-", corpus.speakers.astype(str)))
            prints.append(corpus.fingerprint)
            reports.append(corpus.report)
        else:
            data = build_dataset([source], config.data_config([SPEECH]), cache_dir=cache_dir, contents="inputs")
            present = np.asarray(data.presence[SPEECH], dtype=bool)
            blocks.append(data.inputs[SPEECH][present])
            groups.append(np.char.add(f"{position}-", data.participants[present].astype(str)))
            prints.append(data.fingerprint)
            reports.append({"source": source, "windows": int(present.sum())})
    inputs = np.concatenate(blocks)
    if not len(inputs):
        raise DataError(sources[0], SPEECH, "at least one window with speech", "none")
    return inputs, np.concatenate(groups), "+".join(prints), reports


@distributable
def pretrain_speech(sources, out: str | Path, config: SpeechPretrainConfig | None = None,
                    cache_dir=None, tensorboard: bool = False, verbose="auto",
                    callbacks=(), strategy=None) -> dict[str, Path]:
    """Train the sparse MFCC autoencoder; returns ``{"encoder": path, "autoencoder": path}``.

    ``sources``: data sources with speech (``kemocon:PATH``, ``generic:PATH``) and/or audio
    folders (a plain path or ``audio:PATH``; see :mod:`kfusion.training.audio_corpus`).
    Loss: MSE reconstruction of the (CMVN-normalised) MFCC window plus the code's L1 penalty.
    ``strategy``: ``"default"`` or ``"multiworker"`` (module docstring).
    """
    import keras
    import tensorflow as tf

    from kfusion.models import speech_autoencoder

    config = _check_config(config, SpeechPretrainConfig)
    sources = _check_sources(sources)
    out = Path(out)
    products = {"encoder": speech_encoder_path(out), "autoencoder": out / "speech_autoencoder.keras"}
    stage_dir = out / SPEECH
    inputs, groups, fingerprint, reports = _speech_windows(sources, config, cache_dir)
    run = RunFolder(out).start({"stage": "speech", "sources": sources, "config": config.to_dict()},
                               fingerprint, _command_line())
    if _finished(stage_dir, products.values()):
        return products
    rng = np.random.default_rng(config.seed)
    train_mask, held_out = split_participants(groups, config.validation_fraction, config.seed)
    train_index = _subsample(np.flatnonzero(train_mask), config.max_windows, rng)
    train = inputs[train_index]
    validation = inputs[~train_mask]
    keras.utils.set_random_seed(config.seed)
    autoencoder, encoder = speech_autoencoder(input_shape(SPEECH, config.window_seconds),
                                              code_dim=config.code_dim, sparsity=config.sparsity,
                                              local_dim=config.local_dim)
    autoencoder.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss="mse")
    validation_data = (tf.data.Dataset.from_tensor_slices((validation, validation))
                       .batch(config.batch_size) if len(validation) else None)
    train_tensor = _shared(train, strategy)
    history = train_resumable(
        autoencoder, lambda epoch: _shuffled_batches(train_tensor, config.batch_size, config.seed, epoch, "self"),
        config.epochs, stage_dir, validation_data, tensorboard, verbose, callbacks)
    code_std = speech_code_spread(encoder, train)
    if code_std < COLLAPSED_CODE_STD:
        warnings.warn(f"pretrain_speech: the speech code collapsed (mean std over windows {code_std:.2e} "
                      f"< {COLLAPSED_CODE_STD:g}): the L1 penalty (sparsity={config.sparsity:g}) won over "
                      "the reconstruction; lower SpeechPretrainConfig.sparsity or train longer", stacklevel=2)
    encoder.save(products["encoder"])
    autoencoder.save(products["autoencoder"])
    _finish(stage_dir, history, products)
    run.append_record("results.jsonl", {"windows": int(len(train)), "validation_windows": int(len(validation)),
                                        "held_out": held_out, "sources": reports, "code_std": code_std,
                                        "collapsed": bool(code_std < COLLAPSED_CODE_STD), **history[-1]})
    return products


#: Below this mean standard deviation (over windows, per code unit) a speech code carries
#: nothing: the autoencoder reconstructs the mean window whatever the input.
COLLAPSED_CODE_STD = 1e-3


def speech_code_spread(encoder, windows: np.ndarray, limit: int = 512) -> float:
    """Mean over code units of the standard deviation over (up to ``limit``) ``windows`` of the
    speech encoder's code: about 0 when the code collapsed."""
    if len(windows) == 0:
        return float("nan")
    code = np.asarray(encoder.predict(windows[:limit], verbose=0, batch_size=128))
    return float(code.std(axis=0).mean())


# --------------------------------------------------------------------------- stage 2

def fusion_paths(out: str | Path, mechanism: str) -> dict[str, Path]:
    """Files :func:`pretrain_fusion` writes for ``mechanism``: the pretraining model (backbone +
    heads), the backbone alone, and the target scaler (JSON)."""
    out = Path(out)
    return {"model": out / f"fusion_{mechanism}.keras", "backbone": out / f"fusion_{mechanism}_backbone.keras",
            "scaler": out / f"fusion_{mechanism}_target_scaler.json"}


def _copy(model):
    """A copy of a given encoder with its weights, so a stage never freezes or trains the
    caller's model and every mechanism starts from the same weights. The copy's layers draw no
    numbers from the random stream the stage was seeded with (initial values are overwritten)."""
    import random

    import keras

    state = random.getstate()
    try:
        copy = keras.models.clone_model(model)
    finally:
        random.setstate(state)
    copy.set_weights(model.get_weights())
    return copy


def _load_model(where: str, value):
    import keras

    import kfusion.models  # noqa: F401  (registers the custom layers)

    if isinstance(value, keras.Model):
        return _copy(value)
    path = Path(value)
    if not path.is_file():
        try:
            from kfusion import saved_models

            return saved_models.load(str(value))
        except ConfigError:
            raise DataError(path, where, "a saved encoder (.keras) or a kfusion saved-model name",
                            "nothing") from None
    try:
        return keras.saving.load_model(path, compile=False)
    except (ValueError, OSError, TypeError) as err:
        raise DataError(path, where, "a Keras model file (.keras)", f"unreadable ({err})") from None


def _resolve_encoders(modalities, encoders, speech_encoder, config: FusionPretrainConfig):
    """``{modality: keras.Model}``: given models/paths, files of an encoder run folder, or fresh
    random encoders where nothing is given (reported in the returned ``origins``)."""
    from kfusion.models import sigrep_encoder, speech_autoencoder

    given = {}
    if isinstance(encoders, (str, Path)):
        folder = Path(encoders)
        if not folder.is_dir():
            raise DataError(folder, "encoders", "the output folder of pretrain_encoders", "nothing")
        given = {m: encoder_path(folder, m) for m in modalities if m != SPEECH
                 and encoder_path(folder, m).is_file()}
        if not given:
            raise DataError(folder, "encoders", "files <modality>_encoder.keras", "none")
    elif isinstance(encoders, Mapping):
        given = {str(k).lower(): v for k, v in encoders.items()}
    elif encoders is not None:
        raise ConfigError(f"encoders: expected a folder, a dict {{modality: model or path}} or None, "
                          f"found {type(encoders).__name__}")
    if speech_encoder is not None:
        if isinstance(speech_encoder, (str, Path)) and Path(speech_encoder).is_dir():
            speech_encoder = speech_encoder_path(speech_encoder)
        given[SPEECH] = speech_encoder
    models, origins = {}, {}
    for m in modalities:
        if m in given:
            models[m] = _load_model(f"{m} encoder", given[m])
            origins[m] = str(given[m]) if not hasattr(given[m], "layers") else "model object"
            expected = input_shape(m, config.window_seconds)
            if tuple(models[m].input_shape[1:]) != tuple(expected):
                raise ConfigError(f"{m} encoder: expected input shape {expected} for "
                                  f"{config.window_seconds} s windows, found {models[m].input_shape[1:]}")
        elif m == SPEECH:
            models[m] = speech_autoencoder(input_shape(m, config.window_seconds))[1]
            origins[m] = "random"
        else:
            models[m] = sigrep_encoder(m, input_shape(m, config.window_seconds))
            origins[m] = "random"
    return models, origins


@distributable
def pretrain_fusion(sources, out: str | Path, config: FusionPretrainConfig | None = None,
                    encoders=None, speech_encoder=None, mechanisms=None, cache_dir=None,
                    tensorboard: bool = False, verbose="auto", progress: bool = True,
                    callbacks=(), strategy=None) -> dict[str, dict[str, Path]]:
    """Masked-statistics fusion pretraining for each mechanism; returns
    ``{mechanism: fusion_paths(out, mechanism)}``.

    ``encoders``: the folder written by :func:`pretrain_encoders`, or ``{modality: model or
    .keras path or saved-model name}``; ``speech_encoder``: the folder of
    :func:`pretrain_speech`, a path or a model. Models are copied, never frozen or trained in
    place, and every mechanism starts from them. Modalities without a pretrained encoder get a
    fresh random one (recorded in the run's results). ``mechanisms``: a name or a list (default
    all three). ``strategy``: ``"default"`` or ``"multiworker"`` (module docstring).
    """
    import keras

    from kfusion.data.dataset import build_dataset
    from kfusion.models import MECHANISMS, freeze_encoders, fusion_backbone, fusion_pretraining_model
    from kfusion.models import presence_array, statistic_targets, summed_absolute_error
    from kfusion.training.masking import MaskedStatisticsEpochs, TargetScaler, masked_statistics_dataset

    config = _check_config(config, FusionPretrainConfig)
    sources = _check_sources(sources)
    mechanisms = list(MECHANISMS) if mechanisms is None else (
        [mechanisms] if isinstance(mechanisms, str) else list(mechanisms))
    bad = [m for m in mechanisms if m not in MECHANISMS]
    if bad or not mechanisms:
        raise ConfigError(f"mechanisms: expected some of {', '.join(MECHANISMS)}, found {mechanisms!r}")
    modalities = config.modalities
    out = Path(out)
    data = build_dataset(sources, config.data_config(modalities), cache_dir=cache_dir, contents="inputs")
    run = RunFolder(out).start({"stage": "fusion", "sources": sources, "mechanisms": mechanisms,
                                "encoders": _describe(encoders), "speech_encoder": _describe(speech_encoder),
                                "config": config.to_dict()}, data.fingerprint, _command_line())
    train_mask, held_out = split_participants(data.participants, config.validation_fraction, config.seed)
    train_index = _subsample(np.flatnonzero(train_mask), config.max_windows, np.random.default_rng(config.seed))

    def arrays(index):
        picked = {m: data.inputs[m][index] for m in modalities}
        picked["presence"] = presence_array({m: data.presence[m][index] for m in modalities}, modalities)
        return picked

    train, validation = arrays(train_index), arrays(np.flatnonzero(~train_mask))
    if len(train_index) < config.batch_size:
        raise DataError(sources[0], "windows", f"at least batch_size={config.batch_size} training windows",
                        len(train_index))
    targets = statistic_targets(modalities, config.statistics)
    results, scaler, train_tensors = {}, None, None
    for mechanism in _progress_bar(mechanisms, "fusion", progress):
        paths = fusion_paths(out, mechanism)
        results[mechanism] = paths
        stage_dir = out / mechanism
        if _finished(stage_dir, paths.values()):
            continue
        if scaler is None:  # the same for every mechanism: fitted once, its draws fixed by the seed alone
            keras.utils.set_random_seed(config.seed)  # tf.data combines its seeds with the global one
            scaler = TargetScaler().fit(train, config.mask_ratio, config.statistics, config.seed,
                                        draws=config.scaler_draws)
            train_tensors = {k: _shared(v, strategy) for k, v in train.items()}
        write_json_atomic(paths["scaler"], scaler.to_dict())
        keras.utils.set_random_seed(config.seed)
        models, origins = _resolve_encoders(modalities, encoders, speech_encoder, config)
        backbone = fusion_backbone(models, mechanism, config.projection_units, use_presence=True)
        model = fusion_pretraining_model(backbone, targets, config.head_units)
        if config.freeze_encoders:
            freeze_encoders(model)
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=summed_absolute_error)
        validation_data = masked_statistics_dataset(
            validation, config.batch_size, config.mask_ratio, config.statistics, config.seed + 1,
            shuffle=False, target_scaler=scaler, redraw_each_pass=False,
            stack_targets=targets) if len(validation["presence"]) else None

        epoch_data = MaskedStatisticsEpochs(train_tensors, config.batch_size, config.mask_ratio, config.statistics,
                                            functools.partial(_epoch_seed, config.seed), scaler, targets)
        history = train_resumable(model, epoch_data, config.epochs, stage_dir, validation_data,
                                  tensorboard, verbose, callbacks)
        model.save(paths["model"])
        backbone.save(paths["backbone"])  # shares its weights with the trained model
        _finish(stage_dir, history, paths)
        run.append_record("results.jsonl", {"mechanism": mechanism, "encoders": origins,
                                            "train_windows": int(len(train_index)),
                                            "validation_participants": held_out,
                                            "loss": history[-1].get("loss"),
                                            "val_loss": history[-1].get("val_loss"),
                                            "val_mae": _mae_per_target(model, validation_data, targets)})
    return results


def _mae_per_target(model, validation_data, targets) -> dict[str, float] | None:
    """Each statistic's validation MAE (standardised units) under the trained heads: which span
    statistics the fused embedding predicts, the per-target view the summed loss hides."""
    import numpy as np

    if validation_data is None:
        return None
    total, count = np.zeros(len(targets)), 0
    for inputs, columns in validation_data:
        error = np.abs(np.asarray(model(inputs, training=False)) - columns.numpy())
        total += error.sum(axis=0)
        count += len(error)
    return {target: round(float(value / count), 6) for target, value in zip(targets, total)}


def _describe(value):
    if value is None:
        return None
    if isinstance(value, Mapping):
        return {str(k): _describe(v) for k, v in value.items()}
    return str(value) if isinstance(value, (str, Path)) else type(value).__name__
