"""Benchmark: the full leave-one-subject-out protocol on a K-EmoCon-sized synthetic data set.

28 participants x 10 minutes (``kfusion.data.synthetic.write_kemocon_like``), all 9 rows x 3
targets x 28 folds with the default :class:`~kfusion.evaluation.EvaluationConfig`, pretrained
models with random weights at their real sizes (the numbers are meaningless, the time is not).
Then (``--workers N``, default 2) the same protocol with its folds in N worker processes
(``evaluate(workers=N)``, a local Dask cluster of one-thread workers) beside the sequential run
of the previous design: both times, their ratio, and whether every record is identical (all
fields but ``seconds``). Then the same rows without the frozen-output cache on a few folds,
timed per epoch, to give the cached/uncached speed ratio and an extrapolated uncached total.

    .venv/bin/python bench/loso.py [--participants 28] [--minutes 10] [--workers 2]
                                   [--uncached-folds 2] [--json bench/results/loso.json]

Writes ``bench/results/loso.json`` (or ``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from kfusion.data.dataset import build_dataset  # noqa: E402
from kfusion.modalities import WEARABLES  # noqa: E402
from kfusion.evaluation import ALL_ROWS, EvaluationConfig, Pretrained, evaluate  # noqa: E402
from kfusion.models import build_fusion_model, sigrep_encoder, speech_autoencoder  # noqa: E402
from kfusion.runs import package_versions  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its finished children (the local
    cluster's workers once it has shut down)."""
    import resource

    return sum(getattr(resource.getrusage(who), field) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for field in ("ru_utime", "ru_stime"))


