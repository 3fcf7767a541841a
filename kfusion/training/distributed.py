"""Pretraining on several machines: ``tf.distribute`` strategies and who writes what.

``strategy="multiworker"`` trains every stage with ``tf.distribute.MultiWorkerMirroredStrategy``,
configured by the ``TF_CONFIG`` environment variable of each worker process (without one it
trains as a single worker). Every worker runs the same stage function with the same arguments:

- models are built, compiled, trained, evaluated and saved under ``strategy.scope()``;
- the configured ``batch_size`` is the *global* batch: ``tf.distribute`` splits each batch
  across the replicas of all workers (every worker builds the same epoch order from the seed and
  keeps its own part of every batch: tf.data auto-sharding by ``DATA``), so a run on N workers
  takes the steps a single worker takes with the same batch size;
- the models train in :func:`fit_distributed` (Keras's ``fit`` fails under
  ``MultiWorkerMirroredStrategy``: keras-team/keras#20585), backed up after every epoch by an
  :class:`EpochCheckpoint` (``tf.train.Checkpoint``);
- only the chief (``worker`` 0, or the ``chief`` task) writes the run folder ``out``; every other
  worker writes into a temporary copy of it (the saves and checkpoints of ``tf.distribute``'s
  multi-worker recipe), deleted when the stage function returns. A re-run resumes when the
  workers can read the chief's ``out`` (a shared file system), since each worker starts from a
  copy of it.

``MultiWorkerMirroredStrategy`` must be created before TensorFlow runs its first operation in
the process: the stage functions create it first thing, and the ``kfusion pretrain`` command
line does nothing with TensorFlow before them. A caller may pass its own
``tf.distribute.Strategy`` instead.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import shutil
import tempfile
from pathlib import Path

from kfusion.errors import ConfigError

__all__ = ["STRATEGIES", "resolve_strategy", "is_chief", "writing_to", "shard_by_data", "distributable",
           "fit_distributed", "EpochCheckpoint"]

#: The names ``strategy`` accepts (or pass a ``tf.distribute.Strategy``).
STRATEGIES = ("default", "multiworker")

_MULTIWORKER = None  # one per process: TensorFlow configures its collectives only once


def resolve_strategy(strategy):
    """``None`` for ``None``/``"default"`` (no distribution), the process's
    ``MultiWorkerMirroredStrategy`` for ``"multiworker"``, or a given ``tf.distribute.Strategy``."""
    global _MULTIWORKER
    if strategy is None or (isinstance(strategy, str) and strategy == "default"):
        return None
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.Strategy):
        return strategy
    if not (isinstance(strategy, str) and strategy == "multiworker"):
        raise ConfigError(f"strategy: expected one of {', '.join(STRATEGIES)} or a tf.distribute.Strategy, "
                          f"found {strategy!r}")
    if _MULTIWORKER is None:
        try:
            _MULTIWORKER = tf.distribute.MultiWorkerMirroredStrategy()
        except (RuntimeError, ValueError) as err:
            raise ConfigError(f"strategy='multiworker': could not start MultiWorkerMirroredStrategy ({err}); "
                              "it reads TF_CONFIG and must be created before TensorFlow runs anything in "
                              "this process") from None
    return _MULTIWORKER


def is_chief(strategy) -> bool:
    """Whether this process writes the outputs: always without a strategy."""
    return strategy is None or bool(strategy.extended.should_checkpoint)


def _task_id(strategy) -> str:
    resolver = getattr(strategy, "cluster_resolver", None)
    return f"{getattr(resolver, 'task_type', None) or 'worker'}{getattr(resolver, 'task_id', None) or 0}"


def _copy_tree(source: Path, target: Path) -> None:
    """Copy ``source`` into ``target``, skipping files that vanish meanwhile (the chief's atomic
    writes rename their temporary files)."""
    def copy(src, dst):
        try:
            return shutil.copy2(src, dst)
        except FileNotFoundError:
            return dst

    shutil.copytree(source, target, dirs_exist_ok=True, copy_function=copy,
                    ignore=shutil.ignore_patterns(".*.tmp"))


@contextlib.contextmanager
def writing_to(out, strategy):
    """Enter ``strategy.scope()`` (if any) and yield the folder this process writes: ``out`` on
    the chief, a temporary copy of ``out`` on the other workers (deleted on exit)."""
    out = Path(out)
    if strategy is None:
        yield out
        return
    with strategy.scope():
        if is_chief(strategy):
            yield out
            return
        temp = Path(tempfile.mkdtemp(prefix=f"kfusion-{_task_id(strategy)}-"))
        try:
            if out.is_dir():
                _copy_tree(out, temp)
            yield temp
        finally:
            shutil.rmtree(temp, ignore_errors=True)


def _rebase(value, temp: Path, out: Path):
    if isinstance(value, dict):
        return {k: _rebase(v, temp, out) for k, v in value.items()}
    if isinstance(value, Path) and value.is_relative_to(temp):
        return out / value.relative_to(temp)
    return value


def distributable(function):
    """Decorator of a stage function ``f(sources, out, ..., strategy=None)``: resolves
    ``strategy`` before anything else runs, calls ``f`` under its scope with ``out`` replaced by
    the folder this process writes, and returns paths under ``out`` (where the chief wrote them)."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def run(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        strategy = resolve_strategy(bound.arguments.get("strategy"))
        out = Path(bound.arguments["out"])
        with writing_to(out, strategy) as where:
            bound.arguments.update(out=where, strategy=strategy)
            return _rebase(function(*bound.args, **bound.kwargs), where, out)

    return run


