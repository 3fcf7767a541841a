"""TFLite / SavedModel export: builtin ops only, named signatures, sidecar, and parity with
Keras run through ai_edge_litert (float32 / float16 within tolerances, int8 by top-1
agreement and macro F1 on the synthetic set), for all three fusion mechanisms."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from export_helpers import (FEATURE_VARIANTS, RAW_VARIANTS, model_inputs, run_tflite,  # noqa: E402
                            small_emotion_model, trained_synthetic)
from sklearn.metrics import f1_score  # noqa: E402

from kfusion.modalities import MODALITIES  # noqa: E402
from kfusion.errors import ConfigError  # noqa: E402
from kfusion.export.tflite import (UnsupportedOpsError, export_model, export_variants,  # noqa: E402
                                   read_sidecar, tflite_ops)

#: Max absolute difference of class probabilities against Keras.
TOLERANCE = {"none": 1e-5, "float16": 1e-2, "dynamic": 5e-2}
TARGETS = {"arousal": ["low", "neutral", "high"], "valence": ["low", "neutral", "high"],
           "emotion": ["cheerful", "happy", "angry", "nervous", "sad", "neutral"]}
INPUTS = {"speech", "acc", "bvp", "eda", "temp", "presence"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, kemocon_synth_medium):
    return trained_synthetic(tmp_path_factory, kemocon_synth_medium)


@pytest.fixture(scope="module")
def keras_outputs(trained):
    out = trained.model.predict(model_inputs(trained.dataset), verbose=0, batch_size=64)
    return {t: np.asarray(v) for t, v in out.items()}


def _builtin_only(path):
    ops = tflite_ops(path.read_bytes())
    assert not [op for op in ops if op.startswith("Flex") or op == "CUSTOM"], ops
    return ops


def test_every_variant_has_builtin_ops_named_signature_and_sidecar(trained):
    from ai_edge_litert.interpreter import Interpreter

    expected = {(False, q) for q in FEATURE_VARIANTS} | {(True, q) for q in RAW_VARIANTS}
    assert set(trained.variants) == expected
    for (raw, quantize), path in trained.variants.items():
        _builtin_only(path)
        runner = Interpreter(model_path=str(path)).get_signature_runner("serving_default")
        inputs, outputs = runner.get_input_details(), runner.get_output_details()
        assert set(inputs) == INPUTS and set(outputs) == set(TARGETS)
        assert list(inputs["speech"]["shape"]) == ([1, 64000] if raw else [1, 400, 40])
        assert list(inputs["acc"]["shape"]) == [1, 128, 3] and list(inputs["presence"]["shape"]) == [1, 5]
        assert all(d["dtype"] == np.float32 for d in [*inputs.values(), *outputs.values()])
        assert [list(outputs[t]["shape"]) for t in TARGETS] == [[1, 3], [1, 3], [1, 6]]
        side = read_sidecar(path)
        assert side["quantization"] == quantize and side["raw_inputs"] is raw
        assert side["kfusion_version"] and side["signature"] == "serving_default"
        assert [i["name"] for i in side["inputs"]] == [*MODALITIES, "presence"]
        by_name = {i["name"]: i for i in side["inputs"]}
        assert by_name["speech"]["sample_rate_hz"] == 16000 and by_name["bvp"]["sample_rate_hz"] == 64.0
        assert by_name["acc"]["shape"] == [1, 128, 3] and "1/64 g" in by_name["acc"]["units"]
        assert by_name["presence"]["order"] == "columns speech, acc, bvp, eda, temp"
        assert {o["name"]: o["classes"] for o in side["outputs"]} == TARGETS
        assert side["window"] == {"seconds": 4.0, "hop_seconds": 3.0}


def test_float_variants_match_keras(trained, keras_outputs):
    inputs = model_inputs(trained.dataset)
    rows = range(0, len(trained.dataset), 3)    # every third window keeps the test short
    for quantize in ("none", "float16"):
        got = run_tflite(trained.variants[(False, quantize)], inputs, rows)
        for target in TARGETS:
            error = np.abs(got[target] - keras_outputs[target][list(rows)]).max()
            assert error <= TOLERANCE[quantize], (quantize, target, error)
    # random inputs too (float32 only)
    rng = np.random.default_rng(0)
    noise = {k: rng.standard_normal((4, *v.shape[1:])).astype(np.float32) for k, v in inputs.items()}
    noise["presence"] = (rng.uniform(size=(4, 5)) > 0.3).astype(np.float32)
    expected = trained.model.predict(noise, verbose=0)
    got = run_tflite(trained.variants[(False, "none")], noise)
    for target in TARGETS:
        assert np.abs(got[target] - np.asarray(expected[target])).max() <= TOLERANCE["none"]


def _agreement_and_f1(trained, keras_outputs, got, rows=None):
    rows = np.arange(len(trained.dataset)) if rows is None else np.asarray(rows)
    results = {}
    for target in TARGETS:
        reference = keras_outputs[target][rows].argmax(1)
        predicted = got[target].argmax(1)
        labels = trained.dataset.labels[target][rows]
        known = labels >= 0
        f1_float = f1_score(labels[known], reference[known], average="macro")
        f1_int8 = f1_score(labels[known], predicted[known], average="macro")
        results[target] = (float(np.mean(reference == predicted)), f1_float, f1_int8)
    return results


#: Share of windows where the int8 file's class equals float32's.
INT8_AGREEMENT = 0.95


def test_int8_agrees_with_float_on_the_synthetic_set(trained, keras_outputs):
    got = run_tflite(trained.variants[(False, "int8")], model_inputs(trained.dataset))
    for target, (agreement, f1_float, f1_int8) in _agreement_and_f1(trained, keras_outputs, got).items():
        # With the packages make test installs now (TF 2.21, LiteRT 2.3) int8 agrees with float
        # on 96.1 % of the windows for the six-class emotion head (>= 0.97 before the upgrade).
        assert agreement >= INT8_AGREEMENT, (target, agreement)
        # Quantisation must not cost accuracy. One-sided: int8 now scores 0.014 *above* float on
        # valence, while the agreement above bounds how far the two may drift either way.
        assert f1_int8 >= f1_float - 0.01, (target, f1_float, f1_int8)
        assert f1_float > 0.6, (target, f1_float)   # the model did learn something


def test_raw_input_variants_match_keras_on_real_windows(trained, keras_outputs):
    raw = trained.raw_inputs()
    assert raw["speech"].shape == (len(trained.dataset), 64000)
    rows = list(range(0, len(trained.dataset), 4))
    for quantize in ("none",):
        got = run_tflite(trained.variants[(True, quantize)], raw, rows)
        for target in TARGETS:
            # The raw file's CMVN-normalised MFCCs differ from numpy's by <= 6e-5; the trained
            # model amplifies that to ~1e-3 in a probability at most.
            error = np.abs(got[target] - keras_outputs[target][rows]).max()
            assert error <= 5e-3, (quantize, target, error)
    got = run_tflite(trained.variants[(True, "int8")], raw)
    features_int8 = run_tflite(trained.variants[(False, "int8")], model_inputs(trained.dataset))
    for target, (agreement, f1_float, f1_int8) in _agreement_and_f1(trained, keras_outputs, got).items():
        assert agreement >= INT8_AGREEMENT, (target, agreement)
        assert f1_int8 >= f1_float - 0.01, (target, f1_float, f1_int8)  # one-sided, as above
        # same int8 body as the features file: the front end adds (almost) nothing
        assert np.mean(got[target].argmax(1) == features_int8[target].argmax(1)) >= 0.99


def test_raw_int8_keeps_the_front_end_float(trained):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(trained.variants[(True, "int8")]))
    tensors = interpreter.get_tensor_details()
    dtypes = {}
    for op in interpreter._get_ops_details():  # noqa: SLF001 (only way to list ops with their tensors)
        out = tensors[op["outputs"][0]]
        scope = "front" if ("speech_mfcc" in out["name"] or "_zscore" in out["name"]
                            or "speech_cmvn" in out["name"]) else "body"
        dtypes.setdefault(scope, set()).add((op["op_name"], np.dtype(out["dtype"]).name))
    assert ("FULLY_CONNECTED", "float32") in dtypes["front"] and ("LOG", "float32") in dtypes["front"]
    assert not any(dtype == "int8" for _, dtype in dtypes["front"])
    assert ("CONV_2D", "int8") in dtypes["body"] and ("FULLY_CONNECTED", "int8") in dtypes["body"]


def test_intermediate_tensor_names_are_dropped_unless_asked(tmp_path, trained):
    """Names are debugging labels (~20 % of a small file): dropped by default except the
    inputs', outputs' and front end's; the outputs are the same bytes either way."""
    from ai_edge_litert.interpreter import Interpreter

    from kfusion.export.tflite import _drop_tensor_names

    path = trained.variants[(True, "int8")]
    tensors = Interpreter(model_path=str(path)).get_tensor_details()
    named = [t["name"] for t in tensors if t["name"]]
    assert any("speech_mfcc" in n for n in named) and len(named) < 0.5 * len(tensors)
    assert read_sidecar(path)["bytes"] == path.stat().st_size
    assert read_sidecar(path)["front_end"] == "fft"
    assert read_sidecar(trained.variants[(False, "int8")])["front_end"] is None
    model = small_emotion_model("unweighted", seed=1)
    with pytest.raises(ConfigError, match="front_end"):
        export_model(model, tmp_path / "bad.tflite", "tflite", front_end="rfft")
    named_file = export_model(model, tmp_path / "named.tflite", "tflite", tensor_names=True)
    plain = tmp_path / "plain.tflite"  # what export_model writes by default, from the same conversion
    plain.write_bytes(_drop_tensor_names(named_file.read_bytes(), []))
    assert plain.stat().st_size < 0.9 * named_file.stat().st_size
    assert all(t["name"] for t in Interpreter(model_path=str(named_file)).get_tensor_details())
    rng = np.random.default_rng(8)
    x = {"speech": rng.standard_normal((2, 400, 40)), "acc": rng.standard_normal((2, 128, 3)),
         "bvp": rng.standard_normal((2, 256, 1)), "eda": rng.standard_normal((2, 16, 1)),
         "temp": rng.standard_normal((2, 16, 1)), "presence": np.ones((2, 5))}
    x = {k: v.astype(np.float32) for k, v in x.items()}
    a, b = run_tflite(plain, x), run_tflite(named_file, x)
    assert all(np.array_equal(a[t], b[t]) for t in a)


