"""Table 1 and Figure 3: the rows, the paper's numbers, and the report files of a run folder.

Files written by :func:`write_report`: ``table.md`` (a header naming the data, ours, the paper's
where the targets are the paper's, and the paired t-tests), ``table.csv`` (one line per row,
target and metric, with the paper's numbers beside ours where they apply),
``table.tex`` (ours, booktabs) and ``figure3.png`` (F1 with vs without fusion training).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from kfusion.evaluation.rows import (  # noqa: F401  (the rows' names and titles, re-exported)
    ALL_ROWS,
    CLASSIFIER_TITLES,
    FUSION_PAIRS,
    MECHANISMS,
    MODALITY_TITLES,
    modalities_title,
    row_title,
)

TARGETS: tuple[str, ...] = ("arousal", "valence", "emotion")
#: Titles of the rows in the paper's setting (all five modalities); a run's own titles follow
#: the modalities it used (:meth:`~kfusion.evaluation.rows.Row.title`, ``Results.titles``).
ROW_TITLES: dict[str, str] = {row: row_title(row) for row in ALL_ROWS}
TARGET_TITLES: dict[str, str] = {"arousal": "Arousal", "valence": "Valence", "emotion": "Categorical"}
METRIC_TITLES: dict[str, str] = {"accuracy": "Acc", "f1": "F1"}


def _cell(accuracy, accuracy_se, f1, f1_se) -> dict:
    return {"accuracy": (accuracy, accuracy_se), "f1": (f1, f1_se)}


#: The paper's Table 1: ``row -> target -> metric -> (mean, standard error or None)``.
#: The wearable-only row is quoted from SigRep without standard errors. The paper prints the
#: speech-only valence F1 error as "0.192"; we store 0.0192 (every other error is < 0.05).
PAPER_TABLE1: dict[str, dict[str, dict[str, tuple]]] = {
    "speech_only": {"arousal": _cell(0.5770, 0.0180, 0.5673, 0.0138),
                    "valence": _cell(0.6078, 0.0197, 0.6066, 0.0192),
                    "emotion": _cell(0.5682, 0.0215, 0.5552, 0.0199)},
    "wearable_only": {"arousal": _cell(0.6493, None, 0.6291, None),
                      "valence": _cell(0.5906, None, 0.5615, None),
                      "emotion": _cell(0.5121, None, 0.5028, None)},
    "unweighted_without": {"arousal": _cell(0.7382, 0.0355, 0.7064, 0.0328),
                           "valence": _cell(0.7312, 0.0353, 0.7024, 0.0346),
                           "emotion": _cell(0.6589, 0.0277, 0.6565, 0.0251)},
    "weighted_without": {"arousal": _cell(0.7049, 0.0419, 0.6821, 0.0416),
                         "valence": _cell(0.7242, 0.0248, 0.7021, 0.0243),
                         "emotion": _cell(0.6343, 0.0376, 0.6352, 0.0353)},
    "attention_without": {"arousal": _cell(0.7048, 0.0376, 0.6659, 0.0385),
                          "valence": _cell(0.7006, 0.0332, 0.6760, 0.0323),
                          "emotion": _cell(0.6038, 0.0250, 0.5984, 0.0253)},
    "unweighted_with": {"arousal": _cell(0.8152, 0.0236, 0.7820, 0.0226),
                        "valence": _cell(0.7923, 0.0281, 0.7701, 0.0276),
                        "emotion": _cell(0.7205, 0.0360, 0.7084, 0.0342)},
    "weighted_with": {"arousal": _cell(0.8236, 0.0175, 0.7978, 0.0174),
                      "valence": _cell(0.7918, 0.0261, 0.7734, 0.0243),
                      "emotion": _cell(0.7186, 0.0369, 0.6906, 0.0324)},
    "attention_with": {"arousal": _cell(0.8469, 0.0141, 0.8259, 0.0140),
                       "valence": _cell(0.8488, 0.0158, 0.8305, 0.0153),
                       "emotion": _cell(0.7512, 0.0308, 0.7295, 0.0297)},
}


def paper_targets(classes, label_schemes=None) -> tuple[str, ...]:
    """The targets of a data set that are the paper's: arousal, valence or emotion with the
    classes K-EmoCon's self-reports give (:data:`kfusion.data.labels.TARGET_CLASSES`), binned
    from K-EmoCon-style ratings (``label_schemes``: the label schemes of the data set's
    participants, as in ``WindowedDataset.report["label_schemes"]``; all must be ``"kemocon"``;
    None or empty: not known, the classes decide). Only these get the paper's numbers beside
    ours: a WESAD or clip-corpus arousal with the same three levels is not the paper's."""
    from kfusion.data.labels import TARGET_CLASSES

    if label_schemes and set(label_schemes) != {"kemocon"}:
        return ()
    return tuple(t for t in TARGETS if t in classes and tuple(classes[t]) == TARGET_CLASSES[t])