def shard_by_data(data):
    """``data`` (a ``tf.data.Dataset``) set to be auto-sharded by ``DATA`` across workers: each
    worker reads all of it and keeps its part of every batch (a generator or in-memory dataset
    has no files to shard by). Anything else is returned as is."""
    import tensorflow as tf

    if not isinstance(data, tf.data.Dataset):
        return data
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return data.with_options(options)


def _python(value):
    """A log value as Python: a float for a scalar, an array otherwise."""
    import numpy as np

    array = np.asarray(value)
    return array.item() if array.ndim == 0 else array


def _metrics_or(model, logs: dict) -> dict:
    """The model's metric results (read across all replicas) when ``logs`` (a step's, each
    averaged over the replicas) has the same keys, as ``fit`` does; ``logs`` otherwise (a
    ``train_step`` returning something other than its metrics)."""
    results = model.get_metrics_result()
    return dict(results) if set(results) == set(logs) else dict(logs)


def fit_distributed(model, epoch_data, epochs: int, initial_epoch: int = 0, validation_data=None,
                    callbacks=(), verbose="auto"):
    """``model.fit`` for the ``tf.distribute`` strategy in scope, written with public APIs only
    (Keras 3.15's own ``fit`` fails under ``MultiWorkerMirroredStrategy``: keras-team/keras#20585).

    Every epoch ``epoch_data(epoch)`` (a ``tf.data.Dataset`` of global batches) is set to be
    sharded by ``DATA`` and distributed with ``strategy.experimental_distribute_dataset``; each
    batch runs ``strategy.run(model.train_step, ...)`` in a ``tf.function`` and the step's logs
    are averaged over the replicas with ``strategy.reduce``. An epoch's logs are the model's
    metric results read across the replicas (as ``fit`` reports them), plus ``val_*`` from one
    pass of ``model.test_step`` over ``validation_data``. ``callbacks`` (a
    ``keras.callbacks.CallbackList`` with a ``History`` and, unless ``verbose=0``, a progress
    bar) get ``on_train_begin/end``, ``on_epoch_begin/end``, ``on_train_batch_begin/end`` and,
    during validation, ``on_test_begin/end`` and ``on_test_batch_begin/end``; ``model.stop_training``
    ends the run as in ``fit`` (set it on every worker alike: from epoch logs, which are the
    same on all of them, not from a worker's own state). Each step reads its batch from the
    distributed iterator inside the ``tf.function``, as ``fit`` does (a step traced on one
    batch's static shapes rounds differently from ``fit``'s). Not supported: ``steps_per_execution``
    and ``jit_compile`` (one ``tf.function`` call per batch, no XLA), ``validation_freq``,
    ``validation_steps``, class and sample weights other than those the datasets carry.
    ``validation_data`` should give the same batches every pass (the fusion stage's validation
    masks are fixed): one drawn anew each pass (``rerandomize_each_iteration``) is not drawn as
    ``fit`` without a strategy draws it. Returns the ``History``."""
    import keras
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()

    def mean(per_replica):
        return keras.tree.map_structure(
            lambda value: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None), per_replica)

    # The batch is read inside the function (as fit does): the step sees the dataset's shapes,
    # not one batch's.
    @tf.function(reduce_retracing=True)
    def train_step(iterator):
        return mean(strategy.run(model.train_step, args=(next(iterator),)))

    @tf.function(reduce_retracing=True)
    def test_step(iterator):
        return mean(strategy.run(model.test_step, args=(next(iterator),)))

    def run(step_function, data, steps: int, begin, end, stoppable: bool):
        """``step_function`` over every batch of the distributed ``data`` (``steps`` of them, or
        until it ends when unknown), with the batch callbacks ``begin``/``end``; the last logs."""
        iterator, logs, step = iter(data), {}, 0
        while steps < 0 or step < steps:
            begin(step)
            try:
                logs = step_function(iterator)
            except (tf.errors.OutOfRangeError, StopIteration):
                break
            end(step, logs)
            if stoppable and model.stop_training:
                break
            step += 1
        return logs

    def distribute(data):
        return strategy.experimental_distribute_dataset(shard_by_data(data))

    first = epoch_data(initial_epoch) if initial_epoch < epochs else None
    if first is not None and not isinstance(first, tf.data.Dataset):
        raise ConfigError(f"fit_distributed: epoch_data(epoch): expected a tf.data.Dataset of batches, "
                          f"found {type(first).__name__}")
    steps = int(first.cardinality()) if first is not None else -1
    callbacks = keras.callbacks.CallbackList(list(callbacks), add_history=True, add_progbar=verbose != 0,
                                             verbose=verbose, epochs=epochs,
                                             steps=steps if steps >= 0 else None, model=model)
    validation_steps = int(validation_data.cardinality()) if validation_data is not None else -1

    def validate() -> dict:
        model.reset_metrics()
        callbacks.on_test_begin()
        logs = run(test_step, distribute(validation_data), validation_steps, callbacks.on_test_batch_begin,
                   callbacks.on_test_batch_end, stoppable=False)
        logs = _metrics_or(model, logs)
        callbacks.on_test_end(logs)
        return logs

    model.stop_training = False
    callbacks.on_train_begin()
    epoch_logs = None
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callbacks.on_epoch_begin(epoch)
        data, first = (first, None) if first is not None else (epoch_data(epoch), None)
        logs = run(train_step, distribute(data), int(data.cardinality()), callbacks.on_train_batch_begin,
                   callbacks.on_train_batch_end, stoppable=True)
        epoch_logs = {key: _python(value) for key, value in _metrics_or(model, logs).items()}
        if validation_data is not None:
            epoch_logs.update({f"val_{key}": _python(value) for key, value in validate().items()})
        callbacks.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    if isinstance(model.optimizer, keras.optimizers.Optimizer) and epochs > initial_epoch:
        model.optimizer.finalize_variable_values(model.trainable_weights)
    callbacks.on_train_end(logs=epoch_logs)
    return model.history