@pytest.mark.parametrize("mechanism,quantized", [("unweighted", "dynamic"), ("weighted", "float16")])
def test_other_mechanisms_export_float32_and_one_quantised(tmp_path, mechanism, quantized):
    # Attention is the trained model above. Untrained small models (random weights) here; the
    # bench exports the default-size ones in every variant.
    model = small_emotion_model(mechanism, seed=1)
    paths = export_variants(model, tmp_path, ("none", quantized), raw_inputs=(False,), name=mechanism)
    rng = np.random.default_rng(5)
    x = {"speech": rng.standard_normal((3, 400, 40)), "acc": rng.standard_normal((3, 128, 3)),
         "bvp": rng.standard_normal((3, 256, 1)), "eda": rng.standard_normal((3, 16, 1)),
         "temp": rng.standard_normal((3, 16, 1)), "presence": np.array([[1, 1, 1, 1, 1], [0, 1, 1, 1, 1],
                                                                         [1, 0, 0, 1, 0]])}
    x = {k: v.astype(np.float32) for k, v in x.items()}
    expected = {t: np.asarray(v) for t, v in model(x).items()}
    for quantize in ("none", quantized):
        _builtin_only(paths[(False, quantize)])
        got = run_tflite(paths[(False, quantize)], x)
        for target in TARGETS:
            assert np.abs(got[target] - expected[target]).max() <= TOLERANCE[quantize], (quantize, target)


