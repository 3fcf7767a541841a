"""Cepstral flux in the speech levels: numpy values, the graph layer, calibration, old models."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kfusion.config import FeatureConfig
from kfusion.data.calibration import (ChannelStats, level_names, speech_extra_names, speech_extras_of_width,
                                      speech_statistics)
from kfusion.data.features import featurize, mfcc
from kfusion.data.prosody import PROSODY_NAMES
from kfusion.data.spectral_flux import FLUX_COEFFICIENTS, FLUX_NAMES, window_flux
from kfusion.errors import ConfigError

RATE = 16000


def speech_like(seconds: float = 4.0, syllables_per_second: float = 4.0, seed: int = 0) -> np.ndarray:
    """Noise bursts shaped by a syllable-rate envelope over a harmonic carrier."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * syllables_per_second * t + rng.uniform(0, 6))
    carrier = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 12))
    return (0.1 * envelope * carrier + 0.005 * rng.normal(size=t.size)).astype(np.float32)


def test_window_flux_known_values():
    """An alternating coefficient has flux 2, a ramp sqrt(12 / (T^2 - 1)), a flat one 0; only
    the real frames of a padded window count; per-coefficient scale and offset do not matter."""
    frames = 50
    windows = np.zeros((3, frames, 40), np.float32)
    windows[0, :, 0] = np.where(np.arange(frames) % 2, 1.0, -1.0)
    windows[1, :, 0] = np.arange(frames)
    windows[2, :, :] = 7.0
    flux = window_flux(windows)
    assert flux.shape == (3, FLUX_COEFFICIENTS) and flux.dtype == np.float32
    assert flux[0, 0] == pytest.approx(2.0, rel=1e-6)
    assert flux[1, 0] == pytest.approx(np.sqrt(12.0 / (frames ** 2 - 1)), rel=1e-5)
    assert np.all(flux[0, 1:] == 0) and np.all(flux[2] == 0)
    scaled = windows * np.linspace(0.5, 3.0, 40, dtype=np.float32) + 100.0
    np.testing.assert_allclose(window_flux(scaled)[:2], flux[:2], rtol=1e-4, atol=1e-5)
    padded = windows[:2].copy()
    padded[:, 20:] = 0.0
    short = window_flux(padded, frames=np.array([20, 20]))
    np.testing.assert_allclose(short, window_flux(windows[:2, :20]), rtol=1e-6)
    assert np.all(window_flux(windows[:1], frames=np.array([1])) == 0)
    with pytest.raises(ValueError, match="MFCC windows"):
        window_flux(np.zeros((2, 10, 5)))


def test_flux_rises_with_the_syllable_rate():
    audio = np.stack([speech_like(syllables_per_second=r, seed=i) for i, r in enumerate((2.0, 4.0, 7.0))])
    flux = window_flux(mfcc(audio))
    assert flux[0, 0] < flux[1, 0] < flux[2, 0]


def test_extra_level_names_and_widths():
    assert speech_extra_names(True, True) == list(PROSODY_NAMES) + list(FLUX_NAMES)
    assert {w: speech_extras_of_width(w) for w in (0, 5, 13, 18, 7)} == {
        0: (False, False), 5: (True, False), 13: (False, True), 18: (True, True), 7: None}
    names = level_names("speech", 40, prosody=True, flux=True)
    assert len(names) == 98 and names[-13:] == [f"speech_level_{n}" for n in FLUX_NAMES]
    assert FeatureConfig().speech_flux is True
    with pytest.raises(ConfigError, match="features.speech_flux"):
        FeatureConfig(speech_flux="yes")


def test_speech_levels_carry_flux_standardised_per_person():
    """Data-set levels: 80 MFCC levels, 5 prosody, then the 13 flux columns, standardised by
    the person's own window-level statistics; the same statistics without flux are a prefix."""
    recording = np.concatenate([speech_like(syllables_per_second=r, seed=i)
                                for i, r in enumerate(np.linspace(2, 7, 12))])
    stats = speech_statistics(recording, "participant", 0.0, window=(4.0, 2.0), prosody=True, flux=True)
    assert stats.level_mean.shape == (98,) and stats.windows >= 3
    prosody_only = speech_statistics(recording, "participant", 0.0, window=(4.0, 2.0), prosody=True)
    np.testing.assert_allclose(prosody_only.level_mean, stats.level_mean[:85])
    windows = recording[:4 * RATE * 3].reshape(3, -1)
    presence = {"speech": np.ones(3, bool)}
    _, levels = featurize({"speech": windows}, presence, FeatureConfig(), {"speech": stats})
    assert levels["speech"].shape == (3, 98)
    raw = window_flux(mfcc(windows))
    np.testing.assert_allclose(levels["speech"][:, 85:], (raw - stats.level_mean[85:]) / stats.level_std[85:],
                               rtol=1e-4, atol=1e-4)
    _, flux_only = featurize({"speech": windows}, presence, FeatureConfig(speech_prosody=False))
    assert flux_only["speech"].shape == (3, 93)
    np.testing.assert_allclose(flux_only["speech"][:, 80:], raw, rtol=1e-6)


