"""Fixtures shared by the test files."""

from __future__ import annotations

import os

import pytest

#: Test worker processes by default (``make test`` runs ``pytest -n auto``): the suite is sized for
#: the 2-core target machine; more workers only add memory and thread contention, since a file's
#: tests stay in one worker. ``PYTEST_XDIST_AUTO_NUM_WORKERS=N`` overrides it.
MAX_TEST_WORKERS = 2


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """``-n auto``: the cores this process may use (affinity and cgroup quota, not the host's
    count, which CI containers report), at most :data:`MAX_TEST_WORKERS`."""
    from kfusion.evaluation.parallel import available_cores

    return max(1, min(MAX_TEST_WORKERS, available_cores()))


def pytest_configure(config):
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        # A test worker: its share of the cores for OpenMP/BLAS/TensorFlow (and the processes its
        # tests start), so that N workers do not each start pools sized for the whole machine.
        from kfusion.evaluation.parallel import available_cores

        share = str(max(1, available_cores() // int(workerinput.get("workercount", 1))))
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                     "TF_NUM_INTRAOP_THREADS"):
            os.environ.setdefault(name, share)
    elif config.pluginmanager.hasplugin("xdist") and config.getoption("numprocesses", None):
        _warm_numba_cache()


def _warm_numba_cache():
    """Compile librosa's numba kernels (yin's) once, before the test workers start.

    numba writes the two cache files of a ``guvectorize(cache=True)`` kernel separately, so
    processes compiling it at the same time can mix them and crash (numba issue #10128; it
    segfaulted a CI run in ``librosa.yin``). Workers that find the cache written only read it."""
    import numpy as np

    from kfusion.data.physio import speech_prosody

    tone = np.sin(2 * np.pi * 150.0 * np.arange(16000) / 16000).astype(np.float32)
    speech_prosody(tone, 16000, 0.0, np.array([0.0]), 1.0)


#: Arguments of the shared synthetic data set (tests compare against synthetic_states(**...)).
KEMOCON_SYNTH_ARGS = {"participants": 4, "minutes": 1.5, "seed": 0}


@pytest.fixture(scope="session")
def kemocon_synth(tmp_path_factory):
    """Path of a small synthetic K-EmoCon-layout data set (read it as ``kemocon:PATH``):
    4 participants in 2 debates, 1.5 min each (18 annotation slots), seed 0, stereo 16 kHz
    audio. Read-only: copy it before changing files."""
    from kfusion.data.synthetic import write_kemocon_like

    return write_kemocon_like(tmp_path_factory.mktemp("kemocon_synth"), **KEMOCON_SYNTH_ARGS)


@pytest.fixture(scope="session")
def kemocon_synth_truth():
    """The latent truth behind ``kemocon_synth``: ``{pid: SyntheticParticipant}``."""
    from kfusion.data.synthetic import synthetic_states

    return synthetic_states(**KEMOCON_SYNTH_ARGS)


@pytest.fixture(scope="session")
def kemocon_synth_medium(tmp_path_factory):
    """A larger synthetic set (6 participants × 3 min, seed 2, ~340 windows) for checks whose
    statistics need more windows than ``kemocon_synth`` gives (e.g. int8 vs float macro F1,
    where one window of 110 moves a six-class F1 by more than a point)."""
    from kfusion.data.synthetic import write_kemocon_like

    return write_kemocon_like(tmp_path_factory.mktemp("kemocon_synth_medium"), participants=6,
                              minutes=3.0, seed=2)
