"""The protocol's independent units (row × target × held-out participant) in worker processes.

:func:`run_units` runs a task over units in one of three ways, chosen by ``workers`` and
``scheduler``:

- ``workers=1`` (no scheduler): in this process, one unit after the other (no Dask);
- ``workers=N > 1``: a Dask ``LocalCluster`` of N worker processes, one thread each;
- ``scheduler="tcp://HOST:PORT"``: the workers of an existing Dask cluster.

The last two are the same code path (a ``distributed.Client``). Results come back to the calling
process in the order units finish; the caller stays the only writer of its files (the protocol
appends each fold to ``folds.jsonl`` as it arrives, so an interrupted run resumes as before).

**What is shipped.** The task's context (for the protocol: the target views and folds, the
frozen models' outputs computed once in the calling process, the pretrained models, the config
and the seed) is pickled once in the calling process, sent once to every worker and unpickled
there once per run; with ``EvaluationConfig.cache_frozen`` (the default) the raw windows stay
behind, only what the trainable layers see travels (a few MB at K-EmoCon size), so workers need
no shared filesystem. See ``docs/cluster.md``.

**Same numbers.** A worker process is pinned to one thread (OpenMP/BLAS through the environment
and threadpoolctl, TensorFlow's intra- and inter-op pools) before TensorFlow runs anything, and
runs one unit at a time however many Dask threads it has. A unit's numbers depend only on the
unit and the context (its model starts from weights drawn from the seed per row and target, its
batch order from the seed and the unit), so records equal the sequential run's whatever the
number of workers or the order units finish in (``seconds`` aside).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import pickle
import random
import re
import threading
import sys
import time
import types
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from kfusion import checks
from kfusion.errors import ConfigError
from kfusion.evaluation import metrics
from kfusion.evaluation.folds import Fold, TargetView
from kfusion.evaluation.frozen import FrozenOutputs
from kfusion.evaluation.rows import ROWS
from kfusion.training.emotion import derive_seed

__all__ = ["run_units", "available_cores", "default_workers", "check_workers", "pin_threads", "FoldWork",
           "run_fold", "uses_workers", "PINNED_ENVIRONMENT", "MIN_UNITS_PER_WORKER"]

#: Environment of a pinned worker process: one OpenMP / BLAS / TensorFlow thread.
PINNED_ENVIRONMENT = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                      "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}

#: Without an explicit number of workers, one worker process per this many units at most.
MIN_UNITS_PER_WORKER = 32
#: How long to wait for an existing scheduler to answer.
CONNECT_TIMEOUT = "30s"

_SCHEDULER = re.compile(r"^(tcp|tls|inproc|ucx|ws|wss)://\S+$")


def available_cores() -> int:
    """The CPU cores this process may use: the cores it may run on (``os.sched_getaffinity``;
    ``os.cpu_count`` where that does not exist), fewer when a cgroup CPU quota (containers,
    Kubernetes, Slurm) grants less time than that, rounded up."""
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        cores = max(1, os.cpu_count() or 1)
    quota = _cgroup_cpu_quota()
    return cores if quota is None else max(1, min(cores, math.ceil(quota)))


def _cgroup_cpu_quota(root: str = "/sys/fs/cgroup") -> float | None:
    """CPUs' worth of time this process's cgroup may use, or None (no quota, or not Linux).

    cgroup v2: ``cpu.max`` holds ``QUOTA PERIOD`` or ``max PERIOD``; v1: ``cpu/cpu.cfs_quota_us``
    (-1 = none) over ``cpu/cpu.cfs_period_us``. Read at the hierarchy's root as the process sees
    it (a container's own cgroup namespace)."""
    candidates = ((os.path.join(root, "cpu.max"), None),
                  (os.path.join(root, "cpu", "cpu.cfs_quota_us"), os.path.join(root, "cpu", "cpu.cfs_period_us")))
    for first, second in candidates:
        try:
            with open(first) as f:
                fields = f.read().split()
            if second is not None:
                with open(second) as f:
                    fields = fields[:1] + f.read().split()[:1]
        except OSError:
            continue
        try:
            quota, period = float(fields[0]), float(fields[1])
        except (ValueError, IndexError):  # "max PERIOD": no quota
            return None
        return quota / period if quota > 0 and period > 0 else None
    return None


def default_workers(units: int) -> int:
    """The worker processes for ``units`` units when none were asked for: the cores available,
    at most one per :data:`MIN_UNITS_PER_WORKER` units (starting a worker costs seconds, a
    small run is faster in one process)."""
    return max(1, min(available_cores(), int(units) // MIN_UNITS_PER_WORKER))


def check_workers(where: str, workers, scheduler) -> tuple[int | None, str | None]:
    """``(workers, scheduler)`` checked: ``workers`` None (see :func:`default_workers`) or a
    whole number ≥ 1; ``scheduler`` None or a Dask scheduler address such as ``tcp://HOST:PORT``."""
    workers = None if workers is None else checks.whole(f"{where}: workers", workers, 1)
    if scheduler is not None:
        if not isinstance(scheduler, str) or not _SCHEDULER.match(scheduler.strip()):
            raise ConfigError(f"{where}: scheduler: expected a Dask scheduler address such as "
                              f"tcp://HOST:PORT, found {scheduler!r}")
        scheduler = scheduler.strip()
    return workers, scheduler


def uses_workers(workers: int | None, scheduler: str | None, units: int) -> bool:
    """True when :func:`run_units` would run ``units`` units in worker processes."""
    return units > 0 and (scheduler is not None or
                          (default_workers(units) if workers is None else workers) > 1)


# --------------------------------------------------------------------------- worker processes

_PINNED = False
_UNIT_LOCK = threading.Lock()
#: Python's ``random`` of the thread running a unit (see :func:`_isolate_random_module`).
_UNIT_THREAD = threading.local()
_UNIT_RANDOM = random.Random()
#: This process's unpickled context: (token, context); one run's at a time.
_CONTEXT: list = [None, None]


def pin_threads() -> None:
    """Pin this process to one thread: the environment for OpenMP/BLAS/TensorFlow, threadpoolctl's
    limits, and TensorFlow's thread pools when it has not started yet (a worker does this before
    it unpickles anything holding a model). Idempotent."""
    global _PINNED
    if _PINNED:
        return
    os.environ.update(PINNED_ENVIRONMENT)
    import tensorflow as tf
    from threadpoolctl import threadpool_limits

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already running here: the pools keep their size
        pass
    threadpool_limits(1)
    _isolate_random_module()
    _PINNED = True


def _isolate_random_module() -> None:
    """Give the thread running a unit a ``random`` of its own.

    Keras draws the seeds of unseeded initializers from Python's global ``random``, right after
    ``keras.utils.set_random_seed`` seeded it; in a Dask worker the event-loop thread draws from
    the same generator at any moment (retry back-off, callback jitter), so a model's initial
    weights would depend on timing (seen: a worker whose every fold differed from the
    sequential run). The module-level functions of ``random`` (bound methods of its shared
    instance) are routed to :data:`_UNIT_RANDOM` in the unit's thread and left as they were in
    every other thread."""
    def routed(name, shared):
        def call(*args, **kwargs):
            own = getattr(_UNIT_THREAD, "random", None)
            return (shared if own is None else getattr(own, name))(*args, **kwargs)
        call.__name__, call.__doc__ = name, shared.__doc__
        return call

    for name in dir(random):
        function = getattr(random, name)
        if isinstance(function, types.MethodType) and isinstance(function.__self__, random.Random):
            setattr(random, name, routed(name, function))


def _on_worker(task: Callable, token: str, shipped: bytes, unit):
    """Run on a Dask worker: pin, unpickle the context once per run, run one unit at a time."""
    with _UNIT_LOCK:
        pin_threads()
        _UNIT_THREAD.random = _UNIT_RANDOM
        try:
            if _CONTEXT[0] != token:
                _CONTEXT[:] = [None, None]  # the previous run's context (and its models) can go
                _CONTEXT[:] = [token, pickle.loads(shipped)]
            return task(_CONTEXT[1], unit, shipped=True)
        finally:
            _UNIT_THREAD.random = None


# --------------------------------------------------------------------------- the runner

def run_units(task: Callable, context, units: Sequence, workers: int | None = 1,
              scheduler: str | None = None, where: str = "run_units",
              group: Callable | None = None) -> Iterator[tuple[object, object]]:
    """Yield ``(unit, task(context, unit))`` for every unit, in the order they finish.

    ``task``: a module-level function ``task(context, unit, shipped=False)`` (``shipped`` is
    True in a worker); ``context``: picklable (sent once per worker, unpickled once per
    worker and run); units: picklable. ``workers=1`` without ``scheduler``: in this process,
    in order (``workers=None``: :func:`default_workers`). Otherwise on Dask (see the module
    docstring); ``group(unit)``: units of one group share costly state in a worker (the
    protocol's model of a row and target), so they are sent to as few workers as keep every
    worker busy. A unit's error is raised here and the units not yet finished are cancelled.
    Close the generator (``contextlib.closing``) to stop early: the cluster it started is shut
    down.
    """
    workers, scheduler = check_workers(where, workers, scheduler)
    units = list(units)
    if not units:
        return
    chosen = workers is None
    workers = default_workers(len(units)) if workers is None else workers
    if workers > 1 or scheduler is not None:
        try:
            yield from _on_dask(task, context, units, workers, scheduler, where, group)
            return
        except _NoLocalCluster as err:
            if not chosen:  # asked for explicitly: say so rather than run otherwise
                raise ConfigError(f"{where}: workers: could not start {workers} local worker processes "
                                  f"({err})") from None
            # The default only: the same records come from one process.
            print(f"[kfusion] {where}: could not start local worker processes ({err}); "
                  "running the folds in this process", file=sys.stderr)
    for unit in units:
        yield unit, task(context, unit)


class _NoLocalCluster(Exception):
    """The local Dask cluster did not start (raised before any unit ran)."""


def _on_dask(task, context, units, workers, scheduler, where, group):
    from distributed import Client, as_completed

    with contextlib.ExitStack() as stack:
        if scheduler is None:
            try:
                cluster = stack.enter_context(_local_cluster(
                    n_workers=min(workers, len(units)), threads_per_worker=1, processes=True,
                    # Its HTTP server (dashboard) on a random local port: never clashes with 8787
                    dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR,
                    env=dict(PINNED_ENVIRONMENT)))
                client = stack.enter_context(Client(cluster))
            except Exception as err:  # noqa: BLE001 (ports, processes, sandboxes: any start failure)
                raise _NoLocalCluster(f"{type(err).__name__}: {err}") from err
        else:
            try:
                client = stack.enter_context(Client(scheduler, timeout=CONNECT_TIMEOUT))
            except (OSError, TimeoutError) as err:
                raise ConfigError(f"{where}: scheduler: could not connect to the Dask scheduler at "
                                  f"{scheduler} ({type(err).__name__}: {err})") from None
        token = uuid.uuid4().hex
        try:
            shipped = client.scatter(pickle.dumps(context, protocol=pickle.HIGHEST_PROTOCOL),
                                     broadcast=True, hash=False, timeout=60)
        except TimeoutError:
            raise ConfigError(f"{where}: scheduler: the Dask cluster at {scheduler} has no workers "
                              "(start some with 'dask worker ADDRESS --nthreads 1')") from None
        # Units of a group (the protocol: a row and target, one model) go to as few workers as
        # keep them all busy: a worker builds and traces a group's model once, a second worker
        # on the same group would do it again. Loose: an idle worker steals the rest.
        home = _homes(units, group, sorted(client.scheduler_info()["workers"]))
        futures = {client.submit(_on_worker, task, token, shipped, unit, pure=False,
                                 key=f"kfusion-unit-{index}-{token}", workers=home[index],
                                 allow_other_workers=True): unit
                   for index, unit in enumerate(units)}
        try:
            for future in as_completed(futures):
                result = future.result()  # a unit's error is raised here
                unit = futures.pop(future)
                future.release()
                yield unit, result
        finally:
            if futures:
                client.cancel(list(futures))


def _local_cluster(**options):
    from distributed import LocalCluster

    return LocalCluster(**options)


def _homes(units: Sequence, group: Callable | None, workers: Sequence[str]) -> list:
    """The preferred worker of every unit (None: any): the units of each group (in order) cut
    into ``ceil(workers / groups)`` contiguous chunks, the chunks dealt to the workers in turn."""
    if group is None or not workers:
        return [None] * len(units)
    members: dict = {}
    for index, unit in enumerate(units):
        members.setdefault(group(unit), []).append(index)
    chunks = -(-len(workers) // len(members))
    home, dealt = [None] * len(units), 0
    for indices in members.values():
        for chunk in np.array_split(np.asarray(indices), min(chunks, len(indices))):
            for index in chunk:
                home[int(index)] = [workers[dealt % len(workers)]]
            dealt += 1
    return home


# --------------------------------------------------------------------------- the protocol's units

@dataclass
class FoldWork:
    """What a fold of the protocol needs, built once per :func:`evaluate` call: the target
    views with their folds, the data set, the pretrained models, the frozen outputs, the
    config, the seed, and the row runners of :mod:`kfusion.evaluation.protocol`
    (``keras_row(row, view, dataset, pretrained, frozen, config, seed)``,
    ``handcrafted_row(view, frozen, config)``, each with ``run(fold, seed)``). A unit is
    ``(row, target, held_out)``; :func:`run_fold` runs it. One runner (model) per row and
    target is kept, the latest."""

    views: dict
    dataset: object
    pretrained: object
    frozen: FrozenOutputs
    config: object
    seed: int
    keras_row: type
    handcrafted_row: type
    _runner: tuple = field(default=(None, None), repr=False)

    def __getstate__(self):
        return {**self.__dict__, "_runner": (None, None)}

    def fold(self, target: str, held_out: str) -> Fold:
        return next(f for f in self.views[target].folds if f.held_out == held_out)

    def runner(self, row: str, target: str):
        if self._runner[0] != (row, target):
            self._runner = (None, None)  # free the previous model first
            view = self.views[target]
            runner = (self.handcrafted_row(view, self.frozen, self.config) if not ROWS[row].learned
                      else self.keras_row(row, view, self.dataset, self.pretrained, self.frozen,
                                          self.config, self.seed))
            self._runner = ((row, target), runner)
        return self._runner[1]

    def for_workers(self, units) -> "FoldWork":
        """A copy to ship: the frozen outputs ``units`` need computed here (once, as the
        sequential run computes them), and with ``config.cache_frozen`` the data set without
        its raw windows (the cached rows never read them)."""
        groups = dict.fromkeys((row, target) for row, target, _ in units)
        for row, target in groups:
            view, spec = self.views[target], ROWS[row]
            if spec.learned:
                self.frozen.inputs(spec, view.index, spec.modalities(self.dataset, self.pretrained),
                                   self.config.use_presence, self.config.fine_tune_projection)
            else:
                self.frozen.handcrafted()
        if not self.config.cache_frozen:
            return replace(self, _runner=(None, None))
        dataset = replace(self.dataset, inputs={m: np.zeros((0, *v.shape[1:]), v.dtype)
                                                for m, v in self.dataset.inputs.items()})
        frozen = _with_dataset(self.frozen, dataset)
        return replace(self, dataset=dataset, frozen=frozen, _runner=(None, None))


def _with_dataset(frozen: FrozenOutputs, dataset) -> FrozenOutputs:
    """A shallow copy of ``frozen`` (its computed outputs shared) over ``dataset``."""
    import copy

    twin = copy.copy(frozen)
    twin.dataset = dataset
    return twin


def run_fold(work: FoldWork, unit: tuple, shipped: bool = False) -> tuple[dict, object]:
    """Train and score one fold ``unit = (row, target, held_out)``: ``(record, fitted)``;
    ``fitted`` (the trainer or the scikit-learn pipeline) is None in a worker (it stays there)."""
    row, target, held_out = unit
    runner = work.runner(row, target)
    view: TargetView = work.views[target]
    fold = work.fold(target, held_out)
    # The fold's only randomness is its batch order (numpy, from this seed). No
    # keras.utils.set_random_seed here: changing TF's global seed makes every traced
    # function slow to run again (measured: 0.1 s -> 1 s per fold).
    fold_seed = derive_seed(work.seed, "fold", row, target, held_out)
    started = time.perf_counter()
    extra, probabilities, fitted = runner.run(fold, fold_seed)
    record = {"row": row, "target": target, "fold": held_out, "fold_index": fold.index,
              **metrics.fold_metrics(view.y[fold.test], probabilities),
              "n_train": int(fold.train.size), "n_validation": int(fold.validation.size),
              "validation_participants": list(fold.validation_participants), **extra,
              "seconds": round(time.perf_counter() - started, 3)}
    return record, (None if shipped else fitted)
