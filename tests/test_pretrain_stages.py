"""The three pretraining stages from the API: outputs, run folders, resume after a kill."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import soundfile

from kfusion.models import pretraining_targets, summed_absolute_error
from kfusion.training.audio_corpus import read_audio_corpus
from kfusion.training.pretrain import (
    COLLAPSED_CODE_STD,
    EncoderPretrainConfig,
    FusionPretrainConfig,
    SpeechPretrainConfig,
    pretrain_encoders,
    pretrain_fusion,
    pretrain_speech,
    read_progress,
)

TINY_ENCODER = EncoderPretrainConfig(epochs=3, batch_size=16, max_windows=64, seed=3)


class Interrupt(Exception):
    pass


class KillAtEpoch(keras.callbacks.Callback):
    """Stands in for a killed process: raises when epoch ``at`` (0-based) begins."""

    def __init__(self, at: int):
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            raise Interrupt(f"killed at epoch {epoch}")


class EpochsSeen(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


@pytest.fixture(scope="module")
def source(kemocon_synth):
    return f"kemocon:{kemocon_synth}"


@pytest.fixture(scope="module")
def eda_run(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("encoders")
    paths = pretrain_encoders([source], out, TINY_ENCODER, modalities=("eda",), cache_dir=False,
                              verbose=0, progress=False)
    return out, paths


def _weights(model):
    return [np.asarray(w) for w in model.get_weights()]


def test_encoder_stage_saves_the_encoder_alone_with_a_run_folder(eda_run):
    out, paths = eda_run
    assert set(paths) == {"eda"} and paths["eda"].is_file()
    encoder = keras.saving.load_model(paths["eda"], compile=False)
    assert encoder.input_shape == (None, 16, 1) and encoder.output_shape == (None, 40)
    assert not any("projection" in layer.name for layer in encoder.layers)
    for name in ("config.json", "versions.json", "data.json"):
        assert (out / name).is_file()
    assert json.loads((out / "config.json").read_text())["config"]["temperature"] == 0.1
    progress = read_progress(out / "eda")
    assert progress["finished"] and progress["epochs_done"] == 3 and len(progress["history"]) == 3
    assert all(np.isfinite(h["loss"]) for h in progress["history"])


def test_a_finished_stage_is_not_redone(eda_run, source):
    out, paths = eda_run
    before = paths["eda"].stat().st_mtime_ns
    seen = EpochsSeen()
    again = pretrain_encoders([source], out, TINY_ENCODER, modalities=("eda",), cache_dir=False,
                              verbose=0, progress=False, callbacks=[seen])
    assert again == paths and seen.epochs == [] and paths["eda"].stat().st_mtime_ns == before


def test_a_killed_run_resumes_after_its_last_epoch_and_ends_with_the_same_weights(eda_run, source, tmp_path):
    _, uninterrupted = eda_run
    out = tmp_path / "killed"
    with pytest.raises(Interrupt):
        pretrain_encoders([source], out, TINY_ENCODER, modalities=("eda",), cache_dir=False, verbose=0,
                          progress=False, callbacks=[KillAtEpoch(2)])
    state = read_progress(out / "eda")
    assert state["epochs_done"] == 2 and not state["finished"]
    assert not (out / "eda_encoder.keras").exists()
    seen = EpochsSeen()
    pretrain_encoders([source], out, TINY_ENCODER, modalities=("eda",), cache_dir=False, verbose=0,
                      progress=False, callbacks=[seen])
    assert seen.epochs == [2]                       # only the missing epoch ran
    assert len(read_progress(out / "eda")["history"]) == 3
    resumed = keras.saving.load_model(out / "eda_encoder.keras", compile=False)
    reference = keras.saving.load_model(uninterrupted["eda"], compile=False)
    for a, b in zip(_weights(resumed), _weights(reference)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_run_folder_refuses_another_config(eda_run, source):
    from kfusion.errors import ConfigError

    out, _ = eda_run
    with pytest.raises(ConfigError, match="another configuration"):
        pretrain_encoders([source], out, TINY_ENCODER.replace(temperature=0.5), modalities=("eda",),
                          cache_dir=False, verbose=0, progress=False)


def _write_tone(path, seconds: float, rate: int, freq: float, seed: int):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    audio = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.normal(size=t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, np.stack([audio, audio], axis=1).astype(np.float32), rate)


def test_audio_corpus_cuts_voxceleb_like_trees_into_mfcc_windows(tmp_path):
    _write_tone(tmp_path / "id001" / "videoA" / "00001.wav", 10.0, 8000, 220.0, 0)
    _write_tone(tmp_path / "id002" / "videoB" / "00001.wav", 2.0, 16000, 440.0, 1)
    corpus = read_audio_corpus(tmp_path)
    # 10 s at a 3 s hop: windows at 0, 3, 6 s; the 2 s file is padded to one window.
    assert corpus.inputs.shape == (4, 400, 40) and corpus.inputs.dtype == np.float32
    assert corpus.speakers.tolist() == ["id001"] * 3 + ["id002"]
    assert corpus.report["zero_padded_files"] == ["id002/videoB/00001.wav"]
    np.testing.assert_allclose(corpus.inputs[0].mean(axis=0), 0.0, atol=1e-4)  # CMVN


def test_speech_stage_trains_on_an_audio_folder_and_a_data_set(tmp_path, source):
    for k in range(3):
        _write_tone(tmp_path / "audio" / f"clip{k}.wav", 13.0, 16000, 200.0 + 100 * k, k)
    config = SpeechPretrainConfig(epochs=1, batch_size=8, validation_fraction=0.34, max_windows=40)
    paths = pretrain_speech([f"audio:{tmp_path / 'audio'}", source], tmp_path / "speech", config,
                            cache_dir=False, verbose=0)
    encoder = keras.saving.load_model(paths["encoder"], compile=False)
    assert encoder.input_shape == (None, 400, 40) and encoder.output_shape == (None, 40)
    assert paths["autoencoder"].is_file()
    history = read_progress(tmp_path / "speech" / "speech")["history"]
    assert len(history) == 1 and {"loss", "val_loss"} <= set(history[0])
    record = json.loads((tmp_path / "speech" / "results.jsonl").read_text().splitlines()[0])
    assert record["code_std"] > COLLAPSED_CODE_STD and record["collapsed"] is False


def test_a_collapsed_speech_code_is_reported(tmp_path):
    # An L1 weight far above the reconstruction error drives the code to zero: the stage says so.
    for k in range(2):
        _write_tone(tmp_path / "audio" / f"clip{k}.wav", 10.0, 16000, 200.0 + 150 * k, k)
    config = SpeechPretrainConfig(epochs=20, batch_size=2, validation_fraction=0.0, sparsity=10.0,
                                  learning_rate=0.01)
    with pytest.warns(UserWarning, match="speech code collapsed"):
        pretrain_speech([f"audio:{tmp_path / 'audio'}"], tmp_path / "speech", config, cache_dir=False, verbose=0)
    record = json.loads((tmp_path / "speech" / "results.jsonl").read_text().splitlines()[0])
    assert record["collapsed"] is True and record["code_std"] < COLLAPSED_CODE_STD


def test_fusion_stage_with_frozen_pretrained_encoders(eda_run, source, tmp_path):
    encoders_dir, paths = eda_run
    config = FusionPretrainConfig(epochs=1, batch_size=16, modalities=("eda", "temp"),
                                  statistics=("mean", "std"), scaler_draws=1, validation_fraction=0.25,
                                  projection_units=(8,), head_units=(4,))
    results = pretrain_fusion([source], tmp_path / "fusion", config, encoders=encoders_dir,
                              mechanisms="weighted", cache_dir=False, verbose=0, progress=False)
    files = results["weighted"]
    model = keras.saving.load_model(files["model"])  # compiled: its loss is registered too
    assert pretraining_targets(model) == ["eda_mean", "eda_std", "temp_mean", "temp_std"]
    assert model.loss is summed_absolute_error
    backbone = keras.saving.load_model(files["backbone"], compile=False)
    assert backbone.output_shape == (None, 8)
    scaler = json.loads(files["scaler"].read_text())
    assert set(scaler["mean"]) == {"eda_mean", "eda_std", "temp_mean", "temp_std"}
    record = [json.loads(line) for line in (tmp_path / "fusion" / "results.jsonl").read_text().splitlines()][0]
    assert len(record["validation_participants"]) == 1            # 1 of 4 participants held out
    assert list(record["val_mae"]) == ["eda_mean", "eda_std", "temp_mean", "temp_std"]
    assert sum(record["val_mae"].values()) == pytest.approx(record["val_loss"], rel=1e-4)  # the summed loss
    assert scaler["fitted_with"]["windows"] == record["train_windows"]  # fitted on training windows only
    assert record["encoders"]["eda"].endswith("eda_encoder.keras") and record["encoders"]["temp"] == "random"
    # Frozen: the EDA encoder inside the trained model still has the pretrained weights.
    pretrained = keras.saving.load_model(paths["eda"], compile=False)
    for a, b in zip(_weights(model.get_layer("eda_encoder")), _weights(pretrained)):
        np.testing.assert_array_equal(a, b)


def test_fusion_stage_never_trains_or_freezes_the_callers_encoders(eda_run, source, tmp_path):
    """Encoders given as models are copied: with freeze_encoders=False each mechanism trains its
    own copy from the given weights, and the caller's model keeps its weights and flags."""
    encoders_dir, paths = eda_run
    given = keras.saving.load_model(paths["eda"], compile=False)
    before = _weights(given)
    config = FusionPretrainConfig(epochs=1, batch_size=16, modalities=("eda",), statistics=("mean",),
                                  scaler_draws=1, validation_fraction=0.25, projection_units=(8,),
                                  head_units=(4,), freeze_encoders=False, learning_rate=0.01)

    def trained_encoder(mechanisms, out):
        results = pretrain_fusion([source], out, config, encoders={"eda": given}, mechanisms=mechanisms,
                                  cache_dir=False, verbose=0, progress=False)
        backbone = keras.saving.load_model(results["unweighted"]["backbone"], compile=False)
        return _weights(backbone.get_layer("eda_encoder"))

    after_weighted = trained_encoder(["weighted", "unweighted"], tmp_path / "both")
    assert given.trainable and all(layer.trainable for layer in given.layers)
    for a, b in zip(_weights(given), before):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(after_weighted, before))  # stage 2 trained a copy
    # "unweighted" started from the given weights, not from what "weighted" trained before it.
    for a, b in zip(after_weighted, trained_encoder(["unweighted"], tmp_path / "alone")):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_resumable_training_prints_no_shuffle_warning(tmp_path):
    """Each epoch's tf.data batches come in their own seeded order: fit is not asked to shuffle
    them again (Keras would warn that it cannot)."""
    import warnings

    import keras
    import tensorflow as tf

    from kfusion.training.pretrain import train_resumable

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    data = tf.data.Dataset.from_tensor_slices((np.ones((8, 3), "float32"), np.ones((8, 1), "float32"))).batch(4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        history = train_resumable(model, lambda epoch: data, 2, tmp_path / "stage", verbose=0)
    assert len(history) == 2


def test_a_user_early_stopping_ends_a_pretraining_run(source, tmp_path):
    # One fit for the whole run: Keras's EarlyStopping keeps its count across epochs and stops.
    stop = keras.callbacks.EarlyStopping(monitor="loss", min_delta=1e9, patience=1)  # never improves
    seen = EpochsSeen()
    config = EncoderPretrainConfig(epochs=6, batch_size=16, max_windows=64, seed=3)
    paths = pretrain_encoders([source], tmp_path, config, modalities=("eda",), cache_dir=False, verbose=0,
                              progress=False, callbacks=[stop, seen])
    assert seen.epochs == [0, 1] and stop.stopped_epoch == 1
    state = read_progress(tmp_path / "eda")
    assert state["finished"] and state["epochs_done"] == 2 and len(state["history"]) == 2
    assert paths["eda"].is_file() and not (tmp_path / "eda" / "backup").exists()


class KillAtBatch(keras.callbacks.Callback):
    """Stands in for a killed process: raises after batch ``batch`` of epoch ``epoch``."""

    def __init__(self, epoch: int, batch: int):
        super().__init__()
        self.at, self.epoch = (epoch, batch), None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise Interrupt(f"killed in epoch {self.epoch} after batch {batch}")


def _noisy_model(seed: int):
    from kfusion.training.augment import RandomNoise

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((8, 2)), RandomNoise(0.5, seed=seed), keras.layers.Flatten(),
                              keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    return model


def _epoch_batches(epoch: int):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 8, 2)).astype("float32"), rng.normal(size=(40, 1)).astype("float32")
    order = np.random.default_rng([7, epoch]).permutation(len(x))
    return tf.data.Dataset.from_tensor_slices((x[order], y[order])).batch(8)