def test_savedmodel_export_through_the_cli(tmp_path, trained, keras_outputs, kemocon_synth_medium):
    import argparse

    import tensorflow as tf

    from kfusion.cli import export as cli_export
    from kfusion.export.tflite import FORMATS, QUANTIZATIONS

    assert set(cli_export.FORMATS) == set(FORMATS) and cli_export.QUANTIZATIONS == QUANTIZATIONS
    parser = argparse.ArgumentParser(prog="kfusion")
    cli_export.add_export_commands(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "savedmodel"
    args = parser.parse_args(["export", "--model", str(trained.keras_path), "--out", str(out),
                              "--format", "savedmodel"])
    assert args.func(args) == 0
    assert (out / "saved_model.pb").is_file()
    side = json.loads((tmp_path / "savedmodel.json").read_text())
    assert side["format"] == "savedmodel" and side["quantization"] == "none"
    function = tf.saved_model.load(str(out)).signatures["serving_default"]
    assert set(function.structured_input_signature[1]) == INPUTS
    assert set(function.structured_outputs) == set(TARGETS)
    inputs = model_inputs(trained.dataset.select(np.arange(5)))
    got = function(**{k: tf.constant(v) for k, v in inputs.items()})
    for target in TARGETS:
        np.testing.assert_allclose(got[target].numpy(), keras_outputs[target][:5], atol=1e-5)
    # --representative SOURCE gives the raw windows of the source, cut for the model
    windows = cli_export._representative([f"kemocon:{kemocon_synth_medium}"], trained.model, seed=0)
    assert sum(w.kept for w in windows) == len(trained.dataset)
    assert windows[0].raw["speech"].shape[1:] == (64000,)


def test_a_flex_op_is_refused_and_named(tmp_path):
    import keras
    import tensorflow as tf

    class SpectrumLayer(keras.layers.Layer):
        def call(self, x):
            return tf.signal.dct(x, type=2, norm="ortho")

    eda = keras.Input((16, 8), name="eda")
    model = keras.Model(eda, {"stress": keras.layers.Dense(2, activation="softmax")(
        keras.layers.Flatten()(SpectrumLayer()(eda)))})
    with pytest.raises(UnsupportedOpsError, match="StridedSlice") as caught:
        export_model(model, tmp_path / "flex.tflite", format="tflite")
    assert "StridedSlice" in caught.value.ops and "builtin" in str(caught.value)
    assert not (tmp_path / "flex.tflite").exists()


def test_export_bad_arguments(tmp_path, trained):
    model = trained.model
    with pytest.raises(ConfigError, match="format: expected one of savedmodel, tflite"):
        export_model(model, tmp_path / "m.onnx", format="onnx")
    with pytest.raises(ConfigError, match="quantize: expected one of"):
        export_model(model, tmp_path / "m.tflite", format="tflite", quantize="int4")
    with pytest.raises(ConfigError, match="needs representative"):
        export_model(model, tmp_path / "m.tflite", format="tflite", quantize="int8")
    with pytest.raises(ConfigError, match="format='tflite' only"):
        export_model(model, tmp_path / "m", format="savedmodel", quantize="float16")
    with pytest.raises(ConfigError, match="raw audio windows"):
        export_model(model, tmp_path / "m.tflite", format="tflite", quantize="int8",
                     representative=trained.dataset, raw_inputs=True)
    with pytest.raises(ConfigError, match=r"input 'acc': expected windows of shape \[128, 3\]"):
        bad = {k: v[:4] for k, v in model_inputs(trained.dataset).items()}
        bad["acc"] = bad["acc"][:, :64]
        export_model(model, tmp_path / "m.tflite", format="tflite", quantize="int8", representative=bad)
    with pytest.raises(ConfigError, match="raw_inputs: expected True or False"):
        export_model(model, tmp_path / "m.tflite", format="tflite", raw_inputs="yes")
    with pytest.raises(ConfigError, match="keras.Model or a .keras path"):
        export_model(object(), tmp_path / "m.tflite", format="tflite")
    with pytest.raises(ConfigError, match="expected 3 class names"):
        export_model(model, tmp_path / "m", classes={"arousal": ["a", "b"]})
    from kfusion.export.raw_inputs import raw_input_model

    with pytest.raises(ConfigError, match="already holds MfccFrontEnd"):
        export_model(raw_input_model(model), tmp_path / "m.tflite", format="tflite")
    from kfusion.errors import DataError

    with pytest.raises(DataError, match="a .keras model file"):
        export_model(tmp_path / "missing.keras", tmp_path / "m.tflite", format="tflite")


def test_representative_set_takes_every_window_or_an_even_share_per_participant(trained):
    from kfusion.export.tflite import REPRESENTATIVE_SIZE, representative_inputs

    dataset = trained.dataset
    assert len(dataset) <= REPRESENTATIVE_SIZE
    every = representative_inputs(dataset, trained.model, False)
    np.testing.assert_array_equal(every["acc"], dataset.inputs["acc"])   # all windows, in order
    ids = dataset.participant_ids()
    picked = representative_inputs(dataset, trained.model, False, size=6 * len(ids), seed=3)
    rows = [int(np.flatnonzero((dataset.inputs["eda"] == w).all(axis=(1, 2)))[0]) for w in picked["eda"]]
    counts = {p: int(np.sum(dataset.participants[rows] == p)) for p in ids}
    assert set(counts.values()) == {6}, counts
    raw = representative_inputs(trained.windows, trained.model, True, size=2 * len(trained.windows))
    assert raw["speech"].shape == (2 * len(trained.windows), 64000)
    with pytest.raises(ConfigError, match="size: expected a whole number >= 1"):
        representative_inputs(dataset, trained.model, False, size=0)


def test_class_names_come_from_the_data_set_never_from_target_names(tmp_path):
    import ast
    from pathlib import Path

    import keras
    from export_helpers import save_with_classes

    eda = keras.Input((16, 1), name="eda")
    model = keras.Model(eda, {"stress": keras.layers.Dense(2, activation="softmax", name="stress")(
        keras.layers.Flatten()(eda))})

    def exported_classes(source, name, **kwargs):
        out = export_model(source, tmp_path / name, format="savedmodel", **kwargs)
        return {o["name"]: o["classes"] for o in read_sidecar(out)["outputs"]}

    # a target named like Stress-Predict's is not given Stress-Predict's class names
    assert exported_classes(model, "plain") == {"stress": ["class_0", "class_1"]}
    path = save_with_classes(model, tmp_path / "m.keras", {"stress": ["calm", "tense"]})
    assert exported_classes(path, "from_sidecar") == {"stress": ["calm", "tense"]}
    assert exported_classes(path, "given", classes={"stress": ["a", "b"]}) == {"stress": ["a", "b"]}
    # ... and the export modules import no reader's constants
    for module in sorted((Path(__file__).parent.parent / "kfusion" / "export").glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("kfusion.data.readers"), (module.name, node.module)
