"""Fixtures shared by the test files."""

from __future__ import annotations

import pytest

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
