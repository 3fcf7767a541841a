"""The factored DFT of the in-graph MFCC front end (``MfccFrontEnd(method="fft")``, the default)
gives the spectrum of the DFT matrix (``method="dft"``, the previous design) and the training
features, in Keras and in a converted TFLite file, with builtin operations only."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from kfusion.data.features import MFCC_SETTINGS, analysis_window, mfcc  # noqa: E402
from kfusion.errors import ConfigError  # noqa: E402
from kfusion.models.feature_layers import MfccFrontEnd, fft_factors, fft_matrices  # noqa: E402

MFCC_TOLERANCE = 1e-2  # absolute, on MFCC values up to ~630 (as tests/test_frontend.py)


def _audio():
    rng = np.random.default_rng(11)
    t = np.arange(64000) / 16000
    tone = 0.4 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 1.5 * t) > 0)
    return np.stack([rng.uniform(-1, 1, 64000), tone + 1e-4 * rng.standard_normal(64000),
                     np.zeros(64000)]).astype(np.float32)


def test_fft_factors_and_matrices_give_the_power_spectrum():
    assert fft_factors() == (20, 20)  # 400 = 20 x 20, 20 divides the hop (160)
    n1, n2 = fft_factors()
    constants = fft_matrices()
    k1 = constants["second"].shape[-1] // 2
    assert constants["window"].shape == (n1, 1, n2) and constants["first"].shape == (n2, 2 * n2)
    assert constants["second"].shape == (n2, 2 * n1, 2 * k1)
    frame = np.random.default_rng(1).standard_normal(MFCC_SETTINGS.n_fft)
    grid = frame.reshape(n2, n1).T * constants["window"][:, 0, :]          # [n1, n2]: x[n1 + N1 n2] w
    first = grid @ constants["first"]                                      # [n1, (re, im) x k2]
    stacked = np.concatenate([first[:, :n2].T, first[:, n2:].T], axis=1)  # [k2, (re, im) x n1]
    spectrum = np.einsum("kn,knm->km", stacked, constants["second"])      # [k2, (re, im) x k1]
    power = (spectrum[:, :k1] ** 2 + spectrum[:, k1:] ** 2).reshape(-1)   # column k2 K1 + k1
    expected = np.abs(np.fft.rfft(frame * analysis_window())) ** 2
    bins = constants["bins"]
    valid = bins <= MFCC_SETTINGS.n_fft // 2
    assert sorted(bins[valid]) == list(range(MFCC_SETTINGS.n_fft // 2 + 1))  # every bin once
    np.testing.assert_allclose(power[valid], expected[bins[valid]], rtol=1e-4, atol=1e-4 * expected.max())
    # The layer computes only the bins its mel filterbank weighs: 0..199 (none to the Nyquist bin).
    layer_bins = MfccFrontEnd()._fft["bins"]  # noqa: SLF001
    assert sorted(layer_bins) == list(range(200))


def test_fft_and_dft_methods_give_the_training_mfccs():
    audio = _audio()
    reference = mfcc(audio)
    fft = np.asarray(MfccFrontEnd()(audio))
    dft = np.asarray(MfccFrontEnd(method="dft")(audio))
    assert fft.shape == reference.shape == (3, 400, 40)
    assert np.abs(fft - reference).max() <= MFCC_TOLERANCE
    assert np.abs(fft - dft).max() <= MFCC_TOLERANCE
    assert np.abs(reference).max() > 100  # the comparison covers large values (silence: c0 ~ -630)


def test_method_is_stored_and_checked():
    layer = MfccFrontEnd(method="dft", name="speech_mfcc")
    assert layer.get_config()["method"] == "dft"
    assert MfccFrontEnd.from_config(layer.get_config()).method == "dft"
    config = MfccFrontEnd().get_config()
    config.pop("method")  # a model saved before the option: the default
    assert MfccFrontEnd.from_config(config).method == "fft"
    with pytest.raises(ConfigError, match="method"):
        MfccFrontEnd(method="rfft")


def test_fft_front_end_converts_to_builtin_ops_smaller_than_the_dft_matrix(tmp_path):
    from export_helpers import run_tflite

    from kfusion.export.tflite import _convert_variant, _front_end_scopes, _saved_model

    audio = _audio()
    sizes = {}
    for method in ("fft", "dft"):
        inputs = keras.Input((64000,), name="speech")
        model = keras.Model(inputs, {"mfcc": MfccFrontEnd(name="speech_mfcc", method=method)(inputs)})
        saved = tmp_path / method
        _saved_model(model, saved)
        content, ops = _convert_variant(saved, "none", None, _front_end_scopes(model))
        assert not [op for op in ops if op.startswith("Flex") or op == "CUSTOM"], ops
        assert "RFFT2D" not in ops
        if method == "fft":
            assert "BATCH_MATMUL" in ops and "TRANSPOSE" in ops
        path = tmp_path / f"{method}.tflite"
        path.write_bytes(content)
        out = run_tflite(path, {"speech": audio})["mfcc"]
        assert np.abs(out - mfcc(audio)).max() <= MFCC_TOLERANCE, method
        sizes[method] = len(content)
    # ~130 KB against ~370 KB (the DFT matrices): bench/RESULTS.md
    assert sizes["fft"] < 0.5 * sizes["dft"], sizes
