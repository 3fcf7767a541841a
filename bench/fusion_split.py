"""Does fusion pretraining earn its place on real data? With vs without, on unseen people.

Stress-Predict is split by participant (``--seed``) into a pretraining half (its E4 signals
only, no labels) and an evaluation half. Masked-statistics fusion pretraining runs on the first
half for each mechanism (the shipped SigRep encoders frozen inside), then the leave-one-subject-
out protocol runs on the second half for every mechanism with and without fusion training, and
the paired t-tests over folds are printed. Writes ``bench/results/fusion_split.json``.

    .venv/bin/python bench/fusion_split.py --data ../shared/data/stress-predict
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
WEARABLES = ("acc", "bvp", "eda", "temp")
MECHANISMS = ("unweighted", "weighted", "attention")


def split(root: Path, seed: int) -> tuple[list[str], list[str]]:
    """Labelled participants (S02..S35) halved at random; S01 (unlabelled) pretrains."""
    ids = sorted(p.name for p in (root / "Raw_data").iterdir() if p.is_dir() and p.name[1:].isdigit())
    labelled = [p for p in ids if p != "S01"]
    order = np.random.default_rng(seed).permutation(len(labelled))
    half = len(labelled) // 2
    pretraining = sorted([labelled[i] for i in order[:half]] + ["S01"])
    return pretraining, sorted(labelled[i] for i in order[half:])


def pretraining_source(root: Path, ids: list[str], folder: Path) -> str:
    """An ``e4:`` folder of symlinks to the pretraining half's exports (no labels at all)."""
    folder.mkdir(parents=True, exist_ok=True)
    for pid in ids:
        link = folder / pid
        if not link.exists():
            link.symlink_to((root / "Raw_data" / pid).resolve(), target_is_directory=True)
    return f"e4:{folder}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/stress-predict", help="Stress-Predict root")
    parser.add_argument("--out", default="runs/bench-fusion-split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=10, help="fusion pretraining epochs")
    parser.add_argument("--calibration", default="participant")
    parser.add_argument("--no-levels", action="store_true", help="heads without window levels")
    parser.add_argument("--freeze-projection", action="store_true",
                        help='"with" rows: freeze the projection head too (the default trains it)')
    parser.add_argument("--train-encoders", action="store_true",
                        help="fusion pretraining trains the encoders too (FusionPretrainConfig.freeze_encoders=False)")
    parser.add_argument("--mechanisms", nargs="+", default=list(MECHANISMS), choices=MECHANISMS)
    parser.add_argument("--json", default=str(HERE / "results" / "fusion_split.json"))
    args = parser.parse_args()

    import keras

    from kfusion import saved_models
    from kfusion.config import CalibrationConfig, DataConfig
    from kfusion.data.dataset import build_dataset
    from kfusion.evaluation.protocol import EvaluationConfig, Pretrained, evaluate
    from kfusion.training.pretrain import FusionPretrainConfig, pretrain_fusion

    root, out = Path(args.data), Path(args.out)
    started = time.perf_counter()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=HERE).stdout.strip()  # at the start: the code that ran
    pretraining, evaluation = split(root, args.seed)
    source = pretraining_source(root, pretraining, out / "pretraining-half")
    encoders = {m: saved_models.load(f"sigrep-{m}") for m in WEARABLES}
    config = FusionPretrainConfig(modalities=WEARABLES, epochs=args.epochs, seed=args.seed,
                                  freeze_encoders=not args.train_encoders)
    stage = "pretrain-fusion" + ("-encoders-trained" if args.train_encoders else "")
    paths = pretrain_fusion([source], out / stage, config, encoders=encoders,
                            mechanisms=args.mechanisms, progress=True, verbose=0)
    pretrain_seconds = time.perf_counter() - started
    backbones = {m: keras.saving.load_model(p["backbone"], compile=False) for m, p in paths.items()}
    pretrained = Pretrained(encoders=encoders, fusion_backbones=backbones)
    data = DataConfig(modalities=WEARABLES, calibration=CalibrationConfig.parse(args.calibration))
    dataset = build_dataset(f"stresspredict:{root}", data, participants=evaluation)
    rows = [f"{m}_{w}" for m in args.mechanisms for w in ("without", "with")]
    results = evaluate(dataset, pretrained, rows=rows, targets=["stress"],
                       out=out / (f"evaluation-{args.calibration}{'-nolevels' if args.no_levels else ''}"
                                  f"{'-frozen' if args.freeze_projection else ''}"
                                  f"{'-encoders-trained' if args.train_encoders else ''}"),
                       seed=args.seed, config=EvaluationConfig(use_levels=not args.no_levels,
                                                               fine_tune_projection=not args.freeze_projection),
                       progress=True)
    f1 = results.table[results.table.metric == "f1"].set_index("row")
    tests = results.tests[results.tests.metric == "f1"]
    print(f"\nStress-Predict, pretraining half {len(pretraining)} people (no labels), evaluation half "
          f"{len(evaluation)} people, calibration {args.calibration}, levels {not args.no_levels}, "
          f"projection fine-tuned {not args.freeze_projection}, encoders trained in pretraining {args.train_encoders}")
    print("| mechanism | without | with | Δ (with − without) | p |")
    print("|---|---:|---:|---:|---:|")
    summary = {}
    for m in args.mechanisms:
        test = tests[tests.comparison.str.lower().str.startswith(m)]
        delta = float(test["mean_difference"].iloc[0]) if len(test) else float("nan")
        p = float(test["p"].iloc[0]) if len(test) else float("nan")
        without, with_ = f1.loc[f"{m}_without"], f1.loc[f"{m}_with"]
        print(f"| {m} | {without['mean']:.3f} ± {without['se']:.3f} | {with_['mean']:.3f} ± "
              f"{with_['se']:.3f} | {delta:+.3f} | {p:.3f} |")
        summary[m] = {"without": float(without["mean"]), "without_se": float(without["se"]),
                      "with": float(with_["mean"]), "with_se": float(with_["se"]), "delta": delta, "p": p}
    record = {"commit": commit, "machine": platform.platform(), "seed": args.seed, "epochs": args.epochs,
              "calibration": args.calibration, "levels": not args.no_levels,
              "fine_tune_projection": not args.freeze_projection, "train_encoders": args.train_encoders,
              "pretraining": pretraining, "evaluation": evaluation,
              "pretrain_seconds": round(pretrain_seconds, 1),
              "seconds": round(time.perf_counter() - started, 1), "f1": summary}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
