"""Sources that need no flags (issue 13): a source's default modalities are those its files hold,
and the reports name what was evaluated (row titles after the modalities used, a header naming
the data, the paper's Table 1 only beside the paper's targets)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile

from kfusion.cli import main
from kfusion.config import DataConfig
from kfusion.data.dataset import build_dataset
from kfusion.data.inspect import format_inspection, inspect_source
from kfusion.modalities import MODALITIES, WEARABLES
from kfusion.data.sources import found_modalities, source_modalities
from kfusion.evaluation import EvaluationConfig, evaluate
from kfusion.evaluation.report import ROW_TITLES, markdown_report, paper_targets, row_title
from fixture_scripts import fixture_script

T0 = 1_700_000_000.0
SECONDS = 40
PEOPLE = ("ann", "bob", "cy")
FIXTURES = Path(__file__).parent / "fixtures"


# ------------------------------------------------------------------ generic sets, written here

def write_e4(folder: Path, name: str, rate: int, values: np.ndarray) -> None:
    """An E4 Connect file: start and rate per column, then the samples."""
    values = values.reshape(len(values), -1)
    columns = values.shape[1]
    header = [", ".join([f"{T0:.6f}"] * columns), ", ".join([f"{rate:.6f}"] * columns)]
    rows = [",".join(f"{v:.3f}" for v in row) for row in values]
    (folder / name).write_text("\n".join(header + rows) + "\n")


def write_wearables(folder: Path, rng, names=("ACC.csv", "BVP.csv", "EDA.csv", "TEMP.csv")) -> None:
    """Plausible E4 values (the signal-quality checks keep them)."""
    folder.mkdir(parents=True, exist_ok=True)
    signals = {"ACC.csv": (32, 64 + 5 * rng.normal(size=(32 * SECONDS, 3))),
               "BVP.csv": (64, 40 * rng.normal(size=64 * SECONDS)),
               "EDA.csv": (4, 2 + 0.2 * rng.random(4 * SECONDS)),
               "TEMP.csv": (4, 33 + 0.1 * rng.random(4 * SECONDS))}
    for name in names:
        write_e4(folder, name, *signals[name.upper().replace(".CSV", ".csv")])


def write_audio(folder: Path, rng, rate: int = 8000) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(SECONDS * rate) / rate
    pitch = 150 + 100 * rng.random()
    samples = 0.3 * np.sin(2 * np.pi * pitch * t) * (1 + np.sin(2 * np.pi * 0.5 * t)) + 0.01 * rng.normal(size=t.size)
    soundfile.write(folder / "audio.wav", samples.astype(np.float32), rate)
    (folder / "audio.json").write_text(json.dumps({"start": T0}))


def write_labels(folder: Path, column: str = "stress", classes=("calm", "stressed")) -> None:
    rows = [f"{T0 + s},{T0 + s + 10},{classes[(s // 10) % len(classes)]}" for s in range(0, SECONDS, 10)]
    (folder / "labels.csv").write_text("\n".join([f"start,end,{column}", *rows]) + "\n")


def generic_set(root: Path, audio: bool, wearables: bool, spec=None, column: str = "stress",
                classes=("calm", "stressed")) -> Path:
    rng = np.random.default_rng(7)
    for pid in PEOPLE:
        if audio:
            write_audio(root / pid, rng)
        if wearables:
            write_wearables(root / pid, rng)
        write_labels(root / pid, column, classes)
    (root / "dataset.json").write_text(json.dumps(spec or {"labels": {column: {"classes": list(classes)}}}))
    return root


@pytest.fixture(scope="module")
def audio_only(tmp_path_factory):
    return generic_set(tmp_path_factory.mktemp("audio_only"), audio=True, wearables=False)


@pytest.fixture(scope="module")
def wearable_only(tmp_path_factory):
    return generic_set(tmp_path_factory.mktemp("wearable_only"), audio=False, wearables=True)


@pytest.fixture
def quick_config(tmp_path):
    path = tmp_path / "evaluation.json"
    EvaluationConfig(epochs=1, patience=1, batch_size=16).save(path)
    return path


# ------------------------------------------------------------------ the modalities found

def test_the_files_decide_the_default_modalities(audio_only, wearable_only, tmp_path, kemocon_synth):
    assert found_modalities(f"generic:{audio_only}") == ("speech",)
    assert found_modalities(f"generic:{wearable_only}") == WEARABLES
    assert source_modalities([f"generic:{audio_only}", f"generic:{wearable_only}"]) == MODALITIES
    # one participant's files are enough; names are matched as the readers match them
    mixed = tmp_path / "mixed"
    write_wearables(mixed / "a", np.random.default_rng(0), names=("eda.csv",))
    write_audio(mixed / "b", np.random.default_rng(1))
    assert source_modalities(f"generic:{mixed}") == ("speech", "eda")
    assert found_modalities(f"e4:{mixed / 'a'}") == ("eda",)
    # K-EmoCon: a copy without the debate audio archive is wearable-only
    assert found_modalities(f"kemocon:{kemocon_synth}") == MODALITIES
    copy = tmp_path / "kemocon"
    shutil.copytree(kemocon_synth, copy, ignore=shutil.ignore_patterns("debate_audios"))
    assert source_modalities(f"kemocon:{copy}") == WEARABLES
    # no scan (or nothing to scan): what the format can hold; the read then names the problem
    assert source_modalities(f"generic:{tmp_path / 'nowhere'}") == MODALITIES
    assert source_modalities(f"stresspredict:{FIXTURES / 'stress-predict'}") == WEARABLES
    assert source_modalities(f"generic:{audio_only}", scan=False) == MODALITIES


def test_an_explicit_config_still_wins(audio_only):
    found = build_dataset(f"generic:{audio_only}", cache_dir=False)       # config=None: found
    assert found.modalities == ("speech",) and found.participant_ids() == list(PEOPLE)
    assert len(found) > 0 and not found.report["skipped"]
    given = build_dataset(f"generic:{audio_only}", DataConfig(), cache_dir=False)  # all five
    assert given.modalities == MODALITIES and len(given) == 0
    assert set(given.report["skipped"]) == set(PEOPLE)


def test_inspect_says_what_was_found_and_what_is_used(audio_only, capsys):
    assert main(["data", "inspect", f"generic:{audio_only}", "--no-cache"]) == 0
    out = capsys.readouterr().out
    assert "Modalities: speech (the ones found in the files; --modalities to choose others)" in out
    assert "Windows: 0 kept" not in out
    assert main(["data", "inspect", f"generic:{audio_only}", "--no-cache", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["modalities"] == info["modalities_found"] == ["speech"]
    text = format_inspection(inspect_source(f"generic:{audio_only}", DataConfig(modalities=("speech", "eda")),
                                            cache_dir=False))
    assert "Modalities: speech, eda (as requested; found in the files: speech; no files of eda)" in text


# ------------------------------------------------------------------ evaluate with no flags

def _table(out: Path) -> tuple[str, pd.DataFrame]:
    return (out / "table.md").read_text(), pd.read_csv(out / "table.csv")


def test_an_audio_only_set_evaluates_speech_only_without_flags(audio_only, quick_config, tmp_path, capsys):
    out = tmp_path / "ev"
    code = main(["evaluate", "--data", f"generic:{audio_only}", "--out", str(out), "--config", str(quick_config),
                 "--no-cache"])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "[kfusion] rows: speech_only, handcrafted (with modalities speech" in printed
    assert "[kfusion] targets: stress" in printed
    table, csv = _table(out)
    assert list(dict.fromkeys(csv["row"])) == ["speech_only", "handcrafted"]      # keys unchanged
    assert {"row", "target", "metric", "mean", "se", "n_folds", "paper_mean", "paper_se"} <= set(csv.columns)
    assert csv["paper_mean"].isna().all()
    assert "| Speech only |" in table
    assert "| Hand-crafted features of Speech, logistic regression (ours) |" in table
    assert "Wearable" not in table.split("## Ours")[1]
    assert "Paper (Table 1)" not in table and "(Table 1)" not in table
    header = table.split("## Ours")[0]
    assert f"- Data: generic:{audio_only}" in header
    assert "- Participants: 3 (ann, bob, cy)" in header
    assert "- Windows: " in header and "of 4 s, overlap 1 s" in header
    assert "- Modalities: speech\n" in header
    assert "- Targets: stress (calm, stressed)" in header
    assert "- Calibration: participant" in header and "- Seed: 0" in header


def test_a_wearable_only_set_evaluates_wearable_rows_without_flags(wearable_only, quick_config, tmp_path, capsys):
    out = tmp_path / "ev"
    code = main(["evaluate", "--data", f"generic:{wearable_only}", "--out", str(out), "--config", str(quick_config),
                 "--no-cache", "--seed", "3"])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    # the shipped fusion backbones take all five modalities: no "with" rows here
    assert ("[kfusion] rows: wearable_only, unweighted_without, weighted_without, attention_without, "
            "handcrafted (with modalities acc, bvp, eda, temp") in printed
    table, csv = _table(out)
    assert list(dict.fromkeys(csv["row"])) == ["wearable_only", "unweighted_without", "weighted_without",
                                               "attention_without", "handcrafted"]
    for title in ("Wearable only (ACC+BVP+EDA+TEMP)",
                  "Wearable (ACC+BVP+EDA+TEMP), unweighted fusion, w/o fusion training",
                  "Wearable (ACC+BVP+EDA+TEMP), attention fusion, w/o fusion training",
                  "Hand-crafted features of Wearable (ACC+BVP+EDA+TEMP), logistic regression (ours)"):
        assert f"| {title} |" in table, title
    assert "Speech" not in table.split("## Ours")[1]
    assert "Paper (Table 1)" not in table
    assert "- Modalities: acc, bvp, eda, temp\n" in table
    assert "- Seed: 3" in table


def test_explicit_flags_still_choose(audio_only, quick_config, tmp_path, capsys):
    out = tmp_path / "ev"
    code = main(["evaluate", "--data", f"generic:{audio_only}", "--rows", "handcrafted", "--targets", "stress",
                 "--modalities", "speech", "--out", str(out), "--config", str(quick_config), "--no-cache"])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "[kfusion] rows:" not in printed and "[kfusion] targets:" not in printed
    assert list(dict.fromkeys(_table(out)[1]["row"])) == ["handcrafted"]


# ------------------------------------------------------------------ titles and the paper's block

def test_row_titles_follow_the_modalities():
    assert row_title("speech_only", ("speech",)) == "Speech only"
    assert row_title("wearable_only", ("eda", "temp")) == "Wearable only (EDA+TEMP)"
    assert row_title("unweighted_without", WEARABLES) == \
        "Wearable (ACC+BVP+EDA+TEMP), unweighted fusion, w/o fusion training"
    assert row_title("attention_with", MODALITIES) == \
        "Speech + Wearable (ACC+BVP+EDA+TEMP), attention fusion, w/ fusion training"
    assert row_title("handcrafted", ("speech", "eda"), "boosting") == \
        "Hand-crafted features of Speech + Wearable (EDA), gradient boosting (ours)"
    assert ROW_TITLES["weighted_with"] == row_title("weighted_with", MODALITIES)


def _handcrafted_report(dataset, out: Path, targets) -> str:
    results = evaluate(dataset, None, rows=["handcrafted"], targets=targets, out=out,
                       config=EvaluationConfig(), progress=False)
    assert results.titles["handcrafted"].startswith("Hand-crafted features of ")
    assert results.wide().iloc[0]["Experiment"] == results.titles["handcrafted"]
    return (out / "table.md").read_text()


def test_the_paper_block_only_beside_the_papers_targets(kemocon_synth, tmp_path):
    kemocon = build_dataset(f"kemocon:{kemocon_synth}", cache_dir=False)
    assert paper_targets(kemocon.classes, kemocon.report["label_schemes"]) == ("arousal", "valence", "emotion")
    table = _handcrafted_report(kemocon, tmp_path / "kemocon", ["arousal", "valence"])
    assert "# Emotion recognition, leave-one-subject-out (Table 1)" in table and "## Paper (Table 1)" in table
    assert "- Targets: arousal (low, neutral, high); valence (low, neutral, high)" in table
    assert "- Data: kemocon:" in table and "- Participants: 4 (1, 2, 3, 4)" in table

    # the same three levels from plain class columns (as WESAD's or a clip corpus's) are not the paper's
    levels = ("low", "neutral", "high")
    plain = generic_set(tmp_path / "plain", audio=False, wearables=True, column="arousal", classes=levels)
    dataset = build_dataset(f"generic:{plain}", cache_dir=False)
    assert dataset.classes["arousal"] == levels and dataset.report["label_schemes"] == ["classes"]
    assert paper_targets(dataset.classes, dataset.report["label_schemes"]) == ()
    assert "Paper (Table 1)" not in _handcrafted_report(dataset, tmp_path / "plain-run", ["arousal"])
    # K-EmoCon-style ratings in the generic layout are the paper's
    rated = tmp_path / "rated"
    generic_set(rated, audio=False, wearables=True, spec={"label_scheme": "kemocon"}, column="arousal",
                classes=("1", "3", "5"))
    dataset = build_dataset(f"generic:{rated}", cache_dir=False)
    assert paper_targets(dataset.classes, dataset.report["label_schemes"]) == ("arousal",)

    # Stress-Predict's target is not the paper's either
    stress = build_dataset(f"stresspredict:{FIXTURES / 'stress-predict'}", cache_dir=False)
    assert paper_targets(stress.classes, stress.report["label_schemes"]) == ()


def test_wesad_targets_get_no_paper_numbers(tmp_path):
    release = fixture_script("wesad").write_release(tmp_path / "wesad", (2, 3, 4, 5))
    dataset = build_dataset(f"wesad:{release}", cache_dir=False)
    assert dataset.classes["arousal"] == ("low", "neutral", "high")
    assert paper_targets(dataset.classes, dataset.report["label_schemes"]) == ()
    table = _handcrafted_report(dataset, tmp_path / "run", ["stress", "arousal"])
    assert "Paper (Table 1)" not in table
    assert pd.read_csv(tmp_path / "run" / "table.csv")["paper_mean"].isna().all()


def test_markdown_without_class_information_keeps_the_old_layout():
    """write_report / markdown_report called without ``paper`` (old callers): the paper's block
    for the paper's target names, as before."""
    table = pd.DataFrame({"row": ["speech_only"] * 2, "target": ["arousal"] * 2, "metric": ["accuracy", "f1"],
                          "mean": [0.5, 0.4], "se": [0.1, 0.1], "n_folds": [3, 3]})
    tests = pd.DataFrame(columns=["comparison", "target", "metric"])
    assert "## Paper (Table 1)" in markdown_report(table, tests)
    assert "## Paper" not in markdown_report(table, tests, paper=())
