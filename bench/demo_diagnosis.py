"""Why the demo's fused rows did not beat the unimodal ones: the measurements behind the fixes.

    .venv/bin/python bench/demo_diagnosis.py --demo runs/demo [--json bench/results/demo_diagnosis.json]

``--demo``: a finished ``kfusion demo`` folder (its data sets and pretraining run are reused).
Prints three tables and writes them as JSON:

1. the speech autoencoder's code spread after 10 epochs on the demo's pretraining set, at the
   old default L1 weight (1e-4) and the new one (1e-6): a spread near 0 is a collapsed code;
2. leave-one-subject-out logistic-regression probes on the demo's evaluation set (a scaler and
   an L2 logistic regression fitted on the training participants of each fold): the latent
   truth (the ceiling the labels allow), the hand-crafted features and the frozen embeddings
   of the demo's pretrained encoders, per modality and fused;
3. per target, how many windows and participants a fold trains on, and the spread of the
   participants' label distributions (the mean total-variation distance of a participant's
   labels from the pooled distribution).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
import warnings
from pathlib import Path

import numpy as np


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def speech_collapse(pretraining_source: str, cache_dir: Path) -> list[dict]:
    import keras

    from kfusion.config import DataConfig
    from kfusion.data.dataset import build_dataset
    from kfusion.models import speech_autoencoder
    from kfusion.training.pretrain import speech_code_spread

    windows = build_dataset(pretraining_source, DataConfig(modalities=("speech",)), cache_dir=cache_dir,
                            progress=False).inputs["speech"]
    rows = []
    for sparsity in (1e-4, 1e-6):
        keras.utils.set_random_seed(0)
        autoencoder, encoder = speech_autoencoder(sparsity=sparsity)
        autoencoder.compile(keras.optimizers.Adam(1e-3), "mse")
        started = time.perf_counter()
        history = autoencoder.fit(windows, windows, epochs=10, batch_size=32, verbose=0)
        rows.append({"sparsity": sparsity, "final_mse": round(float(history.history["loss"][-1]), 4),
                     "code_std": float(speech_code_spread(encoder, windows)),
                     "seconds": round(time.perf_counter() - started, 1)})
    return rows


def _truth(dataset) -> np.ndarray:
    """Latent (arousal, valence) at each window's centre, from the generator's truth."""
    from kfusion.cli import DEMO_SETS
    from kfusion.data.synthetic import synthetic_states

    states = synthetic_states(**DEMO_SETS["data"])
    truth = np.zeros((len(dataset), 2))
    for i, (pid, start) in enumerate(zip(np.asarray(dataset.participants).astype(str), dataset.starts)):
        state = states[pid]
        slot = int(np.clip((start + 2.0 - state.start) // 5.0, 0, state.n_slots - 1))
        truth[i] = state.arousal[slot], state.valence[slot]
    return truth


def probes(demo: Path, cache_dir: Path) -> tuple[list[dict], list[dict]]:
    import keras
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import kfusion.models  # noqa: F401
    from kfusion.config import DataConfig
    from kfusion.data.dataset import build_dataset
    from kfusion.evaluation import baselines

    dataset = build_dataset(f"kemocon:{demo / 'data'}", DataConfig(), cache_dir=cache_dir, progress=False)
    participants = np.asarray(dataset.participants).astype(str)
    features = {"latent truth (ceiling)": _truth(dataset),
                "hand-crafted": baselines.handcrafted_features(dataset.inputs, dataset.presence)[0]}
    run = demo / "run"
    embeddings = {}
    for modality in dataset.inputs:
        path = (run / "pretrain-speech" / "speech_encoder.keras" if modality == "speech"
                else run / "pretrain-encoders" / f"{modality}_encoder.keras")
        encoder = keras.saving.load_model(path, compile=False)
        embeddings[modality] = np.asarray(encoder.predict(dataset.inputs[modality], verbose=0, batch_size=256))
        features[f"embedding: {modality}"] = embeddings[modality]
    features["embeddings: four wearables"] = np.concatenate([embeddings[m] for m in ("acc", "bvp", "eda", "temp")], 1)
    features["embeddings: all five"] = np.concatenate(list(embeddings.values()), 1)
    rows = []
    for name, x in features.items():
        row = {"features": name}
        for target in ("arousal", "valence", "emotion"):
            y = dataset.labels[target]
            keep = y >= 0
            scores = []
            for held_out in np.unique(participants[keep]):
                train = keep & (participants != held_out)
                test = keep & (participants == held_out)
                model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model.fit(x[train], y[train])
                scores.append(f1_score(y[test], model.predict(x[test]), average="macro"))
            row[target] = round(float(np.mean(scores)), 3)
        rows.append(row)
    label_rows = []
    for target in ("arousal", "valence", "emotion"):
        y = dataset.labels[target]
        keep = y >= 0
        classes = len(dataset.classes[target])
        pooled = np.bincount(y[keep], minlength=classes) / keep.sum()
        distances = []
        for pid in np.unique(participants[keep]):
            own = np.bincount(y[keep & (participants == pid)], minlength=classes)
            distances.append(0.5 * np.abs(own / own.sum() - pooled).sum())
        ids = np.unique(participants[keep])
        label_rows.append({"target": target, "participants": int(ids.size),
                           "windows per fold (train + validation)": int(keep.sum() * (ids.size - 1) / ids.size),
                           "mean TV distance participant vs pooled": round(float(np.mean(distances)), 3)})
    return rows, label_rows


def _print(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    keys = list(rows[0])
    print(" | ".join(keys))
    for row in rows:
        print(" | ".join(f"{row[k]:.3g}" if isinstance(row[k], float) else str(row[k]) for k in keys))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", required=True, type=Path, help="a finished kfusion demo folder")
    parser.add_argument("--json", type=Path, default=Path("bench/results/demo_diagnosis.json"))
    args = parser.parse_args()
    cache_dir = args.demo / "run" / "cache"
    collapse = speech_collapse(f"kemocon:{args.demo / 'pretraining-data'}", cache_dir)
    _print("Speech autoencoder after 10 epochs (code spread ~0 = collapsed)", collapse)
    probe_rows, label_rows = probes(args.demo, cache_dir)
    _print("Leave-one-subject-out logistic-regression probes, macro F1", probe_rows)
    _print("Folds and label shift", label_rows)
    result = {"machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores",
              "commit": _commit(), "speech_collapse": collapse, "probes": probe_rows, "labels": label_rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten: {args.json}")


if __name__ == "__main__":
    main()