def test_a_run_killed_mid_epoch_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path):
    """The backup restores weights, optimizer and the augmentation layer's random state: the epoch
    cut short is run again from its start and the run ends where an uninterrupted one ends."""
    from kfusion.training.pretrain import train_resumable

    reference = _noisy_model(4)
    full = train_resumable(reference, _epoch_batches, 4, tmp_path / "full", verbose=0)
    killed = _noisy_model(4)
    with pytest.raises(Interrupt):
        train_resumable(killed, _epoch_batches, 4, tmp_path / "killed", verbose=0,
                        callbacks=[KillAtBatch(epoch=2, batch=2)])
    assert read_progress(tmp_path / "killed")["epochs_done"] == 2
    resumed, seen = _noisy_model(4), EpochsSeen()  # a new process: fresh model, same seed
    history = train_resumable(resumed, _epoch_batches, 4, tmp_path / "killed", verbose=0, callbacks=[seen])
    assert seen.epochs == [2, 3] and len(history) == 4
    np.testing.assert_allclose([h["loss"] for h in history], [h["loss"] for h in full], rtol=1e-6)
    for a, b in zip(_weights(resumed), _weights(reference)):
        np.testing.assert_array_equal(a, b)
    # A run whose fit ended trains no more: a new call only restores its weights.
    again, seen = _noisy_model(9), EpochsSeen()
    train_resumable(again, _epoch_batches, 4, tmp_path / "killed", verbose=0, callbacks=[seen])
    assert seen.epochs == []
    for a, b in zip(_weights(again), _weights(reference)):
        np.testing.assert_array_equal(a, b)