def test_flux_layer_equals_numpy_and_standardises_by_its_calibration_columns():
    import keras

    from kfusion.models.feature_layers import MfccFrontEnd, SpectralFlux, WindowNormalization

    audio = np.stack([speech_like(syllables_per_second=r, seed=i) for i, r in enumerate((3.0, 6.0))])
    expected = window_flux(mfcc(audio))
    z = WindowNormalization()(MfccFrontEnd()(audio))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(SpectralFlux()(z)), expected, rtol=1e-4, atol=1e-5)
    stats = ChannelStats(np.zeros(40), np.ones(40), "participant", 60.0,
                         np.r_[np.zeros(85), np.full(13, 0.5)], np.r_[np.ones(85), np.full(13, 0.25)], 9)
    rows = np.repeat(stats.rows(8)[None], 2, 0)
    standardised = keras.ops.convert_to_numpy(SpectralFlux(offset=5)(z, rows))
    np.testing.assert_allclose(standardised, (expected - 0.5) / 0.25, rtol=1e-4, atol=1e-4)
    layer = SpectralFlux(offset=5, name="flux")
    assert SpectralFlux.from_config(layer.get_config()).offset == 5
    with pytest.raises(ConfigError, match="SpectralFlux: expected MFCC windows"):
        SpectralFlux()(keras.Input((400, 8)))


def test_raw_input_model_with_flux_matches_the_features_path():
    """The default level-aware speech model (98 levels): its raw-input model (front end,
    prosody and flux in the graph, calibration rows in) gives the probabilities of the
    features model on numpy features and levels."""
    from export_helpers import small_emotion_model

    from kfusion.export.raw_inputs import raw_input_model, speech_level_extras

    model = small_emotion_model("unweighted", modalities=("speech",), targets={"arousal": 3}, levels=98)
    assert speech_level_extras(model) == (True, True)
    raw_model = raw_input_model(model)
    assert raw_model.get_layer("speech_flux").offset == len(PROSODY_NAMES)
    audio = np.stack([speech_like(syllables_per_second=r, seed=i) for i, r in enumerate((2.5, 5.0))])
    stats = speech_statistics(np.concatenate([speech_like(syllables_per_second=r, seed=10 + i)
                                              for i, r in enumerate(np.linspace(2, 7, 8))]),
                              "participant", 0.0, window=(4.0, 2.0), prosody=True, flux=True)
    inputs, levels = featurize({"speech": audio}, {"speech": np.ones(2, bool)}, FeatureConfig(), {"speech": stats})
    presence = np.ones((2, 1), np.float32)
    expected = np.asarray(model({"speech": inputs["speech"], "presence": presence,
                                 "levels": levels["speech"]})["arousal"])
    got = np.asarray(raw_model({"speech": audio, "presence": presence,
                                "calibration_speech": np.repeat(stats.rows(8)[None], 2, 0)})["arousal"])
    np.testing.assert_allclose(got, expected, atol=2e-4)


def test_older_level_widths_still_load_and_others_are_refused(tmp_path):
    """Models trained before flux (85 levels: prosody only; 80: neither) keep their layout: no
    flux layer in their raw-input model; a width no layout has is a clear error."""
    from export_helpers import small_emotion_model

    from kfusion.export.raw_inputs import raw_input_model, speech_level_extras

    for width, extras in ((80, (False, False)), (85, (True, False)), (93, (False, True))):
        model = small_emotion_model("unweighted", modalities=("speech",), targets={"arousal": 3}, levels=width)
        assert speech_level_extras(model) == extras
        names = {layer.name for layer in raw_input_model(model).layers}
        assert ("speech_flux" in names) == extras[1] and ("speech_prosody" in names) == extras[0]
    odd = small_emotion_model("unweighted", modalities=("speech",), targets={"arousal": 3}, levels=90)
    with pytest.raises(ConfigError, match=r"levels input: expected 80 columns .* or 85, 93, 98 .*found 90"):
        speech_level_extras(odd)


