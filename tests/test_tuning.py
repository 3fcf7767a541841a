"""KerasTuner search of a row's head sizes and learning rate: inner folds, reproducibility,
resume, held-out participants never seen, result files, fusion pretraining per trial, errors."""

from __future__ import annotations

import json

import keras
import numpy as np
import pandas as pd
import pytest

from kfusion.cli import main
from kfusion.config import DataConfig
from kfusion.data.dataset import WindowedDataset, build_dataset
from kfusion.modalities import MODALITIES, input_shape
from kfusion.errors import ConfigError, DataError
from kfusion.evaluation import EvaluationConfig, Pretrained
from kfusion.models import fusion_backbone, sigrep_encoder, speech_autoencoder
from kfusion.pipeline import PipelineConfig
from kfusion.training.pretrain import FusionPretrainConfig
from kfusion.evaluation.folds import inner_folds
from kfusion.evaluation.tuning import TuningConfig, tune
from model_helpers import SMALL_SHAPES, pooled_pretrained

SHAPES = SMALL_SHAPES
TINY = TuningConfig(trials=2, epochs=3, patience=2, batch_size=16, head_units=[[8], [4]],
                    projection_units=[[8], [16]], learning_rate=[1e-3, 3e-2])
#: Columns that depend on the machine, not on the search.
TIMING = ["seconds"]


@pytest.fixture(autouse=True)
def _not_distributed(monkeypatch):
    for name in ("KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID"):
        monkeypatch.delenv(name, raising=False)


def windows(participants: int = 5, per: int = 20, seed: int = 0) -> WindowedDataset:
    """Random windows whose mean shifts with the arousal class, ids P0, P1, ..."""
    rng = np.random.default_rng(seed)
    n = participants * per
    arousal = rng.integers(0, 3, n)
    inputs = {m: (rng.normal(size=(n, *s)) + 0.7 * arousal[:, None, None]).astype("float32")
              for m, s in SHAPES.items()}
    presence = {m: np.ones(n, bool) for m in SHAPES}
    ids = np.repeat([f"P{i}" for i in range(participants)], per)
    return WindowedDataset(inputs, presence, {"arousal": arousal.astype(np.int64)},
                           {"arousal": ("low", "neutral", "high")}, ids, np.arange(n) * 3.0, DataConfig(), "tiny")


@pytest.fixture(scope="module")
def dataset():
    return windows()


@pytest.fixture(scope="module")
def pretrained():
    return pooled_pretrained(7, 6, ("weighted",))


def _search_columns(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=TIMING).reset_index(drop=True)


# --------------------------------------------------------------------------- inner folds, metric

def test_inner_folds_split_participants_and_never_mix_test_with_training():
    ids = np.repeat([f"p{i}" for i in range(7)], [3, 5, 2, 4, 4, 1, 6])
    folds = inner_folds(ids, 3, seed=4, validation_fraction=0.3)
    assert len(folds) == 3
    tested = [p for f in folds for p in f.test_participants]
    assert sorted(tested) == sorted(set(ids)) and len(tested) == 7          # a partition
    assert sorted(len(f.test_participants) for f in folds) == [2, 2, 3]
    for fold in folds:
        train, val, test = (set(ids[i]) for i in (fold.train, fold.validation, fold.test))
        assert test == set(fold.test_participants) and val == set(fold.validation_participants)
        assert train and val and not (train & val) and not (test & (train | val))
        assert fold.train.size + fold.validation.size + fold.test.size == ids.size
    again = inner_folds(ids, 3, seed=4, validation_fraction=0.3)
    assert [f.test_participants for f in again] == [f.test_participants for f in folds]
    others = [inner_folds(ids, 3, seed=s) for s in range(5, 10)]
    assert any([f.test_participants for f in o] != [f.test_participants for f in folds] for o in others)
    # fewer participants than folds: one participant per fold
    assert len(inner_folds(np.array(["a", "b", "c"]), 5, seed=0)) == 3


@pytest.mark.parametrize("ids", [["a", "b"], ["a"], []])
def test_inner_folds_need_three_participants(ids):
    with pytest.raises(DataError, match="at least 3 participants"):
        inner_folds(np.array(ids, dtype=str), 3, seed=0)


