"""Benchmark: the speech path on an acted-speech test bed made with espeak-ng.

No real speech-emotion corpus is on this machine, so this writes one in the shape of the
acted corpora users bring (EmoDB: 10 speakers, 7 emotions, short sentences, two takes), in
kfusion's ``generic:`` layout (one concatenated ``audio.wav`` per speaker + ``labels.csv``), as
a user converting such a corpus would. Emotions are prosodic profiles (rate, pitch, pitch range,
loudness) with per-utterance jitter; each speaker gets a voice variant and baselines (rate,
pitch, range, loudness, microphone gain, noise) as large as the emotion effects. Synthetic
speech with real formants and phonetic variation: closer to people than kfusion's own
generator, and still written by us (what it rewards is prosody by construction).

Then runs ``kfusion.evaluate`` (speech_only and hand-crafted rows, leave-one-speaker-out) with
the default config and with the previous fixed batch size, and scikit-learn probes: logistic
regression on the window levels, on the levels standardised per speaker over the speaker's
windows (the "plain statistics, per-person standardised" baseline of issue 11), and on the
hand-crafted features.

    apt-get install espeak-ng          # once; not a kfusion dependency
    .venv/bin/python bench/speech_testbed.py [--out /tmp/speech-testbed] [--seed 0]

Writes ``bench/results/speech_testbed.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import time
import wave
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from scipy.signal import resample_poly  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
RATE = 16000
START = 1_600_000_000.0
VOICES = ("de+m1", "de+m3", "de+m5", "de+m7", "de+f1", "de+f2", "de+f3", "de+f4", "de+Andy", "de+Annie")
# Ten everyday German sentences of our own, 1.5-4 s when spoken.
TEXTS = ("Der Schlüssel liegt auf dem Küchentisch.", "Morgen fahren wir mit dem Zug nach Hamburg.",
         "Ich habe den Brief gestern abgeschickt.", "Die Katze schläft den ganzen Nachmittag auf dem Sofa.",
         "Um acht Uhr beginnt die Sitzung im zweiten Stock.", "Hast du die Fenster im Wohnzimmer geschlossen?",
         "Wir bringen die leeren Flaschen später zum Container.",
         "Am Wochenende war ich bei meiner Schwester auf dem Land.",
         "Er wollte nur kurz Brot holen und ist noch nicht zurück.", "Das Paket steht seit Montag vor der Tür.")
# emotion: (rate %, pitch %, pitch range %, loudness factor) relative to neutral
EMOTIONS = {"anger": (12, 8, 140, 1.6), "boredom": (-12, -8, 60, 0.8), "disgust": (-8, -4, 110, 1.0),
            "fear": (18, 20, 120, 1.2), "happiness": (8, 15, 150, 1.4), "sadness": (-18, -6, 70, 0.7),
            "neutral": (0, 0, 100, 1.0)}
AROUSAL = {"anger": "high", "boredom": "low", "disgust": "neutral", "fear": "high", "happiness": "high",
           "sadness": "low", "neutral": "neutral"}


def _say(voice: str, text: str, rate: float, pitch: float, span: float, loudness: float) -> np.ndarray:
    ssml = (f'<speak><prosody rate="{rate:.0f}%" pitch="{pitch:+.0f}%" range="{span:.0f}%">'
            f"{text}</prosody></speak>")
    out = subprocess.run(["espeak-ng", "-v", voice, "-m", "-a", f"{min(200.0, 100 * loudness):.0f}",
                          "--stdout", ssml], capture_output=True, check=True).stdout
    with wave.open(io.BytesIO(out)) as w:
        rate_hz = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
    return resample_poly(x, RATE, rate_hz).astype(np.float32)


def write_testbed(out: Path, seed: int = 0) -> Path:
    """The test bed in the generic: layout under ``out`` (same seed -> same files)."""
    rng = np.random.default_rng(seed)
    for k, voice in enumerate(VOICES):
        base = {"rate": rng.normal(0, 10), "pitch": rng.normal(0, 12), "span": rng.normal(0, 15),
                "loud": np.exp(rng.normal(0, 0.25)), "gain": np.exp(rng.normal(0, 0.5)),
                "noise": 10 ** rng.uniform(-3.5, -2.5)}
        items = [(e, t, take) for e in EMOTIONS for t in range(len(TEXTS)) for take in range(2)]
        rng.shuffle(items)
        pieces, rows, now = [], [], 0.0
        for emotion, t, _ in items:
            r, p, s, a = EMOTIONS[emotion]
            x = base["gain"] * _say(voice, TEXTS[t], 100 + r + base["rate"] + rng.normal(0, 6),
                                    p + base["pitch"] + rng.normal(0, 6), s + base["span"] + rng.normal(0, 15),
                                    a * base["loud"] * np.exp(rng.normal(0, 0.15)))
            gap = np.zeros(int(RATE * rng.uniform(0.3, 0.8)), np.float32)
            rows.append((now, now + len(x) / RATE, emotion, AROUSAL[emotion]))
            pieces += [x, gap]
            now += (len(x) + len(gap)) / RATE
        audio = np.concatenate(pieces)
        audio = np.clip(audio + rng.normal(0, base["noise"], audio.shape).astype(np.float32), -1, 1)
        folder = out / f"{k + 3:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        with wave.open(str(folder / "audio.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes((audio * 32767).astype(np.int16).tobytes())
        (folder / "audio.json").write_text(json.dumps({"start": START}))
        lines = ["start,end,emotion,arousal"] + [f"{START + a:.3f},{START + b:.3f},{e},{ar}" for a, b, e, ar in rows]
        (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    (out / "dataset.json").write_text(json.dumps({
        "label_scheme": "classes",
        "labels": {"emotion": {"classes": list(EMOTIONS)}, "arousal": {"classes": ["low", "neutral", "high"]}},
        "description": "espeak-ng acted-speech test bed (bench/speech_testbed.py)"}))
    return out


def probes(dataset) -> dict:
    """Leave-one-speaker-out macro F1 of logistic regressions on fixed feature sets."""
    import warnings

    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from kfusion.evaluation.baselines import calibrate_features
    from kfusion.evaluation.frozen import dataset_handcrafted_features

    parts = np.asarray(dataset.participants)
    levels = np.asarray(dataset.levels["speech"], np.float64)
    hand, _ = dataset_handcrafted_features(dataset)
    sets = {"LR on window levels": levels, "LR on window levels, per-speaker standardised":
            calibrate_features(levels, parts, dataset.starts), "LR on hand-crafted features": hand}
    out = {}
    for target, y in dataset.labels.items():
        labelled = y >= 0
        for name, x in sets.items():
            scores = []
            for p in np.unique(parts[labelled]):
                train, test = labelled & (parts != p), labelled & (parts == p)
                model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model.fit(x[train], y[train])
                scores.append(f1_score(y[test], model.predict(x[test]), average="macro"))
            out.setdefault(name, {})[target] = round(float(np.mean(scores)), 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="/tmp/speech-testbed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=str(RESULTS / "speech_testbed.json"))
    args = parser.parse_args()
    if shutil.which("espeak-ng") is None:
        raise SystemExit("speech_testbed: espeak-ng not found (apt-get install espeak-ng)")
    from kfusion.config import DataConfig
    from kfusion.data.dataset import build_dataset
    from kfusion.evaluation import EvaluationConfig, evaluate
    from kfusion.pipeline import shipped_pretrained
    from kfusion.runs import package_versions

    out = Path(args.out)
    data = out / "data"
    if not (data / "dataset.json").exists():
        write_testbed(data, args.seed)
    dataset = build_dataset(f"generic:{data}", DataConfig(modalities=("speech",)), cache_dir=out / "cache",
                            progress=False)
    pretrained = shipped_pretrained(("speech",))
    table = {}
    for label, config in (("batch 256 (previous default)", EvaluationConfig(batch_size=256)),
                          ("batch auto (default)", EvaluationConfig())):
        started = time.perf_counter()
        results = evaluate(dataset, pretrained, rows=("speech_only", "handcrafted"), targets=("arousal", "emotion"),
                           out=out / "runs" / label.split(" (")[0].replace(" ", "_"), seed=args.seed,
                           config=config, progress=False)
        f1 = results.table[results.table.metric == "f1"]
        for r in f1.itertuples():
            name = ("Hand-crafted row (LR)" if r.row == "handcrafted" else f"speech_only row, {label}")
            table.setdefault(name, {})[r.target] = round(float(r.mean), 4)
        print(f"{label}: {time.perf_counter() - started:.0f} s", flush=True)
    table.update(probes(dataset))
    print(f"\n{'macro F1, leave-one-speaker-out':62s} {'arousal':>8s} {'emotion':>8s}")
    for name, scores in table.items():
        print(f"{name:62s} {scores['arousal']:8.3f} {scores['emotion']:8.3f}")
    document = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "versions": package_versions(),
                "windows": int(len(dataset.participants)), "speakers": len(set(dataset.participants)),
                "seed": args.seed, "macro_f1": table}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
