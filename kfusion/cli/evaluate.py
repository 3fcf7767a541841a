"""``kfusion demo|evaluate|reproduce|tune|train``: a few lines each over
:mod:`kfusion.pipeline` and :mod:`kfusion.evaluation`."""

from __future__ import annotations

import os
import time
from pathlib import Path

from kfusion.cli.data import DEMO_SETS, _cache_dir, _data_config

def _print_table(results) -> None:
    table = results.out / "table.md"
    print(table.read_text() if table.is_file() else results.wide().to_string())
    print(f"[kfusion] run folder: {results.out}")


def cmd_demo(args) -> int:
    from kfusion.data.synthetic import write_kemocon_like
    from kfusion.pipeline import PipelineConfig, run_pipeline

    started = time.perf_counter()
    out = Path(args.out)
    sets = {}
    for name, size in DEMO_SETS.items():
        folder = out / name
        # subjects.csv is written last: without it, a previous write was cut short.
        if not (folder / "metadata" / "subjects.csv").is_file():
            print(f"[demo] writing the synthetic K-EmoCon-layout set {folder} ({size['participants']} "
                  f"participants x {size['minutes']:g} min, seed {size['seed']})")
            write_kemocon_like(folder, **size, overwrite=True)
        sets[name] = f"kemocon:{folder}"
    print("[demo] pretraining on one synthetic set (no labels), then leave-one-subject-out "
          "evaluation on the other")
    # Folds in worker processes when the cores allow (the numbers do not depend on it).
    results = run_pipeline(sets["data"], sets["pretraining-data"], out / "run",
                           PipelineConfig.demo(), verbose=0, workers=getattr(args, "workers", None),
                           scheduler=getattr(args, "scheduler", None))
    _print_table(results)
    print(f"[demo] done in {time.perf_counter() - started:.0f} s")
    return 0


def _evaluation_inputs(args):
    """The EvaluationConfig, pretrained models and data set of ``evaluate`` and ``train``."""
    from kfusion.data.dataset import build_dataset
    from kfusion.evaluation import EvaluationConfig, Pretrained
    from kfusion.pipeline import shipped_pretrained

    config = EvaluationConfig.load(args.config) if args.config else EvaluationConfig()
    data_config = _data_config(args)
    pretrained = (shipped_pretrained(data_config.modalities) if args.pretrained == "saved"
                  else Pretrained.load(args.pretrained))
    dataset = build_dataset(args.sources, data_config, cache_dir=_cache_dir(args), progress=True)
    return config, pretrained, dataset


def _default_rows_and_targets(args, dataset, pretrained) -> tuple[list, list]:
    """``--rows`` / ``--targets``, or without them: every row the data set's modalities and the
    models allow, and every target of the data set (the paper's first); says what was left out."""
    from kfusion.evaluation import ALL_ROWS, TARGETS
    from kfusion.evaluation.protocol import available_rows

    rows = args.rows.split(",") if args.rows else list(available_rows(dataset, pretrained))
    if not args.rows and len(rows) < len(ALL_ROWS):
        print(f"[kfusion] rows: {', '.join(rows)} (with modalities {', '.join(dataset.modalities)} "
              f"and these models; not {', '.join(r for r in ALL_ROWS if r not in rows)}; --rows to choose)")
    if args.targets:
        targets = args.targets.split(",")
    else:
        targets = [t for t in TARGETS if t in dataset.labels] + [t for t in dataset.labels if t not in TARGETS]
        print(f"[kfusion] targets: {', '.join(targets) or 'none'} (the data set's; --targets to choose)")
    return rows, targets


def add_parallel_arguments(parser) -> None:
    """``--workers N`` and ``--scheduler ADDRESS`` of ``kfusion evaluate`` (see
    :mod:`kfusion.evaluation.parallel` and docs/cluster.md)."""
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes running folds, one thread each (default: the cores "
                             "available, at most one per 32 folds; 1: one fold after the other in "
                             "this process)")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="a Dask scheduler (tcp://HOST:PORT) whose workers run the folds instead "
                             "(see docs/cluster.md)")


