"""``kfusion data inspect|sources|synth`` and ``kfusion calibrate``: the data-only commands
(none starts TensorFlow), and the DataConfig every data-reading command builds from its options."""

from __future__ import annotations

import json

#: The demo's evaluation set (seed 0) and its smaller pretraining set (seed 1, no labels used).
#: At 8 x 3 min the leave-one-subject-out folds had about 400 training windows and one
#: validation participant, too few to train a head: every row sat near chance.
DEMO_SETS = {"data": {"participants": 12, "minutes": 6.0, "seed": 0},
             "pretraining-data": {"participants": 8, "minutes": 3.0, "seed": 1}}


def _data_config(args):
    from kfusion.config import CalibrationConfig, DataConfig, WindowConfig

    from kfusion.data.sources import source_modalities

    kwargs = {"skip_bad": args.skip_bad, "annotations": args.annotations, "meditation": args.meditation}
    # Without --modalities: the modalities found in the sources' files (an audio-only set is
    # speech-only), or what a source's format holds when its reader cannot tell.
    kwargs["modalities"] = (tuple(args.modalities.split(",")) if args.modalities
                            else source_modalities(args.sources))
    window = WindowConfig(seconds=args.window, overlap=args.overlap, missing=args.missing)
    return DataConfig(window=window, calibration=CalibrationConfig.parse(args.calibration), **kwargs)


def _cache_dir(args):
    return False if args.no_cache else args.cache_dir


def cmd_data_inspect(args) -> int:
    from kfusion.data.inspect import format_inspection, inspect_source

    info = inspect_source(args.sources, _data_config(args), cache_dir=_cache_dir(args))
    print(json.dumps(info, indent=2, sort_keys=True) if args.json else format_inspection(info))
    return 0


def cmd_data_sources(args) -> int:
    from kfusion.data.sources import reader_descriptions

    descriptions = reader_descriptions()
    width = max(len(f"{scheme}:PATH") for scheme in descriptions)
    for scheme, text in descriptions.items():
        print(f"{scheme + ':PATH':<{width}}  {text}")
    return 0


def cmd_data_synth(args) -> int:
    from kfusion.data.synthetic import write_kemocon_like

    out = write_kemocon_like(args.out, participants=args.participants, minutes=args.minutes,
                             seed=args.seed, overwrite=args.overwrite)
    print(f"wrote a synthetic K-EmoCon-layout data set to {out} "
          f"({args.participants} participants x {args.minutes:g} min, seed {args.seed}); "
          f"read it as kemocon:{out}")
    return 0


def cmd_calibrate(args) -> int:
    from kfusion.config import CalibrationConfig
    from kfusion.data.calibration_file import write_calibration

    config = _data_config(args)
    if args.head is not None:
        config = config.replace(calibration=CalibrationConfig(
            wearable="head", speech="head", head_minutes=args.head,
            standardize_levels=config.calibration.standardize_levels))
    participants = [args.participant] if args.participant else None
    document = write_calibration(args.out, args.sources[0], config, participants)
    for pid, found in document["participants"].items():
        parts = [f"{m} {s['seconds']:g} s" for m, s in found.items()]
        print(f"{pid}: {', '.join(parts) or 'nothing calibrated'}"
              + "".join(f"; {n}" for n in document["notes"].get(pid, [])))
    print(f"wrote {args.out} ({config.calibration.describe()}, {len(document['participants'])} participant(s))")
    return 0
