"""Pretraining with ``--strategy multiworker``: two `kfusion pretrain speech` (and `fusion`) worker
processes on loopback, configured by TF_CONFIG, against a single process with the same global
batch and seed.

Why not bit-identical: with one worker the gradient of a batch of 4 is one reduction over 4
windows; with two, each replica reduces over its 2 windows and the all-reduce sums the two
halves, so float additions happen in another order (about 1e-7 relative per step), which the
few Adam steps carry into the weights. Measured here: losses equal to 1.2e-7 relative, weights to
1.3e-7 absolute while training moved them by 0.04; the tolerances (1e-5) leave room for other CPUs
and stay far below what a wrong split gives (a worker training on other windows than its part of
each global batch). Adam being invariant to the gradient's scale, a wrong loss scaling would
hardly show in the weights; the reported loss would still catch a wrong average.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from kfusion.training.pretrain import SpeechPretrainConfig, pretrain_speech, read_progress

TIMEOUT = 120  # seconds for the two workers; both are killed beyond it
CONFIG = SpeechPretrainConfig(epochs=2, batch_size=4, learning_rate=3e-3, seed=7, validation_fraction=0.25)
LOSS_RTOL = 1e-5
WEIGHT_ATOL = 1e-5


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for probe in sockets:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


def _write_tones(folder: Path) -> None:
    """Four 13 s speakers: 4 windows each; one held out, 12 training windows = 3 steps of 4."""
    for k in range(4):
        rng = np.random.default_rng(k)
        t = np.arange(13 * 16000) / 16000
        audio = 0.3 * np.sin(2 * np.pi * (200.0 + 90 * k) * t) + 0.05 * rng.normal(size=t.size)
        path = folder / f"id{k}" / "clip.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, audio.astype(np.float32), 16000)


def _weights(path: Path) -> list[np.ndarray]:
    import keras

    return [np.asarray(w) for w in keras.saving.load_model(path, compile=False).get_weights()]


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> Path:
    """The tones of :func:`_write_tones`, written once (read-only: no cache is written beside them)."""
    folder = tmp_path_factory.mktemp("tones") / "audio"
    _write_tones(folder)
    return folder


class _Single:
    """The single-process run (no TF_CONFIG, no strategy) both tests compare against: the same
    audio, config and seed give the same run, so it is trained once, when first asked for (the
    first test asks while its worker processes start)."""

    def __init__(self, audio: Path, out: Path):
        self.audio, self.out, self._result = audio, out, None

    def run(self) -> dict:
        if self._result is None:
            self._result = pretrain_speech([f"audio:{self.audio}"], self.out, CONFIG, verbose=0)
        return self._result


@pytest.fixture(scope="module")
def single(audio, tmp_path_factory) -> _Single:
    return _Single(audio, tmp_path_factory.mktemp("single") / "single")


def _logs(folder: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in sorted(folder.glob("*.log")))


def _two_workers(command: list[str], tmp_path: Path, meanwhile=lambda: None):
    """Runs ``command`` as worker 0 and 1 of a loopback cluster (TF_CONFIG), ``meanwhile()`` in
    this process while they train; asserts both exit 0 within :data:`TIMEOUT`. Returns what
    ``meanwhile`` returned."""
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    started = time.monotonic()
    try:
        for index in range(2):
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1",
                   "TF_CONFIG": json.dumps({"cluster": {"worker": workers},
                                            "task": {"type": "worker", "index": index}})}
            with open(tmp_path / f"worker{index}.log", "w") as log:
                processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                  cwd=Path(__file__).resolve().parent.parent))
        result = meanwhile()
        while any(p.poll() is None for p in processes) and time.monotonic() < started + TIMEOUT:
            time.sleep(0.2)
        running = [i for i, p in enumerate(processes) if p.poll() is None]
        assert not running, f"workers {running} still running after {TIMEOUT} s\n{_logs(tmp_path)}"
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    assert [p.returncode for p in processes] == [0, 0], _logs(tmp_path)
    return result


def test_two_workers_train_as_one_with_the_same_global_batch(tmp_path, audio, single):
    CONFIG.save(tmp_path / "speech.json")
    out = tmp_path / "multi"
    command = [sys.executable, "-m", "kfusion.cli", "pretrain", "speech", "--data", f"audio:{audio}",
               "--out", str(out), "--config", str(tmp_path / "speech.json"), "--strategy", "multiworker",
               "--quiet"]
    # The single-process reference meanwhile, here (no TF_CONFIG, no strategy).
    reference = _two_workers(command, tmp_path, single.run)

    # Only the chief wrote the run folder: the same files as a single-process run, no worker copies.
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == \
        sorted(p.relative_to(single.out).as_posix() for p in single.out.rglob("*"))
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("kfusion-worker1-*"))

    multi_history = read_progress(out / "speech")["history"]
    single_history = read_progress(single.out / "speech")["history"]
    assert len(multi_history) == len(single_history) == CONFIG.epochs
    for multi, one in zip(multi_history, single_history):
        np.testing.assert_allclose([multi["loss"], multi["val_loss"]], [one["loss"], one["val_loss"]],
                                   rtol=LOSS_RTOL)
    # Training moved the weights by far more than the tolerance, and both runs moved them alike.
    for multi, one in zip(_weights(out / "speech_autoencoder.keras"), _weights(reference["autoencoder"])):
        np.testing.assert_allclose(multi, one, atol=WEIGHT_ATOL)
    record = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    assert record["windows"] == 12 and record["validation_windows"] == 4


#: One worker (no TF_CONFIG) of ``--strategy multiworker`` in its own process (the strategy must
#: come before TensorFlow's first operation): prints the epochs it begins; with ``kill``, exits
#: when epoch 1 begins, as a killed run would.
_RESUMABLE_RUN = """
import sys
import keras
from kfusion.training.pretrain import SpeechPretrainConfig, pretrain_speech

