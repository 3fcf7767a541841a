"""Per-fold metrics against scikit-learn, fold summaries and t-tests against numpy/scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats
from sklearn.metrics import accuracy_score, f1_score

from kfusion.errors import ConfigError
from kfusion.evaluation.metrics import accuracy, fold_metrics, macro_f1
from kfusion.evaluation.stats import compare_rows, mean_se, paired_ttest, summarize


@pytest.mark.parametrize("case", range(40))
def test_macro_f1_and_accuracy_match_sklearn(case):
    rng = np.random.default_rng(case)
    n_classes = int(rng.integers(2, 7))
    n = int(rng.integers(1, 40))
    # some cases leave classes out of the truth or out of the predictions
    y_true = rng.integers(0, n_classes - (case % 3 == 1), n)
    y_pred = rng.integers(case % 3 == 2, n_classes, n)
    assert macro_f1(y_true, y_pred) == pytest.approx(
        f1_score(y_true, y_pred, average="macro", zero_division=0), abs=1e-12)
    assert accuracy(y_true, y_pred) == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-12)


def test_macro_f1_class_convention():
    # class 2 is neither true nor predicted: left out; class 1 predicted but never true: 0.
    y_true = np.array([0, 0, 0, 0])
    y_pred = np.array([0, 0, 1, 1])
    assert macro_f1(y_true, y_pred) == pytest.approx((2 * 2 / (2 * 2 + 0 + 2) + 0.0) / 2)
    assert macro_f1([1, 1], [1, 1]) == 1.0


def test_fold_metrics_takes_probabilities():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.2, 0.5, 0.3], [0.6, 0.3, 0.1]])
    y_true = np.array([0, 2, 2, 1])
    result = fold_metrics(y_true, probabilities)
    predicted = probabilities.argmax(1)
    assert result == {"accuracy": pytest.approx(0.5), "n_test": 4,
                      "f1": pytest.approx(f1_score(y_true, predicted, average="macro", zero_division=0))}


def test_metrics_bad_input():
    with pytest.raises(ConfigError, match="as many predictions as labels"):
        accuracy([0, 1], [0])
    with pytest.raises(ConfigError, match="at least one labelled window"):
        macro_f1([], [])


def test_mean_se_against_numpy_and_scipy():
    values = np.random.default_rng(3).random(11)
    mean, se = mean_se(values)
    assert mean == pytest.approx(values.mean())
    assert se == pytest.approx(values.std(ddof=1) / np.sqrt(values.size))
    assert se == pytest.approx(scipy_stats.sem(values))
    one = mean_se([0.4])
    assert one[0] == 0.4 and math.isnan(one[1])
    assert all(math.isnan(v) for v in mean_se([]))


def test_paired_ttest_pairs_by_fold_against_scipy():
    rng = np.random.default_rng(5)
    folds = [f"P{i}" for i in range(9)]
    without = dict(zip(folds, rng.random(9)))
    with_ = dict(zip(reversed(folds), rng.random(9)))  # other insertion order: pairing by key
    with_["extra"] = 0.99                                 # a fold only one row finished
    result = paired_ttest(without, with_)
    expected = scipy_stats.ttest_rel([with_[f] for f in folds], [without[f] for f in folds])
    assert result["n"] == 9
    assert result["t"] == pytest.approx(expected.statistic)
    assert result["p"] == pytest.approx(expected.pvalue)
    assert result["mean_difference"] == pytest.approx(np.mean([with_[f] - without[f] for f in folds]))


def test_paired_ttest_degenerate_cases_are_nan():
    assert math.isnan(paired_ttest({"a": 0.5}, {"a": 0.7})["t"])
    same = paired_ttest({"a": 0.5, "b": 0.6}, {"a": 0.6, "b": 0.7})  # constant difference
    assert math.isnan(same["p"]) and same["mean_difference"] == pytest.approx(0.1)


def _records():
    rng = np.random.default_rng(7)
    records = []
    for row in ("unweighted_without", "unweighted_with"):
        for fold in ("A", "B", "C", "D"):
            records.append({"row": row, "target": "arousal", "fold": fold,
                            "accuracy": float(rng.random()), "f1": float(rng.random())})
    return records


def test_summarize_and_compare_rows():
    records = _records()
    table = summarize(records, ["unweighted_without", "unweighted_with"], ["arousal"])
    assert list(table.columns) == ["row", "target", "metric", "mean", "se", "n_folds"]
    line = table[(table.row == "unweighted_with") & (table.metric == "f1")].iloc[0]
    values = [r["f1"] for r in records if r["row"] == "unweighted_with"]
    assert line["mean"] == pytest.approx(np.mean(values))
    assert line["se"] == pytest.approx(scipy_stats.sem(values))
    assert line["n_folds"] == 4
    tests = compare_rows(records, {"unweighted": ("unweighted_without", "unweighted_with")}, ["arousal"])
    f1 = tests[tests.metric == "f1"].iloc[0]
    a = [r["f1"] for r in records if r["row"] == "unweighted_without"]
    assert f1["t"] == pytest.approx(scipy_stats.ttest_rel(values, a).statistic)
    assert f1["second_mean"] == pytest.approx(np.mean(values))
