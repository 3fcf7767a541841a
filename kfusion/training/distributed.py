"""Pretraining on several machines: ``tf.distribute`` strategies and who writes what.

``strategy="multiworker"`` trains every stage with ``tf.distribute.MultiWorkerMirroredStrategy``,
configured by the ``TF_CONFIG`` environment variable of each worker process (without one it
trains as a single worker). Every worker runs the same stage function with the same arguments:

- models are built, compiled, trained, evaluated and saved under ``strategy.scope()``;
- the configured ``batch_size`` is the *global* batch: ``tf.distribute`` splits each batch
  across the replicas of all workers (every worker builds the same epoch order from the seed and
  keeps its own part of every batch: tf.data auto-sharding by ``DATA``), so a run on N workers
  takes the steps a single worker takes with the same batch size;
- only the chief (``worker`` 0, or the ``chief`` task) writes the run folder ``out``; every other
  worker writes into a temporary copy of it (the saves and backups of ``tf.distribute``'s
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
           "fix_symbolic_build"]

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


def fix_symbolic_build(model) -> None:
    """Work around keras-team/keras#20585 (open for Keras 3.15): under a multi-worker strategy
    ``fit`` and ``evaluate`` first build the model from one distributed batch, which they
    ``strategy.reduce`` as a whole; MultiWorkerMirroredStrategy cannot reduce an ``(x, y)``
    structure and ``fit`` fails before its first step. Building needs only shapes and dtypes, so
    this model builds from its replica's part of that batch instead. Nothing changes without a
    ``tf.distribute`` strategy (Keras then builds while tracing the first step). Uses Keras's
    private ``_symbolic_build``, so the fix is checked by tests/test_multiworker.py.

    The same issue: each step's logs (already synchronised metric results, scalars) are reduced
    with ``strategy.reduce("MEAN", value, axis=0)``, which fails on a scalar; the model's
    ``train_step``/``test_step`` therefore return them with a leading axis of 1 under the
    strategy, and the reduction gives back the scalar."""
    import keras
    import tensorflow as tf

    if not tf.distribute.has_strategy():
        return
    strategy = tf.distribute.get_strategy()

    def local(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def symbolic_build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = next(batches)
                break
        with strategy.scope():
            batch = keras.tree.map_structure(local, data_batch)
            model._symbolic_build(data_batch=batch)  # noqa: SLF001  (the workaround above)

    model._maybe_symbolic_build = symbolic_build  # noqa: SLF001  (the workaround above)

    def with_axis(step):
        def run(data):
            return keras.tree.map_structure(lambda value: tf.reshape(value, [-1]), step(data))

        return run

    model.train_step, model.test_step = with_axis(model.train_step), with_axis(model.test_step)
