"""Throughput of the fusion-pretraining input pipeline alone (masking + 40 span statistics).

Synthetic random windows of all five modalities at their model shapes (speech [400, 40],
ACC [128, 3], BVP [256, 1], EDA [16, 1], TEMP [16, 1]) plus a presence array go through
``masked_statistics_dataset``; the dataset is iterated without a model. The first epoch
(tracing, warm-up) is not timed. Prints a table and writes JSON.

    python bench/masking_pipeline.py [--windows 2000] [--batch-size 64] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

from kfusion.modalities import MODALITIES, input_shape
from kfusion.training.masking import TargetScaler, masked_statistics_dataset

RESULT = Path(__file__).resolve().parent / "results" / "masking_pipeline.json"


def synthetic_arrays(windows: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {m: rng.normal(size=(windows, *input_shape(m))).astype("float32") for m in MODALITIES}
    arrays["presence"] = np.ones((windows, len(MODALITIES)), "float32")
    return arrays


def time_epochs(dataset: tf.data.Dataset, epochs: int) -> tuple[float, int]:
    for _ in dataset:  # warm-up: tracing and first pass
        pass
    seen, start = 0, time.perf_counter()
    for _ in range(epochs):
        for inputs, _ in dataset:
            seen += int(inputs["speech"].shape[0])
    return time.perf_counter() - start, seen


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULT)
    args = parser.parse_args(argv)

    arrays = synthetic_arrays(args.windows)
    start = time.perf_counter()
    scaler = TargetScaler().fit(arrays, batch_size=256)
    fit_seconds = time.perf_counter() - start

    rows = []
    for variant, target_scaler in [("raw targets", None), ("standardised targets", scaler)]:
        dataset = masked_statistics_dataset(arrays, args.batch_size, target_scaler=target_scaler, seed=0)
        seconds, seen = time_epochs(dataset, args.epochs)
        rows.append({"variant": variant, "epochs": args.epochs, "windows": seen,
                     "seconds": round(seconds, 3), "examples_per_second": round(seen / seconds, 1)})

    result = {
        "benchmark": "masking_pipeline",
        "windows": args.windows, "batch_size": args.batch_size, "modalities": list(MODALITIES),
        "targets": len(scaler.mean), "scaler_fit_seconds": round(fit_seconds, 3), "rows": rows,
        "tensorflow": tf.__version__, "cpu_count": os.cpu_count(), "machine": platform.machine(),
    }
    print(f"masking pipeline: {args.windows} windows x 5 modalities, batch {args.batch_size}, "
          f"{len(scaler.mean)} targets (scaler fit {fit_seconds:.2f} s)")
    print(f"{'variant':<22} {'epochs':>6} {'windows':>8} {'seconds':>8} {'examples/s':>11}")
    for row in rows:
        print(f"{row['variant']:<22} {row['epochs']:>6} {row['windows']:>8} {row['seconds']:>8.2f} "
              f"{row['examples_per_second']:>11.0f}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    main()
