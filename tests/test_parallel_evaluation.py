"""Folds in worker processes (issue 15): the records of ``evaluate(workers=2)`` (a local Dask
cluster) and of ``evaluate(scheduler=...)`` (a scheduler and two workers started on loopback)
equal the sequential run's; an interrupted parallel run resumes without redoing a fold."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from kfusion.errors import ConfigError
from kfusion.evaluation import evaluate
from kfusion.evaluation import parallel
from model_helpers import pooled_pretrained
from test_protocol import CONFIG, tiny_dataset

#: Rows on encoders, on a pretrained backbone and the hand-crafted one; valence has unlabelled
#: windows. Several row × target models per worker: a model's initial weights must not depend
#: on what its worker ran before (nor on the Dask threads beside it).
ROWS = ["weighted_without", "attention_with", "handcrafted"]
TARGETS = ["arousal", "valence"]
UNITS = len(ROWS) * len(TARGETS) * 4


@pytest.fixture(scope="module")
def dataset():
    return tiny_dataset()


@pytest.fixture(scope="module")
def pretrained():
    return pooled_pretrained(11, 10, ("weighted", "attention"))


def records(folder) -> dict:
    """``(row, target, fold) -> record`` without ``seconds`` (the only field allowed to differ)."""
    lines = (folder / "folds.jsonl").read_text().splitlines()
    found = {}
    for line in lines:
        record = json.loads(line)
        found[(record["row"], record["target"], record["fold"])] = {k: v for k, v in record.items()
                                                                    if k != "seconds"}
    assert len(found) == len(lines), "a fold was written twice"
    return found


@pytest.fixture(scope="module")
def sequential(tmp_path_factory, dataset, pretrained):
    out = tmp_path_factory.mktemp("sequential") / "run"
    evaluate(dataset, pretrained, rows=ROWS, targets=TARGETS, out=out, config=CONFIG, progress=False,
             workers=1)
    found = records(out)
    assert len(found) == UNITS
    return found


def test_two_local_workers_give_the_sequential_records(tmp_path, dataset, pretrained, sequential):
    seen = []
    results = evaluate(dataset, pretrained, rows=ROWS, targets=TARGETS, out=tmp_path / "run", config=CONFIG,
                       progress=False, workers=2, on_fold=seen.append)
    assert results.complete
    assert records(tmp_path / "run") == sequential
    # on_fold ran here, once per fold, with the fold and its windows; the fitted object stayed
    # in its worker
    assert sorted((r.row, r.target, r.fold.held_out) for r in seen) == sorted(sequential)
    assert all(r.fitted is None and r.record["n_test"] == r.fold.test.size for r in seen)


# --------------------------------------------------------------------------- loopback cluster

def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def loopback_scheduler():
    """``tcp://127.0.0.1:PORT`` of a Dask scheduler and two worker processes started here (one
    with two threads: units still run one at a time in it)."""
    from distributed import Client

    address = f"tcp://127.0.0.1:{_free_port()}"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    dask = [sys.executable, "-m", "dask"]
    started = [subprocess.Popen([*dask, "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                                 "--no-dashboard"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for name, threads in (("w1", 1), ("w2", 2)):
            started.append(subprocess.Popen(
                [*dask, "worker", address, "--name", name, "--nthreads", str(threads), "--no-nanny",
                 "--no-dashboard", "--host", "127.0.0.1"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:  # the workers first (both at once), while their scheduler still answers
        for group in (started[1:], started[:1]):
            for process in group:
                process.terminate()
            for process in group:
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


class Interrupted(Exception):
    pass


def test_a_scheduler_on_loopback_gives_the_sequential_records_and_resumes(tmp_path, dataset, pretrained,
                                                                          sequential, loopback_scheduler):
    out = tmp_path / "run"
    arguments = dict(rows=ROWS, targets=TARGETS, out=out, config=CONFIG, progress=False,
                     scheduler=loopback_scheduler)

    def interrupt(run):  # the run is killed after its fifth fold
        seen.append(run)
        if len(seen) == 5:
            raise Interrupted
    seen = []
    with pytest.raises(Interrupted):
        evaluate(dataset, pretrained, on_fold=interrupt, **arguments)
    first = records(out)
    assert sorted(first) == sorted((r.row, r.target, r.fold.held_out) for r in seen)

    rest = []
    results = evaluate(dataset, pretrained, on_fold=rest.append, max_folds=UNITS, **arguments)
    assert results.complete
    assert sorted((r.row, r.target, r.fold.held_out) for r in rest) == sorted(set(sequential) - set(first))
    assert records(out) == sequential


# --------------------------------------------------------------------------- arguments

def test_bad_workers_and_schedulers_are_named(tmp_path, dataset, pretrained, monkeypatch):
    arguments = dict(rows=["handcrafted"], targets=["arousal"], config=CONFIG, progress=False)
    with pytest.raises(ConfigError, match="evaluate: workers: expected"):
        evaluate(dataset, pretrained, out=tmp_path / "a", workers=0, **arguments)
    with pytest.raises(ConfigError, match="evaluate: scheduler: expected a Dask scheduler address"):
        evaluate(dataset, pretrained, out=tmp_path / "b", scheduler="127.0.0.1:8786", **arguments)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # refused before any file
    monkeypatch.setattr(parallel, "CONNECT_TIMEOUT", "1s")
    with pytest.raises(ConfigError, match="could not connect to the Dask scheduler at tcp://127.0.0.1:"):
        evaluate(dataset, pretrained, out=tmp_path / "c", scheduler=f"tcp://127.0.0.1:{_free_port()}",
                 **arguments)
    assert parallel.check_workers("x", None, " tcp://127.0.0.1:8786 ") == (None, "tcp://127.0.0.1:8786")


def test_the_command_checks_workers_before_reading_data():
    import argparse

    from kfusion.cli.evaluate import add_parallel_arguments, cmd_evaluate

    parser = argparse.ArgumentParser()
    add_parallel_arguments(parser)
    assert vars(parser.parse_args([])) == {"workers": None, "scheduler": None}
    with pytest.raises(ConfigError, match="kfusion evaluate: workers: expected"):
        cmd_evaluate(parser.parse_args(["--workers", "0"]))
    with pytest.raises(ConfigError, match="kfusion evaluate: scheduler: expected"):
        cmd_evaluate(parser.parse_args(["--scheduler", "HOST:8786"]))
    # the kfusion parser itself takes them on evaluate, reproduce and demo
    from kfusion.cli import build_parser

    for argv in (["evaluate", "--data", "x:y", "--out", "o"], ["reproduce", "--kemocon", "k"], ["demo"]):
        args = build_parser().parse_args([*argv, "--workers", "3", "--scheduler", "tcp://h:1"])
        assert (args.workers, args.scheduler) == (3, "tcp://h:1")


def test_default_workers_leave_small_runs_in_one_process(monkeypatch):
    monkeypatch.setattr(parallel, "available_cores", lambda: 8)
    assert [parallel.default_workers(n) for n in (0, 31, 64, 100, 10_000)] == [1, 1, 2, 3, 8]
    assert not parallel.uses_workers(None, None, 31) and parallel.uses_workers(None, None, 64)
    assert parallel.uses_workers(1, "tcp://127.0.0.1:8786", 1) and not parallel.uses_workers(2, None, 0)


def test_cores_follow_the_cgroup_cpu_quota(tmp_path, monkeypatch):
    """A container granted 1.5 CPUs of a many-core host has 2 cores for workers, not the host's."""
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert parallel._cgroup_cpu_quota(str(v2)) == pytest.approx(1.5)
    (v2 / "cpu.max").write_text("max 100000\n")
    assert parallel._cgroup_cpu_quota(str(v2)) is None
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert parallel._cgroup_cpu_quota(str(tmp_path / "v1")) == pytest.approx(3.0)
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert parallel._cgroup_cpu_quota(str(tmp_path / "v1")) is None
    assert parallel._cgroup_cpu_quota(str(tmp_path / "absent")) is None

    monkeypatch.setattr(parallel.os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    monkeypatch.setattr(parallel, "_cgroup_cpu_quota", lambda: 1.5)
    assert parallel.available_cores() == 2
    monkeypatch.setattr(parallel, "_cgroup_cpu_quota", lambda: None)
    assert parallel.available_cores() == 64


def test_a_local_cluster_that_cannot_start(monkeypatch, capsys):
    """By default the units then run in this process (same results, a note on stderr); asked for
    explicitly, the workers' failure is an error naming the argument."""
    def broken(**options):
        raise OSError("no free ports in this sandbox")

    monkeypatch.setattr(parallel, "_local_cluster", broken)
    monkeypatch.setattr(parallel, "default_workers", lambda units: 2)
    results = list(parallel.run_units(_square, None, [1, 2, 3], workers=None, where="evaluate"))
    assert results == [(1, 1), (2, 4), (3, 9)]
    assert "could not start local worker processes (OSError: no free ports" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="evaluate: workers: could not start 2 local worker processes"):
        list(parallel.run_units(_square, None, [1, 2, 3], workers=2, where="evaluate"))


def _square(context, unit, shipped=False):
    return unit * unit
