"""The ``kfusion`` command line: each command is a few lines over the public Python API.

The parser and :func:`main` live here; the handlers in :mod:`kfusion.cli.data` (``data``,
``calibrate``), :mod:`kfusion.cli.evaluate` (``demo``, ``evaluate``, ``reproduce``, ``tune``,
``train``), :mod:`kfusion.cli.pretrain` (``pretrain``, ``models``) and :mod:`kfusion.cli.export`
(``export``, ``predict``).
"""

from __future__ import annotations

import argparse
import os
import sys

from kfusion.cli.data import DEMO_SETS, cmd_calibrate, cmd_data_inspect, cmd_data_sources, cmd_data_synth
from kfusion.cli.evaluate import (
    add_parallel_arguments,
    cmd_demo,
    cmd_evaluate,
    cmd_reproduce,
    cmd_train,
    cmd_tune,
)
from kfusion.errors import KfusionError

__all__ = ["DEMO_SETS", "build_parser", "main"]

def build_parser() -> argparse.ArgumentParser:
    from kfusion import __version__

    parser = argparse.ArgumentParser(
        prog="kfusion",
        description="Self-supervised fusion of speech and wearable signals for emotion recognition.")
    parser.add_argument("--version", action="version", version=f"kfusion {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="the whole pipeline on the embedded synthetic data set")
    demo.add_argument("--out", default="runs/demo", help="folder for data, runs and results")
    add_parallel_arguments(demo)
    demo.set_defaults(func=cmd_demo)

    data = commands.add_parser("data", help="read, window and inspect data sets")
    data_commands = data.add_subparsers(dest="data_command", required=True)

    inspect = data_commands.add_parser(
        "inspect", help="participants, durations, windows kept/dropped, labels, problems")
    inspect.add_argument("sources", nargs="+", metavar="SOURCE",
                         help="SCHEME:PATH, e.g. kemocon:PATH or generic:PATH ('kfusion data sources' "
                              "lists them all)")
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    _add_data_options(inspect)
    inspect.set_defaults(func=cmd_data_inspect)

    sources = data_commands.add_parser("sources", help="the data source schemes, one line each")
    sources.set_defaults(func=cmd_data_sources)

    evaluate = commands.add_parser(
        "evaluate", help="leave-one-subject-out evaluation of Table 1's rows (resumable)")
    evaluate.add_argument("--data", dest="sources", nargs="+", required=True, metavar="SOURCE")
    evaluate.add_argument("--pretrained", default="saved",
                          help="folder of <modality>_encoder.keras / fusion_<mechanism>.keras, "
                               "or 'saved' for the shipped models (kfusion models list; default)")
    evaluate.add_argument("--rows", help="comma-separated rows (default: every row the data set's modalities "
                                          "and the models allow: all nine with speech and the four E4 signals)")
    evaluate.add_argument("--targets", help="comma-separated targets (default: every target of the data set)")
    evaluate.add_argument("--out", required=True, help="run folder (re-running resumes)")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--config", help="EvaluationConfig JSON file")
    _add_data_options(evaluate)
    add_parallel_arguments(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)

    reproduce = commands.add_parser(
        "reproduce", help="the paper's whole procedure on the real K-EmoCon, beside its Table 1")
    reproduce.add_argument("--kemocon", required=True, help="the K-EmoCon release folder")
    reproduce.add_argument("--pretraining", nargs="+", metavar="SOURCE",
                           help="unlabelled sources for pretraining (default: K-EmoCon itself)")
    reproduce.add_argument("--out", default="runs/reproduce")
    reproduce.add_argument("--config", help="PipelineConfig JSON file")
    add_parallel_arguments(reproduce)
    reproduce.set_defaults(func=cmd_reproduce)

    _add_synth(data_commands)
    _add_other_commands(commands)
    return parser


def _add_data_options(parser) -> None:
    parser.add_argument("--modalities", help="comma-separated subset of speech,acc,bvp,eda,temp "
                                             "(default: those found in the sources' files)")
    parser.add_argument("--annotations", default="self",
                         choices=["self", "partner", "external", "aggregated_external"],
                        help="K-EmoCon annotation perspective (default: self)")
    parser.add_argument("--meditation", action="store_true",
                        help="WESAD: label meditation as a fourth condition (default: unlabelled)")
    parser.add_argument("--calibration", default="participant", metavar="none|participant|head[:MIN]",
                        help="per-person calibration from each participant's own unlabelled signals: "
                             "none, participant (all of the recording, default) or head:MINUTES "
                             "(its first minutes, default 10)")
    parser.add_argument("--window", type=float, default=4.0, help="window length, s (default 4)")
    parser.add_argument("--overlap", type=float, default=1.0, help="window overlap, s (default 1)")
    parser.add_argument("--missing", choices=["drop", "fill"], default="drop",
                        help="windows lacking a modality: drop them, or zero-fill with a mask")
    parser.add_argument("--skip-bad", action="store_true",
                        help="report participants with bad files and go on")
    parser.add_argument("--cache-dir", default=None, help="window cache (default $KFUSION_CACHE "
                                                          "or ~/.cache/kfusion)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the cache")


def _add_synth(data_commands) -> None:
    synth = data_commands.add_parser(
        "synth", help="write a synthetic data set in K-EmoCon's exact layout")
    synth.add_argument("out", help="output folder")
    synth.add_argument("--participants", type=int, default=DEMO_SETS["data"]["participants"])
    synth.add_argument("--minutes", type=float, default=DEMO_SETS["data"]["minutes"])
    synth.add_argument("--seed", type=int, default=DEMO_SETS["data"]["seed"])
    synth.add_argument("--overwrite", action="store_true",
                       help="replace a data set already in OUT")
    synth.set_defaults(func=cmd_data_synth)


def _add_other_commands(commands) -> None:
    from kfusion.cli.export import add_export_commands
    from kfusion.cli.pretrain import add_models_commands, add_pretrain_commands

    add_pretrain_commands(commands)
    add_models_commands(commands)
    add_export_commands(commands)

    tune = commands.add_parser(
        "tune", help="KerasTuner search of a row's head sizes and learning rate (resumable, distributable)",
        description="Search the learning rate and head sizes of each row on participant-wise inner folds "
                    "(one search per row in OUT/<row>/: trials.csv, trials.md, best_evaluation.json for "
                    "'kfusion evaluate --config', best_pipeline.json for 'kfusion reproduce --config'). "
                    "Distributed: set KERASTUNER_TUNER_ID (chief / tuner0, tuner1, ...), "
                    "KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT and run the same command in every process.")
    tune.add_argument("--data", dest="sources", nargs="+", required=True, metavar="SOURCE")
    tune.add_argument("--rows", required=True, help="comma-separated rows, one search each")
    tune.add_argument("--target", required=True, help="the target to tune for, e.g. arousal")
    tune.add_argument("--trials", type=int, help="number of trials (default: the config's, 10)")
    tune.add_argument("--out", required=True, help="folder; one run folder per row (re-running resumes)")
    tune.add_argument("--algorithm", choices=["random", "bayesian", "hyperband"])
    tune.add_argument("--held-out", help="comma-separated participants never seen (the outer test folds)")
    tune.add_argument("--pretrained", default="saved",
                      help="folder of <modality>_encoder.keras / fusion_<mechanism>.keras, or 'saved'")
    tune.add_argument("--pretraining", nargs="+", metavar="SOURCE",
                      help="unlabelled sources for trials that pretrain fusion backbones ('with' rows)")
    tune.add_argument("--seed", type=int)
    tune.add_argument("--inner-folds", type=int, help="participant-wise inner folds (default 3)")
    tune.add_argument("--config", help="TuningConfig JSON file (flags override it)")
    _add_data_options(tune)
    tune.set_defaults(func=cmd_tune)

    train = commands.add_parser(
        "train", help="train one row's final model on every labelled participant and save it (.keras + .json)",
        description="Train the emotion model of one learned row of Table 1 on all labelled participants "
                    "(early stopping on a participant-wise validation split) and save one Keras model "
                    "with a head per target, plus a JSON sidecar (row, classes, calibration, configs, "
                    "data fingerprint, versions, training history) beside it.")
    train.add_argument("--data", dest="sources", nargs="+", required=True, metavar="SOURCE")
    train.add_argument("--row", required=True, help="wearable_only, speech_only, <mechanism>_without or "
                                                    "<mechanism>_with (mechanism: unweighted, weighted, attention)")
    train.add_argument("--targets", required=True, help="comma-separated targets, e.g. arousal,valence")
    train.add_argument("--out", required=True, help="model file to write (.keras); the sidecar is <name>.json")
    train.add_argument("--pretrained", default="saved",
                       help="folder of <modality>_encoder.keras / fusion_<mechanism>.keras, or 'saved'")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--config", help="EvaluationConfig JSON file (epochs, batch size, ...)")
    _add_data_options(train)
    train.set_defaults(func=cmd_train)

    calibrate = commands.add_parser(
        "calibrate", help="per-person calibration statistics (mean/std per channel) as JSON for apps "
                          "and 'kfusion predict --calibration'")
    calibrate.add_argument("--data", dest="sources", nargs=1, required=True, metavar="SOURCE")
    calibrate.add_argument("--participant", help="only this participant (default: all)")
    calibrate.add_argument("--head", type=float, metavar="MINUTES",
                           help="from the first MINUTES of each recording (default: as --calibration says)")
    calibrate.add_argument("--out", required=True, help="calibration JSON file to write")
    _add_data_options(calibrate)
    calibrate.set_defaults(func=cmd_calibrate)


#: Commands that never start TensorFlow (data only).
_WITHOUT_TENSORFLOW = ("cmd_data_inspect", "cmd_data_sources", "cmd_data_synth", "cmd_calibrate")


def _start_tensorflow_quietly(multiworker: bool = False) -> None:
    """Import TensorFlow and initialise its devices with the process's stderr (fd 2) sent to a
    temporary file: TensorFlow's C++ start-up lines (oneDNN, CUDA probing on a machine without
    a GPU) are printed before its logging honours ``TF_CPP_MIN_LOG_LEVEL``. They are shown if
    the start fails. ``multiworker``: create the process's MultiWorkerMirroredStrategy first
    (``--strategy multiworker``), which must come before TensorFlow's first operation."""
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    started = False
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            import tensorflow as tf

            if multiworker:
                from kfusion.training.distributed import resolve_strategy

                resolve_strategy("multiworker")
            tf.constant(0)  # device initialisation logs here
            started = True
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if not started:
                sink.seek(0)
                sys.stderr.write(sink.read().decode(errors="replace"))


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # the command line as given (recorded by kfusion train)
    if getattr(args.func, "__name__", "") not in _WITHOUT_TENSORFLOW and "tensorflow" not in sys.modules:
        _start_tensorflow_quietly(getattr(args, "strategy", None) == "multiworker")
    try:
        return args.func(args)
    except KfusionError as err:
        print(f"kfusion: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kfusion: interrupted; finished work is kept and a re-run resumes it",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
