"""``kfusion export`` and ``kfusion predict``: a few lines each over :mod:`kfusion.export`.

:mod:`kfusion.cli` wires them in with ``add_export_commands(subparsers)``.
"""

from __future__ import annotations

import argparse

# The same as kfusion.export.tflite's; repeated so that building the parser imports no TensorFlow.
FORMATS = ("tflite", "savedmodel")
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")


def _representative(sources, model, seed: int):
    """Raw windows of ``sources`` cut for ``model`` (int8 calibration)."""
    from kfusion.config import DataConfig, WindowConfig
    from kfusion.export.prediction import recording_windows
    from kfusion.export.tflite import PRESENCE, model_modalities

    uses_presence = any(t.name.split(":")[0] == PRESENCE for t in model.inputs)
    config = DataConfig(modalities=model_modalities(model),
                        window=WindowConfig(missing="fill" if uses_presence else "drop"))
    windows = []
    for source in sources:
        windows.extend(w for w in recording_windows(source, config) if w.kept)
    return windows


def cmd_export(args) -> int:
    from kfusion.export.tflite import export_model, load_keras_model, trained_classes

    model = load_keras_model(args.model)
    representative = _representative(args.representative, model, args.seed) if args.representative else None
    out = export_model(model, args.out, format=args.format, quantize=args.quantize,
                       representative=representative, raw_inputs=args.raw_inputs,
                       classes=trained_classes(args.model),  # the data set's, from kfusion train
                       representative_size=args.representative_windows, seed=args.seed)
    print(f"wrote {out} ({args.format}, quantization {args.quantize}, "
          f"{'raw' if args.raw_inputs else 'feature'} inputs) and {out.name}.json")
    return 0


def cmd_predict(args) -> int:
    from kfusion.export.prediction import predict

    participants = args.participants.split(",") if args.participants else None
    frame = predict(args.model, args.data, args.out, plot=args.plot, participants=participants,
                    calibration=args.calibration)
    print(f"wrote {args.out}: {len(frame)} windows of {frame['participant'].nunique()} "
          f"participant(s)" + (f"; plot {args.plot}" if args.plot else ""))
    return 0


def add_export_commands(subparsers) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """Register ``export`` and ``predict`` on the ``kfusion`` sub-command parser."""
    export = subparsers.add_parser(
        "export", help="export a trained .keras model for phones (TFLite, builtin ops) or as a SavedModel")
    export.add_argument("--model", required=True, help="trained model (.keras)")
    export.add_argument("--out", required=True, help="output .tflite file or SavedModel folder")
    export.add_argument("--format", choices=FORMATS, default="tflite")
    export.add_argument("--quantize", choices=QUANTIZATIONS, default="none",
                        help="TFLite weights/activations (int8 needs --representative)")
    export.add_argument("--raw-inputs", action="store_true",
                        help="put the MFCC / normalisation front end in the graph: inputs are raw "
                             "16 kHz audio and raw E4 samples")
    export.add_argument("--representative", action="append", metavar="SOURCE", default=[],
                        help="training data for int8 calibration, e.g. kemocon:PATH (repeatable)")
    export.add_argument("--representative-windows", type=int, default=1000,
                        help="calibration windows: all of them up to this many, else an even "
                             "share per participant (default 1000)")
    export.add_argument("--seed", type=int, default=0)
    export.set_defaults(func=cmd_export)

    pred = subparsers.add_parser(
        "predict", help="per-window prediction timeline of a recording (.keras, SavedModel or .tflite)")
    pred.add_argument("--model", required=True, help=".keras file, SavedModel folder or .tflite file")
    pred.add_argument("--data", required=True, metavar="SOURCE",
                      help="kemocon:PATH, e4:PATH, stresspredict:PATH or generic:PATH")
    pred.add_argument("--out", required=True, help="timeline CSV to write")
    pred.add_argument("--plot", help="also write a PNG of the probabilities over time")
    pred.add_argument("--participants", help="comma-separated participant ids (default: all)")
    pred.add_argument("--calibration", metavar="FILE|head:MINUTES",
                      help="per-person calibration for a model with calibrated levels: a file from "
                           "'kfusion calibrate' (each participant's entry, or its only one), head:MINUTES "
                           "(from the first minutes of each recording), participant (all of it) or none")
    pred.set_defaults(func=cmd_predict)
    return export, pred