audio, out, config, kill = sys.argv[1:5]

class Epochs(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        print("EPOCH", epoch, flush=True)
        if kill == "kill" and epoch == 1:
            sys.exit(3)

pretrain_speech([f"audio:{audio}"], out, SpeechPretrainConfig.load(config), verbose=0, strategy="multiworker",
                callbacks=[Epochs()])
"""


def test_a_killed_multiworker_run_resumes_from_its_checkpoint(tmp_path, audio, single):
    CONFIG.save(tmp_path / "speech.json")
    out = tmp_path / "multi"
    env = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", OMP_NUM_THREADS="1")

    def run(kill: str):
        return subprocess.run([sys.executable, "-c", _RESUMABLE_RUN, str(audio), str(out),
                               str(tmp_path / "speech.json"), kill], env=env, capture_output=True, text=True,
                              timeout=TIMEOUT, cwd=Path(__file__).resolve().parent.parent)

    killed = run("kill")
    assert killed.returncode == 3, killed.stdout + killed.stderr[-4000:]
    progress = read_progress(out / "speech")
    assert progress["epochs_done"] == 1 and not progress["trained"] and len(progress["history"]) == 1
    assert list((out / "speech" / "backup").glob("ckpt-1.index"))
    resumed = run("resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr[-4000:]
    assert [line for line in resumed.stdout.splitlines() if line.startswith("EPOCH")] == ["EPOCH 1"]

    # The same numbers as one uninterrupted process without a strategy.
    reference = single.run()
    history = read_progress(out / "speech")["history"]
    assert history[0] == progress["history"][0]
    for multi, one in zip(history, read_progress(single.out / "speech")["history"], strict=True):
        np.testing.assert_allclose([multi["loss"], multi["val_loss"]], [one["loss"], one["val_loss"]],
                                   rtol=LOSS_RTOL)
    for multi, one in zip(_weights(out / "speech_autoencoder.keras"), _weights(reference["autoencoder"])):
        np.testing.assert_allclose(multi, one, atol=WEIGHT_ATOL)
    assert not (out / "speech" / "backup").exists()


def test_fusion_pretraining_on_two_workers_matches_one_process(tmp_path, kemocon_synth):
    """The masked-statistics stage under the strategy: per-batch spans, target scaling and the
    fixed validation masks give one process's losses in every epoch (validation included)."""
    from kfusion.cli import main

    def command(out: str, cache: str) -> list[str]:
        return ["pretrain", "fusion", "--data", f"kemocon:{kemocon_synth}", "--out", str(tmp_path / out),
                "--epochs", "2", "--batch-size", "8", "--seed", "3", "--max-windows", "32",
                "--modalities", "eda,temp", "--mechanisms", "attention", "--quiet",
                "--cache-dir", str(tmp_path / cache)]

    multi = [sys.executable, "-m", "kfusion.cli", *command("multi", "cache_multi"), "--strategy", "multiworker"]
    _two_workers(multi, tmp_path, lambda: main(command("single", "cache_single")))
    histories = [read_progress(tmp_path / run / "attention")["history"] for run in ("multi", "single")]
    assert len(histories[0]) == len(histories[1]) == 2
    for many, one in zip(*histories):
        np.testing.assert_allclose([many["loss"], many["val_loss"]], [one["loss"], one["val_loss"]],
                                   rtol=LOSS_RTOL)
    assert histories[1][0]["val_loss"] != histories[1][1]["val_loss"]  # the epochs trained
    # Weights: Adam divides each step by the root of the squared gradients, so a weight whose
    # gradient is at float-noise level (here some of the attention's, ~1e-5 after 4 steps of 1e-3)
    # takes steps of the learning rate's size from the reduction order alone; 1e-4 still sits far
    # below what 4 steps move a weight that learns.
    for many, one in zip(_weights(tmp_path / "multi" / "fusion_attention.keras"),
                         _weights(tmp_path / "single" / "fusion_attention.keras")):
        np.testing.assert_allclose(many, one, atol=10 * WEIGHT_ATOL)
