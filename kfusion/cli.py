"""The ``kfusion`` command line: each command is a few lines over the public Python API."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from kfusion.errors import KfusionError

DEMO_PARTICIPANTS = 6
DEMO_MINUTES = 2.0
DEMO_SEED = 0


def _data_config(args):
    from kfusion.config import DataConfig, WindowConfig

    from kfusion.data.sources import source_modalities

    kwargs = {"skip_bad": args.skip_bad, "annotations": args.annotations}
    # Without --modalities, use every modality the sources' formats can hold.
    kwargs["modalities"] = (tuple(args.modalities.split(",")) if args.modalities
                            else source_modalities(args.sources))
    window = WindowConfig(seconds=args.window, overlap=args.overlap, missing=args.missing)
    return DataConfig(window=window, **kwargs)


def _cache_dir(args):
    return False if args.no_cache else args.cache_dir


def cmd_data_inspect(args) -> int:
    from kfusion.data.inspect import format_inspection, inspect_source

    info = inspect_source(args.sources, _data_config(args), cache_dir=_cache_dir(args))
    print(json.dumps(info, indent=2, sort_keys=True) if args.json else format_inspection(info))
    return 0


def cmd_data_synth(args) -> int:
    from kfusion.data.synthetic import write_kemocon_like

    out = write_kemocon_like(args.out, participants=args.participants, minutes=args.minutes,
                             seed=args.seed, overwrite=args.overwrite)
    print(f"wrote a synthetic K-EmoCon-layout data set to {out} "
          f"({args.participants} participants x {args.minutes:g} min, seed {args.seed}); "
          f"read it as kemocon:{out}")
    return 0


def cmd_demo(args) -> int:
    from kfusion.config import DataConfig
    from kfusion.data.inspect import format_inspection, inspect_source
    from kfusion.data.synthetic import write_kemocon_like

    started = time.perf_counter()
    data_dir = Path(args.out) / "data"
    # subjects.csv is written last: without it, a previous write was cut short.
    if not (data_dir / "metadata" / "subjects.csv").is_file():
        print(f"[demo] writing the embedded synthetic data set to {data_dir}")
        write_kemocon_like(data_dir, participants=DEMO_PARTICIPANTS, minutes=DEMO_MINUTES,
                           seed=DEMO_SEED, overwrite=True)
    info = inspect_source([f"kemocon:{data_dir}"], DataConfig(),
                          cache_dir=Path(args.out) / "cache")
    print(format_inspection(info))
    print(f"[demo] done in {time.perf_counter() - started:.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from kfusion import __version__

    parser = argparse.ArgumentParser(
        prog="kfusion",
        description="Self-supervised fusion of speech and wearable signals for emotion recognition.")
    parser.add_argument("--version", action="version", version=f"kfusion {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run the main job on the embedded synthetic data set")
    demo.add_argument("--out", default="runs/demo", help="folder for data, cache and results")
    demo.set_defaults(func=cmd_demo)

    data = commands.add_parser("data", help="read, window and inspect data sets")
    data_commands = data.add_subparsers(dest="data_command", required=True)

    inspect = data_commands.add_parser(
        "inspect", help="participants, durations, windows kept/dropped, labels, problems")
    inspect.add_argument("sources", nargs="+", metavar="SOURCE",
                         help="kemocon:PATH, e4:PATH, stresspredict:PATH or generic:PATH")
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    inspect.add_argument("--modalities", help="comma-separated subset of speech,acc,bvp,eda,temp "
                                              "(default: all the sources can hold)")
    inspect.add_argument("--annotations", default="self",
                         choices=["self", "partner", "external", "aggregated_external"],
                         help="K-EmoCon annotation perspective (default: self)")
    inspect.add_argument("--window", type=float, default=4.0, help="window length, s (default 4)")
    inspect.add_argument("--overlap", type=float, default=1.0, help="window overlap, s (default 1)")
    inspect.add_argument("--missing", choices=["drop", "fill"], default="drop",
                         help="windows lacking a modality: drop them, or zero-fill with a mask")
    inspect.add_argument("--skip-bad", action="store_true",
                         help="report participants with bad files and go on")
    inspect.add_argument("--cache-dir", default=None, help="window cache (default $KFUSION_CACHE "
                                                           "or ~/.cache/kfusion)")
    inspect.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    inspect.set_defaults(func=cmd_data_inspect)

    synth = data_commands.add_parser(
        "synth", help="write a synthetic data set in K-EmoCon's exact layout")
    synth.add_argument("out", help="output folder")
    synth.add_argument("--participants", type=int, default=DEMO_PARTICIPANTS)
    synth.add_argument("--minutes", type=float, default=DEMO_MINUTES)
    synth.add_argument("--seed", type=int, default=DEMO_SEED)
    synth.add_argument("--overwrite", action="store_true",
                       help="replace a data set already in OUT")
    synth.set_defaults(func=cmd_data_synth)

    from kfusion.training.cli_pretrain import add_models_commands, add_pretrain_commands

    add_pretrain_commands(commands)
    add_models_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
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
