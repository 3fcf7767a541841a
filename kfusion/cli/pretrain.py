"""``kfusion pretrain encoders|speech|fusion`` and ``kfusion models list``: argparse glue over
:mod:`kfusion.training.pretrain` and :mod:`kfusion.saved_models`.

:mod:`kfusion.cli` calls :func:`add_pretrain_commands` and :func:`add_models_commands` on its
sub-parsers.
"""

from __future__ import annotations

import argparse
import json

from kfusion.errors import ConfigError

__all__ = ["add_pretrain_commands", "add_models_commands"]


def _common(parser: argparse.ArgumentParser, with_temperature: bool = False, with_mask: bool = False):
    parser.add_argument("--data", dest="sources", nargs="+", required=True, metavar="SOURCE",
                        help="data sources SCHEME:PATH (several are read together)")
    parser.add_argument("--out", required=True, help="run folder (re-running resumes it)")
    parser.add_argument("--config", metavar="FILE", help="JSON config file; flags given override it")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--max-windows", type=int, help="at most this many training windows (0 = all)")
    if with_temperature:
        parser.add_argument("--temperature", type=float, help="NT-Xent temperature")
    if with_mask:
        parser.add_argument("--mask-ratio", type=float, nargs=2, metavar=("LO", "HI"),
                            help="masked span as a fraction of the window")
    parser.add_argument("--tensorboard", action="store_true", help="write TensorBoard logs into the run folder")
    parser.add_argument("--cache-dir", help="data-set cache folder")
    parser.add_argument("--quiet", action="store_true", help="no Keras progress bars")
    parser.add_argument("--strategy", choices=("default", "multiworker"), default="default",
                        help="multiworker: tf.distribute.MultiWorkerMirroredStrategy over the workers in "
                        "TF_CONFIG (run the same command on each; the chief writes --out)")


_FLAGS = ("epochs", "batch_size", "learning_rate", "seed", "max_windows", "temperature", "mask_ratio")


def _config(cls, args):
    base = cls.load(args.config) if args.config else cls()
    changes = {k: getattr(args, k) for k in _FLAGS if getattr(args, k, None) is not None}
    if "mask_ratio" in changes:
        changes["mask_ratio"] = tuple(changes["mask_ratio"])
    return base.replace(**changes)


def _verbose(args):
    return 0 if args.quiet else "auto"


def cmd_pretrain_encoders(args) -> int:
    from kfusion.training.pretrain import EncoderPretrainConfig, pretrain_encoders

    config = _config(EncoderPretrainConfig, args)
    modalities = tuple(args.modalities.split(",")) if args.modalities else None
    kwargs = {"modalities": modalities} if modalities else {}
    paths = pretrain_encoders(args.sources, args.out, config, cache_dir=args.cache_dir,
                              tensorboard=args.tensorboard, verbose=_verbose(args), strategy=args.strategy,
                              **kwargs)
    for modality, path in paths.items():
        print(f"{modality}: {path}")
    return 0


def cmd_pretrain_speech(args) -> int:
    from kfusion.training.pretrain import SpeechPretrainConfig, pretrain_speech

    paths = pretrain_speech(args.sources, args.out, _config(SpeechPretrainConfig, args),
                            cache_dir=args.cache_dir, tensorboard=args.tensorboard, verbose=_verbose(args),
                            strategy=args.strategy)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def cmd_pretrain_fusion(args) -> int:
    from kfusion.training.pretrain import FusionPretrainConfig, pretrain_fusion

    config = _config(FusionPretrainConfig, args)
    if args.modalities:
        config = config.replace(modalities=tuple(args.modalities.split(",")))
    encoders = args.encoders
    if encoders and "=" in encoders:  # acc=PATH,bvp=NAME,...
        try:
            encoders = dict(item.split("=", 1) for item in encoders.split(","))
        except ValueError:
            raise ConfigError(f"--encoders: expected a folder or MODALITY=PATH,..., found {args.encoders!r}") from None
    mechanisms = args.mechanisms.split(",") if args.mechanisms else None
    results = pretrain_fusion(args.sources, args.out, config, encoders=encoders,
                              speech_encoder=args.speech_encoder, mechanisms=mechanisms,
                              cache_dir=args.cache_dir, tensorboard=args.tensorboard, verbose=_verbose(args),
                              strategy=args.strategy)
    for mechanism, paths in results.items():
        print(f"{mechanism}: {paths['model']} (backbone {paths['backbone'].name}, scaler {paths['scaler'].name})")
    return 0


def add_pretrain_commands(subparsers) -> argparse.ArgumentParser:
    """Register ``pretrain encoders|speech|fusion``; each sub-parser sets ``func``."""
    pretrain = subparsers.add_parser("pretrain", help="self-supervised pretraining stages")
    stages = pretrain.add_subparsers(dest="stage", required=True)

    encoders = stages.add_parser("encoders", help="stage 1a: contrastive SigRep encoders per wearable modality")
    _common(encoders, with_temperature=True)
    encoders.add_argument("--modalities", help="comma-separated wearables (default acc,bvp,eda,temp)")
    encoders.set_defaults(func=cmd_pretrain_encoders)

    speech = stages.add_parser("speech", help="stage 1b: sparse MFCC autoencoder "
                               "(sources: kemocon:/generic: data sets or audio folders)")
    _common(speech)
    speech.set_defaults(func=cmd_pretrain_speech)

    fusion = stages.add_parser("fusion", help="stage 2: masked-statistics fusion pretraining")
    _common(fusion, with_mask=True)
    fusion.add_argument("--encoders", help="folder of `pretrain encoders`, or MODALITY=PATH|NAME,...")
    fusion.add_argument("--speech-encoder", help="folder of `pretrain speech`, a .keras file or a saved-model name")
    fusion.add_argument("--mechanisms", help="comma-separated: unweighted,weighted,attention (default all)")
    fusion.add_argument("--modalities", help="comma-separated modalities (default all five)")
    fusion.set_defaults(func=cmd_pretrain_fusion)
    return pretrain


def cmd_models_list(args) -> int:
    from kfusion.saved_models import list_models

    models = list_models()
    if args.json:
        print(json.dumps(models, indent=2))
        return 0
    if not models:
        print("no saved models found")
        return 0
    print(f"{'name':34} {'kind':20} {'modality':10} {'size':>9}  data")
    for m in models:
        print(f"{m['name']:34} {m['kind']:20} {m['modality'] or '-':10} {m['size'] / 1024:8.1f}K  {m['data']}")
    return 0


def add_models_commands(subparsers) -> argparse.ArgumentParser:
    """Register ``models list``."""
    models = subparsers.add_parser("models", help="pretrained weights shipped with kfusion")
    actions = models.add_subparsers(dest="models_action", required=True)
    listing = actions.add_parser("list", help="list the shipped models")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_models_list)
    return models
