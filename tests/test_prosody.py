"""Speech prosody levels: the pitch tracker (numpy and in-graph), and how calibration,
calibration files and data sets carry it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kfusion.config import CalibrationConfig, DataConfig, FeatureConfig
from kfusion.data.calibration import ChannelStats, level_names, speech_statistics, standardize_levels
from kfusion.data.calibration_file import read_calibration
from kfusion.data.features import featurize
from kfusion.data.prosody import PROSODY_NAMES, PROSODY_SETTINGS, window_prosody
from kfusion.errors import ConfigError, DataError

RATE = 16000


def harmonic_tone(f0: float, seconds: float = 4.0, vibrato: float = 0.05, noise: float = 0.003,
                  seed: int = 0) -> np.ndarray:
    """A voice-like tone: 14 harmonics of an f0 with slow vibrato, plus a little noise."""
    t = np.arange(int(seconds * RATE)) / RATE
    track = f0 * (1 + vibrato * np.sin(2 * np.pi * 0.5 * t))
    phase = 2 * np.pi * np.cumsum(track) / RATE
    x = sum(np.sin(k * phase) / k ** 0.7 for k in range(1, 15))
    return (0.05 * x + np.random.default_rng(seed).normal(0, noise, t.size)).astype(np.float32)


def test_decimation_is_the_stated_filter_for_any_length():
    from kfusion.data.prosody import _decimate, lowpass_filter

    h = lowpass_filter()
    rng = np.random.default_rng(2)
    for n in (4000, 3999, 4001, 4002, 4003, 333):
        x = rng.normal(0, 0.1, (2, n))
        centred = x - x.mean(axis=1, keepdims=True)
        padded = np.pad(centred, ((0, 0), (15, 15 + 4)))
        count = -(-n // 4)
        expected = sum(h[k] * padded[:, k:k + 4 * count:4] for k in range(31))
        np.testing.assert_allclose(_decimate(x, PROSODY_SETTINGS), expected, atol=1e-12)


@pytest.mark.parametrize("f0", [85.0, 120.0, 180.0, 250.0, 320.0])
def test_pitch_of_a_voice_like_tone(f0):
    """f0 mean within half a semitone, small spread, all voiced, highly periodic."""
    mean, std, voiced, periodicity, change = window_prosody(harmonic_tone(f0)[None])[0]
    assert abs(mean - 12 * np.log2(f0 / 100.0)) < 0.5
    assert std < 2.0 and change < 0.5  # true std 0.6 semitones; lag steps are coarse at 320 Hz
    assert voiced > 0.95 and periodicity > 0.9


def test_silence_and_noise_are_not_voiced():
    rng = np.random.default_rng(1)
    out = window_prosody(np.stack([np.zeros(4 * RATE), rng.normal(0, 0.1, 4 * RATE)]))
    np.testing.assert_array_equal(out[0], np.zeros(len(PROSODY_NAMES)))
    assert out[1, PROSODY_NAMES.index("voiced_fraction")] < 0.05


def formant_ringing(seconds: float, level: float, seed: int = 0) -> np.ndarray:
    """Quiet noise through a resonance near 490 Hz: what a first formant rings with between
    voiced sounds. Its correlation peaks at the resonance's period, which is no f0."""
    from scipy.signal import butter, sosfilt

    noise = np.random.default_rng(seed).normal(size=int(seconds * RATE))
    ring = sosfilt(butter(4, [420, 560], btype="bandpass", fs=RATE, output="sos"), noise)
    return (level * ring / np.abs(ring).max()).astype(np.float32)


def test_formant_ringing_is_not_taken_for_pitch():
    """A voice and, after it, a formant ringing 20 dB down: the ringing's frames are unvoiced
    (they sit two octaves above the window's pitch), so f0 mean and std are the voice's; the
    in-graph tracker agrees."""
    from kfusion.models.feature_layers import ProsodyFrontEnd

    tone = harmonic_tone(120.0, seconds=2.0, seed=2)
    window = np.concatenate([tone, formant_ringing(2.0, 0.1 * np.abs(tone).max(), seed=1)])
    voice_only = window_prosody(tone[None])[0]
    got = window_prosody(window[None])[0]
    f0_mean, f0_std, voiced = (PROSODY_NAMES.index(n) for n in ("f0_mean", "f0_std", "voiced_fraction"))
    assert got[f0_mean] == pytest.approx(12 * np.log2(120 / 100), abs=0.2)
    assert got[f0_std] == pytest.approx(voice_only[f0_std], abs=0.2)
    assert got[voiced] == pytest.approx(0.5, abs=0.05)
    np.testing.assert_allclose(np.asarray(ProsodyFrontEnd()(window[None])), got[None], atol=1e-4)