def test_a_backup_one_epoch_ahead_of_progress_resumes_to_the_same_weights(tmp_path):
    """A crash between the epoch's backup and its progress.json: Keras restores the later epoch
    and the chained pipeline skips the epoch progress.json did not record, so the run still ends
    with the weights of an uninterrupted one."""
    from kfusion.training.pretrain import train_resumable

    reference = _noisy_model(4)
    train_resumable(reference, _epoch_batches, 4, tmp_path / "full", verbose=0)
    killed = _noisy_model(4)
    with pytest.raises(Interrupt):
        train_resumable(killed, _epoch_batches, 4, tmp_path / "killed", verbose=0, callbacks=[KillAtEpoch(2)])
    progress = tmp_path / "killed" / "progress.json"
    state = json.loads(progress.read_text())
    assert state["epochs_done"] == 2
    state.update(epochs_done=1, history=state["history"][:1])  # the second epoch's record was lost
    progress.write_text(json.dumps(state))
    resumed, seen = _noisy_model(4), EpochsSeen()
    train_resumable(resumed, _epoch_batches, 4, tmp_path / "killed", verbose=0, callbacks=[seen])
    assert seen.epochs == [2, 3]
    for a, b in zip(_weights(resumed), _weights(reference)):
        np.testing.assert_array_equal(a, b)


def test_a_multi_output_model_traces_its_train_step_once(tmp_path):
    """The compiled loss (one tracker per output) is built before fit, so the train step is not
    traced a second time because the first trace created variables."""
    import tensorflow as tf

    from kfusion.training.pretrain import train_resumable

    inputs = keras.Input((3,))
    outputs = {name: keras.layers.Dense(1, name=name)(inputs) for name in ("a", "b")}
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss={"a": "mae", "b": "mae"})
    traces, step = [], model.train_step

    def counted(data):
        traces.append(1)
        return step(data)

    model.train_step = counted
    x, y = np.ones((8, 3), "float32"), np.ones((8, 1), "float32")
    data = tf.data.Dataset.from_tensor_slices((x, {"a": y, "b": y})).batch(4)
    history = train_resumable(model, lambda epoch: data, 2, tmp_path / "stage", verbose=0)
    assert len(traces) == 1 and len(history) == 2 and {"a_loss", "b_loss"} <= set(history[0])
