"""The in-graph front end equals the training features (kfusion.data.features), in Keras and
in converted TFLite files (float32, and float16 / dynamic where the front end must stay float32).

Measured (max absolute error against ``kfusion.data.features.mfcc``): Keras ~3e-4 on MFCC
values up to ~630 (c0 of digital silence), ~2e-4 in TFLite; after CMVN ~6e-5.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from kfusion.config import FeatureConfig  # noqa: E402
from kfusion.data.features import mfcc, speech_features, wearable_features, zscore  # noqa: E402
from kfusion.errors import ConfigError  # noqa: E402
from kfusion.export.raw_inputs import raw_input_model  # noqa: E402
from kfusion.models.feature_layers import MfccFrontEnd, WindowNormalization, dft_matrices  # noqa: E402

MFCC_TOLERANCE = 1e-2      # absolute, on MFCC values up to ~630
CMVN_TOLERANCE = 1e-3      # absolute, after per-window CMVN (unit variance)


def speechlike_audio(rng, seconds: float = 4.0, rate: int = 16000) -> np.ndarray:
    """Voiced syllables (harmonics of a gliding f0, two formant-like bumps) separated by
    digital silence and very quiet noise."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(np.sin(k * phase) * np.exp(-((k * f0 - 700) / 400) ** 2 - 0.0 * k)
                 + 0.5 * np.sin(k * phase) * np.exp(-((k * f0 - 1800) / 500) ** 2) for k in range(1, 30))
    envelope = (np.sin(2 * np.pi * 2.5 * t) > 0.2).astype(float)
    audio = 0.3 * voiced / np.abs(voiced).max() * envelope + 1e-4 * rng.standard_normal(t.size) * (1 - envelope)
    audio[: rate // 2] = 0.0  # half a second of digital silence
    return audio.astype(np.float32)


@pytest.fixture(scope="module")
def audio_windows():
    rng = np.random.default_rng(0)
    return np.stack([
        rng.uniform(-1, 1, 64000),                       # white noise, full scale
        speechlike_audio(rng),
        0.001 * rng.standard_normal(64000),              # very quiet
        np.zeros(64000),                                 # digital silence
    ]).astype(np.float32)


def _front_end_model():
    audio = keras.Input((64000,), name="speech")
    temp = keras.Input((16, 1), name="temp")
    coefficients = MfccFrontEnd(name="speech_mfcc")(audio)
    return keras.Model({"speech": audio, "temp": temp},
                       {"mfcc": coefficients,
                        "cmvn": WindowNormalization(name="speech_cmvn")(coefficients),
                        "temp_z": WindowNormalization(name="temp_zscore")(temp)})


def temperature_windows(n: int = 4) -> np.ndarray:
    """Skin temperature windows: constant ones (common at the E4's 0.02 °C resolution) and
    slowly varying ones, around 33 °C."""
    rng = np.random.default_rng(7)
    out = 33.0 + np.round(0.05 * rng.standard_normal((n, 16, 1)), 2)
    out[0] = 33.17
    out[1] = 31.83
    return out.astype(np.float32)


def test_dft_matrices_give_the_power_spectrum():
    rng = np.random.default_rng(1)
    frame = rng.standard_normal(400)
    cos_part, sin_part = dft_matrices()
    even = np.concatenate([[frame[0]], frame[1:200] + frame[399:200:-1], [frame[200]]])
    odd = frame[1:200] - frame[399:200:-1]
    power = (even @ cos_part) ** 2 + (odd @ sin_part) ** 2
    from kfusion.data.features import analysis_window

    expected = np.abs(np.fft.rfft(frame * analysis_window())) ** 2
    np.testing.assert_allclose(power, expected, rtol=1e-4, atol=1e-4 * expected.max())


def test_mfcc_front_end_matches_the_training_features_in_keras(audio_windows):
    out = _front_end_model()({"speech": audio_windows, "temp": temperature_windows()})
    reference = mfcc(audio_windows)
    assert out["mfcc"].shape == (4, 400, 40)
    error = np.abs(np.asarray(out["mfcc"]) - reference)
    assert error.max() <= MFCC_TOLERANCE, error.max(axis=(1, 2))
    assert np.abs(reference).max() > 100  # the comparison covers large values
    # CMVN of the digitally silent window (index 3) is left out: its MFCCs are the same in
    # every frame, and numpy's float32 mean (~6e-5 off at -632) exceeds the absolute zscore
    # eps (1e-6), so the training path amplifies rounding noise to +-1 there; the in-graph
    # normalisation gives exact zeros (reported to the lead).
    assert np.all(np.asarray(out["cmvn"])[3] == 0)
    np.testing.assert_allclose(np.asarray(out["temp_z"]), zscore(temperature_windows(), axis=1), atol=1e-4)
    cmvn_error = np.abs(np.asarray(out["cmvn"])[:3] - zscore(reference[:3], axis=1))
    assert cmvn_error.max() <= CMVN_TOLERANCE, cmvn_error.max(axis=(1, 2))


def test_window_normalization_is_the_training_zscore():
    rng = np.random.default_rng(2)
    windows = np.stack([
        rng.normal(0, 1, (16, 1)),
        33.0 + 0.05 * rng.standard_normal((16, 1)),   # temperature: a large offset, small spread
        np.full((16, 1), 0.31),                        # flat (a constant EDA window) -> zeros
        np.zeros((16, 1)),
        np.full((16, 1), 33.17),
    ]).astype(np.float32)
    out = np.asarray(WindowNormalization()(windows))
    np.testing.assert_allclose(out, zscore(windows, axis=1), atol=2e-4)
    assert np.all(out[2:] == 0)
    # Constant MFCC frames (as in digital silence): exact zeros, whatever the offset.
    frame = np.random.default_rng(3).normal(0, 200, (1, 1, 40)).astype(np.float32)
    assert np.all(np.asarray(WindowNormalization()(np.repeat(frame, 400, axis=1))) == 0)


def test_raw_input_model_equals_the_features_path():
    from export_helpers import small_emotion_model

    model = small_emotion_model("unweighted")
    raw_model = raw_input_model(model)
    rng = np.random.default_rng(3)
    raw = {"speech": np.stack([speechlike_audio(rng), rng.uniform(-0.5, 0.5, 64000).astype(np.float32)]),
           "acc": rng.normal(0, 20, (2, 128, 3)).astype(np.float32),
           "bvp": rng.normal(0, 50, (2, 256, 1)).astype(np.float32),
           "eda": (2 + 0.1 * rng.standard_normal((2, 16, 1))).astype(np.float32),
           "temp": (33 + 0.05 * rng.standard_normal((2, 16, 1))).astype(np.float32),
           "presence": np.ones((2, 5), dtype=np.float32)}
    features = {"speech": speech_features(raw["speech"]), "presence": raw["presence"],
                **{m: wearable_features(raw[m]) for m in ("acc", "bvp", "eda", "temp")}}
    expected = model(features)
    got = raw_model(raw)
    assert sorted(t.name for t in raw_model.inputs) == sorted(raw)
    for target in expected:
        np.testing.assert_allclose(np.asarray(got[target]), np.asarray(expected[target]), atol=1e-4)
    # "none" normalisation: no WindowNormalization in front of the wearables.
    plain = raw_input_model(model, FeatureConfig(wearable_norm="none", speech_norm="none"))
    names = {layer.name for layer in plain.layers}
    assert "speech_mfcc" in names and "speech_cmvn" not in names and "acc_zscore" not in names


def test_raw_input_model_round_trips_through_a_keras_file(tmp_path):
    from export_helpers import small_emotion_model

    raw_model = raw_input_model(small_emotion_model("weighted", modalities=("speech", "eda")))
    path = tmp_path / "raw.keras"
    raw_model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    rng = np.random.default_rng(4)
    x = {"speech": rng.uniform(-1, 1, (1, 64000)).astype(np.float32),
         "eda": rng.normal(size=(1, 16, 1)).astype(np.float32),
         "presence": np.ones((1, 2), dtype=np.float32)}
    for target, value in raw_model(x).items():
        np.testing.assert_allclose(np.asarray(loaded(x)[target]), np.asarray(value), atol=1e-6)


def test_front_end_in_tflite_builtin_ops_and_stays_float32_when_quantised(tmp_path, audio_windows):
    from export_helpers import run_tflite

    from kfusion.export.tflite import _convert_variant, _front_end_scopes, _saved_model, tflite_ops

    model = _front_end_model()
    saved = tmp_path / "saved"
    _saved_model(model, saved)
    scopes = _front_end_scopes(model)
    reference = mfcc(audio_windows)
    float_content, float_ops = _convert_variant(saved, "none", None, scopes)
    assert float_ops == tflite_ops(float_content)
    for quantize in ("none", "float16", "dynamic"):
        content = float_content if quantize == "none" else _convert_variant(
            saved, quantize, None, scopes, float_content)[0]
        ops = tflite_ops(content)
        assert not [op for op in ops if op.startswith("Flex") or op == "CUSTOM"], ops
        assert "RFFT2D" not in ops and "FULLY_CONNECTED" in ops and "LOG" in ops
        path = tmp_path / f"front-{quantize}.tflite"
        path.write_bytes(content)
        out = run_tflite(path, {"speech": audio_windows, "temp": temperature_windows()})
        assert np.all(out["temp_z"][:2] == 0) and np.all(out["cmvn"][3] == 0)  # constant windows
        np.testing.assert_allclose(out["temp_z"], zscore(temperature_windows(), axis=1), atol=1e-4)
        error = np.abs(out["mfcc"] - reference).max()
        cmvn_error = np.abs(out["cmvn"][:3] - zscore(reference[:3], axis=1)).max()
        assert error <= MFCC_TOLERANCE and cmvn_error <= CMVN_TOLERANCE, (quantize, error, cmvn_error)
    # Nothing of the front end was left quantised: same size as float, give or take metadata.
    assert abs(len(content) - len(float_content)) < 0.05 * len(float_content)


def test_front_end_bad_input():
    with pytest.raises(ConfigError, match="at least 160 samples"):
        MfccFrontEnd()(keras.Input((100,)))
    with pytest.raises(ConfigError, match=r"\[batch, samples\]"):
        MfccFrontEnd()(keras.Input((100, 2)))
    with pytest.raises(ConfigError, match="other MFCC settings .*differing: n_mfcc"):
        MfccFrontEnd(settings={**MfccFrontEnd().get_config()["settings"], "n_mfcc": 13})
    with pytest.raises(ConfigError, match="eps"):
        WindowNormalization(eps=0)
    with pytest.raises(ConfigError, match=r"\[batch, time, channels\]"):
        WindowNormalization()(keras.Input((16,)))
    inputs = keras.Input((400, 13), name="speech")
    wrong = keras.Model(inputs, {"arousal": keras.layers.Dense(3)(keras.layers.Flatten()(inputs))})
    with pytest.raises(ConfigError, match="expected \\[frames, 40\\] MFCCs"):
        raw_input_model(wrong)
    other = keras.Input((8,), name="heart_rate")
    with pytest.raises(ConfigError, match="inputs named by modality"):
        raw_input_model(keras.Model(other, keras.layers.Dense(2)(other)))
    from export_helpers import small_emotion_model

    with pytest.raises(ConfigError, match="FeatureConfig"):
        raw_input_model(small_emotion_model("unweighted", modalities=("eda",)), features="zscore")


@pytest.mark.parametrize("prosody, flux", [(True, True), (True, False), (False, True), (False, False)])
def test_raw_input_model_with_calibrated_levels_equals_the_data_path(tmp_path, prosody, flux):
    """A level-aware model behind the front end takes each modality's calibration as an input
    and gives what the training path (calibrate, window levels, z-score; speech prosody and
    cepstral flux when the model's levels hold them) gives."""
    from export_helpers import small_emotion_model

    from kfusion.data.calibration import ChannelStats
    from kfusion.data.features import featurize

    modalities = ("speech", "acc", "eda")
    extra = (5 if prosody else 0) + (13 if flux else 0)
    width = 2 * 40 + extra + 2 * 3 + 2 * 1
    model = small_emotion_model("unweighted", modalities=modalities, levels=width)
    raw_model = raw_input_model(model)
    rng = np.random.default_rng(5)
    raw = {"speech": np.stack([speechlike_audio(rng), speechlike_audio(rng)]),
           "acc": rng.normal(0, 20, (2, 128, 3)).astype(np.float32),
           "eda": (2 + 0.1 * rng.standard_normal((2, 16, 1))).astype(np.float32)}
    stats = {"speech": ChannelStats(rng.normal(0, 50, 40), rng.uniform(5, 20, 40), "participant", 60.0,
                                    rng.normal(0, 0.5, 80 + extra), rng.uniform(0.2, 2.0, 80 + extra), 10),
             "acc": ChannelStats(np.array([-10.0, 5.0, 60.0]), np.array([20.0, 15.0, 18.0]), "participant", 60.0,
                                 rng.normal(0, 0.5, 6), rng.uniform(0.2, 2.0, 6), 10),
             # no level statistics (too few windows): identity rows, levels used as they are
             "eda": ChannelStats(np.array([1.5]), np.array([0.4]), "participant", 60.0)}
    presence = {m: np.ones(2, bool) for m in modalities}
    features = FeatureConfig(speech_prosody=prosody, speech_flux=flux)
    inputs, levels = featurize(raw, presence, features, stats)
    assert levels["speech"].shape == (2, 80 + extra)
    plain = featurize(raw, presence, features, {m: s.without_levels() for m, s in stats.items()})[1]
    assert not np.allclose(levels["acc"], plain["acc"]) and np.array_equal(levels["eda"], plain["eda"])
    expected = model({**inputs, "presence": np.ones((2, 3), np.float32),
                      "levels": np.concatenate([levels[m] for m in modalities], axis=1)})
    shapes = {t.name: tuple(t.shape[1:]) for t in raw_model.inputs}
    assert shapes["calibration_acc"] == (6, 3) and shapes["calibration_speech"] == ((8 if extra else 6), 40)
    calibration = {f"calibration_{m}": np.repeat(stats[m].rows(shapes[f"calibration_{m}"][0])[None], 2, 0)
                   for m in modalities}
    got = raw_model({**raw, "presence": np.ones((2, 3), np.float32), **calibration})
    assert sorted(t.name for t in raw_model.inputs) == sorted([*raw, "presence", *calibration])
    for target in expected:
        np.testing.assert_allclose(np.asarray(got[target]), np.asarray(expected[target]), atol=2e-4)
    # The raw model round-trips through a .keras file (its front-end layers are registered).
    raw_model.save(tmp_path / "levels.keras")
    loaded = keras.saving.load_model(tmp_path / "levels.keras", compile=False)
    for target, value in got.items():
        np.testing.assert_allclose(np.asarray(loaded({**raw, "presence": np.ones((2, 3), np.float32),
                                                       **calibration})[target]), np.asarray(value), atol=1e-5)
