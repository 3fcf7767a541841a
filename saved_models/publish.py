"""Copy finished pretraining runs into ``saved_models/<name>/`` with ``card.json`` and ``MODEL_CARD.md``.

This folder is the one source of the shipped weights: building the package (``setup.py``) copies
every model folder into ``kfusion/shipped_models/``, so wheels carry them.

    .venv/bin/python saved_models/publish.py encoders RUN_DIR --data-name "Stress-Predict (35 people)" \
        --command "kfusion pretrain encoders ..." --commit SHA [--synthetic]
    .venv/bin/python saved_models/publish.py speech RUN_DIR ...
    .venv/bin/python saved_models/publish.py fusion RUN_DIR ...
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent

STRESS_PREDICT_LICENCE = (
    "Stress-Predict data set, MIT licence. Cite: T. Iqbal, A. J. Simpkin, D. Roshan, N. Glynn, "
    "J. Killilea, J. Walsh, G. Molloy, S. Ganly, H. Ryman, E. Coen, A. Elahi, W. Wijns, A. Shahzad, "
    "\"Stress Monitoring Using Wearable Sensors: A Pilot Study and Stress-Predict Dataset\", "
    "Sensors 22(21):8135, 2022.")
SYNTHETIC_NOTE = (
    "SYNTHETIC data: `kfusion.data.synthetic.write_kemocon_like(participants=8, minutes=3, seed=1)` "
    "(a different seed from the demo's evaluation set, seed 0, so the demo never sees these "
    "participants). No free real speech corpus was at hand; these weights only show the pipeline "
    "end to end and carry no knowledge of real speech or physiology.")


def _progress(stage_dir: Path) -> dict:
    return json.loads((stage_dir / "progress.json").read_text())


def _card(name: str, info: dict, run: Path, stage_dir: Path, files: dict, args, title: str, extra: str = ""):
    folder = HERE / name
    folder.mkdir(parents=True, exist_ok=True)
    for target, source in files.items():
        shutil.copy2(source, folder / target)
    config = json.loads((run / "config.json").read_text())
    data = json.loads((run / "data.json").read_text())
    progress = _progress(stage_dir)
    last = progress["history"][-1]
    card = {"name": name, **info, "data": args.data_name, "synthetic": args.synthetic,
            "run_config": config, "data_fingerprint": data.get("fingerprint"), "commit": args.commit,
            "epochs": progress["epochs_done"], "final_metrics": last, "command": args.command,
            "licence": None if args.synthetic else STRESS_PREDICT_LICENCE}
    (folder / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    losses = ", ".join(f"{h['loss']:.4f}" for h in progress["history"])
    lines = [
        f"# {name}", "", title, "",
        f"- **Kind**: {info['kind']}" + (f" ({info.get('modality')})" if info.get("modality") else ""),
        f"- **File**: `{info['file']}` (load with `kfusion.saved_models.load(\"{name}\")`)",
        f"- **Data**: {args.data_name}" + (" — **synthetic**" if args.synthetic else ""),
        f"- **Data fingerprint**: `{data.get('fingerprint')}`",
        f"- **Trained at commit**: `{args.commit}` (git rev-parse HEAD of the repository)",
        f"- **Epochs**: {progress['epochs_done']}; loss per epoch: {losses}",
        f"- **Final metrics**: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(last.items())
                                             if not k.startswith(("eda_", "acc_", "bvp_", "temp_", "speech_",
                                                                  "val_eda", "val_acc", "val_bvp", "val_temp",
                                                                  "val_speech"))),
        "", "## Reproduce", "", "From the repository root (`/work/main`):", "", "```",
        args.command, "```", "",
        "## Config", "", "```json", json.dumps(config, indent=2), "```", "",
    ]
    if extra:
        lines += [extra, ""]
    lines += ["## Data licence", "", SYNTHETIC_NOTE if args.synthetic else STRESS_PREDICT_LICENCE, ""]
    (folder / "MODEL_CARD.md").write_text("\n".join(lines))
    print(f"wrote {folder}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("stage", choices=["encoders", "speech", "fusion"])
    parser.add_argument("run", type=Path)
    parser.add_argument("--data-name", required=True)
    parser.add_argument("--command", required=True)
    parser.add_argument("--commit", required=True)
    parser.add_argument("--synthetic", action="store_true")
    parser.add_argument("--suffix", default="")
    args = parser.parse_args(argv)
    run = args.run
    if args.stage == "encoders":
        for modality in json.loads((run / "config.json").read_text())["modalities"]:
            _card(f"sigrep-{modality}{args.suffix}", {"kind": "sigrep-encoder", "modality": modality,
                                                      "file": "encoder.keras"},
                  run, run / modality, {"encoder.keras": run / f"{modality}_encoder.keras"}, args,
                  f"SigRep encoder for {modality.upper()} windows (4 s, z-scored per window), "
                  "pretrained contrastively (two augmented views, NT-Xent; projection head dropped). "
                  "Input `[B, T, C]`, output a 40-d embedding.")
    elif args.stage == "speech":
        _card(f"speech-autoencoder{args.suffix}", {"kind": "speech-encoder", "modality": "speech",
                                                   "file": "encoder.keras"},
              run, run / "speech", {"encoder.keras": run / "speech_encoder.keras",
                                    "autoencoder.keras": run / "speech_autoencoder.keras"}, args,
              "Sparse MFCC autoencoder's encoder: `[B, 400, 40]` CMVN MFCC frames -> 40-d code. "
              "`autoencoder.keras` holds the whole autoencoder.",
              "To retrain on real speech (e.g. VoxCeleb, a tree `id*/<video>/*.wav`):\n\n"
              "```\nkfusion pretrain speech --data audio:/path/to/voxceleb1/wav --out runs/speech-vox "
              "--epochs 20 --batch-size 64\n```")
    else:
        for mechanism in json.loads((run / "config.json").read_text())["mechanisms"]:
            _card(f"fusion-{mechanism}{args.suffix}", {"kind": "fusion-pretraining", "modality": None,
                                                       "mechanism": mechanism, "file": "model.keras"},
                  run, run / mechanism, {"model.keras": run / f"fusion_{mechanism}.keras",
                                         "backbone.keras": run / f"fusion_{mechanism}_backbone.keras",
                                         "target_scaler.json": run / f"fusion_{mechanism}_target_scaler.json"},
                  args, f"Fusion network ({mechanism}) pretrained on masked-span statistics (40 heads, MAE). "
                  "`model.keras` = backbone + heads, `backbone.keras` = inputs -> projection, "
                  "`target_scaler.json` = target standardisation fitted on the training participants.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