def test_higher_pitch_and_wider_range_show_in_the_features():
    low, high, wide = window_prosody(np.stack([harmonic_tone(110), harmonic_tone(220),
                                               harmonic_tone(110, vibrato=0.2)]))
    assert high[0] - low[0] == pytest.approx(12.0, abs=0.6)   # an octave
    assert wide[1] > 2.5 * low[1]                              # f0 std
    assert wide[4] > low[4]                                    # f0 change


def test_padded_windows_use_their_real_samples_only():
    tone = harmonic_tone(150)
    padded = np.zeros(4 * RATE, np.float32)
    padded[:2 * RATE] = tone[:2 * RATE]
    got = window_prosody(np.stack([padded, tone]), lengths=np.array([2 * RATE, 4 * RATE]))
    np.testing.assert_allclose(got[0], window_prosody(tone[None, :2 * RATE])[0], atol=1e-6)
    # any length of real signal (utterances are not a multiple of the decimation): the same as
    # the tone cut to that length
    lengths = np.array([2 * RATE + 1, 2 * RATE + 2, 2 * RATE + 3, 33333])
    cut = window_prosody(np.repeat(tone[None], 4, 0), lengths=lengths)
    for row, n in zip(cut, lengths):
        np.testing.assert_allclose(row, window_prosody(tone[None, :n])[0], atol=1e-6)
        assert row[PROSODY_NAMES.index("voiced_fraction")] > 0.9
    # too short for one frame: zeros
    assert not window_prosody(tone[None, :400]).any()
    assert PROSODY_SETTINGS.frames(4 * RATE) == 197


def test_in_graph_prosody_equals_numpy_and_applies_the_calibration_rows(tmp_path):
    import keras

    from kfusion.models.feature_layers import ProsodyFrontEnd

    audio = np.stack([harmonic_tone(95, seed=1), harmonic_tone(210, vibrato=0.15, seed=2),
                      np.where(np.arange(4 * RATE) < 2 * RATE, harmonic_tone(160, seed=3), 0.0)]).astype(np.float32)
    expected = window_prosody(audio)
    layer = ProsodyFrontEnd()
    np.testing.assert_allclose(np.asarray(layer(audio)), expected, atol=1e-4)
    stats = ChannelStats(np.zeros(40), np.ones(40), "participant", 60.0,
                         np.r_[np.zeros(80), [3.0, 1.0, 0.5, 0.8, 0.2]],
                         np.r_[np.ones(80), [2.0, 0.5, 0.2, 0.1, 0.1]], 9)
    rows = np.repeat(stats.rows(8)[None], 3, 0)
    assert rows.shape == (3, 8, 40)
    np.testing.assert_allclose(rows[0, 6, :5], [3.0, 1.0, 0.5, 0.8, 0.2], rtol=1e-6)
    np.testing.assert_array_equal(rows[0, 7, 5:], np.ones(35))
    standardised = np.asarray(layer(audio, rows))
    np.testing.assert_allclose(standardised, (expected - stats.level_mean[80:]) / stats.level_std[80:], atol=1e-3)
    # 6 rows (a model without prosody statistics): features as they are
    np.testing.assert_allclose(np.asarray(layer(audio, np.repeat(stats.rows()[None], 3, 0))), expected, atol=1e-4)
    # config round trip and a saved model
    assert ProsodyFrontEnd.from_config(layer.get_config()).get_config() == layer.get_config()
    inputs = keras.Input((4 * RATE,))
    model = keras.Model(inputs, ProsodyFrontEnd(name="p")(inputs))
    model.save(tmp_path / "p.keras")
    loaded = keras.saving.load_model(tmp_path / "p.keras")
    np.testing.assert_allclose(np.asarray(loaded(audio)), np.asarray(model(audio)), atol=1e-6)


