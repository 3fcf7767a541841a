"""Prediction timelines from .keras, SavedModel and .tflite alike, on the synthetic set and the
real Stress-Predict slice, and streaming prediction equal to batch prediction."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from export_helpers import model_inputs, save_with_classes, small_emotion_model, trained_synthetic  # noqa: E402

from kfusion.config import DataConfig, WindowConfig  # noqa: E402
from kfusion.modalities import WEARABLES  # noqa: E402
from kfusion.data.sources import load_recordings  # noqa: E402
from kfusion.data.windows import cut_windows, to_audio_rate, to_nominal_rate  # noqa: E402
from kfusion.errors import ConfigError, DataError  # noqa: E402
from kfusion.export.prediction import (StreamingPredictor, load_predictor, predict,  # noqa: E402
                                    timeline)

STRESS_PREDICT = Path(__file__).parent / "fixtures" / "stress-predict"
EMOTION_COLUMNS = ["arousal_p_low", "arousal_p_neutral", "arousal_p_high", "arousal"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, kemocon_synth_medium):
    return trained_synthetic(tmp_path_factory, kemocon_synth_medium)


def _check_probabilities(frame, classes):
    for target, names in classes.items():
        p = frame[[f"{target}_p_{n}" for n in names]].to_numpy()
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-4)
        assert list(frame[target]) == [names[i] for i in p.argmax(axis=1)]


def test_predict_synthetic_from_keras_and_tflite(tmp_path, trained, kemocon_synth_medium):
    source = f"kemocon:{kemocon_synth_medium}"
    png = tmp_path / "timeline.png"
    from_keras = predict(trained.keras_path, source, tmp_path / "keras.csv", plot=png)
    assert png.read_bytes()[:4] == b"\x89PNG"
    written = pd.read_csv(tmp_path / "keras.csv")
    assert list(written.columns[:8]) == ["participant", "window_start", "time_from_start",
                                         "present_speech", "present_acc", "present_bvp",
                                         "present_eda", "present_temp"]
    assert EMOTION_COLUMNS[0] in written.columns and "emotion_p_nervous" in written.columns
    assert len(written) == len(from_keras) >= len(trained.dataset)
    classes = load_predictor(trained.keras_path).classes
    _check_probabilities(from_keras, classes)
    # The windows of the training data set get exactly the model's training-path outputs.
    expected = trained.model.predict(model_inputs(trained.dataset), verbose=0)
    keys = pd.DataFrame({"participant": trained.dataset.participants.astype(str),
                         "window_start": trained.dataset.starts})
    merged = keys.merge(from_keras.assign(participant=from_keras["participant"].astype(str)),
                        on=["participant", "window_start"], how="left", validate="one_to_one")
    for target, names in classes.items():
        got = merged[[f"{target}_p_{n}" for n in names]].to_numpy()
        np.testing.assert_allclose(got, np.asarray(expected[target]), atol=1e-5)
    assert (merged[[c for c in merged.columns if c.startswith("present_")]] == 1).all().all()
    starts = from_keras.groupby("participant")["time_from_start"]
    assert (starts.min() >= 0).all() and np.allclose(np.diff(from_keras["time_from_start"][:5]), 3.0)
    # The same timeline from the phone files (features input, and raw input with the front end:
    # its CMVN-normalised MFCCs differ from numpy's by <= 6e-5 on this set, which the trained
    # model amplifies to at most ~1e-3 in a probability).
    for key, tolerance in (((False, "none"), 1e-5), ((True, "none"), 5e-3)):
        frame = predict(trained.variants[key], source, tmp_path / f"{key[0]}.csv")
        assert list(frame["window_start"]) == list(from_keras["window_start"])
        for target, names in classes.items():
            columns = [f"{target}_p_{n}" for n in names]
            np.testing.assert_allclose(frame[columns].to_numpy(), from_keras[columns].to_numpy(),
                                       atol=tolerance)


def _stream_recording(stream, recording, span0, rng, modalities):
    """Push every modality's samples from ``span0`` on, in random chunks, interleaved."""
    series = {}
    for m in modalities:
        if m == "speech":
            audio = to_audio_rate(recording.audio)
            values, rate, start = audio.samples, audio.rate, audio.start
        else:
            signal = to_nominal_rate(recording.signals[m], m)
            values, rate, start = signal.values, signal.rate, signal.start
        series[m] = values[int(np.rint((span0 - start) * rate)):]
    position = {m: 0 for m in modalities}
    rows = []
    while any(position[m] < len(series[m]) for m in modalities):
        for m in modalities:
            size = int(rng.integers(1, 3 * stream.lengths[m] // 4 + 2))
            chunk = series[m][position[m]:position[m] + size]
            position[m] += len(chunk)
            rows.extend(stream.push(m, chunk))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("variant", ["keras", "tflite-raw"])
def test_streaming_gives_the_batch_outputs(trained, kemocon_synth_medium, variant):
    path = trained.keras_path if variant == "keras" else trained.variants[(True, "none")]
    predictor = load_predictor(path)
    config = DataConfig(modalities=predictor.modalities, window=WindowConfig(missing="fill"))
    recording = load_recordings(f"kemocon:{kemocon_synth_medium}", config, participants=["1"]).recordings[0]
    windows = cut_windows(recording, config)
    batch = timeline(predictor, [windows])
    span0 = float(windows.span[0])
    stream = StreamingPredictor(predictor, start=span0, participant=recording.participant)
    streamed = _stream_recording(stream, recording, span0, np.random.default_rng(0), predictor.modalities)
    assert len(streamed) == len(batch) > 10
    np.testing.assert_allclose(streamed["window_start"], batch["window_start"], atol=1e-6)
    numeric = [c for c in batch.columns if "_p_" in c or c.startswith("present_")]
    np.testing.assert_allclose(streamed[numeric].to_numpy(float), batch[numeric].to_numpy(float),
                               atol=1e-5)
    assert list(streamed["emotion"]) == list(batch["emotion"])
    # memory stays bounded: about one window per modality
    assert all(sum(len(b) for b in stream._buffers[m]) <= 2 * stream.lengths[m]
               for m in stream.streamed)


def test_streaming_applies_the_quality_checks_of_batch_windowing(trained, kemocon_synth_medium):
    import dataclasses

    from kfusion.data.quality import FLAT_SECONDS
    from kfusion.data.recording import Signal

    predictor = load_predictor(trained.keras_path)
    config = DataConfig(modalities=predictor.modalities, window=WindowConfig(missing="fill"))
    recording = load_recordings(f"kemocon:{kemocon_synth_medium}", config, participants=["1"]).recordings[0]
    span0 = float(cut_windows(recording, config).span[0])
    eda, bvp = recording.signals["eda"], recording.signals["bvp"]
    eda_values, bvp_values = eda.values.copy(), bvp.values.copy()
    at = lambda signal, t: int(round((span0 + t - signal.start) * signal.rate))  # noqa: E731
    eda_values[at(eda, 20):at(eda, 30)] = 0.001                      # off the skin, 20-30 s
    bvp_values[at(bvp, 50)] = 9999.0                                 # impossible, at 50 s
    flat_start = 70.0
    bvp_values[at(bvp, flat_start):at(bvp, flat_start + FLAT_SECONDS + 30)] = 12.5   # flat, 90 s
    signals = {**recording.signals, "eda": Signal(eda_values, eda.rate, eda.start, eda.source),
               "bvp": Signal(bvp_values, bvp.rate, bvp.start, bvp.source)}
    bad = dataclasses.replace(recording, signals=signals)
    batch = timeline(predictor, [cut_windows(bad, config)])
    streamed = _stream_recording(StreamingPredictor(predictor, start=span0, participant="1"), bad, span0,
                                 np.random.default_rng(2), predictor.modalities)
    assert len(streamed) == len(batch)
    starts = batch["window_start"].to_numpy() - span0
    assert batch["present_eda"][(starts > 17) & (starts < 30)].eq(0).all()
    assert batch["present_bvp"][(starts > 46) & (starts < 50)].eq(0).all()
    # The same windows lack a modality, except those a flat run had already reached before it
    # had lasted FLAT_SECONDS: streaming predicted them before the run was known to be flat.
    early = (starts + 4 > flat_start) & (starts < flat_start + FLAT_SECONDS - 4)
    differs = (streamed["present_bvp"].to_numpy() != batch["present_bvp"].to_numpy())
    assert differs.any() and not differs[~early].any()
    np.testing.assert_array_equal(streamed["present_eda"], batch["present_eda"])
    later = ~early
    numeric = [c for c in batch.columns if "_p_" in c]
    np.testing.assert_allclose(streamed.loc[later, numeric].to_numpy(float),
                               batch.loc[later, numeric].to_numpy(float), atol=1e-5)
    unchecked = _stream_recording(StreamingPredictor(predictor, start=span0, participant="1", quality_checks=False),
                                  bad, span0, np.random.default_rng(2), predictor.modalities)
    assert unchecked["present_eda"].eq(1).all()
    with pytest.raises(ConfigError, match="quality_checks: expected True or False"):
        StreamingPredictor(predictor, quality_checks="yes")


def test_streaming_with_absent_modalities_and_gaps(trained):
    predictor = load_predictor(trained.keras_path)
    stream = StreamingPredictor(predictor, start=100.0, modalities=["bvp", "eda"])
    rng = np.random.default_rng(1)
    bvp = rng.standard_normal(64 * 10)
    bvp[64 * 4 + 5] = np.nan                       # a gap inside the second window (3-7 s)
    rows = stream.push("bvp", bvp) + stream.push("eda", 1.0 + np.abs(rng.standard_normal(4 * 10)))
    assert [r["window_start"] for r in rows] == [100.0, 103.0, 106.0]   # 10 s: 0-4, 3-7, 6-10 s
    assert [r["present_bvp"] for r in rows] == [1, 0, 1]                # the gap is at 4.08 s
    assert all(r["present_speech"] == 0 and r["present_eda"] == 1 for r in rows)
    assert [r["time_from_start"] for r in rows] == [0.0, 3.0, 6.0]
    assert stream.push("bvp", rng.standard_normal(64 * 3)) == []        # eda lags: nothing new
    assert [r["window_start"] for r in stream.push("eda", np.full(12, 2.0))] == [109.0]


def test_stress_predict_wearable_only_model_from_all_three_formats(tmp_path):
    from kfusion.export.tflite import export_model

    model = small_emotion_model("weighted", modalities=WEARABLES, targets={"stress": 2}, seed=2)
    # the data set's class names travel in the model's sidecar, as kfusion train writes it
    keras_path = save_with_classes(model, tmp_path / "stress.keras", {"stress": ["non-stress", "stress"]})
    source = f"stresspredict:{STRESS_PREDICT}"
    saved = export_model(keras_path, tmp_path / "stress_savedmodel", format="savedmodel")
    raw_file = export_model(keras_path, tmp_path / "stress-raw.tflite", format="tflite", raw_inputs=True)
    frames = {name: predict(path, source, tmp_path / f"{name}.csv", plot=tmp_path / f"{name}.png"
                            if name == "tflite" else None)
              for name, path in (("keras", keras_path), ("savedmodel", saved), ("tflite", raw_file))}
    reference = frames["keras"]
    assert set(reference["participant"]) == {"S01", "S02"} and len(reference) > 20
    assert ["stress_p_non-stress", "stress_p_stress", "stress"] == list(reference.columns[-3:])
    _check_probabilities(reference, {"stress": ["non-stress", "stress"]})
    assert load_predictor(raw_file).raw_inputs and not load_predictor(saved).raw_inputs
    for name, frame in frames.items():
        assert list(frame["window_start"]) == list(reference["window_start"]), name
        # raw E4 samples in the phone file (z-scored in its graph) = z-scored windows in Keras
        np.testing.assert_allclose(frame[["stress_p_non-stress", "stress_p_stress"]].to_numpy(),
                                   reference[["stress_p_non-stress", "stress_p_stress"]].to_numpy(),
                                   atol=1e-4 if name == "tflite" else 1e-5, err_msg=name)
    # the CLI, a few lines over predict()
    from kfusion.cli.export import add_export_commands

    parser = argparse.ArgumentParser(prog="kfusion")
    add_export_commands(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "cli.csv"
    args = parser.parse_args(["predict", "--model", str(raw_file), "--data", source, "--out", str(out),
                              "--participants", "S02"])
    assert args.func(args) == 0
    cli = pd.read_csv(out)
    assert set(cli["participant"]) == {"S02"}
    assert len(cli) == int((reference["participant"] == "S02").sum())


def test_timeline_csv_keeps_absolute_time_to_the_millisecond(tmp_path):
    # a 5-minute E4 export (the first 300 s of S02): 99 windows, 3 s apart, in UNIX seconds
    folder = tmp_path / "S02"
    folder.mkdir()
    for name in ("ACC.csv", "BVP.csv", "EDA.csv", "TEMP.csv"):
        lines = (STRESS_PREDICT / "Raw_data" / "S02" / name).read_text().splitlines()
        rate = float(lines[1].split(",")[0])
        (folder / name).write_text("\n".join(lines[:2 + int(300 * rate)]) + "\n")
    model = small_emotion_model("weighted", modalities=WEARABLES, targets={"stress": 2}, seed=3)
    model.save(tmp_path / "stress.keras")
    predict(tmp_path / "stress.keras", f"e4:{folder}", tmp_path / "timeline.csv")
    text = pd.read_csv(tmp_path / "timeline.csv", dtype=str)
    assert len(text) == 99 and text["window_start"].nunique() == 99
    assert text["window_start"].iloc[0] == "1644228016.000" and text["window_start"].iloc[-1] == "1644228310.000"
    assert text["time_from_start"].iloc[1] == "3.000"
    np.testing.assert_allclose(text["window_start"].astype(float), 1644228016.0 + 3.0 * np.arange(99), atol=1e-3)


def test_predict_bad_input(tmp_path, trained, kemocon_synth_medium):
    with pytest.raises(DataError, match="an existing .keras file"):
        load_predictor(tmp_path / "missing.tflite")
    (tmp_path / "model.txt").write_text("hello")
    with pytest.raises(DataError, match="a .keras file, a SavedModel folder or a .tflite file"):
        load_predictor(tmp_path / "model.txt")
    (tmp_path / "empty_folder").mkdir()
    with pytest.raises(DataError, match="saved_model.pb"):
        load_predictor(tmp_path / "empty_folder")
    (tmp_path / "broken.tflite").write_bytes(b"not a flatbuffer")
    with pytest.raises(DataError, match="broken.tflite"):
        load_predictor(tmp_path / "broken.tflite")
    source = f"kemocon:{kemocon_synth_medium}"
    with pytest.raises(ConfigError, match="expected the model's modalities"):
        predict(trained.keras_path, source, tmp_path / "x.csv", config=DataConfig(modalities=("eda",)))
    with pytest.raises(ConfigError, match="expected the model's window"):
        predict(trained.keras_path, source, tmp_path / "x.csv",
                config=DataConfig(window=WindowConfig(seconds=5.0)))
    with pytest.raises(DataError, match="participant"):
        predict(trained.keras_path, source, tmp_path / "x.csv", participants=["99"])
    predictor = load_predictor(trained.variants[(False, "none")])
    with pytest.raises(ConfigError, match="missing model input"):
        predictor.predict({"speech": np.zeros((1, 400, 40))})
    with pytest.raises(ConfigError, match=r"input 'eda': expected \[N, 16, 1\]"):
        predictor.predict({**model_inputs(trained.dataset.select([0])), "eda": np.zeros((1, 8, 1))})
    stream = StreamingPredictor(predictor)
    with pytest.raises(ConfigError, match="not streamed"):
        stream.push("heart_rate", np.zeros(4))
    with pytest.raises(ConfigError, match=r"acc: expected samples of shape \[n, 3\]"):
        stream.push("acc", np.zeros((10, 2)))
    with pytest.raises(ConfigError, match="unknown modality 'gsr'"):
        StreamingPredictor(predictor, modalities=["gsr"])
    with pytest.raises(ConfigError, match="not streamed"):
        StreamingPredictor(predictor, modalities=["speech", "acc"]).push("bvp", [1.0])
    with pytest.raises(ConfigError, match="expected a Predictor"):
        StreamingPredictor(trained.keras_path)


def test_a_bad_training_sidecar_is_named_by_its_own_file_and_field(tmp_path):
    import json

    model = small_emotion_model("weighted", modalities=("eda",), targets={"stress": 2}, seed=3)
    path = save_with_classes(model, tmp_path / "stress.keras", {"stress": ["non-stress", "stress"]})
    side = tmp_path / "stress.json"  # the kfusion train sidecar: <name>.json, not <name>.keras.json
    data = json.loads(side.read_text())
    side.write_text(json.dumps({**data, "features": {"bogus": 1}}))
    with pytest.raises(ConfigError, match=rf"^{side}: features: unknown key\(s\) bogus"):
        load_predictor(path)
    side.write_text(json.dumps({**data, "calibration": {"bogus": 1}}))
    with pytest.raises(ConfigError, match=rf"^{side}: calibration: unknown key\(s\) bogus"):
        load_predictor(path)
