"""A deployable model from the CLI: ``kfusion train`` (one row on every labelled participant,
one head per target, a JSON sidecar), ``kfusion calibrate`` (per-person statistics as JSON) and
``kfusion predict --calibration`` for level-aware models (file, head:MINUTES, streaming)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from kfusion.cli import main  # noqa: E402
from kfusion.config import CalibrationConfig, DataConfig  # noqa: E402
from kfusion.data.calibration import ChannelStats, recording_calibration  # noqa: E402
from kfusion.data.calibration_file import read_calibration  # noqa: E402
from kfusion.data.dataset import build_dataset  # noqa: E402
from kfusion.modalities import WEARABLES  # noqa: E402
from kfusion.data.sources import load_recordings  # noqa: E402
from kfusion.data.windows import cut_windows, to_nominal_rate  # noqa: E402
from kfusion.errors import ConfigError, DataError  # noqa: E402
from kfusion.evaluation import EvaluationConfig, Pretrained  # noqa: E402
from kfusion.evaluation.deploy import model_sidecar_path, train_model  # noqa: E402
from kfusion.export.prediction import StreamingPredictor, load_predictor, predict, timeline  # noqa: E402
from kfusion.models import fusion_backbone, presence_array  # noqa: E402
from kfusion.evaluation.folds import validation_participants  # noqa: E402
from kfusion.training.emotion import derive_seed  # noqa: E402

FAST = EvaluationConfig(epochs=3, batch_size=32)
HEAD = 0.5  # minutes: the synthetic recordings last 1.5


@pytest.fixture(scope="module")
def source(kemocon_synth):
    return f"kemocon:{kemocon_synth}"


@pytest.fixture(scope="module")
def dataset(source):
    return build_dataset(source, DataConfig(modalities=WEARABLES), cache_dir=False)


@pytest.fixture(scope="module")
def pretrained():
    from kfusion.pipeline import shipped_pretrained

    shipped = shipped_pretrained(WEARABLES)
    backbone = fusion_backbone(shipped.encoders, "weighted", projection_units=(16, 8))
    return Pretrained(shipped.encoders, {"weighted": backbone})


@pytest.fixture(scope="module")
def trained(dataset, pretrained, tmp_path_factory):
    out = tmp_path_factory.mktemp("deploy") / "model.keras"
    return train_model(dataset, pretrained, "wearable_only", ["arousal", "emotion"], out, FAST, seed=3)


def _inputs(model, dataset) -> dict:
    names = [t.name for t in model.inputs]
    modalities = [m for m in names if m in dataset.inputs]
    x = {m: dataset.inputs[m] for m in modalities}
    if "presence" in names:
        x["presence"] = presence_array(dataset.presence, modalities)
    if "levels" in names:
        x["levels"] = dataset.level_matrix(modalities)
    return x


def _merge(dataset, frame) -> pd.DataFrame:
    keys = pd.DataFrame({"participant": dataset.participants.astype(str), "window_start": dataset.starts})
    return keys.merge(frame.assign(participant=frame["participant"].astype(str)),
                      on=["participant", "window_start"], how="left", validate="one_to_one")


def _check_against(frame, dataset, model, classes, atol):
    merged = _merge(dataset, frame)
    expected = model.predict(_inputs(model, dataset), verbose=0)
    for target, names in classes.items():
        got = merged[[f"{target}_p_{n}" for n in names]].to_numpy()
        np.testing.assert_allclose(got, np.asarray(expected[target]), atol=atol, err_msg=target)


# --------------------------------------------------------------------------- kfusion train (API)

def test_trained_model_loads_predicts_the_same_and_has_a_full_sidecar(trained, dataset):
    model, path = trained.model, trained.path
    assert path.is_file() and model_sidecar_path(path) == path.with_suffix(".json")
    assert set(model.output_names) == {"arousal", "emotion"}
    assert sorted(t.name for t in model.inputs) == ["acc", "bvp", "eda", "levels", "presence", "temp"]
    # The real frozen encoders are inside: the model takes feature windows, not cached embeddings.
    assert model.get_layer("acc_encoder").count_params() > 2000 and not model.get_layer("acc_encoder").trainable
    x = _inputs(model, dataset)
    loaded = keras.saving.load_model(path, compile=False)
    ours, theirs = model.predict(x, verbose=0), loaded.predict(x, verbose=0)
    for target in ("arousal", "emotion"):
        assert ours[target].shape == (len(dataset), len(dataset.classes[target]))
        np.testing.assert_allclose(theirs[target], ours[target], atol=1e-6)
    side = json.loads(model_sidecar_path(path).read_text())
    assert side["kind"] == "kfusion-trained-model" and side["row"] == "wearable_only" and side["seed"] == 3
    assert {t: v["classes"] for t, v in side["targets"].items()} == {
        t: list(dataset.classes[t]) for t in ("arousal", "emotion")}
    assert [o["name"] for o in side["outputs"]] == ["arousal", "emotion"]
    assert side["calibration"] == dataset.config.calibration.to_dict() == CalibrationConfig().to_dict()
    assert DataConfig.from_dict(side["data"]) == dataset.config
    assert EvaluationConfig.from_dict(side["evaluation"]) == FAST
    assert side["data_fingerprint"] == dataset.fingerprint
    assert side["versions"]["keras"] and side["versions"]["tensorflow"] and side["pretrained"]
    assert side["levels"]["modalities"] == list(WEARABLES) and side["window"]["hop_seconds"] == 3.0
    for target, info in side["targets"].items():
        run = info["training"]
        assert 1 <= run["epochs_run"] <= FAST.epochs and 0 <= run["best_epoch"] < run["epochs_run"]
        # The kept epoch is the monitored one (FAST.monitor: validation macro F1, b455ef5), its
        # loss recorded as such.
        history = trained.histories[target]
        assert run["best_val_loss"] == pytest.approx(run["val_loss"][run["best_epoch"]], abs=1e-6)
        assert run["best_val_f1"] == pytest.approx(max(history.val_f1), abs=1e-6)
        assert trained.histories[target].epochs_run == run["epochs_run"]


def test_validation_split_is_participant_wise_and_holds_no_one_out(trained, dataset):
    side = trained.sidecar
    ids = sorted(dataset.participant_ids())
    for target, info in side["targets"].items():
        train, validation = set(info["train_participants"]), set(info["validation_participants"])
        assert not train & validation and train | validation == set(ids)   # every labelled participant used
        assert len(validation) == 1                                          # round(0.15 * 4) -> at least 1
        assert info["validation_participants"] == validation_participants(
            ids, FAST.validation_fraction, derive_seed(3, "deploy", "validation"))
        labelled = dataset.labels[target] >= 0
        assert info["validation_windows"] == int((labelled & np.isin(dataset.participants, list(validation))).sum())
        assert info["train_windows"] + info["validation_windows"] == int(labelled.sum())
    # targets labelled for the same participants share the split
    split = {t: side["targets"][t]["validation_participants"] for t in ("arousal", "emotion")}
    assert split["arousal"] == split["emotion"]


def test_cached_and_uncached_training_give_the_same_model(dataset, pretrained, tmp_path):
    """Training the heads on cached frozen outputs and training through the real encoders end
    in the same deployed model (float rounding of the frozen outputs aside). A "with" row: the
    pretrained model frozen up to its projection head, which trains (the default); the file
    round-trips and exports."""
    from export_helpers import run_tflite

    from kfusion.export.tflite import export_model
    from kfusion.models.fusion import FUSION_LAYER

    fast = train_model(dataset, pretrained, "weighted_with", "arousal", tmp_path / "with.keras", FAST, seed=1)
    slow = train_model(dataset, pretrained, "weighted_with", "arousal", None, FAST.replace(cache_frozen=False), seed=1)
    assert fast.path == tmp_path / "with.keras" and fast.sidecar["row"] == "weighted_with"
    x = _inputs(fast.model, dataset)
    np.testing.assert_allclose(slow.model.predict(x, verbose=0)["arousal"],
                               fast.model.predict(x, verbose=0)["arousal"], atol=1e-4)
    assert fast.sidecar["targets"]["arousal"]["training"]["epochs_run"] == \
        slow.sidecar["targets"]["arousal"]["training"]["epochs_run"]
    # Frozen up to the fusion layer, the projection trained away from its pretrained weights.
    backbone = pretrained.fusion_backbones["weighted"]
    deployed = {w.path: w.numpy() for w in fast.model.weights}
    fusion = backbone.get_layer(FUSION_LAYER).weights[0]
    assert any(np.array_equal(v, fusion.numpy()) for v in deployed.values())
    kernel = backbone.get_layer("projection_1").weights[0].numpy()
    assert not any(v.shape == kernel.shape and np.allclose(v, kernel) for v in deployed.values())
    loaded = keras.saving.load_model(fast.path, compile=False)
    np.testing.assert_allclose(loaded.predict(x, verbose=0)["arousal"], fast.model.predict(x, verbose=0)["arousal"],
                               atol=1e-6)
    lite = export_model(fast.path, tmp_path / "with.tflite", format="tflite")
    rows = range(0, len(x["levels"]), 7)
    np.testing.assert_allclose(run_tflite(lite, x, rows)["arousal"],
                               fast.model.predict(x, verbose=0)["arousal"][::7], atol=1e-4)


def test_train_model_bad_input(dataset, pretrained, tmp_path):
    with pytest.raises(ConfigError, match="row: expected one of .*wearable_only.*found 'handcrafted'"):
        train_model(dataset, pretrained, "handcrafted", "arousal")
    with pytest.raises(ConfigError, match="targets: expected distinct names .*found \\['stress'\\]"):
        train_model(dataset, pretrained, "wearable_only", ["stress"])
    with pytest.raises(ConfigError, match="out: expected a file name ending in .keras"):
        train_model(dataset, pretrained, "wearable_only", "arousal", tmp_path / "model.h5")
    with pytest.raises(ConfigError, match="attention fusion backbone"):
        train_model(dataset, pretrained, "attention_with", "arousal")
    with pytest.raises(DataError, match="at least 2 participants with labelled windows.*found 1: 1"):
        train_model(dataset.subset(["1"]), pretrained, "wearable_only", "arousal")


# --------------------------------------------------------------------------- kfusion calibrate

def test_calibrate_json_round_trips_into_the_statistics_training_uses(source, dataset, tmp_path, capsys):
    out = tmp_path / "calibration.json"
    assert main(["calibrate", "--data", source, "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    document = json.loads(out.read_text())
    assert document["kind"] == "kfusion-calibration" and document["format"] == 2
    assert DataConfig.from_dict(document["data"]).calibration == CalibrationConfig()
    assert set(document["channels"]) == {"speech", *WEARABLES}
    stats = read_calibration(out)
    recordings = load_recordings(source, DataConfig()).recordings
    assert sorted(stats) == sorted(r.participant for r in recordings)
    for recording in recordings:
        expected = recording_calibration(recording, DataConfig())
        assert set(stats[recording.participant]) == set(expected) == {"speech", *WEARABLES}
        for m, want in expected.items():
            got = stats[recording.participant][m]
            assert isinstance(got, ChannelStats) and got.method == want.method == "participant"
            np.testing.assert_allclose(got.mean, want.mean, rtol=1e-12)
            np.testing.assert_allclose(got.std, want.std, rtol=1e-12)
            assert got.seconds == pytest.approx(want.seconds, abs=1e-3)
            # the level statistics the levels are standardised by travel in the file too
            assert got.windows == want.windows >= 3
            np.testing.assert_allclose(got.level_mean, want.level_mean, rtol=1e-12)
            np.testing.assert_allclose(got.level_std, want.level_std, rtol=1e-12)
        # the same numbers the data set was built with
        for m in WEARABLES:
            assert dataset.calibration[recording.participant][m] == stats[recording.participant][m].to_dict()
    # one participant, its first minutes
    head = tmp_path / "head.json"
    assert main(["calibrate", "--data", source, "--participant", "2", "--head", str(HEAD),
                 "--modalities", "eda,temp", "--out", str(head)]) == 0
    only = read_calibration(head)
    config = DataConfig(modalities=("eda", "temp"), calibration=CalibrationConfig.parse(f"head:{HEAD}"))
    want = recording_calibration(load_recordings(source, config, participants=["2"]).recordings[0], config)
    assert list(only) == ["2"] and set(only["2"]) == {"eda", "temp"}
    for m in ("eda", "temp"):
        assert only["2"][m].method == "head" and only["2"][m].seconds == pytest.approx(HEAD * 60, abs=0.5)
        np.testing.assert_allclose(only["2"][m].mean, want[m].mean, rtol=1e-12)


def test_calibration_file_errors_name_the_file_and_field(source, tmp_path, capsys):
    assert main(["calibrate", "--data", source, "--calibration", "none", "--out", str(tmp_path / "x.json")]) == 2
    assert "nothing to compute" in capsys.readouterr().err
    good = {"kind": "kfusion-calibration", "format": 1,
            "participants": {"u": {"eda": {"method": "head", "seconds": 300, "mean": [2.0], "std": [0.5]}}}}
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(good))
    assert read_calibration(path)["u"]["eda"].std.tolist() == [0.5]
    assert read_calibration(path)["u"]["eda"].level_mean is None  # format 1: no level statistics
    cases = [({"kind": "other"}, "kind"),
             ({"participants": {"u": {"eda": {**good["participants"]["u"]["eda"], "std": [0.0]}}}},
              r"participants\.u\.eda\.std: expected positive"),
             ({"participants": {"u": {"acc": {**good["participants"]["u"]["eda"]}}}},
              r"participants\.u\.acc\.mean: expected 3 values"),
             ({"participants": {"u": {"eda": {"method": "head", "mean": [1.0], "std": [1.0]}}}},
              r"participants\.u\.eda\.seconds"),
             ({"participants": {"u": {"gsr": {}}}}, r"participants\.u: expected modalities among"),
             ({"participants": {"u": {"eda": {**good["participants"]["u"]["eda"], "level_mean": [0.0],
                                              "level_std": [1.0, 1.0]}}}},
              r"participants\.u\.eda\.level_mean: expected 2 values"),
             ({"participants": {"u": {"eda": {**good["participants"]["u"]["eda"], "level_mean": [0.0, 0.1],
                                              "level_std": [1.0, -1.0]}}}},
              r"participants\.u\.eda\.level_std: expected positive"),
             ({"format": 3}, "format")]
    for change, message in cases:
        path.write_text(json.dumps({**good, **change}))
        with pytest.raises(DataError, match=f"{path}: {message}"):
            read_calibration(path)


# --------------------------------------------------------------------------- kfusion predict --calibration

def test_predict_with_calibration_file_and_head_minutes(trained, dataset, source, tmp_path, capsys):
    path = trained.path
    calibration = tmp_path / "calibration.json"
    assert main(["calibrate", "--data", source, "--modalities", ",".join(WEARABLES), "--out", str(calibration)]) == 0
    predictor = load_predictor(path)
    assert predictor.uses_levels and predictor.classes["emotion"] == list(dataset.classes["emotion"])
    # a file: each participant's own entry -> exactly the model on the data set's windows
    out = tmp_path / "timeline.csv"
    assert main(["predict", "--model", str(path), "--data", source, "--out", str(out),
                 "--calibration", str(calibration)]) == 0
    assert len(pd.read_csv(out)) == len(dataset)
    frame = predict(path, source, tmp_path / "file.csv", calibration=calibration)
    _check_against(frame, dataset, trained.model, predictor.classes, atol=1e-5)
    # head:MINUTES from the recording predicted = a data set calibrated on its first minutes
    head_config = dataset.config.replace(calibration=CalibrationConfig.parse(f"head:{HEAD}"))
    head_set = build_dataset(source, head_config, cache_dir=False)
    frame = predict(path, source, tmp_path / "head.csv", calibration=f"head:{HEAD}")
    _check_against(frame, head_set, trained.model, predictor.classes, atol=1e-5)
    # a file with one participant calibrates whoever is predicted
    single = tmp_path / "one.json"
    assert main(["calibrate", "--data", source, "--participant", "3", "--modalities", ",".join(WEARABLES),
                 "--out", str(single)]) == 0
    one = predict(path, source, tmp_path / "one.csv", participants=["3"], calibration=single)
    two = predict(path, source, tmp_path / "two.csv", participants=["3"], calibration=calibration)
    pd.testing.assert_frame_equal(one, two)
    # a level-aware model without calibration is a clear error naming the flag
    capsys.readouterr()
    assert main(["predict", "--model", str(path), "--data", source, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "takes calibrated levels" in err and "--calibration" in err and "Traceback" not in err
    with pytest.raises(ConfigError, match="--calibration"):
        predict(path, source, tmp_path / "x.csv")
    with pytest.raises(DataError, match="missing.json: file: expected a calibration JSON file written by "
                                        "kfusion calibrate"):
        predict(path, source, tmp_path / "x.csv", calibration=tmp_path / "missing.json")


def test_raw_input_tflite_takes_calibration_inputs(trained, source, tmp_path):
    from kfusion.export.tflite import export_model, read_sidecar

    calibration = tmp_path / "calibration.json"
    assert main(["calibrate", "--data", source, "--modalities", ",".join(WEARABLES), "--out", str(calibration)]) == 0
    exported = export_model(trained.path, tmp_path / "model-raw.tflite", format="tflite", raw_inputs=True)
    inputs = {i["name"]: i for i in read_sidecar(exported)["inputs"]}
    assert inputs["calibration_acc"]["shape"] == [1, 6, 3] and "row 0 mean" in inputs["calibration_acc"]["units"]
    predictor = load_predictor(exported)
    assert predictor.raw_inputs and predictor.uses_levels
    keras_frame = predict(trained.path, source, tmp_path / "keras.csv", calibration=calibration)
    lite_frame = predict(exported, source, tmp_path / "lite.csv", calibration=calibration)
    columns = [c for c in keras_frame.columns if "_p_" in c]
    np.testing.assert_allclose(lite_frame[columns].to_numpy(), keras_frame[columns].to_numpy(), atol=1e-4)
    with pytest.raises(ConfigError, match="calibration_acc.*--calibration"):
        predict(exported, source, tmp_path / "x.csv")
    # int8: the representative windows stand in for each person's calibration (ranges only)
    from kfusion.export.prediction import recording_windows

    windows = recording_windows(source, DataConfig(modalities=WEARABLES))
    int8 = export_model(trained.path, tmp_path / "model-raw-int8.tflite", format="tflite", quantize="int8",
                        raw_inputs=True, representative=windows)
    int8_frame = predict(int8, source, tmp_path / "int8.csv", calibration=calibration)
    # int8 probabilities within 0.04 of the Keras ones here, 99 % within 0.02 (0.19 while the
    # converter clipped the calibration inputs to [0, 1]; bench/RESULTS.md)
    error = np.abs(int8_frame[columns].to_numpy() - keras_frame[columns].to_numpy())
    assert error.max() <= 0.08 and (error <= 0.02).mean() >= 0.95
    assert (int8_frame["arousal"] == keras_frame["arousal"]).mean() >= 0.95
    # ... because the float32 front end reads the calibration inputs as they are, unquantised
    from ai_edge_litert.tools import flatbuffer_utils as fb

    model = fb.read_model(str(int8))
    sub = model.subgraphs[0]
    inputs = {int(i): sub.tensors[i].name.decode() for i in sub.inputs}
    quantised = [inputs[int(op.inputs[0])] for op in sub.operators if int(op.inputs[0]) in inputs and
                 fb.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex])
                 == fb.BuiltinOperator.QUANTIZE]
    assert quantised and not [name for name in quantised if "calibration" in name], quantised


def _push_all(stream, recording, span0, modalities, rng) -> list[dict]:
    series = {}
    for m in modalities:
        signal = to_nominal_rate(recording.signals[m], m)
        series[m] = signal.values[int(np.rint((span0 - signal.start) * signal.rate)):]
    position = {m: 0 for m in modalities}
    rows = []
    while any(position[m] < len(series[m]) for m in modalities):
        for m in modalities:
            size = int(rng.integers(1, stream.lengths[m] + 2))
            chunk = series[m][position[m]:position[m] + size]
            position[m] += len(chunk)
            rows.extend(stream.push(m, chunk))
    return rows


def test_streaming_head_calibration_equals_batch_and_raw_masks_absent_levels(trained, source, tmp_path):
    from kfusion.export.raw_inputs import raw_input_model

    predictor = load_predictor(trained.path)
    config = DataConfig(modalities=WEARABLES)
    recording = load_recordings(source, config, participants=["2"]).recordings[0]
    windows = cut_windows(recording, config)
    span0 = float(windows.span[0])
    head_stats = recording_calibration(recording, config.replace(calibration=CalibrationConfig.parse(f"head:{HEAD}")))
    batch = timeline(predictor, [windows], {"2": head_stats})
    stream = StreamingPredictor(predictor, start=span0, participant="2", calibration=f"head:{HEAD}")
    rows = _push_all(stream, recording, span0, WEARABLES, np.random.default_rng(0))
    rows += stream.finish()
    streamed = pd.DataFrame(rows)
    streamed = streamed[streamed["window_start"] <= batch["window_start"].max() + 1e-6]  # signals outlast the span
    assert len(streamed) == len(batch) > 20
    np.testing.assert_allclose(streamed["window_start"], batch["window_start"], atol=1e-6)
    numeric = [c for c in batch.columns if "_p_" in c]
    np.testing.assert_allclose(streamed[numeric].to_numpy(float), batch[numeric].to_numpy(float), atol=1e-5)
    # a recording shorter than the head: finish() calibrates on what arrived
    short = StreamingPredictor(predictor, start=0.0, calibration="head:10")
    rng = np.random.default_rng(1)
    pushed = short.push_many({"acc": rng.normal(0, 30, (32 * 20, 3)), "bvp": rng.normal(0, 50, 64 * 20),
                              "eda": 2 + rng.random(80), "temp": 33 + rng.random(80)})
    assert pushed == [] and len(short.finish()) == 6 and short.calibration
    with pytest.raises(ConfigError, match="'participant' needs the whole recording"):
        StreamingPredictor(predictor, calibration="participant")
    with pytest.raises(ConfigError, match="--calibration"):
        StreamingPredictor(predictor)
    # raw-input model: an absent modality's in-graph level is zero, as in the data sets
    raw_path = tmp_path / "raw.keras"
    raw_input_model(trained.model).save(raw_path)
    raw = load_predictor(raw_path, classes=predictor.classes)  # saved by hand: no sidecar with them
    assert raw.raw_inputs and "calibration_eda" in raw.input_shapes
    stats = {m: head_stats[m] for m in WEARABLES}
    outputs = []
    for p in (predictor, raw):
        s = StreamingPredictor(p, start=0.0, modalities=["bvp", "eda"], calibration=stats)
        rng = np.random.default_rng(2)
        outputs.append(pd.DataFrame(s.push_many({"bvp": rng.normal(0, 50, 64 * 16), "eda": 2 + rng.random(64)})))
    assert len(outputs[0]) == 5 and (outputs[0]["present_acc"] == 0).all()
    np.testing.assert_allclose(outputs[1][numeric].to_numpy(float), outputs[0][numeric].to_numpy(float), atol=1e-4)


# --------------------------------------------------------------------------- kfusion train (CLI)

def test_train_cli_end_to_end(source, tmp_path, capsys):
    config = tmp_path / "evaluation.json"
    FAST.save(config)
    out = tmp_path / "models" / "wearable.keras"
    assert main(["train", "--data", source, "--row", "wearable_only", "--targets", "valence",
                 "--out", str(out), "--config", str(config), "--seed", "1",
                 "--modalities", ",".join(WEARABLES), "--calibration", f"head:{HEAD}", "--no-cache"]) == 0
    printed = capsys.readouterr().out
    assert "valence:" in printed and "best epoch" in printed and f"wrote {out}" in printed
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["row"] == "wearable_only" and list(side["targets"]) == ["valence"] and side["seed"] == 1
    assert side["calibration"] == CalibrationConfig.parse(f"head:{HEAD}").to_dict()
    assert side["command"].startswith("kfusion train")
    assert main(["predict", "--model", str(out), "--data", source, "--out", str(tmp_path / "t.csv"),
                 "--calibration", f"head:{HEAD}", "--participants", "1"]) == 0
    assert set(pd.read_csv(tmp_path / "t.csv")["participant"].astype(str)) == {"1"}
    # Stress-Predict's slice has one labelled participant: too few to early-stop on
    fixture = Path(__file__).parent / "fixtures" / "stress-predict"
    assert main(["train", "--data", f"stresspredict:{fixture}", "--row", "wearable_only", "--targets", "stress",
                 "--out", str(tmp_path / "s.keras"), "--no-cache"]) == 2
    assert "at least 2 participants with labelled windows" in capsys.readouterr().err


def test_speech_only_deploys_with_its_logistic_regression_started_head(source, tmp_path):
    """The speech-only row's head (levels' linear logits started at a logistic regression)
    trains through ``train_model``, records whether its start was kept, round-trips and exports
    with parity."""
    from export_helpers import run_tflite

    from kfusion.export.tflite import export_model
    from kfusion.pipeline import shipped_pretrained

    speech = build_dataset(source, DataConfig(modalities=("speech",)), cache_dir=False)
    done = train_model(speech, shipped_pretrained(("speech",)), "speech_only", "arousal", tmp_path / "speech.keras",
                       FAST, seed=2)

    def names(model):  # the deployed model holds each target's head as a nested model
        nested = (names(layer) if isinstance(layer, keras.Model) else () for layer in model.layers)
        return {layer.name for layer in model.layers}.union(*nested)

    assert {"arousal_levels_logits", "arousal_logits", "arousal_sum"} <= names(done.model)
    training = done.sidecar["targets"]["arousal"]["training"]
    assert training["best_val_f1"] is not None
    assert training["kept_start"] == (training["best_epoch"] == -1)  # -1: the regression start was kept
    x = _inputs(done.model, speech)
    expected = done.model.predict(x, verbose=0)["arousal"]
    loaded = keras.saving.load_model(done.path, compile=False)
    np.testing.assert_allclose(loaded.predict(x, verbose=0)["arousal"], expected, atol=1e-6)
    lite = export_model(done.path, tmp_path / "speech.tflite", format="tflite")
    np.testing.assert_allclose(run_tflite(lite, x, range(0, len(x["levels"]), 5))["arousal"], expected[::5], atol=1e-4)
