"""The leave-one-subject-out protocol: splits, no leakage, resume, cached = uncached, run files."""

from __future__ import annotations

import json
import shutil

import keras
import numpy as np
import pandas as pd
import pytest

from kfusion.config import DataConfig
from kfusion.data.dataset import WindowedDataset
from kfusion.errors import ConfigError, DataError
from kfusion.evaluation import EvaluationConfig, Pretrained, evaluate, loso_folds
from kfusion.evaluation.baselines import fit_handcrafted
from kfusion.evaluation.protocol import dataset_handcrafted_features
from model_helpers import SMALL_SHAPES, pooled_pretrained

SHAPES = SMALL_SHAPES
CONFIG = EvaluationConfig(epochs=2, patience=2, batch_size=16, projection_units=(8,), head_units=(8,))


def tiny_dataset(participants: int = 4, per: int = 24, seed: int = 0, fingerprint: str = "tiny") -> WindowedDataset:
    """Random windows whose mean shifts with the arousal class; valence partly unlabelled."""
    rng = np.random.default_rng(seed)
    n = participants * per
    arousal = rng.integers(0, 3, n)
    inputs = {m: (rng.normal(size=(n, *s)) + 0.7 * arousal[:, None, None]).astype("float32")
              for m, s in SHAPES.items()}
    presence = {m: np.ones(n, bool) for m in SHAPES}
    presence["eda"][::5] = False
    valence = rng.integers(0, 3, n)
    valence[: per // 2] = -1
    labels = {"arousal": arousal.astype(np.int64), "valence": valence.astype(np.int64)}
    classes = {t: ("low", "neutral", "high") for t in labels}
    participants_ = np.repeat([f"P{i}" for i in range(participants)], per)
    return WindowedDataset(inputs, presence, labels, classes, participants_, np.arange(n) * 3.0,
                           DataConfig(), fingerprint)


@pytest.fixture(scope="module")
def dataset():
    return tiny_dataset()


@pytest.fixture(scope="module")
def pretrained():
    return pooled_pretrained(11, 10, ("unweighted", "weighted", "attention"))


# --------------------------------------------------------------------------- splits

def test_loso_folds_never_leak_the_held_out_participant():
    participants = np.repeat(["a", "b", "c", "d", "e", "f", "g"], [3, 5, 2, 4, 4, 1, 6])
    folds = loso_folds(participants, seed=3, validation_fraction=0.3)
    assert [f.held_out for f in folds] == ["a", "b", "c", "d", "e", "f", "g"]
    for fold in folds:
        train, val, test = (set(participants[i]) for i in (fold.train, fold.validation, fold.test))
        assert test == {fold.held_out}
        assert fold.held_out not in train | val
        assert val and train and not (val & train)
        assert val == set(fold.validation_participants) and len(val) == 2  # round(0.3 * 6)
        everything = np.sort(np.concatenate([fold.train, fold.validation, fold.test]))
        np.testing.assert_array_equal(everything, np.arange(participants.size))
    again = loso_folds(participants, seed=3, validation_fraction=0.3)
    assert [f.validation_participants for f in again] == [f.validation_participants for f in folds]
    others = [loso_folds(participants, seed=s, validation_fraction=0.3) for s in range(4, 9)]
    assert any([f.validation_participants for f in o] != [f.validation_participants for f in folds]
               for o in others)


def test_loso_needs_three_participants():
    with pytest.raises(DataError, match="at least 3 participants"):
        loso_folds(np.array(["a", "a", "b"]))


# --------------------------------------------------------------------------- end to end

def test_tiny_end_to_end_run_writes_the_report(tmp_path, dataset, pretrained):
    out = tmp_path / "run"
    results = evaluate(dataset, pretrained, rows=["unweighted_without", "unweighted_with"],
                       targets=["arousal"], out=out, config=CONFIG, progress=False)
    assert results.complete
    for name in ("config.json", "versions.json", "data.json", "folds.jsonl", "table.md", "table.csv",
                 "table.tex", "figure3.png"):
        assert (out / name).is_file(), name
    assert (out / "figure3.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    records = [json.loads(line) for line in (out / "folds.jsonl").read_text().splitlines()]
    assert len(records) == 2 * 4
    assert {r["n_test"] for r in records} == {24}
    # the report holds the numbers of folds.jsonl
    table = pd.read_csv(out / "table.csv")
    markdown = (out / "table.md").read_text()
    latex = (out / "table.tex").read_text()
    for row in ("unweighted_without", "unweighted_with"):
        for metric in ("accuracy", "f1"):
            values = np.array([r[metric] for r in records if r["row"] == row])
            line = table[(table.row == row) & (table.metric == metric)].iloc[0]
            assert line["mean"] == pytest.approx(values.mean(), abs=1e-9)
            assert line["se"] == pytest.approx(values.std(ddof=1) / 2, abs=1e-9)
            cell = f"{values.mean():.4f} (± {values.std(ddof=1) / 2:.4f})"
            assert cell in markdown
            assert cell.replace("±", r"$\pm$") in latex
    assert "0.7382 (± 0.0355)" in markdown          # the paper's number beside ours
    assert len(results.tests) == 2 and results.tests["n"].tolist() == [4, 4]
    config = json.loads((out / "config.json").read_text())
    assert config["evaluation"] == json.loads(json.dumps(CONFIG.to_dict()))
    assert config["data_fingerprint"] == "tiny" and config["pretrained"] == pretrained.fingerprint()


def test_resume_redoes_nothing_and_gives_the_same_table(tmp_path, dataset, pretrained):
    rows, targets = ["speech_only", "handcrafted"], ["arousal", "valence"]
    trained = []
    first = evaluate(dataset, pretrained, rows=rows, targets=targets, out=tmp_path / "a", config=CONFIG,
                     progress=False, max_folds=5, on_fold=lambda run: trained.append(run.record))
    assert len(trained) == 5 and not first.complete
    assert len((tmp_path / "a" / "folds.jsonl").read_text().splitlines()) == 5
    done = {(r["row"], r["target"], r["fold"]) for r in trained}
    resumed_runs = []
    resumed = evaluate(dataset, pretrained, rows=rows, targets=targets, out=tmp_path / "a", config=CONFIG,
                       progress=False, on_fold=lambda run: resumed_runs.append(run.record))
    assert len(resumed_runs) == 2 * 2 * 4 - 5
    assert not done & {(r["row"], r["target"], r["fold"]) for r in resumed_runs}
    assert resumed.complete

    straight = evaluate(dataset, pretrained, rows=rows, targets=targets, out=tmp_path / "b",
                        config=CONFIG, progress=False)
    pd.testing.assert_frame_equal(resumed.table, straight.table)
    assert (tmp_path / "a" / "table.md").read_text() == (tmp_path / "b" / "table.md").read_text()
    assert (tmp_path / "a" / "table.csv").read_text() == (tmp_path / "b" / "table.csv").read_text()

    # a crash mid-write: the cut last line and the line before are redone, nothing else
    lines = (tmp_path / "a" / "folds.jsonl").read_text().splitlines()
    (tmp_path / "a" / "folds.jsonl").write_text("\n".join(lines[:-2]) + "\n" + lines[-2][:20])
    again = []
    evaluate(dataset, pretrained, rows=rows, targets=targets, out=tmp_path / "a", config=CONFIG,
             progress=False, on_fold=lambda run: again.append(run.record))
    assert len(again) == 2
    assert (tmp_path / "a" / "table.csv").read_text() == (tmp_path / "b" / "table.csv").read_text()


def test_handcrafted_scaler_sees_training_participants_only(tmp_path, dataset):
    seen = []
    evaluate(dataset, None, rows=["handcrafted"], targets=["valence"], out=tmp_path / "h",
             config=CONFIG, progress=False, on_fold=seen.append)
    features = dataset_handcrafted_features(dataset)[0]
    assert len(seen) == 4
    for run in seen:
        fitted_on = run.windows[np.concatenate([run.fold.train, run.fold.validation])]
        assert run.fold.held_out not in set(dataset.participants[fitted_on])
        assert np.all(dataset.labels["valence"][fitted_on] >= 0)       # labelled windows only
        scaler = run.fitted.named_steps["scale"]
        assert scaler.n_samples_seen_ == fitted_on.size
        np.testing.assert_allclose(scaler.mean_, features[fitted_on].mean(axis=0), rtol=1e-9, atol=1e-9)
        test_windows = run.windows[run.fold.test]
        assert set(dataset.participants[test_windows]) == {run.fold.held_out}
        assert run.record["n_test"] == test_windows.size


def test_cached_and_uncached_training_agree(tmp_path, dataset, pretrained):
    rows = ["wearable_only", "weighted_without", "attention_with"]
    config = CONFIG.replace(epochs=3)
    cached = evaluate(dataset, pretrained, rows=rows, targets=["arousal"], out=tmp_path / "c",
                      config=config, progress=False)
    uncached = evaluate(dataset, pretrained, rows=rows, targets=["arousal"], out=tmp_path / "u",
                        config=config.replace(cache_frozen=False), progress=False)
    columns = ["accuracy", "f1", "n_test", "epochs_run", "best_epoch"]
    pd.testing.assert_frame_equal(cached.folds[columns], uncached.folds[columns])
    np.testing.assert_allclose(cached.folds["best_val_loss"], uncached.folds["best_val_loss"], rtol=1e-4)
    pd.testing.assert_frame_equal(cached.table, uncached.table)


def test_fine_tuned_projection_trains_a_copy_cached_or_not(tmp_path, dataset, pretrained):
    """By default (``fine_tune_projection``) the "with" rows train the pretrained projection
    (cached: on the fusion layer's outputs) and leave the pretrained backbone itself untouched;
    ``fine_tune_projection=False`` freezes the projection too."""
    backbone = pretrained.fusion_backbones["unweighted"]
    before = [w.copy() for w in backbone.get_weights()]
    assert EvaluationConfig().fine_tune_projection
    config = CONFIG.replace(epochs=3)
    assert config.fine_tune_projection
    seen = []
    cached = evaluate(dataset, pretrained, rows=["unweighted_with"], targets=["arousal"],
                      out=tmp_path / "c", config=config, progress=False, on_fold=seen.append)
    uncached = evaluate(dataset, pretrained, rows=["unweighted_with"], targets=["arousal"],
                        out=tmp_path / "u", config=config.replace(cache_frozen=False), progress=False)
    columns = ["accuracy", "f1", "n_test", "epochs_run", "best_epoch"]
    pd.testing.assert_frame_equal(cached.folds[columns], uncached.folds[columns])
    np.testing.assert_allclose(cached.folds["best_val_loss"], uncached.folds["best_val_loss"], rtol=1e-4)
    for a, b in zip(before, backbone.get_weights()):
        np.testing.assert_array_equal(a, b)
    trained = seen[0].fitted.model
    assert trained.get_layer("projection_1").trainable
    pretrained_kernel = backbone.get_layer("projection_1").get_weights()[0]
    assert not np.allclose(trained.get_layer("projection_1").get_weights()[0], pretrained_kernel)
    frozen = evaluate(dataset, pretrained, rows=["unweighted_with"], targets=["arousal"],
                      out=tmp_path / "f", config=CONFIG.replace(epochs=3, fine_tune_projection=False),
                      progress=False)
    assert not frozen.folds["f1"].equals(cached.folds["f1"]) or not frozen.folds["best_val_loss"].equals(
        cached.folds["best_val_loss"])
    # table.md says which it was
    assert "projection head, which trains with the emotion heads" in (tmp_path / "c" / "table.md").read_text()
    assert "the projection frozen too" in (tmp_path / "f" / "table.md").read_text()


# --------------------------------------------------------------------------- bad input

def test_bad_arguments_are_named(tmp_path, dataset, pretrained):
    out = tmp_path / "bad"
    with pytest.raises(ConfigError, match="rows"):
        evaluate(dataset, pretrained, rows=["speech_alone"], out=out, progress=False)
    with pytest.raises(ConfigError, match="targets"):
        evaluate(dataset, pretrained, rows=["handcrafted"], targets=["emotion"], out=out, progress=False)
    with pytest.raises(ConfigError, match="WindowedDataset"):
        evaluate({"speech": np.zeros(3)}, pretrained, out=out, progress=False)
    with pytest.raises(ConfigError, match="need a Pretrained"):
        evaluate(dataset, None, rows=["speech_only"], targets=["arousal"], out=out, progress=False)
    no_attention = Pretrained(pretrained.encoders, {"unweighted": pretrained.fusion_backbones["unweighted"]})
    with pytest.raises(ConfigError, match="attention fusion backbone"):
        evaluate(dataset, no_attention, rows=["attention_with"], targets=["arousal"], out=out, progress=False)
    wrong_shape = Pretrained({**pretrained.encoders, "bvp": _encoder_of_shape("bvp", (32, 1))})
    with pytest.raises(ConfigError, match=r"bvp model takes windows of shape \[32, 1\]"):
        evaluate(dataset, wrong_shape, rows=["wearable_only"], targets=["arousal"], out=out, progress=False)
    with pytest.raises(ConfigError, match="unknown mechanism"):
        Pretrained({}, {"gated": pretrained.fusion_backbones["weighted"]})
    with pytest.raises(ConfigError, match="validation_fraction"):
        EvaluationConfig(validation_fraction=0.0)
    with pytest.raises(ConfigError, match="head_units"):
        EvaluationConfig(head_units=())
    two = tiny_dataset(participants=2)
    with pytest.raises(DataError, match="labels of target 'arousal'.*at least 3 participants"):
        evaluate(two, None, rows=["handcrafted"], targets=["arousal"], out=out, progress=False)
    assert not out.exists()  # nothing was started


def _encoder_of_shape(modality, shape):
    inputs = keras.Input(shape)
    return keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs)), name=f"{modality}_encoder")


