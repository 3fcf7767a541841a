"""Why does contrastive SigRep pretraining barely beat random weights? Probe variants on Stress-Predict.

Same probe as ``bench/probe.py`` (its functions are imported): stress vs non-stress, at most
``--per-participant`` windows per participant, leave-one-subject-out StandardScaler +
LogisticRegression, macro F1. What changes is what goes into the probe:

- window normalisation (hypothesis 1): ``zscore`` (each window and channel on its own, the
  library default), ``none`` (raw E4 units), ``global`` (one mean/std per modality channel over
  all present windows of the data set: keeps the absolute level, in sane units);
- ``+stats``: the z-scored embedding plus the raw window's mean and std per channel; ``stats``
  alone is the control (2 features per channel, no encoder);
- encoders pretrained here (hypotheses 2-3), on ``--max-windows`` windows per modality drawn from
  all participants exactly as :func:`kfusion.training.pretrain.pretrain_encoders` draws them,
  with the temperature, augmentation chain (``default``: :func:`default_augmenter`; ``gentle``:
  scaling + noise + span zeroing only) and normalisation of each spec in :data:`PRETRAIN_SPECS`;
  snapshots after chosen epochs measure training length;
- ``pp``: the probe's features standardised within each participant (unsupervised per-person
  calibration, uses no labels), a probe-side control.

Run folders go to ``--runs`` (resumable: finished encoders are reused). Raw numbers, pretraining
losses and per-fold scores go to ``--out``; a Markdown table is printed.

    .venv/bin/python bench/probe_investigation.py --modalities eda bvp acc temp
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from probe import embed, loso_probe, select_windows  # noqa: E402

#: Pretraining variants: window normalisation, augmentation chain, NT-Xent temperature,
#: epochs to train and the epochs after which the encoder is probed.
PRETRAIN_SPECS = {
    "z-default-t0.1": {"norm": "zscore", "augment": "default", "temperature": 0.1, "long": True},
    "z-default-t0.5": {"norm": "zscore", "augment": "default", "temperature": 0.5},
    "z-gentle-t0.1": {"norm": "zscore", "augment": "gentle", "temperature": 0.1},
    "none-default-t0.1": {"norm": "none", "augment": "default", "temperature": 0.1},
    "global-default-t0.1": {"norm": "global", "augment": "default", "temperature": 0.1},
    "global-gentle-t0.1": {"norm": "global", "augment": "gentle", "temperature": 0.1},
}


# --------------------------------------------------------------------------- inputs

def window_stats(raw: np.ndarray) -> np.ndarray:
    """``[N, T, C]`` raw windows -> ``[N, 2C]``: mean then std over time, per channel."""
    return np.concatenate([raw.mean(axis=1), raw.std(axis=1)], axis=1).astype(np.float64)


def normalise(raw: np.ndarray, present: np.ndarray, norm: str, reference: tuple | None = None) -> np.ndarray:
    """Encoder inputs from raw windows ``[N, T, C]``; absent windows stay all zero.

    ``reference``: ``(mean [C], std [C])`` for ``global`` (over present windows and time)."""
    from kfusion.data.features import wearable_features

    if norm in ("zscore", "none"):
        return wearable_features(raw, norm)
    out = np.zeros_like(raw, dtype=np.float32)
    mean, std = reference
    out[present] = ((raw[present] - mean) / std).astype(np.float32)
    return out


def global_reference(raw: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std over all present windows and time steps."""
    values = raw[present].astype(np.float64)
    return values.mean(axis=(0, 1)), values.std(axis=(0, 1))