def test_the_tuner_shares_the_protocols_rows_folds_metric_and_fingerprint():
    """One row description, one fold module, one metric, one fingerprint (issue 14)."""
    import kfusion.evaluation.tuning as tuning
    from kfusion.evaluation import folds, frozen, metrics, rows

    assert tuning.macro_f1 is metrics.macro_f1 and tuning.inner_folds is folds.inner_folds
    assert tuning.models_fingerprint is frozen.models_fingerprint and tuning.get_row is rows.get_row


# --------------------------------------------------------------------------- configuration

def test_tuning_config_round_trips_through_json(tmp_path):
    config = TINY.replace(algorithm="bayesian", pretraining_head_units=[[16], [], [8, 4]],
                          pretraining=FusionPretrainConfig(epochs=2, statistics=("mean",)))
    config.save(tmp_path / "tuning.json")
    loaded = TuningConfig.load(tmp_path / "tuning.json")
    assert loaded == config
    assert loaded.head_units == ((8,), (4,)) and loaded.pretraining_head_units == ((16,), (), (8, 4))
    assert loaded.pretraining.statistics == ("mean",)
    assert TuningConfig().batch_size == "auto" == TuningConfig.from_dict(TuningConfig().to_dict()).batch_size


@pytest.mark.parametrize("changes, message", [
    ({"algorithm": "grid"}, "algorithm"),
    ({"trials": 0}, "trials"),
    ({"inner_folds": 1}, "inner_folds"),
    ({"epochs": 2.5}, "epochs"),
    ({"learning_rate": (0.0, 1e-3)}, "learning_rate"),
    ({"learning_rate": (1e-2, 1e-3)}, "learning_rate"),
    ({"learning_rate": "fast"}, "learning_rate"),
    ({"head_units": []}, "head_units"),
    ({"head_units": [[0]]}, "head_units"),
    ({"head_units": [[8], [8]]}, "distinct"),
    ({"head_units": [["8"]]}, "head_units"),
    ({"head_units": [[]]}, "head_units"),
    ({"projection_units": [8, 4]}, "projection_units"),
    ({"validation_fraction": 1.0}, "validation_fraction"),
    ({"backbone_head_units": 16}, "backbone_head_units"),
    ({"hyperband_factor": 1}, "hyperband_factor"),
    ({"batch_size": "large"}, 'TuningConfig.batch_size: expected a whole number >= 1 or "auto"'),
    ({"batch_size": 0}, "TuningConfig.batch_size"),
    ({"pretraining": {"epochs": 1}}, "pretraining"),
])
def test_bad_tuning_config_values_are_config_errors(changes, message):
    with pytest.raises(ConfigError, match=message):
        TuningConfig(**changes)


def test_unknown_key_in_a_tuning_config_file(tmp_path):
    (tmp_path / "t.json").write_text(json.dumps({"trials": 3, "max_trials": 4}))
    with pytest.raises(ConfigError, match="unknown key"):
        TuningConfig.load(tmp_path / "t.json")


# --------------------------------------------------------------------------- bad inputs to tune

def test_bad_arguments_to_tune_are_clear_errors(tmp_path, dataset, pretrained):
    run = lambda row="unweighted_without", target="arousal", **kw: tune(  # noqa: E731
        kw.pop("data", dataset), kw.pop("models", pretrained), row, target, tmp_path / "x", TINY,
        progress=False, **kw)
    with pytest.raises(ConfigError, match="row: expected one of"):
        run(row="unweighted")
    with pytest.raises(ConfigError, match="hand-crafted row has no Keras model"):
        run(row="handcrafted")
    with pytest.raises(ConfigError, match="target: expected one of the data set's targets"):
        run(target="valence")
    with pytest.raises(ConfigError, match="held_out: participant\\(s\\) P9 not in the data set"):
        run(held_out=["P0", "P9"])
    with pytest.raises(DataError, match="at least 3 participants"):
        run(held_out=["P0", "P1", "P2"])
    with pytest.raises(ConfigError, match="needs pretrained encoders for speech"):
        run(row="speech_only", models=Pretrained({m: pretrained.encoders[m] for m in ("acc", "eda")}, {}))
    with pytest.raises(ConfigError, match="there is no pretrained attention backbone"):
        run(row="attention_with")
    with pytest.raises(ConfigError, match="pretraining_head_units .* differ from the given backbone's"):
        tune(dataset, pretrained, "weighted_with", "arousal", tmp_path / "y",
             TINY.replace(pretraining_head_units=[[16], [4]]), progress=False)
    with pytest.raises(ConfigError, match="pretrained: expected an object with .encoders"):
        run(models={"acc": pretrained.encoders["acc"]})
    with pytest.raises(ConfigError, match="dataset: expected a WindowedDataset"):
        run(data={"acc": np.zeros((3, 16, 3))})
    with pytest.raises(ConfigError, match="config: expected a TuningConfig"):
        tune(dataset, pretrained, "unweighted_without", "arousal", tmp_path / "z", {"trials": 2})
    assert not (tmp_path / "x" / "trials.csv").exists()


