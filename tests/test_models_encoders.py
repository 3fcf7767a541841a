"""SigRep encoder and sparse MFCC autoencoder: shapes, exact parameter counts, validation."""

from __future__ import annotations

import numpy as np
import pytest

import keras

from kfusion.modalities import input_shape  # noqa: E402
from kfusion.errors import ConfigError  # noqa: E402
from kfusion.models import sigrep_encoder, sigrep_parameter_count, speech_autoencoder  # noqa: E402


def test_default_sigrep_has_the_deployed_parameter_count():
    # block 1: 1 ch x 2 filters x (1+3+5+7) = 32; block 2: 8 x 32 = 256; block 3: 16 x 32 = 512;
    # block 4: 24 x 32 = 768; bottleneck 32 x 40 = 1280 -> 2848 (no biases anywhere).
    encoder = sigrep_encoder("bvp")
    assert encoder.count_params() == 32 + 256 + 512 + 768 + 1280 == 2848
    assert sigrep_parameter_count(channels=1) == 2848
    assert encoder.name == "bvp_encoder"
    assert encoder.input_shape == (None, 256, 1)
    assert encoder.output_shape == (None, 40)


def test_acc_encoder_takes_three_channels_and_has_2912_parameters():
    encoder = sigrep_encoder("acc")
    assert encoder.input_shape == (None, 128, 3)
    assert encoder.count_params() == 3 * 32 + 256 + 512 + 768 + 1280 == 2912
    assert sigrep_parameter_count(channels=3) == 2912


def test_sigrep_block_widths_and_feature_map():
    encoder = sigrep_encoder("bvp")
    widths = [encoder.get_layer(f"block{b}_concat").output.shape[-1] for b in (1, 2, 3, 4)]
    assert widths == [8, 16, 24, 32]
    # 256 samples halved four times; the pre-pooling map is exposed by name.
    assert tuple(encoder.get_layer("feature_map").output.shape) == (None, 16, 32)
    assert encoder.get_layer("bottleneck").use_bias is False
    assert all(not layer.use_bias for layer in encoder.layers if isinstance(layer, keras.layers.Conv1D))


def test_troi_single_channel_acc_layout_and_custom_widths():
    encoder = sigrep_encoder(input_shape=(384, 1), name="acc_encoder")
    assert encoder.count_params() == 2848
    small = sigrep_encoder("eda", filters=3, kernel_sizes=(3, 5), blocks=2, embedding_dim=10)
    assert small.output_shape == (None, 10)
    assert small.count_params() == sigrep_parameter_count(1, 3, (3, 5), 2, 10)


def test_sigrep_runs_on_the_shortest_inputs():
    encoder = sigrep_encoder("eda")  # 16 samples: 16 -> 8 -> 4 -> 2 -> 1
    out = encoder(np.random.default_rng(0).normal(size=(2, 16, 1)).astype("float32"))
    assert out.shape == (2, 40)
    assert np.isfinite(np.asarray(out)).all()


@pytest.mark.parametrize("kwargs, words", [
    ({"input_shape": (8, 1)}, "at least 16 time steps"),
    ({"modality": "eda", "blocks": 5}, "at least 32 time steps"),
    ({}, "give a modality"),
    ({"modality": "ecg"}, "unknown modality"),
    ({"modality": "bvp", "filters": 0}, "filters"),
    ({"modality": "bvp", "kernel_sizes": ()}, "kernel_sizes"),
    ({"modality": "bvp", "kernel_sizes": (3, 3)}, "distinct"),
    ({"modality": "bvp", "embedding_dim": 2.5}, "embedding_dim"),
    ({"input_shape": (16,)}, "(time, channels)"),
    ({"modality": "bvp", "name": "bad name"}, "name"),
])
def test_sigrep_rejects_bad_arguments(kwargs, words):
    with pytest.raises(ConfigError, match=None) as err:
        sigrep_encoder(**kwargs)
    assert words in str(err.value)