def per_participant_standardise(features: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Z-score every feature within each participant (no labels used)."""
    out = np.empty_like(features)
    for group in np.unique(groups):
        rows = groups == group
        block = features[rows]
        std = block.std(axis=0)
        out[rows] = (block - block.mean(axis=0)) / np.where(std > 1e-12, std, 1.0)
    return out


# --------------------------------------------------------------------------- pretraining

def gentle_augmenter(seed: int, name: str):
    """Amplitude-only chain: scaling (0.8) then noise (0.8) then span zeroing (0.5), the
    default strengths, no time warp / permutation / reversal / negation."""
    import keras

    from kfusion.training.augment import RandomNoise, RandomScaling, RandomSpanZeroing

    return keras.Sequential([
        RandomScaling((0.8, 1.2), probability=0.8, seed=seed + 4),
        RandomNoise(0.05, probability=0.8, seed=seed + 5),
        RandomSpanZeroing(0.25, probability=0.5, seed=seed + 6),
    ], name=name)


def pretrain(modality: str, windows: np.ndarray, spec: dict, epochs: int, snapshots: list[int],
             run_dir: Path, seed: int, batch_size: int = 256) -> tuple[dict[int, Path], list[dict]]:
    """Contrastive pretraining as in ``pretrain_encoders`` (same seeding, batches, optimizer),
    with the spec's augmenter and temperature; returns ``{epoch: encoder path}`` and the history."""
    import keras

    from kfusion.modalities import input_shape
    from kfusion.models import sigrep_encoder
    from kfusion.training.augment import default_augmenter
    from kfusion.training.contrastive import ContrastiveModel, projection_head
    from kfusion.training.pretrain import _shuffled_batches, read_progress, train_resumable

    stage_dir = run_dir / modality
    paths = {e: stage_dir / f"encoder-epoch{e:03d}.keras" for e in snapshots}
    state = read_progress(stage_dir)
    if state["epochs_done"] >= epochs and all(p.is_file() for p in paths.values()):
        return paths, state["history"]

    keras.utils.set_random_seed(seed)
    encoder = sigrep_encoder(modality, input_shape(modality))
    if spec["augment"] == "default":
        augmenter = default_augmenter(seed, name=f"{modality}_augmenter")
    else:
        augmenter = gentle_augmenter(seed, f"{modality}_augmenter")
    model = ContrastiveModel(encoder, projection_head(40, (64, 32)), augmenter,
                             temperature=spec["temperature"], seed=seed, name=f"{modality}_contrastive")
    model.compile(optimizer=keras.optimizers.Adam(1e-3))

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 in paths:
                encoder.save(paths[epoch + 1])

    history = train_resumable(model, lambda epoch: _shuffled_batches(windows, batch_size, seed, epoch),
                              epochs, stage_dir, verbose=0, callbacks=[Snapshot()])
    missing = [e for e, p in paths.items() if not p.is_file()]
    if missing:
        raise RuntimeError(f"{stage_dir}: snapshots {missing} missing (run folder from another "
                           "setting? delete it and re-run)")
    return paths, history


# --------------------------------------------------------------------------- main

def main(argv=None) -> int:
    import keras
    from threadpoolctl import threadpool_limits

    from kfusion import saved_models
    from kfusion.config import DataConfig, FeatureConfig, WindowConfig
    from kfusion.data.dataset import build_dataset
    from kfusion.modalities import WEARABLES, input_shape
    from kfusion.models import sigrep_encoder

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="stresspredict:../shared/data/stress-predict")
    parser.add_argument("--modalities", nargs="+", default=list(WEARABLES), choices=list(WEARABLES))
    parser.add_argument("--pretrain-modalities", nargs="*", default=["eda", "bvp", "acc"],
                        choices=list(WEARABLES), help="modalities pretrained here (TEMP sits at the "
                        "majority floor with every input, so it is left out by default)")
    parser.add_argument("--pretrain", nargs="*", default=list(PRETRAIN_SPECS), choices=list(PRETRAIN_SPECS),
                        help="pretraining variants to run (none: probe-only rows)")
    parser.add_argument("--max-windows", type=int, default=8000, help="pretraining windows per modality")
    parser.add_argument("--epochs", type=int, default=6, help="epochs of every pretraining variant")
    parser.add_argument("--long-epochs", type=int, default=16,
                        help="epochs of the training-length run (specs marked long), probed at 2, --epochs, this")
    parser.add_argument("--random-seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="seeds of the random-weight encoders (spread of the random baseline)")
    parser.add_argument("--per-participant", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default="/tmp/probe_investigation")
    parser.add_argument("--out", default=str(HERE / "results" / "probe_investigation.json"))
    args = parser.parse_args(argv)

    started = time.perf_counter()
    data = build_dataset([args.data], DataConfig(modalities=WEARABLES, window=WindowConfig(missing="fill"),
                                                 features=FeatureConfig(wearable_norm="none")))
    index = select_windows(data.labels["stress"], data.participants, args.per_participant, args.seed)
    labels, groups = data.labels["stress"][index], data.participants[index]

    features: dict[tuple[str, str], np.ndarray] = {}   # (label, modality) -> [n, d]
    pretrain_log: dict[str, dict] = {}

    for modality in args.modalities:
        raw = data.inputs[modality]
        present = np.asarray(data.presence[modality], dtype=bool)
        reference = global_reference(raw, present)
        inputs = {norm: normalise(raw[index], present[index], norm, reference)
                  for norm in ("zscore", "none", "global")}
        stats = window_stats(raw[index])
        features[("stats", modality)] = stats
        for seed in args.random_seeds:
            keras.utils.set_random_seed(seed)
            random = sigrep_encoder(modality, input_shape(modality))
            for norm in (("zscore", "none", "global") if seed == args.random_seeds[0] else ("zscore",)):
                features[(f"{norm} / random s{seed}", modality)] = embed(random, inputs[norm])
        saved = embed(saved_models.load(f"sigrep-{modality}"), inputs["zscore"])
        features[("zscore / saved (38.7k win, 8 ep)", modality)] = saved
        features[("zscore / saved + stats", modality)] = np.concatenate([saved, stats], axis=1)
        features[(f"zscore / random s{args.random_seeds[0]} + stats", modality)] = np.concatenate(
            [features[(f"zscore / random s{args.random_seeds[0]}", modality)], stats], axis=1)

        # Pretraining windows: as pretrain_encoders draws them (present windows, rng(seed)).
        pool = np.flatnonzero(present)
        if args.max_windows and pool.size > args.max_windows:
            pool = np.sort(np.random.default_rng(args.seed).choice(pool, args.max_windows, replace=False))
        for name in (args.pretrain if modality in args.pretrain_modalities else []):
            spec = PRETRAIN_SPECS[name]
            epochs = args.long_epochs if spec.get("long") else args.epochs
            snapshots = sorted({2, args.epochs, epochs}) if spec.get("long") else [epochs]
            train_windows = normalise(raw[pool], present[pool], spec["norm"], reference)
            tick = time.perf_counter()
            paths, history = pretrain(modality, train_windows, spec, epochs, snapshots,
                                      Path(args.runs) / name, args.seed)
            pretrain_log[f"{name}/{modality}"] = {
                "spec": spec, "windows": int(pool.size), "epochs": epochs,
                "loss": [round(h["loss"], 4) for h in history],
                "seconds_this_call": round(time.perf_counter() - tick, 1)}
            for epoch, path in paths.items():
                encoder = keras.saving.load_model(path, compile=False)
                emb = embed(encoder, inputs[spec["norm"]])
                features[(f"{spec['norm']} / {name} ep{epoch}", modality)] = emb
                if spec["norm"] == "zscore" and epoch == args.epochs:
                    features[(f"zscore / {name} ep{epoch} + stats", modality)] = np.concatenate([emb, stats], axis=1)
            print(f"pretrained {name}/{modality}: loss {pretrain_log[f'{name}/{modality}']['loss']}", flush=True)

    labels_in_order = list(dict.fromkeys(label for label, _ in features))
    pp_labels = {"stats", f"zscore / random s{args.random_seeds[0]}", "zscore / saved (38.7k win, 8 ep)",
                 "zscore / saved + stats", f"zscore / random s{args.random_seeds[0]} + stats"}
    rows = []
    with threadpool_limits(1):
        for modality in args.modalities + ["all"]:
            for label in labels_in_order:
                if modality == "all":
                    if len(args.modalities) < 2 or not all((label, m) in features for m in args.modalities):
                        continue
                    feats = np.concatenate([features[(label, m)] for m in args.modalities], axis=1)
                elif (label, modality) in features:
                    feats = features[(label, modality)]
                else:
                    continue
                for pp in ((False, True) if label in pp_labels else (False,)):
                    x = per_participant_standardise(feats, groups) if pp else feats
                    result = loso_probe(x, labels, groups, return_folds=True)
                    rows.append({"modality": modality, "features": label + (" [pp]" if pp else ""),
                                 "dims": int(x.shape[1]), **result})
                    print(f"| {modality} | {rows[-1]['features']} | {result['pooled_macro_f1']:.3f} | "
                          f"{result['fold_macro_f1_mean']:.3f} ± {result['fold_macro_f1_se']:.3f} |", flush=True)

    counts = np.bincount(labels, minlength=2)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True).stdout.strip()
    result = {"data": args.data, "windows": int(index.size), "participants": int(len(set(groups))),
              "fold_order": sorted(set(map(str, groups))), "class_counts": counts.tolist(),
              "settings": {k: v for k, v in vars(args).items() if k != "out"},
              "pretrain_specs": PRETRAIN_SPECS, "pretraining": pretrain_log, "rows": rows,
              "commit": commit, "machine": platform.uname()._asdict(),
              "seconds": round(time.perf_counter() - started, 1)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
