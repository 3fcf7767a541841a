"""Pretraining speed, this code against a previous commit, side by side in one run (issue 15).

Two measurements, each run by the previous design (a git worktree of ``--baseline``) and by this
checkout, in separate processes one after the other on the same machine:

1. **Fusion pretraining: input pipeline vs training step.** Synthetic windows of all five
   modalities at their model shapes; the pipeline is exactly what ``train_resumable`` hands to
   ``fit`` for ``pretrain_fusion`` (masking + 40 statistic targets, standardised), read alone
   (each batch reduced to its size inside tf.data); the step is ``fit`` of the weighted
   fusion-pretraining model (frozen random encoders, 40 heads) on the same batches cached in
   memory, after a warm-up epoch. Windows/s of each and their ratio (the pipeline must outrun
   the step at least 3 times).
2. **The demo's pretraining stages** (what ``kfusion demo`` pretrains, ``pipeline.pretrain_all``
   with ``PipelineConfig.demo()``): encoders, speech and fusion on the demo's pretraining set
   (synthetic, 8 participants x 3 min, seed 1), in one process in that order, each from a fresh
   folder; wall-clock and process CPU seconds per stage, and the per-epoch losses of both runs
   compared (same results), plus the largest difference between the two runs' fusion backbones'
   projections on every pretraining window. The seconds each stage spends in ``build_dataset``
   (its windowed data set, built from a fresh cache) are reported apart (``build_seconds``; the
   inputs-only builds of the stages, issue 15).

The machine is shared and noisy: compare the ratios of one run, not numbers across runs.

    python bench/pretrain.py [--baseline 0c4dc2c] [--repeats 1] [--skip-demo] [--skip-pipeline]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULT = HERE / "results" / "pretrain.json"
#: The last commit before the speed work of issue 15.
BASELINE = "0c4dc2c"
DEMO_SET = {"participants": 8, "minutes": 3.0, "seed": 1}  # kfusion.cli.data.DEMO_SETS["pretraining-data"]
STAGES = ("encoders", "speech", "fusion")


# --------------------------------------------------------------------------- child: one code version

def _pipeline_and_step(windows: int, batch_size: int, epochs: int) -> dict:
    """Windows/s of the fusion-pretraining input pipeline as ``fit`` gets it, and of the step."""
    import keras
    import numpy as np
    import tensorflow as tf

    import kfusion.models
    from kfusion.modalities import MODALITIES, STATISTICS, input_shape
    from kfusion.models import (fusion_backbone, fusion_pretraining_model, freeze_encoders, sigrep_encoder,
                                speech_autoencoder, statistic_targets)
    from kfusion.training.masking import TargetScaler, masked_statistics_dataset
    from kfusion.training.pretrain import train_resumable

    rng = np.random.default_rng(0)
    arrays = {m: rng.normal(size=(windows, *input_shape(m))).astype("float32") for m in MODALITIES}
    arrays["presence"] = np.ones((windows, len(MODALITIES)), "float32")
    ratio = (0.1, 0.5)
    scaler = TargetScaler().fit(arrays, ratio, STATISTICS, 0, draws=1)
    tensors = {k: tf.convert_to_tensor(v) for k, v in arrays.items()}  # as pretrain_fusion holds them now

    targets = statistic_targets(MODALITIES)
    # Since the heads became one grouped layer (one [B, 40] output); before it, one output per target.
    grouped = hasattr(kfusion.models, "summed_absolute_error")
    stacked = {"stack_targets": targets} if grouped else {}

    def epoch_data(epoch):
        return masked_statistics_dataset(tensors, batch_size, ratio, STATISTICS, 1000 + epoch, shuffle=True,
                                         target_scaler=scaler, **stacked)

    import kfusion.training.masking as masking
    # pretrain_fusion's epochs as one pipeline; a --baseline worktree older than it has no such class.
    if hasattr(masking, "MaskedStatisticsEpochs"):
        epoch_data = masking.MaskedStatisticsEpochs(tensors, batch_size, ratio, STATISTICS, lambda epoch: 1000 + epoch,
                                                    scaler, targets)

    def model():
        keras.utils.set_random_seed(0)
        encoders = {m: (speech_autoencoder(input_shape(m))[1] if m == "speech" else sigrep_encoder(m, input_shape(m)))
                    for m in MODALITIES}
        built = fusion_pretraining_model(fusion_backbone(encoders, "weighted"), targets)
        freeze_encoders(built)
        loss = kfusion.models.summed_absolute_error if grouped else {t: "mae" for t in targets}
        built.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
        return built

    steps = int(epoch_data(0).cardinality())

    # The pipeline: what train_resumable gives fit, read without training.
    timing = {}

    def capture(dataset, callbacks=(), **kwargs):
        # Each batch is reduced to its size inside tf.data (fit's compiled loop reads batches
        # without Python too); the clock starts at the first batch, every later pass's start counts.
        for callback in callbacks:
            callback.on_epoch_begin(0)
        sizes = dataset.map(lambda inputs, targets: tf.shape(inputs["speech"])[0])
        seen, batches, start = 0, 0, None
        while batches < epochs * steps:  # the previous design gives one epoch per pass, this one all
            for size in sizes.take(epochs * steps - batches):
                if start is None:
                    start = time.perf_counter()
                else:
                    seen += int(size)
                batches += 1
        timing["pipeline"] = (seen, time.perf_counter() - start)

    probe = model()
    probe.fit = capture
    with tempfile.TemporaryDirectory() as folder:
        train_resumable(probe, epoch_data, epochs, Path(folder) / "stage", verbose=0)

    # The step: fit on the same batches held in memory, after a warm-up epoch (tracing).
    cached = epoch_data(0).cache()
    for _ in cached:
        pass
    trained, times = model(), []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    trained.fit(cached, epochs=1 + epochs, verbose=0, callbacks=[Timer()])
    step_windows = windows * epochs
    seen, seconds = timing["pipeline"]
    return {"windows": windows, "batch_size": batch_size, "epochs": epochs,
            "pipeline_windows_per_s": seen / seconds, "step_windows_per_s": step_windows / sum(times[1:]),
            "pipeline_over_step": (seen / seconds) / (step_windows / sum(times[1:]))}


def _seeded_config():
    import dataclasses

    from kfusion.pipeline import PipelineConfig

    config = PipelineConfig.demo()
    seed = config.seed
    return dataclasses.replace(config, encoders=config.encoders.replace(seed=seed),
                               speech=config.speech.replace(seed=seed), fusion=config.fusion.replace(seed=seed))


def _timed_builds(spent: list):
    """Wrap ``kfusion.data.dataset.build_dataset`` (the stages look it up when they run) so the
    wall seconds of every call are appended to ``spent``."""
    from kfusion.data import dataset

    real = dataset.build_dataset

    def build(*args, **kwargs):
        start = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - start)

    dataset.build_dataset = build


def _stages(data: Path, out: Path) -> dict:
    from kfusion.training.pretrain import pretrain_encoders, pretrain_fusion, pretrain_speech

    config = _seeded_config()
    source, cache = f"kemocon:{data}", out / "cache"
    wearables = [m for m in config.data.modalities if m != "speech"]
    runs = {
        "encoders": lambda: pretrain_encoders(source, out / "pretrain-encoders", config.encoders, modalities=wearables,
                                              cache_dir=cache, progress=False, verbose=0),
        "speech": lambda: pretrain_speech(source, out / "pretrain-speech", config.speech, cache_dir=cache, verbose=0),
        "fusion": lambda: pretrain_fusion(source, out / "pretrain-fusion",
                                          config.fusion.replace(modalities=config.data.modalities),
                                          encoders=out / "pretrain-encoders",
                                          speech_encoder=out / "pretrain-speech" / "speech_encoder.keras",
                                          mechanisms=["unweighted", "weighted", "attention"], cache_dir=cache,
                                          progress=False, verbose=0),
    }
    result, spent = {}, []
    _timed_builds(spent)
    for stage in STAGES:
        spent.clear()
        wall, cpu = time.perf_counter(), time.process_time()
        runs[stage]()
        result[stage] = {"seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu,
                         "build_seconds": sum(spent)}
    histories = {}
    for folder in sorted(out.glob("pretrain-*/*/progress.json")):
        key = f"{folder.parent.parent.name}/{folder.parent.name}"
        histories[key] = json.loads(folder.read_text())["history"]
    return {"stages": result, "histories": histories}


def child(args) -> None:
    import kfusion

    result = {"code": str(Path(kfusion.__file__).resolve().parent.parent)}
    if not args.skip_pipeline:
        result["pipeline"] = _pipeline_and_step(args.windows, args.batch_size, args.epochs)
    if args.demo_data:
        result.update(_stages(Path(args.demo_data), Path(args.out)))
    Path(args.result).write_text(json.dumps(result))


# --------------------------------------------------------------------------- parent

def _git(*command, cwd=ROOT) -> str:
    return subprocess.run(["git", *command], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def _run_child(code: Path, label: str, args, demo_data: Path | None, work: Path) -> dict:
    out = work / f"{label}-run"
    shutil.rmtree(out, ignore_errors=True)
    result = work / f"{label}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--result", str(result), "--out", str(out),
               "--windows", str(args.windows), "--batch-size", str(args.batch_size), "--epochs", str(args.epochs)]
    if demo_data is not None:
        command += ["--demo-data", str(demo_data)]
    if args.skip_pipeline:
        command += ["--skip-pipeline"]
    env = {**os.environ, "PYTHONPATH": str(code), "TF_CPP_MIN_LOG_LEVEL": "2"}
    print(f"[bench] {label}: {code}", flush=True)
    subprocess.run(command, env=env, check=True, cwd=str(code), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    data = json.loads(result.read_text())
    data["out"] = str(out)
    return data


def _backbone_difference(old_out: Path, new_out: Path, data: Path) -> dict:
    """Largest |difference| between the two runs' fusion backbones' projections on every window."""
    import keras
    import numpy as np

    import kfusion.models  # noqa: F401  (registers the layers)
    from kfusion.data.dataset import build_dataset
    from kfusion.models import backbone_modalities, presence_array

    config = _seeded_config()
    dataset = build_dataset([f"kemocon:{data}"], config.fusion.replace(modalities=config.data.modalities)
                            .data_config(config.data.modalities), cache_dir=False, contents="inputs")
    result = {}
    for mechanism in ("unweighted", "weighted", "attention"):
        name = f"pretrain-fusion/fusion_{mechanism}_backbone.keras"
        models = [keras.saving.load_model(out / name, compile=False) for out in (old_out, new_out)]
        modalities = backbone_modalities(models[0])
        x = {m: dataset.inputs[m] for m in modalities}
        x["presence"] = presence_array({m: dataset.presence[m] for m in modalities}, modalities)
        old, new = (np.asarray(model.predict(x, verbose=0, batch_size=256)) for model in models)
        result[mechanism] = {"max_abs_difference": float(np.max(np.abs(old - new))),
                             "max_abs_value": float(np.max(np.abs(old)))}
    return result


def _loss_difference(old: dict, new: dict) -> dict:
    out = {}
    for key in sorted(set(old) | set(new)):
        if key not in old or key not in new or len(old[key]) != len(new[key]):
            out[key] = "different epochs"
            continue
        worst = 0.0
        for a, b in zip(old[key], new[key]):
            for metric in ("loss", "val_loss"):
                if metric in a:
                    worst = max(worst, abs(a[metric] - b[metric]) / max(abs(a[metric]), 1e-12))
        out[key] = worst
    return out


def _median(values):
    values, middle = sorted(values), len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def parent(args) -> dict:
    work = Path(tempfile.mkdtemp(prefix="kfusion-bench-pretrain-"))
    baseline = _git("rev-parse", "--short", args.baseline)
    head = _git("rev-parse", "--short", "HEAD")
    tree = work / "baseline"
    _git("worktree", "add", "--detach", str(tree), baseline)
    try:
        demo_data = None
        if not args.skip_demo:
            from kfusion.data.synthetic import write_kemocon_like

            demo_data = work / "pretraining-data"
            write_kemocon_like(demo_data, **DEMO_SET, overwrite=True)
        runs = {"previous": [], "new": []}
        for repeat in range(args.repeats):
            for label, code in (("previous", tree), ("new", ROOT)):
                runs[label].append(_run_child(code, f"{label}{repeat}", args, demo_data, work))
        result = {"benchmark": "pretrain", "previous_commit": baseline, "commit": head,
                  "repeats": args.repeats, "machine": f"{os.cpu_count()} vCPU shared, {platform.machine()}",
                  "note": "previous and new run one after the other on the same machine; medians over repeats"}
        if not args.skip_pipeline:
            pipe = {}
            for label in runs:
                pipe[label] = {key: _median([r["pipeline"][key] for r in runs[label]])
                               for key in ("pipeline_windows_per_s", "step_windows_per_s", "pipeline_over_step")}
            result["pipeline"] = {**pipe, "windows": args.windows, "batch_size": args.batch_size,
                                  "epochs": args.epochs, "pipeline_speedup": pipe["new"]["pipeline_windows_per_s"]
                                  / pipe["previous"]["pipeline_windows_per_s"]}
        if demo_data is not None:
            stages = {}
            for stage in (*STAGES, "total"):
                row = {}
                for label in runs:
                    for measure in ("seconds", "cpu_seconds", "build_seconds"):
                        row[f"{label}_{measure}"] = _median([
                            sum(r["stages"][s][measure] for s in STAGES) if stage == "total" else
                            r["stages"][stage][measure] for r in runs[label]])
                row["speedup"] = row["previous_seconds"] / row["new_seconds"]
                row["cpu_speedup"] = row["previous_cpu_seconds"] / row["new_cpu_seconds"]
                row["build_speedup"] = row["previous_build_seconds"] / row["new_build_seconds"]
                stages[stage] = row
            result["demo_stages"] = stages
            result["same_results"] = {
                "largest_relative_loss_difference": _loss_difference(runs["previous"][0]["histories"],
                                                                     runs["new"][0]["histories"]),
                "fusion_projection": _backbone_difference(Path(runs["previous"][0]["out"]),
                                                          Path(runs["new"][0]["out"]), demo_data)}
        _print(result)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2, default=float) + "\n")
        print(f"wrote {args.output}")
        return result
    finally:
        _git("worktree", "remove", "--force", str(tree))
        shutil.rmtree(work, ignore_errors=True)


def _print(result: dict) -> None:
    pipe = result.get("pipeline")
    if pipe is not None:
        print(f"\nfusion pretraining, {pipe['windows']} windows, batch {pipe['batch_size']}: windows/s "
              f"(previous {result['previous_commit']} | new {result['commit']})")
        print(f"{'':28} {'previous':>10} {'new':>10}")
        for key, label in (("pipeline_windows_per_s", "input pipeline alone"), ("step_windows_per_s", "training step"),
                           ("pipeline_over_step", "pipeline / step")):
            print(f"{label:28} {pipe['previous'][key]:>10.1f} {pipe['new'][key]:>10.1f}")
    if "demo_stages" in result:
        print("\ndemo pretraining stages, seconds (wall | process CPU)")
        print(f"{'stage':10} {'previous':>10} {'new':>10} {'speed-up':>9} {'CPU prev':>9} {'CPU new':>9} "
              f"{'CPU x':>6}")
        for stage, row in result["demo_stages"].items():
            print(f"{stage:10} {row['previous_seconds']:>10.1f} {row['new_seconds']:>10.1f} {row['speedup']:>8.2f}x "
                  f"{row['previous_cpu_seconds']:>9.1f} {row['new_cpu_seconds']:>9.1f} {row['cpu_speedup']:>5.2f}x")
        print("\nof which building the data set, seconds (wall)")
        print(f"{'stage':10} {'previous':>10} {'new':>10} {'speed-up':>9} {'rest prev':>10} {'rest new':>9}")
        for stage, row in result["demo_stages"].items():
            print(f"{stage:10} {row['previous_build_seconds']:>10.1f} {row['new_build_seconds']:>10.1f} "
                  f"{row['build_speedup']:>8.2f}x {row['previous_seconds'] - row['previous_build_seconds']:>10.1f} "
                  f"{row['new_seconds'] - row['new_build_seconds']:>9.1f}")
        same = result["same_results"]
        print("\nlargest relative loss difference per model (previous vs new):")
        for key, value in same["largest_relative_loss_difference"].items():
            print(f"  {key:34} {value if isinstance(value, str) else f'{value:.2e}'}")
        for mechanism, row in same["fusion_projection"].items():
            print(f"  projection {mechanism:23} max |diff| {row['max_abs_difference']:.2e} "
                  f"(values up to {row['max_abs_value']:.2f})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=BASELINE, help="the previous design's commit (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--windows", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--skip-demo", action="store_true", help="only the pipeline and step measurement")
    parser.add_argument("--skip-pipeline", action="store_true", help="only the demo stages")
    parser.add_argument("--output", type=Path, default=RESULT)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--demo-data", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