def test_a_folder_of_another_run_is_refused(tmp_path, dataset):
    evaluate(dataset, None, rows=["handcrafted"], targets=["arousal"], out=tmp_path / "r", config=CONFIG,
             progress=False)
    with pytest.raises(ConfigError, match=r"another configuration \(evaluation.handcrafted_c: 1.0 -> 0.5\)"):
        evaluate(dataset, None, rows=["handcrafted"], targets=["arousal"], out=tmp_path / "r",
                 config=CONFIG.replace(handcrafted_c=0.5), progress=False)
    other_data = tiny_dataset(seed=1, fingerprint="other")
    with pytest.raises(ConfigError, match="another configuration"):
        evaluate(other_data, None, rows=["handcrafted"], targets=["arousal"], out=tmp_path / "r",
                 config=CONFIG, progress=False)


def test_pretrained_round_trip(tmp_path, pretrained):
    folder = pretrained.save(tmp_path / "models")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{m}_encoder.keras" for m in SHAPES] + [f"fusion_{m}.keras" for m in ("attention", "unweighted", "weighted")])
    loaded = Pretrained.load(folder)
    assert loaded.fingerprint() == pretrained.fingerprint()
    with pytest.raises(DataError, match="fusion_<mechanism>.keras"):
        Pretrained.load(tmp_path)  # holds only the models/ folder
    (folder / "acc_encoder.keras").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="acc_encoder.keras: model"):
        Pretrained.load(folder)
    shutil.rmtree(folder)