def cmd_evaluate(args) -> int:
    from kfusion.evaluation import evaluate

    # Checked before the data set is built, so a wrong flag fails at once.
    from kfusion.evaluation.parallel import check_workers

    workers, scheduler = check_workers("kfusion evaluate", getattr(args, "workers", None),
                                       getattr(args, "scheduler", None))
    config, pretrained, dataset = _evaluation_inputs(args)
    rows, targets = _default_rows_and_targets(args, dataset, pretrained)
    results = evaluate(dataset, pretrained, rows=rows, targets=targets,
                       out=args.out, seed=args.seed, config=config, workers=workers, scheduler=scheduler)
    _print_table(results)
    return 0


def cmd_reproduce(args) -> int:
    from kfusion.pipeline import PipelineConfig, run_pipeline

    source = f"kemocon:{args.kemocon}"
    config = PipelineConfig.load(args.config) if args.config else PipelineConfig()
    results = run_pipeline(source, args.pretraining or [source], args.out, config,
                           workers=getattr(args, "workers", None), scheduler=getattr(args, "scheduler", None))
    _print_table(results)
    return 0


def cmd_tune(args) -> int:
    from kfusion.data.dataset import build_dataset
    from kfusion.errors import ConfigError
    from kfusion.evaluation import EvaluationConfig, Pretrained
    from kfusion.pipeline import PipelineConfig, shipped_pretrained
    from kfusion.evaluation.tuning import TuningConfig, tune

    config = TuningConfig.load(args.config) if args.config else TuningConfig()
    flags = {"trials": args.trials, "algorithm": args.algorithm, "seed": args.seed,
             "inner_folds": args.inner_folds}
    config = config.replace(**{k: v for k, v in flags.items() if v is not None})
    rows = [r for r in args.rows.split(",") if r]
    if len(rows) != 1 and "KERASTUNER_ORACLE_IP" in os.environ:
        raise ConfigError(f"--rows: distributed tuning serves one search at a time: expected one row, "
                          f"found {', '.join(rows) or 'none'} (start one chief and its workers per row)")
    data_config = _data_config(args)
    pretrained = (shipped_pretrained(data_config.modalities) if args.pretrained == "saved"
                  else Pretrained.load(args.pretrained))
    dataset = build_dataset(args.sources, data_config, cache_dir=_cache_dir(args), progress=True)
    held_out = [p for p in args.held_out.split(",") if p] if args.held_out else ()
    for row in rows:
        result = tune(dataset, pretrained, row, args.target, Path(args.out) / row, config, held_out,
                      args.pretraining, evaluation=EvaluationConfig(),
                      pipeline=PipelineConfig(data=data_config), cache_dir=_cache_dir(args))
        if result.role == "worker":
            print(f"[kfusion] worker {os.environ.get('KERASTUNER_TUNER_ID')} ran {len(result.table)} "
                  f"trial(s): {', '.join(result.table['trial']) if len(result.table) else 'none'}")
            continue
        print((result.out / "trials.md").read_text())
        print(f"[kfusion] run folder: {result.out}")
    return 0


def cmd_train(args) -> int:
    import shlex

    from kfusion.evaluation.deploy import model_sidecar_path, train_model

    config, pretrained, dataset = _evaluation_inputs(args)
    trained = train_model(dataset, pretrained, args.row, [t for t in args.targets.split(",") if t],
                          args.out, config, seed=args.seed,
                          command=shlex.join(["kfusion", *args.argv]))
    for target, info in trained.sidecar["targets"].items():
        run = info["training"]
        print(f"{target}: {info['train_windows']} training / {info['validation_windows']} validation "
              f"windows (validation participants {', '.join(info['validation_participants'])}); "
              f"{run['epochs_run']} epochs, best epoch {run['best_epoch'] + 1} "
              f"(validation loss {run['best_val_loss']:.4f})")
    print(f"wrote {trained.path} ({args.row}, one head per target: {', '.join(trained.sidecar['targets'])}) "
          f"and {model_sidecar_path(trained.path)}")
    return 0