def paper_value(row: str, target: str, metric: str) -> tuple[float, float]:
    """The paper's ``(mean, se)`` (NaN where the paper gives none or has no such row)."""
    mean, se = PAPER_TABLE1.get(row, {}).get(target, {}).get(metric, (None, None))
    return (math.nan if mean is None else mean), (math.nan if se is None else se)


def with_paper(table: pd.DataFrame, targets=TARGETS) -> pd.DataFrame:
    """``table`` (from :func:`kfusion.evaluation.stats.summarize`) plus ``paper_mean`` and
    ``paper_se`` columns (NaN for targets not in ``targets``, the paper's ones of the data:
    :func:`paper_targets`)."""
    table = table.copy()
    paper = [paper_value(r, t, m) if t in targets else (math.nan, math.nan)
             for r, t, m in zip(table["row"], table["target"], table["metric"])]
    table["paper_mean"] = [p[0] for p in paper]
    table["paper_se"] = [p[1] for p in paper]
    return table


def _format(mean: float, se: float, digits: int = 4, pm: str = "±") -> str:
    if mean is None or not math.isfinite(mean):
        return "–"
    if se is None or not math.isfinite(se):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ({pm} {se:.{digits}f})"


def wide_table(table: pd.DataFrame, source: str = "ours", pm: str = "±", titles=None) -> pd.DataFrame:
    """One line per row, one column per (target, metric): ``"mean (± se)"`` strings of our
    numbers (``source="ours"``) or of the paper's (``"paper"``, titled as in the paper's
    setting). ``titles``: row -> title (default :data:`ROW_TITLES`)."""
    titles = ROW_TITLES if titles is None or source == "paper" else {**ROW_TITLES, **titles}
    rows = list(dict.fromkeys(table["row"]))
    targets = list(dict.fromkeys(table["target"]))
    metrics = list(dict.fromkeys(table["metric"]))
    lookup = {(r, t, m): (mean, se, n) for r, t, m, mean, se, n in zip(
        table["row"], table["target"], table["metric"], table["mean"], table["se"], table["n_folds"])}
    lines = []
    for row in rows:
        line = {"Experiment": titles.get(row, row)}
        for target in targets:
            for metric in metrics:
                column = f"{TARGET_TITLES.get(target, target)} {METRIC_TITLES.get(metric, metric)}"
                if source == "paper":
                    line[column] = _format(*paper_value(row, target, metric), pm=pm)
                else:
                    mean, se, _ = lookup[(row, target, metric)]
                    line[column] = _format(mean, se, pm=pm)
        if source != "paper":
            line["Folds"] = "/".join(str(lookup[(row, t, metrics[0])][2]) for t in targets)
        lines.append(line)
    return pd.DataFrame(lines)


#: Participants named one by one in a report header; more are counted.
HEADER_PARTICIPANTS = 12


def _named(names) -> str:
    names = [str(n) for n in names]
    more = len(names) - HEADER_PARTICIPANTS
    return ", ".join(names[:HEADER_PARTICIPANTS]) + (f", … ({more} more)" if more > 0 else "")