def test_speech_autoencoder_shapes_and_standalone_encoder():
    autoencoder, encoder = speech_autoencoder()
    assert encoder.name == "speech_encoder"
    assert encoder.input_shape == (None, *input_shape("speech"))
    assert encoder.output_shape == (None, 40)
    assert autoencoder.output_shape == (None, 400, 40)
    assert encoder.count_params() < 40_000  # small enough for CPU training
    assert autoencoder.get_layer("speech_encoder") is encoder
    assert autoencoder.name == "speech_autoencoder"
    assert autoencoder.get_layer("speech_decoder").output_shape == (None, 400, 40)


def test_speech_autoencoder_crops_lengths_not_divisible_by_the_strides():
    autoencoder, encoder = speech_autoencoder((30, 6), code_dim=8, filters=(4, 4, 4))
    x = np.random.default_rng(1).normal(size=(2, 30, 6)).astype("float32")
    assert autoencoder(x).shape == (2, 30, 6)
    assert encoder(x).shape == (2, 8)


def test_sparsity_penalty_is_added_in_training_only_and_not_when_frozen():
    autoencoder, encoder = speech_autoencoder((16, 4), code_dim=4, sparsity=0.5, filters=(4,))
    x = np.random.default_rng(2).normal(size=(3, 16, 4)).astype("float32")
    code = np.asarray(encoder(x))
    encoder(x, training=True)
    assert len(encoder.losses) == 1
    expected = 0.5 * np.abs(code).sum(axis=1).mean()
    assert float(encoder.losses[0]) == pytest.approx(expected, rel=1e-5)
    encoder(x, training=False)
    assert encoder.losses == []
    encoder.trainable = False
    encoder(x, training=True)
    assert encoder.losses == []


def test_speech_autoencoder_learns_to_reconstruct():
    keras.utils.set_random_seed(3)
    autoencoder, _ = speech_autoencoder((16, 4), code_dim=8, sparsity=1e-4, filters=(8,))
    x = np.random.default_rng(3).normal(size=(32, 16, 4)).astype("float32")
    autoencoder.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    before = autoencoder.evaluate(x, x, verbose=0)
    autoencoder.fit(x, x, epochs=15, batch_size=32, verbose=0)
    assert autoencoder.evaluate(x, x, verbose=0) < 0.9 * before


@pytest.mark.parametrize("kwargs, words", [
    ({"input_shape": (8, 40)}, "at least 16 frames"),
    ({"code_dim": 0}, "code_dim"),
    ({"sparsity": -1.0}, "sparsity"),
    ({"filters": ()}, "filters"),
    ({"code_activation": "no_such_activation"}, "code_activation"),
    ({"input_shape": (400,)}, "(time, channels)"),
])
def test_speech_autoencoder_rejects_bad_arguments(kwargs, words):
    with pytest.raises(ConfigError) as err:
        speech_autoencoder(**kwargs)
    assert words in str(err.value)


def test_speech_code_is_global_and_the_timing_goes_to_the_local_code():
    keras.utils.set_random_seed(5)
    autoencoder, encoder = speech_autoencoder((64, 6), code_dim=8, filters=(4, 4, 4), local_dim=5)
    assert autoencoder.get_layer("speech_decoder").input_shape == (None, 13)
    assert autoencoder.get_layer("speech_local_encoder").output_shape == (None, 5)
    assert not any(layer.name.startswith("local_") for layer in encoder.layers)
    # The global code pools over time: moving the content of a window (here by a multiple of
    # the pooled convolution's stride, away from the edges) leaves it unchanged.
    x = np.zeros((1, 64, 6), "float32")
    x[0, 20:28] = np.random.default_rng(0).normal(size=(8, 6))
    shifted = np.roll(x, 8, axis=1)
    np.testing.assert_allclose(encoder(x), encoder(shifted), atol=1e-5)
    without_local, _ = speech_autoencoder((64, 6), code_dim=8, filters=(4, 4, 4), local_dim=0)
    assert without_local.get_layer("speech_decoder").input_shape == (None, 8)
