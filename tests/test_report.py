"""Report files and the paper's Table 1 constant."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from kfusion.evaluation import ALL_ROWS, PAPER_TABLE1, TARGETS, collect_results
from kfusion.evaluation.report import paper_value, wide_table, write_report


def test_paper_table1_holds_every_row_target_and_metric():
    assert set(PAPER_TABLE1) == set(ALL_ROWS) - {"handcrafted"}
    for row, by_target in PAPER_TABLE1.items():
        assert set(by_target) == set(TARGETS)
        for by_metric in by_target.values():
            assert set(by_metric) == {"accuracy", "f1"}
            for mean, se in by_metric.values():
                assert 0.4 < mean < 0.9
                assert (se is None) == (row == "wearable_only")
    # spot checks against the paper's text
    assert PAPER_TABLE1["attention_with"]["arousal"]["f1"] == (0.8259, 0.0140)
    assert PAPER_TABLE1["attention_with"]["valence"]["f1"] == (0.8305, 0.0153)
    assert PAPER_TABLE1["attention_with"]["emotion"]["f1"] == (0.7295, 0.0297)
    assert PAPER_TABLE1["speech_only"]["valence"]["f1"] == (0.6066, 0.0192)
    assert PAPER_TABLE1["weighted_without"]["emotion"]["accuracy"] == (0.6343, 0.0376)
    assert paper_value("wearable_only", "arousal", "accuracy")[0] == 0.6493
    assert math.isnan(paper_value("wearable_only", "arousal", "accuracy")[1])
    assert all(math.isnan(v) for v in paper_value("handcrafted", "arousal", "f1"))


def _records(rows, targets, folds=5, seed=0):
    rng = np.random.default_rng(seed)
    return [{"row": row, "target": target, "fold": f"P{k}", "accuracy": float(rng.uniform(0.3, 0.9)),
             "f1": float(rng.uniform(0.2, 0.9)), "n_test": 10}
            for row in rows for target in targets for k in range(folds)]


def test_report_files_hold_the_fold_numbers(tmp_path):
    rows = ["speech_only", "attention_without", "attention_with", "handcrafted"]
    targets = ["arousal", "emotion"]
    records = _records(rows, targets)
    folds = {t: [f"P{k}" for k in range(5)] for t in targets}
    results = collect_results(tmp_path, list(reversed(records)), rows, targets, folds)
    assert results.complete
    files = write_report(tmp_path, results.table, results.tests, results.complete)
    assert all(Path(p).is_file() for p in files.values())
    csv = pd.read_csv(files["csv"])
    markdown = files["md"].read_text()
    for row in rows:
        for target in targets:
            for metric in ("accuracy", "f1"):
                values = [r[metric] for r in records if r["row"] == row and r["target"] == target]
                line = csv[(csv.row == row) & (csv.target == target) & (csv.metric == metric)].iloc[0]
                assert line["mean"] == pytest.approx(np.mean(values), abs=1e-9)
                assert line["se"] == pytest.approx(scipy_stats.sem(values), abs=1e-9)
                assert line["n_folds"] == 5
                assert f"{np.mean(values):.4f} (± {scipy_stats.sem(values):.4f})" in markdown
    attention = csv[(csv.row == "attention_with") & (csv.target == "emotion") & (csv.metric == "f1")].iloc[0]
    assert (attention["paper_mean"], attention["paper_se"]) == (0.7295, 0.0297)
    # the t-test line of the attention pair on emotion F1
    without = {r["fold"]: r["f1"] for r in records if r["row"] == "attention_without" and r["target"] == "emotion"}
    with_ = {r["fold"]: r["f1"] for r in records if r["row"] == "attention_with" and r["target"] == "emotion"}
    expected = scipy_stats.ttest_rel([with_[f] for f in without], list(without.values()))
    line = results.tests[(results.tests.target == "emotion") & (results.tests.metric == "f1")].iloc[0]
    assert line["t"] == pytest.approx(expected.statistic) and line["p"] == pytest.approx(expected.pvalue)
    assert f"{expected.statistic:.3f}" in markdown
    latex = files["tex"].read_text()
    assert latex.startswith(r"\begin{tabular}") and r"\multicolumn{2}{c}{Categorical}" in latex
    assert files["figure"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_incomplete_results_are_marked(tmp_path):
    records = _records(["speech_only"], ["arousal"], folds=3)
    results = collect_results(tmp_path, records, ["speech_only"], ["arousal"], {"arousal": ["P0", "P1", "P2", "P3"]})
    assert not results.complete
    assert results.table["n_folds"].tolist() == [3, 3]
    files = write_report(tmp_path, results.table, results.tests, results.complete)
    assert "Incomplete run" in files["md"].read_text()
    paper = wide_table(results.table, "paper")
    assert paper.iloc[0]["Arousal F1"] == "0.5673 (± 0.0138)"