def data_header(sources, participants, windows: int, window, modalities, classes,
                left_out=()) -> list[str]:
    """The data lines of a report header: the sources, the participants (named; ``left_out``:
    those of the sources without windows or with bad files), the windows (``window``: a
    WindowConfig), the modalities and the targets with their classes."""
    participants = [str(p) for p in participants]
    left_out = [str(p) for p in left_out]
    lines = [f"Data: {', '.join(map(str, sources)) or 'in memory'}",
             f"Participants: {len(participants)}" + (f" ({_named(participants)})" if participants else "")
             + (f"; left out (no windows or bad files: kfusion data inspect says why): {_named(left_out)}"
                if left_out else ""),
             f"Windows: {windows} of {window.seconds:g} s, overlap {window.overlap:g} s",
             f"Modalities: {', '.join(modalities)}"]
    if classes:
        lines.append("Targets: " + "; ".join(f"{t} ({', '.join(map(str, names))})" for t, names in classes.items()))
    return lines


def _markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in line) + " |" for line in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def _number(value, digits: int = 4) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def markdown_report(table: pd.DataFrame, tests: pd.DataFrame, complete: bool = True,
                    header: list[str] | None = None, titles=None, paper=TARGETS) -> str:
    """The text of ``table.md``; ``header``: lines describing the run (data, calibration, seed);
    ``titles``: row -> title (:func:`row_title`); ``paper``: the targets that are the paper's
    (:func:`paper_targets`): the paper's Table 1 block is shown for those only, and not at all
    without any."""
    paper = [t for t in dict.fromkeys(table["target"]) if t in paper]
    parts = ["# Emotion recognition, leave-one-subject-out" + (" (Table 1)" if paper else ""), ""]
    if header:
        parts += [f"- {line}" for line in header] + [""]
    if not complete:
        parts += ["**Incomplete run**: some folds are not finished yet; re-run to resume.", ""]
    parts += ["Mean over folds (± standard error = std with ddof 1 / sqrt(folds)); accuracy and "
              "macro F1 (classes present in the fold's labels or predictions). Folds: per target.",
              "", "## Ours", "", _markdown(wide_table(table, titles=titles)), ""]
    if paper:
        paper_rows = table[table["row"].isin(list(PAPER_TABLE1)) & table["target"].isin(paper)]
        parts += ["## Paper (Table 1)", "", "K-EmoCon, all five modalities, the paper's models.", ""]
        parts += [_markdown(wide_table(paper_rows, "paper")) if len(paper_rows)
                  else "(no row of the paper was run)", ""]
    parts += ["## With vs without fusion training (paired t-test over folds)", ""]
    if len(tests):
        lines = pd.DataFrame({
            "Mechanism": tests["comparison"], "Target": [TARGET_TITLES.get(t, t) for t in tests["target"]],
            "Metric": [METRIC_TITLES.get(m, m) for m in tests["metric"]],
            "w/o": [_number(v) for v in tests["first_mean"]], "w/": [_number(v) for v in tests["second_mean"]],
            "Δ (w/ − w/o)": [_number(v) for v in tests["mean_difference"]],
            "t": [_number(v, 3) for v in tests["t"]], "p": [_number(v) for v in tests["p"]],
            "folds": tests["n"]})
        parts.append(_markdown(lines))
    else:
        parts.append("(needs both the with and the without row of a mechanism)")
    return "\n".join(parts) + "\n"


