"""How much each modality of the synthetic set tells, and how strong its wrist effects are.

For each data seed, writes the demo's evaluation set (``write_kemocon_like``, 12 people x 6 min),
builds it with the default data config (participant calibration) and prints:

- leave-one-subject-out macro F1 of a logistic regression (``bench/probe.py``'s ``loso_probe``)
  on the hand-crafted features of speech, of the wrist, and of both, standardised per person
  (``kfusion.evaluation.baselines``), per target: whether the modalities hold complementary
  information a fused row could find;
- within-person effect sizes of wrist features (mean over people of (mean in the high state -
  mean in the others) / the person's standard deviation): arousal high vs other, valence high vs
  low; with ``--stress-predict PATH`` the same for Stress-Predict's stress vs rest.

Writes ``bench/results/synthetic_balance.json``. Bench section: bench/RESULTS.md, "The synthetic
wrist signals, sized like real ones".

    .venv/bin/python bench/synthetic_balance.py --seeds 0 1 [--stress-predict ../shared/data/stress-predict]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from export import machine  # noqa: E402
from probe import loso_probe  # noqa: E402

WEARABLES = ("acc", "bvp", "eda", "temp")
#: Wrist features whose effect sizes are printed: NeuroKit2 physiology and calibrated levels.
EFFECT_FEATURES = ("bvp_hr_mean", "bvp_rmssd", "L_bvp_logstd", "eda_tonic_mean", "eda_scr_rate",
                   "L_eda_logstd", "temp_mean", "temp_slope", "acc_activity", "L_acc_y_logstd")


def _columns(dataset) -> dict[str, np.ndarray]:
    """The wrist features of :data:`EFFECT_FEATURES` as ``{name: [N]}``."""
    from kfusion.data.calibration import level_names

    physio = np.asarray(dataset.physio, dtype=np.float64)
    out = {n: physio[:, i] for i, n in enumerate(dataset.physio_names) if n in EFFECT_FEATURES}
    for m in WEARABLES:
        levels = np.asarray(dataset.levels[m], dtype=np.float64)
        for name, column in zip(level_names(m, levels.shape[1] // 2), levels.T):
            short = "L_" + name.replace("_level", "")
            if short in EFFECT_FEATURES:
                out[short] = column
    return out


def within_person_effects(dataset, labels: np.ndarray, high, low) -> dict[str, float]:
    """Mean over people of (mean where ``high(labels)`` - mean where ``low(labels)``) / SD."""
    people = np.asarray(dataset.participants)
    out = {}
    for name, values in _columns(dataset).items():
        sizes = []
        for person in np.unique(people):
            rows = people == person
            spread = np.nanstd(values[rows])
            up, down = rows & high(labels), rows & low(labels)
            if up.sum() > 3 and down.sum() > 3 and spread > 0:
                sizes.append((np.nanmean(values[up]) - np.nanmean(values[down])) / spread)
        out[name] = round(float(np.mean(sizes)), 2) if sizes else None
    return out


def modality_probe(dataset) -> dict[str, dict[str, float]]:
    """``{target: {"speech" | "wrist" | "both": macro F1}}`` of the LOSO regression."""
    from kfusion.evaluation.baselines import calibrate_features, handcrafted_features

    people, starts = np.asarray(dataset.participants), np.asarray(dataset.starts)
    physio = np.asarray(dataset.physio, dtype=np.float64)

    def features(modalities):
        keep = [i for i, n in enumerate(dataset.physio_names) if n.split("_")[0] in modalities]
        x, _ = handcrafted_features({m: dataset.inputs[m] for m in modalities},
                                    {m: dataset.presence[m] for m in modalities},
                                    {m: dataset.levels[m] for m in modalities}, physio[:, keep],
                                    [dataset.physio_names[i] for i in keep])
        return calibrate_features(x, people, starts, "participant")

    sets = {"speech": features(("speech",)), "wrist": features(WEARABLES)}
    sets["both"] = np.concatenate([sets["speech"], sets["wrist"]], axis=1)
    out = {}
    for target, labels in dataset.labels.items():
        rows = labels >= 0
        out[target] = {k: round(loso_probe(x[rows], labels[rows], people[rows])["fold_macro_f1_mean"], 4)
                       for k, x in sets.items()}
    return out


def main(argv=None) -> dict:
    from kfusion.config import DataConfig
    from kfusion.data.dataset import build_dataset
    from kfusion.data.synthetic import write_kemocon_like

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--stress-predict", default=None, help="Stress-Predict folder, for its effect sizes")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "synthetic_balance.json")
    args = parser.parse_args(argv)
    results = {"seeds": {}}
    with tempfile.TemporaryDirectory() as work:
        for seed in args.seeds:
            root = write_kemocon_like(Path(work) / f"seed{seed}", participants=12, minutes=6.0, seed=seed)
            data = build_dataset(f"kemocon:{root}", DataConfig(), cache_dir=Path(work) / "cache", progress=False)
            probe = modality_probe(data)
            arousal = within_person_effects(data, data.labels["arousal"], lambda y: y == 2,
                                            lambda y: (y >= 0) & (y < 2))
            valence = within_person_effects(data, data.labels["valence"], lambda y: y == 2, lambda y: y == 0)
            results["seeds"][seed] = {"probe": probe, "effects_arousal": arousal, "effects_valence": valence}
            print(f"seed {seed}: LOSO macro F1 speech / wrist / both")
            for target, row in probe.items():
                print(f"  {target:8s} {row['speech']:.3f} / {row['wrist']:.3f} / {row['both']:.3f}"
                      f"   wrist/speech {row['wrist'] / row['speech']:.2f}")
            print("  within-person effect, arousal / valence:",
                  ", ".join(f"{k} {arousal[k]} / {valence[k]}" for k in arousal))
    if args.stress_predict:
        data = build_dataset(f"stresspredict:{args.stress_predict}", DataConfig(modalities=WEARABLES), progress=False)
        stress = within_person_effects(data, data.labels["stress"], lambda y: y == 1, lambda y: y == 0)
        results["stress_predict_effects_stress"] = stress
        print("Stress-Predict within-person effect, stress vs rest:",
              ", ".join(f"{k} {v}" for k, v in stress.items()))
    results["machine"] = machine()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