def random_pretrained(seed: int = 0) -> Pretrained:
    """Encoders and fusion backbones of the real architectures with random weights."""
    keras.utils.set_random_seed(seed)
    encoders = {m: sigrep_encoder(m) for m in WEARABLES}
    encoders["speech"] = speech_autoencoder()[1]
    backbones = {m: build_fusion_model(mechanism=m) for m in ("unweighted", "weighted", "attention")}
    return Pretrained(encoders, backbones)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=28)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--uncached-folds", type=int, default=2,
                        help="folds per row (arousal) timed without the cache")
    parser.add_argument("--workers", type=int, default=2,
                        help="worker processes of the parallel run beside the sequential one (1: none)")
    parser.add_argument("--work", default=None, help="folder for data and runs (default: a temp folder)")
    parser.add_argument("--json", default=str(RESULTS / "loso.json"), help="where to write the results")
    args = parser.parse_args()

    from kfusion.data.synthetic import write_kemocon_like

    work = Path(args.work or tempfile.mkdtemp(prefix="kfusion-bench-loso-"))
    started = time.perf_counter()
    source = work / "kemocon"
    if not (source / "metadata" / "subjects.csv").is_file():
        write_kemocon_like(source, participants=args.participants, minutes=args.minutes, seed=0)
    dataset = build_dataset(f"kemocon:{source}", cache_dir=work / "cache")
    data_seconds = time.perf_counter() - started
    labelled = {t: int(np.sum(v >= 0)) for t, v in dataset.labels.items()}
    print(f"data: {len(dataset)} windows, {len(dataset.participant_ids())} participants, "
          f"labelled {labelled} ({data_seconds:.0f} s to write and build)")

    pretrained = random_pretrained()
    config = EvaluationConfig()
    started, cpu, load = time.perf_counter(), cpu_seconds(), os.getloadavg()[0]
    cached = evaluate(dataset, pretrained, rows=ALL_ROWS, out=work / "run_cached", config=config,
                      progress=True)
    cached_seconds = time.perf_counter() - started
    sequential_cpu = {"cpu_seconds": round(cpu_seconds() - cpu, 1),
                      "load_average": [round(load, 2), round(os.getloadavg()[0], 2)]}
    folds = cached.folds
    per_row = {row: {"fold_seconds": round(float(part["seconds"].sum()), 1),
                     "mean_epochs": (round(float(part["epochs_run"].mean()), 1)
                                     if part["epochs_run"].notna().any() else None)}
               for row, part in folds.groupby("row", sort=False)}
    print(f"cached protocol ({len(folds)} folds): {cached_seconds:.0f} s")

    parallel = None
    if args.workers > 1:
        parallel = compare_workers(dataset, pretrained, config, work, args.workers, cached_seconds, folds)
        parallel["sequential_cpu_seconds"] = sequential_cpu["cpu_seconds"]
        parallel["sequential_load_average"] = sequential_cpu["load_average"]
        parallel["cpu_ratio"] = round(parallel["cpu_seconds"] / sequential_cpu["cpu_seconds"], 2)
        print(f"CPU time (this process and its workers): sequential {sequential_cpu['cpu_seconds']:.0f} s, "
              f"--workers {args.workers} {parallel['cpu_seconds']:.0f} s ({parallel['cpu_ratio']:.2f}x); "
              f"load average {sequential_cpu['load_average']} and {parallel['load_average']} "
              "(start, end; other processes share these cores)")

    # Uncached: the same rows on a few arousal folds, time per epoch compared with the cache.
    # Both paths run the same computation, but a frozen model's float32 outputs depend (in
    # the last bit) on what is batched with a window; training and early stopping can amplify
    # that, so F1 agreement is reported, not assumed.
    # The first fold of a row pays the tf.function tracing in both paths, so it is run but not
    # timed. The uncached total is extrapolated as (uncached s/epoch) x (epochs the cached run
    # trained), the two paths stopping after the same epochs up to that rounding.
    keras_rows = [r for r in ALL_ROWS if r != "handcrafted"] if args.uncached_folds > 0 else []
    ratios, uncached_total = {}, 0.0
    order = list(dict.fromkeys(folds[folds["target"] == "arousal"]["fold"]))
    timed = order[1:1 + args.uncached_folds]
    uncached_config = config.replace(cache_frozen=False)
    for row in keras_rows:
        started = time.perf_counter()
        result = evaluate(dataset, pretrained, rows=[row], targets=["arousal"],
                          out=work / f"run_uncached_{row}", config=uncached_config,
                          progress=False, max_folds=1 + len(timed))
        unc = result.folds[result.folds["fold"].isin(timed)]
        ref = folds[(folds["row"] == row) & (folds["target"] == "arousal") & folds["fold"].isin(timed)]
        merged = unc.merge(ref, on="fold", suffixes=("_uncached", "_cached"))
        f1_gap = np.abs(merged["f1_uncached"] - merged["f1_cached"])
        loss_gap = np.abs(merged["best_val_loss_uncached"] - merged["best_val_loss_cached"])
        same = int(np.sum(f1_gap == 0))
        per_epoch_unc = float(unc["seconds"].sum() / unc["epochs_run"].sum())
        per_epoch_ref = float(ref["seconds"].sum() / ref["epochs_run"].sum())
        epochs_total = float(folds[folds["row"] == row]["epochs_run"].sum())
        ratios[row] = {"uncached_s_per_epoch": round(per_epoch_unc, 4),
                       "cached_s_per_epoch": round(per_epoch_ref, 4),
                       "ratio": round(per_epoch_unc / per_epoch_ref, 1),
                       "folds_with_identical_f1": f"{same}/{len(merged)}",
                       "max_abs_f1_difference": round(float(f1_gap.max()), 4),
                       "max_abs_best_val_loss_difference": float(loss_gap.max()),
                       "run_seconds": round(time.perf_counter() - started, 1)}
        uncached_total += per_epoch_unc * epochs_total
        print(f"  {row}: uncached {per_epoch_unc:.3f} s/epoch vs cached {per_epoch_ref:.4f} "
              f"({per_epoch_unc / per_epoch_ref:.0f}x; identical F1 in {same}/{len(merged)} folds, "
              f"max |dF1| {f1_gap.max():.4f})")
    uncached_total += per_row["handcrafted"]["fold_seconds"]
    overhead = cached_seconds - float(folds["seconds"].sum())
    estimate = uncached_total + overhead
    if keras_rows:
        print(f"uncached protocol, extrapolated: {estimate / 60:.0f} min "
              f"(cached {cached_seconds / 60:.1f} min, {estimate / cached_seconds:.0f}x)")

    out = {
        "benchmark": "loso", "what": "9 rows x 3 targets x leave-one-subject-out, default EvaluationConfig",
        "data": {"participants": len(dataset.participant_ids()), "minutes": args.minutes,
                 "windows": len(dataset), "labelled": labelled, "build_seconds": round(data_seconds, 1),
                 "source": "kfusion.data.synthetic.write_kemocon_like"},
        "config": config.to_dict(),
        "cached": {"seconds": round(cached_seconds, 1), "folds": int(len(folds)),
                   "fold_seconds": round(float(folds["seconds"].sum()), 1),
                   "setup_seconds": round(overhead, 1), "per_row": per_row},
        "parallel": parallel,
        "uncached": ({"folds_timed_per_row": len(timed), "per_row": ratios,
                      "extrapolated_seconds": round(estimate, 1),
                      "ratio_total": round(estimate / cached_seconds, 1)} if keras_rows else None),
        "goal_seconds": 300,
        "within_goal": min(cached_seconds, parallel["seconds"] if parallel else cached_seconds) <= 300,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average_at_end": os.getloadavg()},
        "versions": package_versions(),
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


def compare_workers(dataset, pretrained, config, work: Path, workers: int, sequential_seconds: float,
                    sequential) -> dict:
    """The same protocol with ``workers`` worker processes, run after the sequential one in the
    same process: times, their ratio, and how many records differ (every field but seconds)."""
    import subprocess

    started, cpu, load = time.perf_counter(), cpu_seconds(), os.getloadavg()[0]
    result = evaluate(dataset, pretrained, rows=ALL_ROWS, out=work / f"run_workers_{workers}", config=config,
                      progress=True, workers=workers)
    seconds = time.perf_counter() - started
    cpu = cpu_seconds() - cpu
    key = ["row", "target", "fold"]

    def comparable(frame):
        return frame.drop(columns="seconds").sort_values(key).reset_index(drop=True)

    ours, theirs = comparable(result.folds), comparable(sequential)
    same_rows = ours.eq(theirs) | (ours.isna() & theirs.isna())
    differing = int((~same_rows.all(axis=1)).sum()) if ours.shape == theirs.shape else len(ours)
    print(f"sequential (previous design) {sequential_seconds:.0f} s | --workers {workers} {seconds:.0f} s | "
          f"ratio {sequential_seconds / seconds:.2f}x | records differing: {differing}/{len(ours)}")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent).stdout.strip() or None
    return {"workers": workers, "seconds": round(seconds, 1), "sequential_seconds": round(sequential_seconds, 1),
            "ratio": round(sequential_seconds / seconds, 2), "folds": int(len(ours)),
            "records_differing": differing, "records_identical": differing == 0, "commit": commit,
            "fold_seconds": round(float(result.folds["seconds"].sum()), 1), "cpu_seconds": round(cpu, 1),
            "load_average": [round(load, 2), round(os.getloadavg()[0], 2)],
            "within_goal_300s": seconds <= 300}


if __name__ == "__main__":
    main()