def latex_table(table: pd.DataFrame, titles=None) -> str:
    """The text of ``table.tex``: our numbers as a booktabs tabular (``titles`` as in
    :func:`wide_table`)."""
    wide = wide_table(table, pm=r"$\pm$", titles=titles).drop(columns=["Folds"])
    targets = list(dict.fromkeys(table["target"]))
    metrics = list(dict.fromkeys(table["metric"]))
    escape = str.maketrans({"&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#"})
    lines = [r"\begin{tabular}{l" + "c" * (len(wide.columns) - 1) + "}", r"\toprule",
             "Experiment & " + " & ".join(
                 rf"\multicolumn{{{len(metrics)}}}{{c}}{{{TARGET_TITLES.get(t, t)}}}" for t in targets) + r" \\",
             " & " + " & ".join(METRIC_TITLES.get(m, m) for _ in targets for m in metrics) + r" \\",
             r"\midrule"]
    for line in wide.itertuples(index=False):
        cells = [str(line[0]).translate(escape), *[str(v) for v in line[1:]]]
        lines.append(" & ".join(cells).replace("–", "--") + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def figure3(table: pd.DataFrame, tests: pd.DataFrame, path: str | Path) -> Path:
    """Figure 3: F1 with vs without fusion training, panels (a) unweighted, (b) weighted,
    (c) attention; bars per target, error bars = standard error; ``*`` marks p < 0.05 of the
    paired t-test on F1. Written with the Agg canvas (no display, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    f1 = table[table["metric"] == "f1"]
    lookup = {(r, t): (m, s) for r, t, m, s in zip(f1["row"], f1["target"], f1["mean"], f1["se"])}
    targets = [t for t in TARGETS if t in set(table["target"])] or list(dict.fromkeys(table["target"]))
    figure = Figure(figsize=(11, 3.6))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 3, sharey=True)
    width = 0.38
    positions = np.arange(len(targets))
    for panel, (axis, mechanism) in enumerate(zip(axes, MECHANISMS)):
        without, with_ = FUSION_PAIRS[mechanism]
        for offset, row, label, colour in ((-width / 2, without, "w/o fusion training", "#9ecae1"),
                                           (width / 2, with_, "w/ fusion training", "#3182bd")):
            means = [lookup.get((row, t), (math.nan, math.nan))[0] for t in targets]
            errors = [lookup.get((row, t), (math.nan, math.nan))[1] for t in targets]
            errors = [0.0 if not math.isfinite(e) else e for e in errors]
            axis.bar(positions + offset, means, width, yerr=errors, capsize=3, label=label, color=colour)
        for i, target in enumerate(targets):
            hit = tests[(tests["comparison"] == mechanism) & (tests["target"] == target)
                        & (tests["metric"] == "f1")] if len(tests) else tests
            if len(hit) and math.isfinite(hit["p"].iloc[0]) and hit["p"].iloc[0] < 0.05:
                top = max(lookup.get((r, target), (0.0, 0.0))[0] + (lookup.get((r, target), (0, 0))[1] or 0)
                          for r in (without, with_))
                axis.text(positions[i], min(top + 0.03, 1.02), "*", ha="center")
        if all((r, t) not in lookup or not math.isfinite(lookup[(r, t)][0])
               for r in (without, with_) for t in targets):
            axis.text(0.5, 0.5, "not run", ha="center", va="center", transform=axis.transAxes,
                      color="grey")
        axis.set_xticks(positions, [TARGET_TITLES.get(t, t) for t in targets])
        axis.set_title(f"({'abc'[panel]}) {mechanism}")
        axis.set_ylim(0, 1.08)
        axis.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("F1 score (macro)")
    axes[0].legend(loc="lower left", fontsize=8)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    return path


def write_report(folder: str | Path, table: pd.DataFrame, tests: pd.DataFrame,
                 complete: bool = True, header: list[str] | None = None, titles=None,
                 paper=TARGETS) -> dict[str, Path]:
    """Write ``table.md`` (opening with the ``header`` lines), ``table.csv``, ``table.tex`` and
    ``figure3.png`` into ``folder``. ``titles``: row -> human title (``table.csv`` keeps the
    row names); ``paper``: the targets that are the paper's (:func:`paper_targets`; the
    others get no paper numbers)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {"md": folder / "table.md", "csv": folder / "table.csv", "tex": folder / "table.tex",
             "figure": folder / "figure3.png"}
    files["md"].write_text(markdown_report(table, tests, complete, header, titles, paper))
    with_paper(table, paper).to_csv(files["csv"], index=False, float_format="%.10g")
    files["tex"].write_text(latex_table(table, titles))
    figure3(table, tests, files["figure"])
    return files