class EpochCheckpoint:
    """The training state of ``model`` after each epoch, in ``directory``: a ``tf.train.Checkpoint``
    of every variable of the model (weights, and the random state of its layers, such as the
    augmenters' seed generators) and of its optimizer, numbered by the epochs done and kept by a
    ``tf.train.CheckpointManager`` (the last ``keep``). Every worker saves (the multi-worker
    recipe: the others into their temporary copy of the run folder)."""

    NAME = "ckpt"

    def __init__(self, model, directory, keep: int = 2):
        import tensorflow as tf

        self.directory, self.keep = Path(directory), keep
        # The model's variables by position (their names carry per-process counters); the
        # optimizer's own state by its tracked structure.
        self.checkpoint = tf.train.Checkpoint(variables=list(model.variables), optimizer=model.optimizer)
        self.manager = self._manager()

    def _manager(self):
        import tensorflow as tf

        return tf.train.CheckpointManager(self.checkpoint, str(self.directory), max_to_keep=self.keep,
                                          checkpoint_name=self.NAME)

    def path(self, epochs_done: int) -> str | None:
        """The checkpoint saved after ``epochs_done`` epochs, or None."""
        wanted = str(self.directory / f"{self.NAME}-{int(epochs_done)}")
        return next((path for path in self.manager.checkpoints if Path(path) == Path(wanted)), None)

    def restore(self, epochs_done: int) -> int:
        """Restore the state after ``epochs_done`` epochs and return ``epochs_done``; without that
        checkpoint, delete the others (a fresh start) and return 0."""
        path = self.path(epochs_done) if epochs_done > 0 else None
        if path is not None:
            self.checkpoint.restore(path).assert_existing_objects_matched()
            return int(epochs_done)
        if self.directory.exists():
            shutil.rmtree(self.directory)
            self.manager = self._manager()
        return 0

    def save(self, epochs_done: int) -> None:
        self.manager.save(checkpoint_number=int(epochs_done))