# --------------------------------------------------------------------------- the search

def test_random_search_is_reproducible_resumes_and_writes_its_files(tmp_path, dataset, pretrained):
    first = tune(dataset, pretrained, "weighted_with", "arousal", tmp_path / "a", TINY, progress=False)
    second = tune(dataset, pretrained, "weighted_with", "arousal", tmp_path / "b", TINY, progress=False)
    assert first.complete and len(first.table) == 2
    assert (first.table["status"] == "COMPLETED").all()
    assert np.isfinite(first.table[["mean_f1", "f1_se", "f1_fold1", "f1_fold2", "f1_fold3"]].to_numpy()).all()
    folds = first.table[["f1_fold1", "f1_fold2", "f1_fold3"]].to_numpy()
    np.testing.assert_allclose(first.table["mean_f1"], folds.mean(axis=1), atol=1e-12)
    pd.testing.assert_frame_equal(_search_columns(first.table), _search_columns(second.table))
    assert first.table["learning_rate"].nunique() == 2                      # two different trials

    out = tmp_path / "a"
    for name in ("config.json", "trials.csv", "trials.md", "best_evaluation.json", "best_pipeline.json",
                 "inner_folds.json", "keras_tuner/oracle.json", "logs/tuner0.jsonl"):
        assert (out / name).is_file(), name
    csv = pd.read_csv(out / "trials.csv", dtype={"trial": str, "head_units": str})
    assert csv["trial"].tolist() == first.table["trial"].tolist()
    np.testing.assert_allclose(csv["mean_f1"], first.table["mean_f1"])
    markdown = (out / "trials.md").read_text()
    for _, line in first.table.iterrows():
        assert f"{line['mean_f1']:.4f} (± {line['f1_se']:.4f})" in markdown
    best = first.table.loc[first.table["mean_f1"].idxmax()]
    assert f"| {best['trial']} **best** |" in markdown

    # best_evaluation.json is an EvaluationConfig as `kfusion evaluate --config` loads it
    evaluation = EvaluationConfig.load(out / "best_evaluation.json")
    assert evaluation.learning_rate == pytest.approx(best["learning_rate"])
    assert evaluation.head_units == tuple(int(u) for u in best["head_units"].split("-"))
    assert evaluation.projection_units == (8,)                              # the backbone's
    assert (evaluation.epochs, evaluation.patience, evaluation.batch_size) == (3, 2, 16)
    assert first.best_hyperparameters["learning_rate"] == pytest.approx(best["learning_rate"])

    # resume: nothing is redone; more trials continue the same search
    lines = (out / "logs" / "tuner0.jsonl").read_text().splitlines()
    again = tune(dataset, pretrained, "weighted_with", "arousal", out, TINY, progress=False)
    assert (out / "logs" / "tuner0.jsonl").read_text().splitlines() == lines
    pd.testing.assert_frame_equal(again.table, first.table)
    more = tune(dataset, pretrained, "weighted_with", "arousal", out, TINY.replace(trials=3), progress=False)
    assert len((out / "logs" / "tuner0.jsonl").read_text().splitlines()) == 3
    pd.testing.assert_frame_equal(more.table.iloc[:2].reset_index(drop=True), first.table)
    with pytest.raises(ConfigError, match="another configuration"):
        tune(dataset, pretrained, "weighted_with", "arousal", out, TINY.replace(seed=1), progress=False)


def test_with_rows_tune_the_model_evaluate_trains(tmp_path, dataset, pretrained):
    """"With" rows are tuned as the evaluation config trains them: by default the projection head
    trains (on the fusion layer's cached outputs), ``fine_tune_projection=False`` freezes it."""
    trained = tune(dataset, pretrained, "weighted_with", "arousal", tmp_path / "t", TINY, progress=False)
    frozen = tune(dataset, pretrained, "weighted_with", "arousal", tmp_path / "f", TINY,
                  evaluation={"fine_tune_projection": False}, progress=False)
    assert json.loads((tmp_path / "t" / "best_evaluation.json").read_text())["fine_tune_projection"] is True
    assert json.loads((tmp_path / "f" / "best_evaluation.json").read_text())["fine_tune_projection"] is False
    folds = [c for c in trained.table.columns if c.startswith("f1_fold")]
    assert not np.allclose(trained.table[folds].to_numpy(float), frozen.table[folds].to_numpy(float))