def test_predictors_know_which_extra_levels_a_model_holds(tmp_path):
    """A raw-input TFLite file says it in its sidecar (one written before flux existed means no
    flux); a raw-input .keras model in its graph; a features-input one by its levels' width."""
    from export_helpers import small_emotion_model

    from kfusion.export.prediction import load_predictor
    from kfusion.export.raw_inputs import raw_input_model
    from kfusion.export.tflite import export_variants, sidecar_path

    model = small_emotion_model("unweighted", modalities=("speech",), targets={"arousal": 3}, levels=98)
    paths = export_variants(model, tmp_path, ("none",), raw_inputs=(False, True), name="speech",
                            features=FeatureConfig(speech_flux=False))  # the model's layout wins
    raw_file, features_file = paths[(True, "none")], paths[(False, "none")]
    side = json.loads(sidecar_path(raw_file).read_text())
    assert side["features"]["speech_flux"] is True and side["features"]["speech_prosody"] is True
    for path in (raw_file, features_file):
        predictor = load_predictor(path)
        assert (predictor.speech_prosody, predictor.speech_flux) == (True, True)
    del side["features"]["speech_flux"]  # a sidecar from before the option
    sidecar_path(raw_file).write_text(json.dumps(side))
    assert (load_predictor(raw_file).speech_prosody, load_predictor(raw_file).speech_flux) == (True, False)
    old = small_emotion_model("unweighted", modalities=("speech",), targets={"arousal": 3}, levels=85)
    raw_input_model(old).save(tmp_path / "old-raw.keras")
    raw_input_model(model).save(tmp_path / "new-raw.keras")
    assert load_predictor(tmp_path / "old-raw.keras").speech_flux is False
    assert load_predictor(tmp_path / "new-raw.keras").speech_flux is True


def test_a_calibration_for_another_level_layout_is_relaid_for_the_model():
    """Statistics with prosody and flux (what `kfusion calibrate` writes by default) given to a
    model with flux only, or prosody only, keep the matching columns; a file without flux
    gives identity for it."""
    from kfusion.data.calibration import with_speech_extras

    base = np.arange(80.0)
    both = ChannelStats(np.zeros(40), np.ones(40), "participant", 60.0, np.r_[base, 100 + np.arange(18.0)],
                        np.r_[np.ones(80), 2 + np.arange(18.0)], 7)
    flux_only = with_speech_extras(both, prosody=False, flux=True)
    np.testing.assert_array_equal(flux_only.level_mean, np.r_[base, 105 + np.arange(13.0)])
    np.testing.assert_array_equal(flux_only.level_std[80:], 7 + np.arange(13.0))
    assert with_speech_extras(both, prosody=True, flux=False).level_mean.shape == (85,)
    assert with_speech_extras(both, prosody=True, flux=True) is both
    prosody_only = with_speech_extras(both, prosody=True, flux=False)
    widened = with_speech_extras(prosody_only, prosody=True, flux=True)
    np.testing.assert_array_equal(widened.level_mean, np.r_[base, 100 + np.arange(5.0), np.zeros(13)])
    np.testing.assert_array_equal(widened.level_std[85:], np.ones(13))
    assert with_speech_extras(both.without_levels(), prosody=False, flux=True).level_mean is None
    from kfusion.export.prediction import GivenCalibration, _participant_stats

    given = GivenCalibration({"*": {"speech": both}})
    assert _participant_stats(given, "p1", prosody=False, flux=True)["speech"].level_mean.shape == (93,)
    assert _participant_stats(given, "p1", prosody=True, flux=True)["speech"] is both


def test_handcrafted_features_name_every_speech_level_layout_and_refuse_others():
    from kfusion.evaluation.baselines import handcrafted_features

    inputs = {"speech": np.random.default_rng(0).normal(size=(4, 20, 40)), "eda": np.ones((4, 16, 1))}
    presence = {m: np.ones(4, bool) for m in inputs}
    for width, extras in ((80, ()), (85, PROSODY_NAMES), (93, FLUX_NAMES), (98, PROSODY_NAMES + FLUX_NAMES)):
        levels = {"speech": np.zeros((4, width)), "eda": np.zeros((4, 2))}
        features, names = handcrafted_features(inputs, presence, levels)
        assert features.shape[1] == len(names)
        assert [n for n in names if n.startswith("speech_level_")] == [f"speech_level_{n}" for n in extras]
    with pytest.raises(ConfigError, match=r"levels\['speech'\]: expected 80 or 85 or 93 or 98 columns .*found 90"):
        handcrafted_features(inputs, presence, {"speech": np.zeros((4, 90)), "eda": np.zeros((4, 2))})
    with pytest.raises(ConfigError, match=r"levels\['eda'\]: expected 2 columns .*found 3"):
        handcrafted_features(inputs, presence, {"speech": np.zeros((4, 98)), "eda": np.zeros((4, 3))})
