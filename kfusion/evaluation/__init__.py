"""Evaluation: the paper's leave-one-subject-out protocol (Table 1, Figure 3).

``evaluate(dataset, pretrained, rows, targets, out, seed, config)`` runs the rows of Table 1
(:data:`ALL_ROWS`) per target and held-out participant, resumably, into a run folder with
``folds.jsonl``, ``table.md/.csv/.tex`` and ``figure3.png``. Modules: ``rows`` (each row of
Table 1 described once), ``folds`` (every participant-wise split), ``frozen`` (the pretrained
models' fingerprint and their outputs computed once), ``protocol`` (the evaluation, resume),
``metrics`` (accuracy, macro F1), ``stats`` (mean ± standard error, paired t-tests),
``report`` (the paper's Table 1, the report files), ``baselines`` (the hand-crafted row),
``deploy`` (``train_model``: a row's final model on every labelled participant, for
``kfusion train``).
"""

from __future__ import annotations

from kfusion.evaluation.deploy import TrainedModel, train_model
from kfusion.evaluation.folds import Fold, loso_folds
from kfusion.evaluation.metrics import accuracy, fold_metrics, macro_f1
from kfusion.evaluation.protocol import (
    EvaluationConfig,
    FoldRun,
    Pretrained,
    Results,
    collect_results,
    evaluate,
)
from kfusion.evaluation.report import PAPER_TABLE1, ROW_TITLES, TARGETS
from kfusion.evaluation.rows import ALL_ROWS, MECHANISMS, ROWS, Row
from kfusion.evaluation.stats import mean_se, paired_ttest

__all__ = [
    "evaluate", "EvaluationConfig", "Pretrained", "Results", "Fold", "FoldRun", "loso_folds",
    "collect_results", "ALL_ROWS", "TARGETS", "MECHANISMS", "ROW_TITLES", "PAPER_TABLE1",
    "accuracy", "macro_f1", "fold_metrics", "mean_se", "paired_ttest", "train_model", "TrainedModel",
    "ROWS", "Row",
]