def test_prosody_layer_rejects_other_settings_and_short_windows():
    import keras

    from kfusion.models.feature_layers import ProsodyFrontEnd

    settings = {**PROSODY_SETTINGS.to_dict(), "voicing_threshold": 0.5}
    with pytest.raises(ConfigError, match="other prosody settings"):
        ProsodyFrontEnd(settings=settings)
    with pytest.raises(ConfigError, match="too short for one pitch frame"):
        ProsodyFrontEnd()(keras.Input((800,)))


def test_speech_levels_carry_prosody_standardised_per_person():
    """Data-set levels: 80 MFCC levels then the 5 prosody columns; the person's calibration
    (from the whole recording, its windows' levels) standardises them; off by config."""
    rng = np.random.default_rng(3)
    recording = np.concatenate([harmonic_tone(f, seconds=4.0, seed=i) * rng.uniform(0.5, 2.0)
                                for i, f in enumerate(rng.uniform(100, 200, 12))])
    stats = speech_statistics(recording, "participant", 0.0, window=(4.0, 2.0), prosody=True)
    assert stats.level_mean.shape == (85,) and stats.windows >= 3
    without = speech_statistics(recording, "participant", 0.0, window=(4.0, 2.0), prosody=False)
    assert without.level_mean.shape == (80,)
    np.testing.assert_allclose(without.level_mean, stats.level_mean[:80])
    windows = recording[:4 * RATE * 3].reshape(3, -1)
    presence = {"speech": np.ones(3, bool)}
    _, levels = featurize({"speech": windows}, presence, FeatureConfig(speech_flux=False), {"speech": stats})
    assert levels["speech"].shape == (3, 85)
    raw = window_prosody(windows)
    np.testing.assert_allclose(levels["speech"][:, 80:], (raw - stats.level_mean[80:]) / stats.level_std[80:],
                               rtol=1e-4, atol=1e-4)
    _, off = featurize({"speech": windows}, presence, FeatureConfig(speech_prosody=False, speech_flux=False),
                       {"speech": without})
    assert off["speech"].shape == (3, 80)
    np.testing.assert_allclose(off["speech"], levels["speech"][:, :80], atol=1e-5)
    # statistics without the prosody columns (an older calibration file) leave them as they are
    old = standardize_levels(np.c_[np.zeros((1, 80)), raw[:1]], without)
    np.testing.assert_allclose(old[0, 80:], raw[0], rtol=1e-6)
    names = level_names("speech", 40, prosody=True)
    assert len(names) == 85 and names[-5:] == [f"speech_level_{n}" for n in PROSODY_NAMES]


def test_calibration_files_with_prosody_and_flux_levels(tmp_path):
    """Speech level statistics may hold the prosody (85), the flux (93) or both (98) after the
    80 MFCC ones; other widths are refused naming the field."""
    entry = {"method": "participant", "seconds": 60.0, "mean": [0.0] * 40, "std": [1.0] * 40, "windows": 5}
    document = {"kind": "kfusion-calibration", "format": 2, "participants": {"p1": {"speech": entry}}}
    path = tmp_path / "calibration.json"
    for width in (85, 93, 98):
        entry.update(level_mean=[0.0] * width, level_std=[1.0] * width)
        path.write_text(json.dumps(document))
        assert read_calibration(path)["p1"]["speech"].level_mean.shape == (width,)
    entry.update(level_mean=[0.0] * 83, level_std=[1.0] * 83)
    path.write_text(json.dumps(document))
    with pytest.raises(DataError, match=r"p1\.speech\.level_mean.*or 85, 93 or 98 with the prosody and/or flux"):
        read_calibration(path)


def test_prosody_setting_enters_the_data_config():
    assert DataConfig().features.speech_prosody is True
    config = DataConfig(features=FeatureConfig(speech_prosody=False), calibration=CalibrationConfig())
    assert DataConfig.from_dict(config.to_dict()).features.speech_prosody is False
    with pytest.raises(ConfigError, match="features.speech_prosody"):
        FeatureConfig(speech_prosody="yes")


