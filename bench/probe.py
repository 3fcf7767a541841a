"""Does contrastive pretraining learn? Linear probe of frozen SigRep embeddings on Stress-Predict.

Stress vs non-stress windows (labels from ``Processed_data/``, participants S02-S35),
leave-one-subject-out: for every held-out participant a StandardScaler + LogisticRegression
pipeline is fitted on the other participants' 40-d embeddings only. Compared: each pretrained
encoder (``saved_models/sigrep-<m>`` or ``--encoders DIR``) against the same architecture with
random weights (``keras.utils.set_random_seed(seed)`` as in training), and the four
embeddings concatenated (160-d). At most ``--per-participant`` windows per participant are used
(drawn with ``--seed``) to keep it affordable.

Reported: macro F1 of the pooled out-of-fold predictions, and the mean +- standard error of the
per-fold macro F1 (folds whose participant has a single class count that class only).

    .venv/bin/python bench/probe.py --data stresspredict:../shared/data/stress-predict
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def embed(encoder, windows: np.ndarray) -> np.ndarray:
    return np.asarray(encoder.predict(windows, batch_size=1024, verbose=0), dtype=np.float64)


def loso_probe(features: np.ndarray, labels: np.ndarray, groups: np.ndarray,
               return_folds: bool = False) -> dict:
    """Leave-one-subject-out macro F1 of a linear probe on ``features`` [N, D];
    ``return_folds`` adds ``fold_macro_f1`` (per held-out group, in sorted group order)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    predicted = np.empty_like(labels)
    fold_scores = []
    for held in np.unique(groups):
        test = groups == held
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        probe.fit(features[~test], labels[~test])
        predicted[test] = probe.predict(features[test])
        fold_scores.append(f1_score(labels[test], predicted[test], average="macro"))
    fold_scores = np.asarray(fold_scores)
    result = {"pooled_macro_f1": float(f1_score(labels, predicted, average="macro")),
              "fold_macro_f1_mean": float(fold_scores.mean()),
              "fold_macro_f1_se": float(fold_scores.std(ddof=1) / np.sqrt(len(fold_scores))),
              "folds": int(len(fold_scores))}
    if return_folds:
        result["fold_macro_f1"] = fold_scores.tolist()
    return result


def select_windows(labels: np.ndarray, participants: np.ndarray, per_participant: int, seed: int) -> np.ndarray:
    """Sorted indices of at most ``per_participant`` labelled (``labels >= 0``) windows per
    participant, drawn with ``numpy.random.default_rng(seed)`` in sorted participant order."""
    labelled = np.flatnonzero(labels >= 0)
    rng = np.random.default_rng(seed)
    picked = []
    for pid in sorted(set(participants[labelled])):
        own = labelled[participants[labelled] == pid]
        picked.append(np.sort(rng.choice(own, min(per_participant, own.size), replace=False)))
    return np.concatenate(picked)


def main(argv=None) -> int:
    import keras

    from kfusion import saved_models
    from kfusion.config import DataConfig, WindowConfig
    from kfusion.data.dataset import build_dataset
    from kfusion.modalities import WEARABLES, input_shape
    from kfusion.models import sigrep_encoder

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="stresspredict:../shared/data/stress-predict")
    parser.add_argument("--encoders", help="folder of `kfusion pretrain encoders` (default: saved_models)")
    parser.add_argument("--per-participant", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(HERE / "results" / "probe.json"))
    args = parser.parse_args(argv)

    started = time.perf_counter()
    data = build_dataset([args.data], DataConfig(modalities=WEARABLES, window=WindowConfig(missing="fill")))
    index = select_windows(data.labels["stress"], data.participants, args.per_participant, args.seed)
    labels, groups = data.labels["stress"][index], data.participants[index]

    features, rows = {"pretrained": [], "random": []}, []
    for modality in WEARABLES:
        windows = data.inputs[modality][index]
        if args.encoders:
            pretrained = keras.saving.load_model(Path(args.encoders) / f"{modality}_encoder.keras", compile=False)
        else:
            pretrained = saved_models.load(f"sigrep-{modality}")
        keras.utils.set_random_seed(args.seed)
        random = sigrep_encoder(modality, input_shape(modality))
        for kind, encoder in (("pretrained", pretrained), ("random", random)):
            emb = embed(encoder, windows)
            features[kind].append(emb)
            rows.append({"features": modality, "encoder": kind, **loso_probe(emb, labels, groups)})
    for kind in ("pretrained", "random"):
        rows.append({"features": "all four (160-d)", "encoder": kind,
                     **loso_probe(np.concatenate(features[kind], axis=1), labels, groups)})

    counts = np.bincount(labels, minlength=2)
    majority = {"pooled_macro_f1": float(counts.max() / counts.sum() / 2)}
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True).stdout.strip()
    result = {"data": args.data, "windows": int(index.size), "participants": int(len(set(groups))),
              "per_participant": args.per_participant, "seed": args.seed, "class_counts": counts.tolist(),
              "majority_baseline": majority, "rows": rows, "encoders": args.encoders or "saved_models",
              "commit": commit, "machine": platform.uname()._asdict(),
              "seconds": round(time.perf_counter() - started, 1)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")

    print(f"{index.size} windows, {len(set(groups))} participants, classes {counts.tolist()} "
          f"(majority macro F1 {majority['pooled_macro_f1']:.3f})")
    print("| features | encoder | pooled macro F1 | per-fold macro F1 (mean ± SE) |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['features']} | {row['encoder']} | {row['pooled_macro_f1']:.3f} | "
              f"{row['fold_macro_f1_mean']:.3f} ± {row['fold_macro_f1_se']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
