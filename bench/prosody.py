"""Benchmark: what the speech prosody levels cost, in the data path and on phones.

Prints one table and writes ``bench/results/prosody.json``:

- numpy, per 4 s window: :func:`kfusion.data.prosody.window_prosody` beside the MFCCs;
- the in-graph front ends alone (float32 ``.tflite``, one window, LiteRT one thread):
  ``MfccFrontEnd`` and ``ProsodyFrontEnd``;
- the default five-modality level-aware emotion model (random weights, ``unweighted``) exported
  with raw inputs, int8 and float32, with the prosody and flux columns in its levels (the
  default), with prosody only, and without either:
  bytes and ms per window (timed in alternating blocks, so the ratio is the number to trust on
  a shared machine), and how far int8 probabilities are from the float Keras model's.

    .venv/bin/python bench/prosody.py [--runs 200]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
RESULT = HERE / "results" / "prosody.json"

from export import _runner, machine, paired_ms  # noqa: E402


def _per_window_ms(call, n: int, repeats: int = 3) -> float:
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, (time.perf_counter() - start) / n * 1e3)
    return float(best)


def _layer_file(work: Path, name: str, layer) -> Path:
    import keras

    from kfusion.export.tflite import _convert_variant, _front_end_scopes, _saved_model

    inputs = keras.Input((64000,), name="speech")
    model = keras.Model(inputs, {"out": layer(inputs)})
    saved = work / f"layer-{name}"
    _saved_model(model, saved)
    path = work / f"layer-{name}.tflite"
    path.write_bytes(_convert_variant(saved, "none", None, _front_end_scopes(model))[0])
    return path


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--output", type=Path, default=RESULT)
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from kfusion.config import DataConfig
    from kfusion.data.calibration import ChannelStats, speech_extra_names
    from kfusion.data.features import mfcc
    from kfusion.data.prosody import window_prosody
    from kfusion.data.synthetic import write_kemocon_like
    from kfusion.export.prediction import recording_windows
    from kfusion.export.raw_inputs import CALIBRATION_INPUT, raw_input_model
    from kfusion.export.tflite import _window_stats, export_variants
    from kfusion.models import build_fusion_model, emotion_model
    from kfusion.models.feature_layers import MfccFrontEnd, ProsodyFrontEnd
    from kfusion.models.fusion import PRESENCE
    from kfusion.modalities import CHANNELS, MODALITIES

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    work = Path(tempfile.mkdtemp(prefix="kfusion-bench-prosody-"))
    data = write_kemocon_like(work / "synthetic", participants=4, minutes=1.5, seed=0, overwrite=True)
    windows = recording_windows(f"kemocon:{data}", DataConfig())
    audio = np.ascontiguousarray(windows[0].raw["speech"], dtype=np.float32)
    n = audio.shape[0]
    results = {"runs": args.runs, "windows": n}
    results["numpy_ms_per_window"] = {"mfcc": _per_window_ms(lambda: mfcc(audio), n),
                                      "prosody": _per_window_ms(lambda: window_prosody(audio), n)}
    print("numpy ms per window:", results["numpy_ms_per_window"])

    one = {"speech": audio[:1]}
    layers = {"mfcc": _layer_file(work, "mfcc", MfccFrontEnd(name="speech_mfcc")),
              "prosody": _layer_file(work, "prosody", ProsodyFrontEnd(name="speech_prosody"))}
    timed = paired_ms({k: _runner(p, one) for k, p in layers.items()}, args.runs, args.warmup)
    results["front_ends_alone"] = {k: {"bytes": p.stat().st_size, "ms": timed[k][0], "p90_ms": timed[k][1]}
                                   for k, p in layers.items()}
    print("front ends alone:", results["front_ends_alone"])

    plain = sum(2 * (40 if m == "speech" else CHANNELS[m]) for m in MODALITIES)
    files, models = {}, {}
    variants = {"without prosody": (False, False), "with prosody": (True, False),
                "with prosody and flux": (True, True)}
    for label, (prosody, flux) in variants.items():
        width = plain + len(speech_extra_names(prosody, flux))
        keras.utils.set_random_seed(0)
        models[label] = emotion_model(build_fusion_model(mechanism="unweighted"), levels=width)
        paths = export_variants(models[label], work / label.replace(" ", "_"), ("none", "int8"), raw_inputs=(True,),
                                representative=windows, name="unweighted")
        files[label] = {q: paths[(True, q)] for q in ("none", "int8")}
    inputs = {}
    w = windows[0]
    for label, model in models.items():
        raw = raw_input_model(model)
        block = {m: np.ascontiguousarray(w.raw[m], dtype=np.float32) for m in MODALITIES}
        block[PRESENCE] = np.ones((n, len(MODALITIES)), np.float32)
        shapes = {t.name: tuple(t.shape[1:]) for t in raw.inputs}
        for m in MODALITIES:  # the participant's own statistics, as the int8 ranges were calibrated
            name = CALIBRATION_INPUT.format(m)
            stats = _window_stats(m, w.raw[m], w.presence[m], *variants[label]) or ChannelStats.identity(
                shapes[name][-1])
            block[name] = np.repeat(stats.rows(shapes[name][0])[None], n, 0)
        inputs[label] = block
        reference = raw(block)
        runner = Interpreter(model_path=str(files[label]["int8"])).get_signature_runner()
        worst = 0.0
        for i in range(n):
            got = runner(**{k: v[i:i + 1] for k, v in block.items()})
            worst = max(worst, max(float(np.abs(got[t] - np.asarray(reference[t])[i:i + 1]).max()) for t in got))
        results.setdefault("int8_max_probability_error", {})[label] = worst
    rows = []
    for q in ("none", "int8"):
        calls = {label: _runner(files[label][q], {k: v[:1] for k, v in inputs[label].items()}) for label in files}
        timed = paired_ms(calls, args.runs, args.warmup)
        for label in files:
            rows.append({"variant": "float32" if q == "none" else q, "levels": label,
                         "bytes": files[label][q].stat().st_size, "ms": timed[label][0], "p90_ms": timed[label][1]})
    results["raw_level_aware_unweighted"] = rows
    for r in rows:
        print(f"raw {r['variant']:8s} {r['levels']:22s} {r['bytes']:8d} bytes {r['ms']:.3f} ms (p90 {r['p90_ms']:.3f})")
    print("int8 max |probability error| vs float Keras:", results["int8_max_probability_error"])

    results["machine"] = machine()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")
    return results


if __name__ == "__main__":
    main()