def test_a_speech_model_with_prosody_levels_exports_to_tflite_with_builtin_ops(tmp_path):
    """The raw-input file of a level-aware speech model converts with builtin operations only
    (no Flex) and gives the Keras raw model's probabilities."""
    from ai_edge_litert.interpreter import Interpreter
    from export_helpers import small_emotion_model

    from kfusion.export.raw_inputs import raw_input_model
    from kfusion.export.tflite import export_variants

    model = small_emotion_model("unweighted", modalities=("speech",), targets={"arousal": 3}, levels=85)
    paths = export_variants(model, tmp_path, ("none",), raw_inputs=(True,), name="speech")
    runner = Interpreter(model_path=str(paths[(True, "none")])).get_signature_runner()
    details = runner.get_input_details()
    assert tuple(details["calibration_speech"]["shape"][1:]) == (8, 40)
    audio = np.stack([harmonic_tone(120, seed=4), harmonic_tone(240, vibrato=0.12, seed=5)])
    stats = ChannelStats(np.full(40, -20.0), np.full(40, 15.0), "participant", 60.0,
                         np.r_[np.zeros(80), [5.0, 1.0, 0.9, 0.9, 0.1]],
                         np.r_[np.ones(80), [4.0, 1.0, 0.1, 0.1, 0.1]], 9)
    inputs = {"speech": audio, "presence": np.ones((2, 1), np.float32),
              "calibration_speech": np.repeat(stats.rows(8)[None], 2, 0)}
    expected = np.asarray(raw_input_model(model)(inputs)["arousal"])
    for i in range(2):
        got = runner(**{k: v[i:i + 1].astype(np.float32) for k, v in inputs.items()})["arousal"]
        np.testing.assert_allclose(got, expected[i:i + 1], atol=1e-4)


def test_streaming_head_calibration_of_a_speech_model_equals_batch(kemocon_synth, tmp_path):
    """A level-aware speech model (prosody and flux in its levels, the default) predicts the
    same whether the recording is windowed in one go with its head calibration or streamed in
    chunks, the stream calibrating itself (extra level statistics included) on its first half
    minute."""
    import pandas as pd
    from export_helpers import small_emotion_model

    from kfusion.data.calibration import recording_calibration
    from kfusion.data.sources import load_recordings
    from kfusion.data.windows import cut_windows, to_audio_rate
    from kfusion.export.prediction import StreamingPredictor, load_predictor, timeline

    path = tmp_path / "speech.keras"
    small_emotion_model("unweighted", modalities=("speech",), targets={"arousal": 3}, levels=98).save(path)
    predictor = load_predictor(path)
    assert predictor.speech_prosody and predictor.speech_flux
    config = DataConfig(modalities=("speech",))
    recording = load_recordings(f"kemocon:{kemocon_synth}", config, participants=["1"]).recordings[0]
    windows = cut_windows(recording, config)
    head = recording_calibration(recording, config.replace(calibration=CalibrationConfig.parse("head:0.5")))
    assert head["speech"].level_mean.shape == (98,)
    batch = timeline(predictor, [windows], {"1": head})
    span0 = float(windows.span[0])
    stream = StreamingPredictor(predictor, start=span0, participant="1", calibration="head:0.5")
    audio = to_audio_rate(recording.audio)
    samples = audio.samples[int(round((span0 - audio.start) * audio.rate)):]
    rng = np.random.default_rng(0)
    rows, position = [], 0
    while position < samples.size:
        size = int(rng.integers(4000, 40000))
        rows.extend(stream.push("speech", samples[position:position + size]))
        position += size
    rows += stream.finish()
    streamed = pd.DataFrame(rows)
    streamed = streamed[streamed["window_start"] <= batch["window_start"].max() + 1e-6]
    assert len(streamed) == len(batch) > 10
    np.testing.assert_allclose(stream.calibration["speech"].level_mean, head["speech"].level_mean, rtol=1e-4, atol=1e-5)
    numeric = [c for c in batch.columns if "_p_" in c]
    np.testing.assert_allclose(streamed[numeric].to_numpy(float), batch[numeric].to_numpy(float), atol=1e-5)