def test_held_out_participants_are_never_seen(tmp_path, dataset, pretrained):
    poisoned = windows()
    held = poisoned.participants == "P4"
    for m in poisoned.inputs:
        poisoned.inputs[m][held] = np.nan
    without = dataset.subset(["P0", "P1", "P2", "P3"])
    config = TINY.replace(trials=2)
    # A "with" row: the poisoned windows would go through the frozen backbone (NaN projections).
    kept = tune(poisoned, pretrained, "weighted_with", "arousal", tmp_path / "held", config,
                held_out=["P4"], progress=False)
    reference = tune(without, pretrained, "weighted_with", "arousal", tmp_path / "ref", config,
                     progress=False)
    assert np.isfinite(kept.table["mean_f1"]).all()
    pd.testing.assert_frame_equal(_search_columns(kept.table), _search_columns(reference.table))
    folds = json.loads((tmp_path / "held" / "inner_folds.json").read_text())
    assert all("P4" not in f["test"] + f["validation"] for f in folds)
    assert "Held out (never seen): P4." in (tmp_path / "held" / "trials.md").read_text()


@pytest.mark.parametrize("algorithm", ["bayesian", "hyperband"])
def test_bayesian_and_hyperband_searches_finish(tmp_path, dataset, pretrained, algorithm):
    config = TINY.replace(algorithm=algorithm, trials=2, epochs=4, hyperband_factor=2)
    result = tune(dataset, pretrained, "weighted_with", "arousal", tmp_path / algorithm, config, progress=False)
    assert result.complete and len(result.table) == 2
    assert (result.table["status"] == "COMPLETED").all()
    if algorithm == "hyperband":
        budgets = result.table["budget_epochs"].tolist()
        assert all(1 <= b <= 4 for b in budgets)
        assert "budget_epochs" in (tmp_path / algorithm / "trials.md").read_text()


def test_wearable_only_tunes_the_learning_rate_only(tmp_path, dataset, pretrained):
    result = tune(dataset, pretrained, "wearable_only", "arousal", tmp_path / "w", TINY.replace(trials=1),
                  progress=False)
    assert list(result.best_hyperparameters) == ["learning_rate"]
    assert "head_units" not in result.best_evaluation          # the app head's sizes are fixed


# --------------------------------------------------------------------------- real windows: CLI, pretraining

@pytest.fixture(scope="module")
def window_models(tmp_path_factory):
    """Tiny encoders for real window shapes and a weighted backbone over ACC and EDA (projection 8),
    saved as a pretrained folder; plus a cache folder for the synthetic set's windows."""
    keras.utils.set_random_seed(3)
    encoders = {m: speech_autoencoder(input_shape(m), code_dim=8, filters=(4,))[1] if m == "speech"
                else sigrep_encoder(m, input_shape(m), filters=1, blocks=2, embedding_dim=8) for m in MODALITIES}
    backbone = fusion_backbone({m: encoders[m] for m in ("acc", "eda")}, "weighted", projection_units=(8,))
    folder = tmp_path_factory.mktemp("tuning_models")
    Pretrained(encoders, {"weighted": backbone}).save(folder / "pretrained")
    return folder / "pretrained", folder / "cache"


