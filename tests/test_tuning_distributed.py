"""KerasTuner's distributed mode: one chief serving the oracle and two workers on localhost, each
a `kfusion tune` process configured through KERASTUNER_* environment variables."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

TRIALS = 4
TIMEOUT = 150  # seconds for the whole run; every process is killed beyond it


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _tiny_models(folder: Path) -> None:
    """Tiny encoders for real window shapes, saved as a pretrained folder."""
    import keras

    from kfusion.modalities import MODALITIES, input_shape
    from kfusion.evaluation import Pretrained
    from kfusion.models import sigrep_encoder, speech_autoencoder

    keras.utils.set_random_seed(5)
    encoders = {m: speech_autoencoder(input_shape(m), code_dim=8, filters=(4,))[1] if m == "speech"
                else sigrep_encoder(m, input_shape(m), filters=1, blocks=2, embedding_dim=8) for m in MODALITIES}
    Pretrained(encoders, {}).save(folder)


def _logs(folder: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(folder.glob("*.log")))


def test_chief_and_two_workers_share_and_finish_every_trial(tmp_path, kemocon_synth):
    from kfusion.config import DataConfig
    from kfusion.data.dataset import build_dataset
    from kfusion.evaluation.tuning import TuningConfig

    _tiny_models(tmp_path / "pretrained")
    cache = tmp_path / "cache"
    build_dataset(f"kemocon:{kemocon_synth}", DataConfig(), cache_dir=cache)  # the processes read it
    TuningConfig(epochs=3, patience=2, batch_size=32, head_units=[[8], [4]], projection_units=[[8], [16]],
                 learning_rate=[1e-3, 1e-2]).save(tmp_path / "tuning.json")
    out = tmp_path / "tune"
    command = [sys.executable, "-m", "kfusion.cli", "tune", "--data", f"kemocon:{kemocon_synth}",
               "--rows", "unweighted_without", "--target", "arousal", "--trials", str(TRIALS),
               "--out", str(out), "--pretrained", str(tmp_path / "pretrained"),
               "--config", str(tmp_path / "tuning.json"), "--cache-dir", str(cache)]
    port = _free_port()
    processes = {}
    try:
        for tuner_id in ("chief", "tuner0", "tuner1"):
            env = {**os.environ, "KERASTUNER_TUNER_ID": tuner_id, "KERASTUNER_ORACLE_IP": "127.0.0.1",
                   "KERASTUNER_ORACLE_PORT": str(port), "TF_CPP_MIN_LOG_LEVEL": "2"}
            log = open(tmp_path / f"{tuner_id}.log", "w")
            processes[tuner_id] = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                   cwd=Path(__file__).resolve().parent.parent)
            log.close()
        deadline = time.monotonic() + TIMEOUT
        while any(p.poll() is None for p in processes.values()) and time.monotonic() < deadline:
            time.sleep(0.5)
        running = [name for name, p in processes.items() if p.poll() is None]
        assert not running, f"still running after {TIMEOUT} s: {running}\n{_logs(tmp_path)}"
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    codes = {name: p.returncode for name, p in processes.items()}
    assert codes == {"chief": 0, "tuner0": 0, "tuner1": 0}, f"{codes}\n{_logs(tmp_path)}"

    run = out / "unweighted_without"
    # The chief's results table lists every trial, each finished, ids unique.
    table = pd.read_csv(run / "trials.csv", dtype={"trial": str})
    assert len(table) == TRIALS and table["trial"].is_unique, table
    assert (table["status"] == "COMPLETED").all(), table
    # KerasTuner's own record of the trials agrees.
    oracle_trials = [json.loads(p.read_text()) for p in (run / "keras_tuner").glob("trial_*/trial.json")]
    assert sorted(t["trial_id"] for t in oracle_trials) == sorted(table["trial"])
    assert {t["status"] for t in oracle_trials} == {"COMPLETED"}
    # Both workers ran trials, none twice, and together all of them; the chief ran none.
    ran = {}
    for tuner_id in ("tuner0", "tuner1"):
        log = run / "logs" / f"{tuner_id}.jsonl"
        records = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
        assert records and all(r["status"] == "COMPLETED" for r in records), f"{tuner_id}\n{_logs(tmp_path)}"
        ran[tuner_id] = [r["trial"] for r in records]
    assert not (run / "logs" / "chief.jsonl").exists()
    assert sorted(ran["tuner0"] + ran["tuner1"]) == sorted(table["trial"])
    assert dict(zip(table["trial"], table["tuner"])) == {t: w for w, ids in ran.items() for t in ids}
    for tuner_id, ids in ran.items():
        assert f"worker {tuner_id} ran {len(ids)} trial(s)" in (tmp_path / f"{tuner_id}.log").read_text()
    # Only the chief writes the best configuration.
    assert json.loads((run / "best_evaluation.json").read_text())["learning_rate"] == pytest.approx(
        table.loc[table["mean_f1"].idxmax(), "learning_rate"])
    assert "4 of 4 trials completed" in (run / "trials.md").read_text()
