"""Real data decides: the leave-one-subject-out protocol on Stress-Predict under every calibration.

Stress-Predict (real E4 recordings, stress vs non-stress, 34 labelled participants) through
kfusion's own API, as a user would: for each calibration

- ``none``         no calibration, no per-window normalisation (raw windows, raw levels);
- ``window``       per-window z-scoring only, no levels (the authors' app layout, kfusion <= 0.x);
- ``participant``  per-window z-scoring + each participant's levels calibrated on its own recording;
- ``head``         the same from only the first ``--head-minutes`` of each recording;

every wearable row (wearable only; unweighted, weighted, attention fusion without fusion
training) on the shipped SigRep encoders, and the hand-crafted row with both classifiers
(logistic regression, histogram gradient boosting). Prints one table (macro F1 and accuracy,
mean ± s.e. over folds) and writes ``bench/results/real_data.json``.

    .venv/bin/python bench/real_data.py --data stresspredict:../shared/data/stress-predict
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WEARABLES = ("acc", "bvp", "eda", "temp")
CALIBRATIONS = ("none", "window", "participant", "head")
LEARNED_ROWS = ("wearable_only", "unweighted_without", "weighted_without", "attention_without")


def data_config(calibration: str, head_minutes: float):
    from kfusion.config import CalibrationConfig, DataConfig, FeatureConfig

    if calibration == "none":
        return DataConfig(modalities=WEARABLES, features=FeatureConfig("none", "none"),
                          calibration=CalibrationConfig("none", "none"))
    if calibration == "window":
        return DataConfig(modalities=WEARABLES, calibration=CalibrationConfig("none", "none"))
    return DataConfig(modalities=WEARABLES,
                      calibration=CalibrationConfig(calibration, calibration, head_minutes))


def run(args) -> dict:
    from kfusion.data.dataset import build_dataset
    from kfusion.evaluation.protocol import EvaluationConfig, evaluate
    from kfusion.pipeline import shipped_pretrained

    pretrained = shipped_pretrained(WEARABLES)
    results = {}
    for calibration in args.calibrations:
        dataset = build_dataset(args.data, data_config(calibration, args.head_minutes), cache_dir=args.cache)
        use_levels = calibration != "window"
        for row in [*args.rows, "handcrafted:logistic", "handcrafted:boosting"]:
            name, _, classifier = row.partition(":")
            config = EvaluationConfig(use_levels=use_levels, handcrafted_classifier=classifier or "logistic")
            started = time.perf_counter()
            out = Path(args.out) / calibration / row.replace(":", "-")
            result = evaluate(dataset, pretrained, rows=[name], targets=[args.target], out=out,
                              seed=args.seed, config=config, progress=False)
            table = result.table.set_index(["metric"])
            entry = {m: {"mean": float(table.loc[m, "mean"]), "se": float(table.loc[m, "se"])}
                     for m in ("f1", "accuracy")}
            entry["seconds"] = round(time.perf_counter() - started, 1)
            entry["folds"] = int(table.loc["f1", "n_folds"])
            results.setdefault(calibration, {})[row] = entry
            print(f"{calibration:12s} {row:22s} F1 {entry['f1']['mean']:.3f} ± {entry['f1']['se']:.3f}  "
                  f"acc {entry['accuracy']['mean']:.3f}  ({entry['seconds']:.0f} s)", flush=True)
    return results


def table(results: dict) -> str:
    rows = list(dict.fromkeys(r for c in results.values() for r in c))
    calibrations = list(results)
    lines = ["| row | " + " | ".join(calibrations) + " |", "|---|" + "---:|" * len(calibrations)]
    for row in rows:
        cells = []
        for c in calibrations:
            e = results[c].get(row)
            cells.append("" if e is None else f"{e['f1']['mean']:.3f} ± {e['f1']['se']:.3f}")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="stresspredict:../shared/data/stress-predict")
    parser.add_argument("--target", default="stress")
    parser.add_argument("--calibrations", nargs="+", default=list(CALIBRATIONS), choices=CALIBRATIONS)
    parser.add_argument("--rows", nargs="+", default=list(LEARNED_ROWS))
    parser.add_argument("--head-minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench-real-data")
    parser.add_argument("--cache", default=None, help="data-set cache folder (default: kfusion's)")
    parser.add_argument("--json", default=str(HERE / "results" / "real_data.json"))
    args = parser.parse_args()
    started = time.perf_counter()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=HERE).stdout.strip()  # at the start: the code that ran
    results = run(args)
    print()
    print(f"Macro F1 (mean ± s.e. over leave-one-subject-out folds), target {args.target}:")
    print(table(results))
    record = {"data": args.data, "target": args.target, "head_minutes": args.head_minutes,
              "seed": args.seed, "commit": commit, "machine": platform.platform(),
              "seconds": round(time.perf_counter() - started, 1), "results": results}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
