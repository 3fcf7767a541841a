"""Summaries over folds: mean ± standard error per row and target, and paired t-tests."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

METRICS: tuple[str, ...] = ("accuracy", "f1")


def mean_se(values) -> tuple[float, float]:
    """Mean and standard error (sample std with ddof=1, over sqrt(n)) of per-fold values;
    the standard error is NaN for fewer than two values, both are NaN for none."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 0:
        return math.nan, math.nan
    mean = float(values.mean())
    if values.size < 2:
        return mean, math.nan
    return mean, float(values.std(ddof=1) / math.sqrt(values.size))


def paired_ttest(first: Mapping[str, float], second: Mapping[str, float]) -> dict:
    """Paired Student's t-test (``scipy.stats.ttest_rel``) of two rows' per-fold values keyed
    by fold (held-out participant); only folds in both count.

    Returns ``{"t", "p", "n", "mean_difference"}`` with the difference ``second - first``
    (t > 0: ``second`` is higher). ``t`` and ``p`` are NaN for fewer than two common folds or
    when every difference is the same (zero variance).
    """
    folds = [fold for fold in first if fold in second]
    a = np.array([first[fold] for fold in folds], dtype=np.float64)
    b = np.array([second[fold] for fold in folds], dtype=np.float64)
    difference = float(np.mean(b - a)) if folds else math.nan
    if len(folds) < 2 or np.all(b - a == (b - a)[0]):
        return {"t": math.nan, "p": math.nan, "n": len(folds), "mean_difference": difference}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = scipy_stats.ttest_rel(b, a)
    return {"t": float(result.statistic), "p": float(result.pvalue), "n": len(folds),
            "mean_difference": difference}


def _per_fold(records: Sequence[dict], row: str, target: str, metric: str) -> dict[str, float]:
    return {r["fold"]: float(r[metric]) for r in records if r["row"] == row and r["target"] == target}


def summarize(records: Sequence[dict], rows: Sequence[str], targets: Sequence[str],
              metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """One line per (row, target, metric): ``mean``, ``se`` and ``n_folds`` over the fold
    ``records`` (dicts with ``row``, ``target``, ``fold`` and the metrics), in the given order."""
    lines = []
    for row in rows:
        for target in targets:
            for metric in metrics:
                values = list(_per_fold(records, row, target, metric).values())
                mean, se = mean_se(values)
                lines.append({"row": row, "target": target, "metric": metric, "mean": mean,
                              "se": se, "n_folds": len(values)})
    return pd.DataFrame(lines, columns=["row", "target", "metric", "mean", "se", "n_folds"])


def compare_rows(records: Sequence[dict], pairs: Mapping[str, tuple[str, str]],
                 targets: Sequence[str], metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """Paired t-tests of ``second`` vs ``first`` for every ``name: (first, second)`` of
    ``pairs``, target and metric, over the folds both rows finished. Columns: ``comparison``,
    ``first``, ``second``, ``target``, ``metric``, ``first_mean``, ``second_mean``,
    ``mean_difference`` (second - first), ``t``, ``p``, ``n``."""
    lines = []
    for name, (first, second) in pairs.items():
        for target in targets:
            for metric in metrics:
                a = _per_fold(records, first, target, metric)
                b = _per_fold(records, second, target, metric)
                if not a or not b:
                    continue
                test = paired_ttest(a, b)
                lines.append({"comparison": name, "first": first, "second": second,
                              "target": target, "metric": metric,
                              "first_mean": mean_se(list(a.values()))[0],
                              "second_mean": mean_se(list(b.values()))[0], **test})
    return pd.DataFrame(lines, columns=["comparison", "first", "second", "target", "metric",
                                        "first_mean", "second_mean", "mean_difference", "t", "p", "n"])