def test_balanced_class_weight_reaches_the_hand_crafted_row():
    rng = np.random.default_rng(5)
    y = np.array([0] * 180 + [1] * 20)
    features = rng.normal(size=(200, 3)) + 0.7 * y[:, None]
    train = np.arange(200)
    plain = fit_handcrafted(features, y, train, c=1.0, seed=0)
    balanced = fit_handcrafted(features, y, train, c=1.0, seed=0, class_weight="balanced")
    recall = {name: float(np.mean(model.predict(features[y == 1]) == 1))
              for name, model in (("plain", plain), ("balanced", balanced))}
    assert recall["balanced"] > recall["plain"] + 0.2
    assert EvaluationConfig.from_dict(EvaluationConfig(class_weight="balanced").to_dict()).class_weight == "balanced"
    with pytest.raises(ConfigError, match="class_weight"):
        EvaluationConfig(class_weight="inverse")


def test_learned_rows_see_window_levels_and_reports_name_the_calibration(tmp_path, dataset, pretrained):
    """Every learned row's head gets the levels of its modalities (or none with use_levels off);
    config.json and table.md say which calibration the data used."""
    import json

    from kfusion.models import LEVELS

    widths = {}
    for use_levels in (True, False):
        seen = []
        evaluate(dataset, pretrained, rows=["wearable_only", "unweighted_with"], targets=["arousal"],
                 out=tmp_path / str(use_levels), config=CONFIG.replace(use_levels=use_levels),
                 progress=False, on_fold=seen.append)
        for run in seen:
            names = [t.name for t in run.fitted.model.inputs]
            widths[(use_levels, run.row)] = (int(run.fitted.model.get_layer(LEVELS).output.shape[-1])
                                             if LEVELS in names else 0)
    wearable_width = sum(dataset.levels[m].shape[1] for m in ("acc", "bvp", "eda", "temp"))
    assert widths[(True, "wearable_only")] == wearable_width
    assert widths[(True, "unweighted_with")] == sum(v.shape[1] for v in dataset.levels.values())
    assert widths[(False, "wearable_only")] == widths[(False, "unweighted_with")] == 0
    saved = json.loads((tmp_path / "True" / "config.json").read_text())
    assert saved["data"]["calibration"]["wearable"] == dataset.config.calibration.wearable
    table = (tmp_path / "True" / "table.md").read_text()
    assert f"Calibration: {dataset.config.calibration.describe()}" in table
    assert "Window levels fed to the learned rows: yes" in table
    assert saved["data"]["calibration"]["standardize_levels"] is True
    assert ("standardised by each person's own level statistics" in table) == (
        dataset.config.calibration.method("acc") != "none")


def test_adding_a_target_keeps_the_earlier_ones_in_the_report(tmp_path, dataset):
    out = tmp_path / "grow"
    evaluate(dataset, None, rows=["handcrafted"], targets=["arousal"], out=out, config=CONFIG, progress=False)
    results = evaluate(dataset, None, rows=["handcrafted"], targets=["valence"], out=out, config=CONFIG,
                       progress=False)
    assert set(results.table["target"]) == {"arousal", "valence"}
    table = (out / "table.md").read_text()
    assert "Arousal" in table and "Valence" in table