def test_cli_tune_writes_a_config_that_evaluate_takes(tmp_path, kemocon_synth, window_models, capsys):
    folder, cache = window_models
    config = tmp_path / "tuning.json"
    TINY.replace(batch_size=32).save(config)
    data = f"kemocon:{kemocon_synth}"
    code = main(["tune", "--data", data, "--rows", "weighted_with", "--target", "arousal", "--trials", "2",
                 "--out", str(tmp_path / "tune"), "--pretrained", str(folder), "--config", str(config),
                 "--held-out", "4", "--seed", "3", "--cache-dir", str(cache)])
    assert code == 0
    out = tmp_path / "tune" / "weighted_with"
    printed = capsys.readouterr().out
    assert "# Tuning: weighted_with / arousal" in printed and "Held out (never seen): 4." in printed
    table = pd.read_csv(out / "trials.csv", dtype={"trial": str})
    assert len(table) == 2 and (table["status"] == "COMPLETED").all()
    stored = json.loads((out / "config.json").read_text())
    assert stored["tuning"]["seed"] == 3 and stored["held_out"] == ["4"]
    seen = {p for f in json.loads((out / "inner_folds.json").read_text()) for p in f["test"] + f["validation"]}
    assert seen == {"1", "2", "3"}
    # the whole EvaluationConfig, as the CLI's evaluate reads it, unchanged
    best = json.loads((out / "best_evaluation.json").read_text())
    assert set(best) == set(EvaluationConfig().to_dict())
    code = main(["evaluate", "--data", data, "--rows", "weighted_with", "--targets", "arousal",
                 "--out", str(tmp_path / "evaluation"), "--pretrained", str(folder),
                 "--config", str(out / "best_evaluation.json"), "--cache-dir", str(cache)])
    assert code == 0
    evaluated = json.loads((tmp_path / "evaluation" / "config.json").read_text())["evaluation"]
    assert evaluated == best
    pipeline = PipelineConfig.load(out / "best_pipeline.json")
    assert pipeline.evaluation == EvaluationConfig.from_dict(best)
    assert pipeline.rows == ("weighted_with",) and pipeline.targets == ("arousal",) and pipeline.seed == 3
    # bad values given on the command line are reported, not raised
    assert main(["tune", "--data", data, "--rows", "weighted_with", "--target", "arousal", "--trials", "0",
                 "--out", str(tmp_path / "bad"), "--pretrained", str(folder)]) == 2
    assert "trials: expected a whole number >= 1" in capsys.readouterr().err


def test_trials_pretrain_fusion_backbones_when_asked(tmp_path, kemocon_synth, window_models):
    folder, cache = window_models
    dataset = build_dataset(f"kemocon:{kemocon_synth}", DataConfig(), cache_dir=cache)
    pretrained = Pretrained.load(folder)
    config = TINY.replace(head_units=[[4]], projection_units=[[8]], pretraining_head_units=[[4]],
                          pretraining=FusionPretrainConfig(epochs=1, batch_size=16, statistics=("mean",)))
    result = tune(dataset, pretrained, "weighted_with", "arousal", tmp_path / "t", config,
                  pretraining_sources=f"kemocon:{kemocon_synth}", cache_dir=cache, progress=False)
    assert (result.table["status"] == "COMPLETED").all() and len(result.table) == 2
    assert set(result.table["pretraining_head_units"]) == {"4"}
    pretraining = tmp_path / "t" / "pretraining" / "weighted_p8_h4"
    assert (pretraining / "fusion_weighted_backbone.keras").is_file()
    assert len((pretraining / "results.jsonl").read_text().splitlines()) == 1   # pretrained once, reused
    stored = json.loads((pretraining / "config.json").read_text())["config"]
    assert stored["head_units"] == [4] and stored["projection_units"] == [8]
    assert stored["modalities"] == ["acc", "eda"]                               # the backbone's
    pipeline = PipelineConfig.load(tmp_path / "t" / "best_pipeline.json")
    assert pipeline.fusion.head_units == (4,) and pipeline.fusion.projection_units == (8,)
    assert pipeline.evaluation.projection_units == (8,)
    # without pretraining sources the same search space is refused
    with pytest.raises(ConfigError, match="give pretraining sources"):
        tune(dataset, pretrained, "weighted_with", "arousal", tmp_path / "u", config, progress=False)


def test_tuned_heads_see_the_same_levels_as_the_protocol(dataset, pretrained):
    """A trial's model takes the row's window levels like the evaluated row does (and none when
    the evaluation config switches them off), so tuned sizes transfer to ``evaluate``."""
    from kfusion.models import LEVELS
    import keras_tuner

    from kfusion.evaluation.tuning import EmotionHyperModel, TuningProblem

    config = TuningConfig(trials=1, epochs=1)
    for use_levels in (True, False):
        problem = TuningProblem(dataset, pretrained, "unweighted_without", "arousal", config,
                                model_settings={"use_levels": use_levels})
        x = problem.inputs_for()
        width = sum(dataset.levels[m].shape[1] for m in problem.modalities)
        assert (x[LEVELS].shape == (problem.y.size, width)) if use_levels else (LEVELS not in x)
        model = EmotionHyperModel(problem, config).build(keras_tuner.HyperParameters())
        assert (LEVELS in [t.name for t in model.inputs]) == use_levels
