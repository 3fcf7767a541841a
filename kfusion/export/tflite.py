"""Export for phones: SavedModel and TFLite (builtin ops only), with a JSON sidecar.

:func:`export_model` writes one file (TFLite) or folder (SavedModel) plus ``<path>.json``
describing inputs, outputs, quantisation and the kfusion version; :func:`export_variants`
writes many quantisations of one model from a single SavedModel export (benchmarks, tests).

Quantisations (TFLite): ``none`` (float32), ``float16`` (weights stored as float16),
``dynamic`` (int8 weights, float activations quantised on the fly) and ``int8`` (int8 weights
and activations calibrated on a representative set of training windows; float32 inputs and
outputs, so the app code is the same for every variant).

Raw-input models (``raw_inputs=True``) carry the feature layers (:mod:`~kfusion.export.raw_inputs`) in the graph.
Its constants (DFT, mel, DCT matrices) and its arithmetic stay float32 in every variant: the
power spectrum spans many decades, and an int8 or float16 DFT would change the MFCCs by far
more than the model tolerates (bench/RESULTS.md, 'Numbers that left the docstrings'). For ``int8`` the front-end
operations are left out of quantisation by the node deny-list of
``tf.lite.experimental.QuantizationDebugger``; for ``float16`` and ``dynamic``, which the
converter applies to every constant and for which it has no deny-list, the front end's
constants are put back to their float32 values in the converted file (LiteRT's public
flatbuffer tools, ``ai_edge_litert.tools.flatbuffer_utils``).

Public APIs only (``tf.lite``, ``ai_edge_litert``): ``tests/test_layering.py`` refuses private
imports.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import kfusion
from kfusion import checks
from kfusion.config import FeatureConfig, WindowConfig
from kfusion.data.calibration import ChannelStats, calibration_rows
from kfusion.data.features import MFCC_SETTINGS, featurize, window_features
from kfusion.modalities import AUDIO_RATE, CHANNELS, MODALITIES, NOMINAL_RATES, SPEECH
from kfusion.errors import ConfigError, DataError
from kfusion.export.raw_inputs import CALIBRATION_INPUT, raw_input_model
from kfusion.models.feature_layers import FRONT_END_LAYERS, FRONT_END_METHODS
from kfusion.models.fusion import LEVELS, PRESENCE

__all__ = ["export_model", "export_variants", "QUANTIZATIONS", "FORMATS", "UnsupportedOpsError",
           "representative_inputs", "REPRESENTATIVE_SIZE", "sidecar_path", "read_sidecar", "tflite_ops",
           "load_keras_model", "model_targets", "model_modalities", "is_raw_input_model", "trained_classes"]

QUANTIZATIONS: tuple[str, ...] = ("none", "float16", "dynamic", "int8")
FORMATS: tuple[str, ...] = ("savedmodel", "tflite")
SIGNATURE = "serving_default"
SIDECAR_VERSION = 1

_UNITS = {
    "raw": {SPEECH: "audio samples in [-1, 1] (float PCM, mono)",
            "acc": "1/64 g (Empatica E4 raw units; 64 = 1 g) for x, y, z",
            "bvp": "Empatica E4 BVP (photoplethysmograph, arbitrary units)",
            "eda": "microsiemens (µS)", "temp": "degrees Celsius (°C)"},
    "features": {SPEECH: "MFCC (40 coefficients per 10 ms frame)",
                 "acc": "per-window z-score of 1/64 g", "bvp": "per-window z-score",
                 "eda": "per-window z-score of µS", "temp": "per-window z-score of °C"},
}


class UnsupportedOpsError(ConfigError):
    """The model needs operations outside TFLite's builtin set (Flex / TF Select or custom ops),
    which a phone's plain LiteRT runtime cannot run. ``ops`` names them."""

    def __init__(self, ops, detail: str = ""):
        self.ops = sorted(set(ops)) or ["(unnamed)"]
        super().__init__(
            "TFLite export: the model needs operation(s) outside the TFLite builtin set: "
            f"{', '.join(self.ops)}; a phone's plain LiteRT runtime cannot run them (they would "
            "need the Flex / TF Select delegate). Rewrite the layer(s) using these with builtin "
            "operations" + (f". Converter said: {detail}" if detail else ""))


# --------------------------------------------------------------------------- model facts

def load_keras_model(path) -> "keras.Model":  # noqa: F821 (keras is imported when called)
    """A ``.keras`` file written by kfusion (its custom layers registered)."""
    import keras

    import kfusion.models.feature_layers  # noqa: F401 (registers the front-end layers)
    import kfusion.models  # noqa: F401 (registers the model layers)

    path = Path(path)
    if path.suffix != ".keras":
        raise ConfigError(f"{path}: expected a .keras model file")
    if not path.is_file():
        raise DataError(path, "file", "a .keras model file", "nothing")
    if not zipfile.is_zipfile(path):  # Keras itself would say "File not found"
        raise DataError(path, "contents", "a .keras archive (a zip file written by model.save)",
                        "a file that is not a zip archive (truncated or not a Keras model)")
    try:
        return keras.saving.load_model(path, compile=False)
    except (ValueError, OSError, TypeError, KeyError) as err:
        # Keras wraps a layer's own error in "Error when deserializing ... Exception encountered: ..."
        reason = str(err).rpartition("Exception encountered:")[2].strip() or str(err)
        raise DataError(path, "contents", "a Keras 3 model saved with model.save(...)",
                        f"unreadable ({type(err).__name__}: {reason[:300]})") from None


def _check_model(model, where: str):
    import keras

    if isinstance(model, (str, os.PathLike)):
        return load_keras_model(model)
    if not isinstance(model, keras.Model):
        raise ConfigError(f"{where}: model: expected a keras.Model or a .keras path, found "
                          f"{type(model).__name__}")
    return model


def _input_specs(model) -> dict[str, tuple]:
    return {t.name.split(":")[0]: tuple(t.shape[1:]) for t in model.inputs}


def model_modalities(model) -> tuple[str, ...]:
    """Modalities a model takes (canonical order: the ``presence`` column order)."""
    names = _input_specs(model)
    found = tuple(m for m in MODALITIES if m in names)
    if not found:
        raise ConfigError(f"model {model.name!r}: no input named by a modality "
                          f"({', '.join(MODALITIES)}); found inputs {list(names)}")
    return found


def model_targets(model) -> dict[str, int]:
    """``{target: n_classes}`` of a model whose outputs are a dict of class probabilities."""
    names = getattr(model, "output_names", None) or []
    shapes = model.output_shape
    if isinstance(shapes, Mapping):
        items = list(shapes.items())
    elif isinstance(shapes, list) and len(names) == len(shapes):
        items = list(zip(names, shapes))
    elif isinstance(shapes, tuple) and names:
        items = [(names[0], shapes)]
    else:
        raise ConfigError(f"model {model.name!r}: expected named outputs (a dict of class "
                          f"probabilities per target), found output shapes {shapes}")
    out = {}
    for name, shape in items:
        if len(shape) != 2 or shape[-1] is None:
            raise ConfigError(f"model {model.name!r}: output {name!r}: expected [batch, classes], "
                              f"found {tuple(shape)}")
        out[str(name)] = int(shape[-1])
    return out


def is_raw_input_model(model) -> bool:
    """True when the model holds the in-graph front end (takes raw buffers)."""
    def walk(layer):
        if isinstance(layer, FRONT_END_LAYERS):
            return True
        return any(walk(sub) for sub in getattr(layer, "layers", []) or [])
    return any(walk(layer) for layer in model.layers)


def _class_names(targets: dict[str, int], classes: Mapping | None) -> dict[str, list[str]]:
    """Class names per target from ``classes`` (the data set's, as its sidecar or the caller
    gives them); ``class_<i>`` for a target they do not name (never guessed from its name)."""
    out = {}
    classes = dict(classes or {})
    for target, count in targets.items():
        names = classes.get(target)
        if names is None:
            names = [f"class_{i}" for i in range(count)]
        elif len(names) != count:
            raise ConfigError(f"classes[{target!r}]: expected {count} class names (the "
                              f"model's output size), found {list(names)}")
        out[target] = [str(n) for n in names]
    return out


def trained_classes(model_path) -> dict[str, list[str]]:
    """``{target: class names}`` from the training sidecar beside a ``.keras`` file (``kfusion
    train`` writes the data set's classes there); empty when there is none."""
    from kfusion.evaluation.deploy import read_model_sidecar

    if not isinstance(model_path, (str, os.PathLike)) or Path(model_path).suffix != ".keras":
        return {}
    side = read_model_sidecar(model_path) or {}
    return {str(o["name"]): [str(c) for c in o["classes"]] for o in side.get("outputs") or []
            if isinstance(o, Mapping) and "name" in o and o.get("classes")}


def _export_classes(model, classes, representative) -> dict:
    """The data set's class names, the first that names a target winning: ``classes``, the
    representative WindowedDataset's, the ``.keras`` file's training sidecar."""
    return {**trained_classes(model), **dict(getattr(representative, "classes", None) or {}),
            **dict(classes or {})}


# --------------------------------------------------------------------------- representative data

def _as_windows_list(data) -> list | None:
    from kfusion.data.windows import RecordingWindows

    if isinstance(data, RecordingWindows):
        return [data]
    if isinstance(data, (list, tuple)) and data and all(isinstance(d, RecordingWindows) for d in data):
        return list(data)
    return None


#: Default cap on calibration windows for int8. Every window up to this cap: min/max
#: calibration sets each tensor's int8 range, and windows left out of the set can exceed it and
#: saturate (bench/RESULTS.md, 'Numbers that left the docstrings').
REPRESENTATIVE_SIZE = 1000


def _balanced_choice(groups: np.ndarray, size: int, rng) -> np.ndarray:
    """Sorted indices of ``size`` rows, shared as evenly as possible over the ``groups``
    (participants): each group gives ``size // n_groups`` rows, or all it has, and the rows
    left go to the groups with windows to spare; within a group the rows are drawn at random."""
    names, inverse = np.unique(groups, return_inverse=True)
    members = [rng.permutation(np.flatnonzero(inverse == g)) for g in range(len(names))]
    taken = [0] * len(members)
    left = size
    while left > 0:
        open_groups = [g for g in range(len(members)) if taken[g] < len(members[g])]
        share = max(1, left // len(open_groups))
        for g in open_groups:
            extra = min(share, len(members[g]) - taken[g], left)
            taken[g] += extra
            left -= extra
            if left == 0:
                break
    return np.sort(np.concatenate([m[:t] for m, t in zip(members, taken)]))


def representative_inputs(data, model, raw_inputs: bool, size: int = REPRESENTATIVE_SIZE,
                          seed: int = 0, features: FeatureConfig | None = None
                          ) -> dict[str, np.ndarray]:
    """Up to ``size`` windows as the exported model's inputs: every window when there are no
    more than ``size``, else ``size`` drawn with ``seed`` and shared evenly over participants
    (a WindowedDataset's ``participants``, one group per RecordingWindows; a dict: one group).

    ``data``: a :class:`~kfusion.data.dataset.WindowedDataset` (features; for a raw-input
    model only without speech, whose raw input the z-scored windows stand in for: a z-score
    of a z-scored window is itself), a :class:`~kfusion.data.windows.RecordingWindows` or a
    list of them (raw windows, from :func:`kfusion.export.prediction.recording_windows`; turned into
    features for a features-input model), or a dict ``{input name: array [N, ...]}`` in the
    exported model's own input layout (``presence`` may be left out: all present).

    A level-aware model (``levels`` input) gets its levels (or, raw, its ``calibration_<m>``
    inputs) from each RecordingWindows' own statistics (:func:`_window_stats`, stand-ins for
    the person's calibration: only value ranges matter here), from a WindowedDataset's levels
    (features input only), or from the dict.
    """
    from kfusion.data.dataset import WindowedDataset
    from kfusion.models import presence_array

    from kfusion.export.raw_inputs import speech_level_extras

    features = features or FeatureConfig()
    modalities = model_modalities(model)
    levels = LEVELS in _input_specs(model)
    prosody, flux = speech_level_extras(model)
    if levels:  # the levels as the model was trained on them
        features = features.replace(speech_prosody=prosody, speech_flux=flux)
    wanted = _input_specs(model) if not raw_inputs else _raw_specs(model)
    if raw_inputs and levels:
        wanted = {**wanted, **{CALIBRATION_INPUT.format(m): (
            calibration_rows(m, prosody, flux), MFCC_SETTINGS.n_mfcc if m == SPEECH else wanted[m][-1])
            for m in modalities}}
    windows = _as_windows_list(data)
    if isinstance(data, WindowedDataset):
        if raw_inputs and (SPEECH in modalities or levels):
            what = "speech needs raw audio windows" if SPEECH in modalities else "calibrated levels needs raw windows"
            raise ConfigError(f"representative: a raw-input model with {what} to calibrate; pass RecordingWindows "
                              "(kfusion.export.recording_windows(source)) instead of a WindowedDataset")
        missing = [m for m in modalities if m not in data.inputs]
        if missing:
            raise ConfigError(f"representative: the data set lacks the model's modalities "
                              f"{', '.join(missing)} (it has {', '.join(data.inputs)})")
        arrays = {m: data.inputs[m] for m in modalities}
        arrays[PRESENCE] = presence_array(data.presence, modalities)
        if all(m in data.levels for m in modalities):
            arrays[LEVELS] = data.level_matrix(modalities)
        groups = np.asarray(data.participants, dtype=str)
    elif windows is not None:
        blocks = []
        for w in windows:
            missing = [m for m in modalities if m not in w.raw]
            if missing:
                raise ConfigError(f"representative: windows of participant {w.participant} lack "
                                  f"the model's modalities {', '.join(missing)}")
            raw = {m: w.raw[m] for m in modalities}
            presence = {m: w.presence[m] for m in modalities}
            stats = {}
            for m in (modalities if levels else ()):
                found = _window_stats(m, raw[m], presence[m], prosody, flux)
                if found is not None:  # else uncalibrated, as in training
                    stats[m] = found
            if raw_inputs:
                block = dict(raw)
                for m in (modalities if levels else ()):
                    name = CALIBRATION_INPUT.format(m)
                    rows = (stats[m] if m in stats else ChannelStats.identity(wanted[name][-1])).rows(wanted[name][0])
                    block[name] = np.repeat(rows[None], len(w.starts), 0)
            elif levels:
                block, found = featurize(raw, presence, features, stats)
                block[LEVELS] = np.concatenate([found[m] for m in modalities], axis=1)
            else:
                block = dict(window_features(raw, presence, features))
            block[PRESENCE] = presence_array(presence, modalities)
            blocks.append(block)
        arrays = {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}
        groups = np.concatenate([np.full(len(b[PRESENCE]), i) for i, b in enumerate(blocks)])
    elif isinstance(data, Mapping):
        arrays = {str(k): np.asarray(v, dtype=np.float32) for k, v in data.items()}
        lengths = {k: v.shape[0] for k, v in arrays.items() if v.ndim}
        if len(set(lengths.values())) != 1:
            raise ConfigError(f"representative: expected arrays with one row per window, found "
                              f"lengths {lengths}")
        if PRESENCE in wanted and PRESENCE not in arrays:
            n = next(iter(lengths.values()))
            arrays[PRESENCE] = np.ones((n, wanted[PRESENCE][-1]), dtype=np.float32)
        groups = np.zeros(next(iter(lengths.values())), dtype=int)
    else:
        raise ConfigError("representative: expected a WindowedDataset, RecordingWindows (or a "
                          f"list of them) or a dict of arrays, found {type(data).__name__}")
    missing = [k for k in wanted if k not in arrays]
    if missing:
        raise ConfigError(f"representative: no data for the model input(s) {', '.join(missing)}")
    for name, shape in wanted.items():
        if tuple(arrays[name].shape[1:]) != tuple(shape):
            raise ConfigError(f"representative: input {name!r}: expected windows of shape "
                              f"{list(shape)}, found {list(arrays[name].shape[1:])}")
    n = arrays[next(iter(wanted))].shape[0]
    if n == 0:
        raise ConfigError("representative: expected at least one window, found none")
    size = checks.whole("representative: size", size)
    if n <= size:
        index = np.arange(n)
    else:
        index = _balanced_choice(groups, int(size), np.random.default_rng(seed))
    return {k: np.ascontiguousarray(arrays[k][index], dtype=np.float32) for k in wanted}


def _window_stats(modality: str, windows: np.ndarray, present: np.ndarray, prosody: bool = False,
                  flux: bool = False):
    """Calibration statistics of one participant from its own raw windows (overlaps counted
    twice; speech without the silence rule's exact framing), with the level statistics of
    those windows (speech ``prosody``, ``flux``: theirs too): a stand-in for int8 ranges."""
    from kfusion.data.calibration import signal_statistics, speech_statistics, with_level_statistics

    kept = np.asarray(windows)[np.asarray(present, dtype=bool)]
    if not kept.shape[0]:
        return None
    if modality == SPEECH:
        stats = speech_statistics(kept.reshape(-1), "participant", 0.0)
    else:
        stats = signal_statistics(kept.reshape(-1, kept.shape[-1]), NOMINAL_RATES[modality], "participant", 0.0)
    if stats is None:
        return None
    levels = featurize({modality: kept}, {modality: np.ones(kept.shape[0], bool)},
                       FeatureConfig(speech_prosody=prosody, speech_flux=flux), {modality: stats})[1][modality]
    return with_level_statistics(stats, levels)


def _raw_specs(model) -> dict[str, tuple]:
    from kfusion.export.raw_inputs import raw_input_shapes

    return raw_input_shapes(model)


# --------------------------------------------------------------------------- conversion

def _saved_model(model, directory: Path) -> None:
    import io
    from contextlib import redirect_stdout

    with redirect_stdout(io.StringIO()):  # keras prints the signature otherwise
        model.export(str(directory), format="tf_saved_model", verbose=False)


def _flex_ops(message: str) -> list[str]:
    ops = set()
    for line in re.findall(r"TF Select ops: ([^\n]+)", message):
        ops.update(o.strip() for o in line.split(",") if o.strip())
    ops.update(re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", message))
    ops.update(re.findall(r"Custom ops: ([^\n]+)", message))
    return sorted(ops)


def _converter(saved_dir: Path):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_dir))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.allow_custom_ops = False
    return converter


def _converted(make):
    """``make()`` (a conversion) with the converter's failures as kfusion errors.

    The converter raises its ``ConverterError``, a class ``tf.lite`` does not export: it is
    recognised by name, and any other exception passes through unchanged."""
    import warnings

    try:
        with warnings.catch_warnings():
            # the converter's calibrator and QuantizationDebugger still use tf.lite.Interpreter
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
            return make()
    except Exception as err:
        if type(err).__name__ != "ConverterError":
            raise
        message = str(err)
        ops = _flex_ops(message)
        if ops or "not supported" in message or "neither a custom op" in message:
            raise UnsupportedOpsError(ops, message.strip().splitlines()[-1][:300]) from None
        raise ConfigError(f"TFLite conversion failed: {message[:1500]}") from None


def _convert(converter) -> bytes:
    return _converted(converter.convert)


def _flatbuffers():
    """LiteRT's public flatbuffer tools (``ai_edge_litert.tools.flatbuffer_utils``): read and
    write a ``.tflite`` file as Python objects of the TFLite schema."""
    from ai_edge_litert.tools import flatbuffer_utils

    return flatbuffer_utils


def _read(content: bytes):
    return _flatbuffers().read_model_from_bytearray(bytearray(content))


def _custom_name(code) -> str:
    name = code.customCode
    return (name or b"?").decode() if isinstance(name, bytes) else str(name)


def _operators(content: bytes) -> dict[str, bool]:
    """``{operator name: True when custom}`` of a TFLite flatbuffer (custom ops by their custom
    name), from one read of the file."""
    fb = _flatbuffers()
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    out = {}
    for code in _read(content).operatorCodes or []:
        builtin = fb.get_builtin_code_from_operator_code(code)
        custom = builtin == fb.BuiltinOperator.CUSTOM
        out[_custom_name(code) if custom else names.get(builtin, str(builtin))] = custom
    return out


def tflite_ops(content: bytes) -> list[str]:
    """Names of the operators in a TFLite flatbuffer (custom ops by their custom name)."""
    return sorted(_operators(content))


def _builtin_only_ops(content: bytes) -> list[str]:
    """:func:`tflite_ops` of ``content``; :class:`UnsupportedOpsError` when any is custom."""
    operators = _operators(content)
    custom = [name for name, is_custom in operators.items() if is_custom]
    if custom:
        raise UnsupportedOpsError(custom)
    return sorted(operators)


def _front_end_scopes(model) -> list[str]:
    """Name fragments of the front-end layers' operations in the converted graph."""
    scopes = []
    for layer in model.layers:
        if isinstance(layer, FRONT_END_LAYERS):
            scopes.append(f"/{layer.name}")
    return scopes


def _tensor_name(sub, index) -> str:
    value = sub.tensors[index].name
    return value.decode() if isinstance(value, bytes) else str(value)


def _front_end_tensor_names(float_content: bytes, scopes: list[str]) -> list[str]:
    model = _read(float_content)
    return [_tensor_name(sub, i) for sub in model.subgraphs for i in range(len(sub.tensors))
            if any(_in_scope(_tensor_name(sub, i), s) for s in scopes)]


def _in_scope(name: str, scope: str) -> bool:
    # Keras names the graph scope "<layer>_1" (or "<layer>"): match the layer's own scope only.
    return re.search(re.escape(scope) + r"(_\d+)?/", name) is not None


def _is_constant(model, tensor) -> bool:
    if tensor.buffer <= 0 or tensor.buffer >= len(model.buffers):
        return False
    data = model.buffers[tensor.buffer].data
    return data is not None and len(data) > 0


def _restore_float_front_end(quant_content: bytes, float_content: bytes, scopes: list[str]) -> bytes:
    """Give the front-end operations of a float16- or dynamic-range-quantised file their
    float32 constants back (taken from the float conversion of the same SavedModel), and drop
    the DEQUANTIZE operations and quantised constants left unused.

    The converter has no public switch to leave some operations out of float16 or dynamic-range
    quantisation (``QuantizationDebugger``'s deny-lists apply to full-integer quantisation
    only), so the file is edited with LiteRT's public flatbuffer tools."""
    fb = _flatbuffers()
    quant = _read(quant_content)
    floating = _read(float_content)
    qsub, fsub = quant.subgraphs[0], floating.subgraphs[0]

    def opcode(model, op):
        return fb.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex])

    dequantize = fb.BuiltinOperator.DEQUANTIZE

    def front_end_ops(model, sub):
        return [op for op in sub.operators if len(op.outputs) and opcode(model, op) != dequantize
                and any(_in_scope(_tensor_name(sub, op.outputs[0]), s) for s in scopes)]

    # Quantisation only changes constants (and adds DEQUANTIZE), so the front-end operations
    # come in the same order in both conversions; names may gain a numeric suffix.
    pairs = list(zip(front_end_ops(quant, qsub), front_end_ops(floating, fsub)))
    if not pairs or len(pairs) != len(front_end_ops(floating, fsub)) or any(
            opcode(quant, a) != opcode(floating, b) or len(a.inputs) != len(b.inputs)
            or list(qsub.tensors[a.outputs[0]].shape) != list(fsub.tensors[b.outputs[0]].shape)
            for a, b in pairs):
        raise ConfigError("TFLite export: the front-end operations of the quantised conversion "
                          "do not match those of the float conversion; cannot keep them float32")
    producer = {out: op for op in qsub.operators for out in op.outputs}
    float32 = fb.TensorType.FLOAT32
    restored = 0
    for op, twin in pairs:
        for slot, index in enumerate(op.inputs):
            if index < 0 or twin.inputs[slot] < 0:
                continue
            maker = producer.get(index)
            from_dequantize = (maker is not None and opcode(quant, maker) == dequantize
                               and _is_constant(quant, qsub.tensors[maker.inputs[0]]))
            converted = from_dequantize or (_is_constant(quant, qsub.tensors[index])
                                            and qsub.tensors[index].type != float32)
            original = fsub.tensors[twin.inputs[slot]]
            if not converted or original.type != float32 or not _is_constant(floating, original):
                continue
            if list(qsub.tensors[index].shape) != list(original.shape):
                raise ConfigError("TFLite export: a front-end constant changed shape in "
                                  f"quantisation ({list(original.shape)} -> "
                                  f"{list(qsub.tensors[index].shape)})")
            # A new float32 constant for this operation; the quantised one is dropped below
            # when nothing else reads it.
            fresh_buffer = fb.BufferT()
            fresh_buffer.data = np.array(floating.buffers[original.buffer].data, dtype=np.uint8)
            quant.buffers.append(fresh_buffer)
            fresh = fb.TensorT()
            fresh.shape = np.array(original.shape, dtype=np.int32)
            fresh.type = float32
            fresh.buffer = len(quant.buffers) - 1
            fresh.name = original.name
            qsub.tensors.append(fresh)
            op.inputs[slot] = len(qsub.tensors) - 1
            restored += 1
    if restored == 0:
        return quant_content
    # Drop DEQUANTIZE operations whose outputs nobody reads any more, then empty the buffers
    # of constants no operation uses.
    while True:
        used = {i for op in qsub.operators for i in op.inputs} | set(qsub.outputs)
        dead = [op for op in qsub.operators if opcode(quant, op) == dequantize
                and not any(o in used for o in op.outputs)]
        if not dead:
            break
        qsub.operators = [op for op in qsub.operators if all(op is not d for d in dead)]
    referenced = ({i for op in qsub.operators for i in list(op.inputs) + list(op.outputs)}
                  | set(qsub.inputs) | set(qsub.outputs))
    live_buffers = {qsub.tensors[i].buffer for i in referenced if i >= 0}
    for sub in quant.subgraphs[1:]:
        live_buffers |= {t.buffer for t in sub.tensors}
    for position, buffer in enumerate(quant.buffers):
        if position not in live_buffers and buffer.data is not None and len(buffer.data):
            buffer.data = None
    return bytes(fb.convert_object_to_bytearray(quant))


def _drop_tensor_names(content: bytes, scopes: list[str]) -> bytes:
    """The file without the names of its intermediate tensors (debugging labels only, ~20 %
    of a small model's file: bench/RESULTS.md, "Phones: factored-DFT front end"). Kept: the
    subgraphs' inputs and outputs (the signature keys are separate and always kept) and the
    front end's tensors (``scopes``), from the layer's name on (``speech_mfcc_1/...``), so a
    reader can still tell the float32 front end apart. Nothing the interpreter computes
    depends on a name."""
    model = _read(content)
    for sub in model.subgraphs:
        kept = set(sub.inputs) | set(sub.outputs)
        for index, tensor in enumerate(sub.tensors):
            if index in kept:
                continue
            name = _tensor_name(sub, index)
            found = [m for m in (re.search(re.escape(s) + r"(_\d+)?/", name) for s in scopes) if m]
            tensor.name = name[found[0].start() + 1:].encode() if found else None
    return bytes(_flatbuffers().convert_object_to_bytearray(model))


def _int8_keeping_float(converter, keep_float: list[str]) -> bytes:
    """Full-integer quantisation of every operation except those whose outputs are named in
    ``keep_float`` (the front end), which stay float32: ``tf.lite.experimental.
    QuantizationDebugger``'s deny-list, the converter's public route for it. The debugger also
    builds an instrumented copy (NumericVerify operations) that is not used here: one more
    quantisation pass per export (see bench/RESULTS.md, 'Export through public TFLite APIs')."""
    import tensorflow as tf

    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=keep_float)

    def make():
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_options=options)
        return debugger.get_nondebug_quantized_model()
    return _converted(make)


def _float_inputs_unquantised(content: bytes) -> bytes:
    """The int8 file with its float32 inputs read as they are by the float32 operations that
    read them: every chain QUANTIZE (-> QUANTIZE ...) -> DEQUANTIZE hanging off a subgraph input
    is dropped and the DEQUANTIZE's readers read the input itself.

    The deny-listed conversion (:func:`_int8_keeping_float`) quantises model inputs even when
    only float32 front-end operations read them, with ranges the calibration never measured
    (``[0, 1]``): a raw-input model's ``calibration_<m>`` inputs (°C, µS, level statistics)
    reached its front end clipped, which put its levels, and its probabilities, up to 0.19 off
    (bench/RESULTS.md, "int8 raw-input models: the calibration inputs were clipped")."""
    fb = _flatbuffers()
    model = _read(content)
    sub = model.subgraphs[0]
    quantize, dequantize = fb.BuiltinOperator.QUANTIZE, fb.BuiltinOperator.DEQUANTIZE

    def opcode(op):
        return fb.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex])

    readers: dict[int, list] = {}
    for op in sub.operators:
        for i in op.inputs:
            if i >= 0:
                readers.setdefault(int(i), []).append(op)
    outputs = {int(i) for i in sub.outputs}

    def chain_from(op) -> list | None:
        """``op`` (a QUANTIZE) and the QUANTIZEs up to the DEQUANTIZE that alone read it, or None."""
        chain = [op]
        while opcode(op) != dequantize:
            out = int(op.outputs[0])
            after = readers.get(out, [])
            if out in outputs or len(after) != 1 or opcode(after[0]) not in (quantize, dequantize):
                return None
            op = after[0]
            chain.append(op)
        return None if int(op.outputs[0]) in outputs else chain

    dropped = []
    for graph_input in (int(i) for i in sub.inputs):
        for first in [op for op in readers.get(graph_input, []) if opcode(op) == quantize]:
            chain = chain_from(first)
            if chain is None:
                continue
            floating = int(chain[-1].outputs[0])
            for reader in readers.get(floating, []):
                reader.inputs = np.array([graph_input if int(i) == floating else i for i in reader.inputs],
                                         dtype=np.int32)
            dropped.extend(chain)
    if not dropped:
        return content
    sub.operators = [op for op in sub.operators if all(op is not d for d in dropped)]
    return bytes(fb.convert_object_to_bytearray(model))


def _convert_variant(saved_dir: Path, quantize: str, representative: dict | None,
                     front_end_scopes: list[str], float_content: bytes | None = None) -> tuple[bytes, list[str]]:
    """The converted file and its operator names (builtin only, else UnsupportedOpsError)."""
    import tensorflow as tf

    converter = _converter(saved_dir)
    if quantize == "none":
        content = _convert(converter)
    elif quantize in ("float16", "dynamic"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        content = _convert(converter)
        if front_end_scopes:
            if float_content is None:
                float_content = _convert(_converter(saved_dir))
            content = _restore_float_front_end(content, float_content, front_end_scopes)
    else:  # int8
        if representative is None:
            raise ConfigError("export_model: quantize='int8' needs representative windows "
                              "(a WindowedDataset, RecordingWindows or a dict of arrays)")
        names = list(representative)
        count = representative[names[0]].shape[0]

        def samples():
            for i in range(count):
                yield {k: representative[k][i:i + 1] for k in names}

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = samples
        if not front_end_scopes:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            content = _convert(converter)
        else:
            if float_content is None:
                float_content = _convert(_converter(saved_dir))
            content = _float_inputs_unquantised(
                _int8_keeping_float(converter, _front_end_tensor_names(float_content, front_end_scopes)))
    return content, _builtin_only_ops(content)


# --------------------------------------------------------------------------- sidecar

def sidecar_path(path) -> Path:
    """``<path>.json`` (``model.tflite`` -> ``model.tflite.json``; a folder -> ``<folder>.json``)."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def read_sidecar(path) -> dict | None:
    """The sidecar of an exported model, or None when there is none."""
    side = sidecar_path(path)
    if not side.is_file():
        return None
    try:
        return json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(side, "contents", "the JSON written by kfusion export", f"unreadable ({err})") from None


def _window_seconds(model) -> float:
    specs = _input_specs(model)
    for m in MODALITIES:
        if m in specs:
            if m == SPEECH:
                return specs[m][0] * MFCC_SETTINGS.hop_length / MFCC_SETTINGS.sample_rate
            return specs[m][0] / NOMINAL_RATES[m]
    raise ConfigError(f"model {model.name!r}: no modality input")


def _describe_inputs(features_model, raw_inputs: bool, features: FeatureConfig) -> list[dict]:
    modalities = model_modalities(features_model)
    specs = _raw_specs(features_model) if raw_inputs else _input_specs(features_model)
    kind = "raw" if raw_inputs else "features"
    out = []
    order = [m for m in MODALITIES if m in specs] + [n for n in specs if n not in MODALITIES]
    for name in order:
        shape = specs[name]
        entry = {"name": name, "shape": [1, *[int(s) for s in shape]], "dtype": "float32"}
        if name == PRESENCE:
            entry.update(units="1 = modality present, 0 = absent (> 0.5 counts as present)",
                         order=f"columns {', '.join(modalities)}")
        elif name == LEVELS:
            entry.update(units="calibrated window levels: the window standardised by the person's "
                               "calibration (kfusion calibrate), then its mean per channel and "
                               "log(std + 1e-3) per channel; zeros for an absent modality",
                         order=f"per modality ({', '.join(modalities)}): means, then log-stds "
                               "(speech: per MFCC coefficient)")
        elif name == SPEECH:
            entry.update(units=_UNITS[kind][SPEECH], sample_rate_hz=AUDIO_RATE)
            if raw_inputs:
                entry["order"] = "samples in time order, mono"
                entry["preprocessing_in_graph"] = (
                    "MFCC (kfusion MFCC_SETTINGS)" + (" then CMVN per window"
                                                      if features.speech_norm == "cmvn" else ""))
            else:
                entry["order"] = "[frame (10 ms hop), MFCC coefficient c0..c39]"
                entry["preprocessing"] = ("MFCC per kfusion MFCC_SETTINGS" + (
                    ", then each coefficient z-scored over the window's frames (CMVN)"
                    if features.speech_norm == "cmvn" else ""))
        else:
            entry.update(units=_UNITS[kind][name], sample_rate_hz=NOMINAL_RATES[name],
                         order="[time, channel]" + (" (channels x, y, z)" if CHANNELS[name] == 3 else ""))
            if raw_inputs:
                entry["preprocessing_in_graph"] = ("z-score per window and channel"
                                                   if features.wearable_norm == "zscore" else "none")
            else:
                entry["preprocessing"] = ("z-score per window and channel (std < 1e-6 -> zeros)"
                                          if features.wearable_norm == "zscore" else "none")
        out.append(entry)
    if raw_inputs and LEVELS in _input_specs(features_model):
        from kfusion.data.calibration import speech_extra_names
        from kfusion.export.raw_inputs import speech_level_extras

        extras = speech_level_extras(features_model)
        extra_names = speech_extra_names(*extras)
        for m in modalities:
            channels = MFCC_SETTINGS.n_mfcc if m == SPEECH else specs[m][-1]
            extra = m == SPEECH and bool(extra_names)
            out.append({"name": CALIBRATION_INPUT.format(m),
                        "shape": [1, calibration_rows(m, *extras), int(channels)],
                        "dtype": "float32",
                        "units": f"the person's calibration of {m}: row 0 mean, row 1 standard deviation "
                                 + ("per MFCC coefficient over non-silent frames" if m == SPEECH
                                    else "per channel, in the units of the raw input")
                                 + "; rows 2-3 the mean of the person's window levels (means, then log-stds), "
                                   "rows 4-5 their standard deviation (0 and 1 when unknown)"
                                 + (f"; rows 6-7 the mean and standard deviation of the extra window levels "
                                    f"({', '.join(extra_names)}) in their first {len(extra_names)} "
                                    "columns, the rest 0 and 1" if extra else "")
                                 + " (kfusion calibrate; the same for every window of a person)"})
    return out


def _sidecar(features_model, path: Path, fmt: str, quantize: str, raw_inputs: bool,
             features: FeatureConfig, classes: dict, window: WindowConfig, content: bytes | None,
             ops: list[str] | None = None, front_end: str = "fft") -> dict:
    import tensorflow as tf

    info = {
        "sidecar_version": SIDECAR_VERSION,
        "kfusion_version": kfusion.__version__,
        "tensorflow_version": tf.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "file": path.name,
        "format": fmt,
        "signature": SIGNATURE,
        "quantization": quantize,
        "raw_inputs": bool(raw_inputs),
        "modalities": list(model_modalities(features_model)),
        "window": {"seconds": _window_seconds(features_model), "hop_seconds": window.hop},
        "features": features.to_dict(),
        "mfcc": MFCC_SETTINGS.to_dict(),
        "front_end": front_end if raw_inputs else None,
        "inputs": _describe_inputs(features_model, raw_inputs, features),
        "outputs": [{"name": t, "shape": [1, len(c)], "dtype": "float32",
                     "meaning": "class probabilities (softmax)", "classes": c}
                    for t, c in classes.items()],
    }
    if content is not None:
        info["bytes"] = len(content)
        info["ops"] = ops
    return info


# --------------------------------------------------------------------------- public API

def _prepare(model, raw_inputs, features, where):
    model = _check_model(model, where)
    checks.flag(f"{where}: raw_inputs", raw_inputs)
    features = features or FeatureConfig()
    if not isinstance(features, FeatureConfig):
        raise ConfigError(f"{where}: features: expected a FeatureConfig, found {type(features).__name__}")
    if is_raw_input_model(model):
        raise ConfigError(f"{where}: model: expected a features-input model (the front end is "
                          "added by raw_inputs=True), found one that already holds MfccFrontEnd / "
                          "WindowNormalization layers")
    model_modalities(model)
    model_targets(model)
    if LEVELS in _input_specs(model):  # the extra speech levels are the model's, whatever was given
        from kfusion.export.raw_inputs import speech_level_extras

        prosody, flux = speech_level_extras(model)
        features = features.replace(speech_prosody=prosody, speech_flux=flux)
    return model, features


def export_model(model, out, format: str = "savedmodel", quantize: str = "none",
                 representative=None, raw_inputs: bool = False, *,
                 features: FeatureConfig | None = None, classes: Mapping | None = None,
                 window: WindowConfig | None = None, representative_size: int = REPRESENTATIVE_SIZE,
                 seed: int = 0, tensor_names: bool = False, front_end: str = "fft") -> Path:
    """Export a features-input kfusion model (a ``keras.Model`` or ``.keras`` path) to ``out``.

    ``format``: ``"savedmodel"`` (a folder; ``model.export(..., "tf_saved_model")``) or
    ``"tflite"`` (one file, builtin ops only; a model needing Flex/custom ops raises
    :class:`UnsupportedOpsError` naming them). ``quantize`` (TFLite only): ``none``,
    ``float16``, ``dynamic`` or ``int8`` (needs ``representative``: see
    :func:`representative_inputs`; ``representative_size`` windows drawn with ``seed``).
    ``raw_inputs``: put the front end in the graph (inputs: raw 4 s buffers, see
    :func:`kfusion.export.raw_inputs.raw_input_model`), normalising as ``features`` says.
    ``classes``: class names per target; by default the data set's classes, from the
    representative WindowedDataset or the ``kfusion train`` sidecar beside a ``.keras`` path
    (``class_<i>`` for a target none of them names).
    ``tensor_names``: keep every tensor's name in a TFLite file (for debugging tools); by
    default only the inputs', outputs' and front end's are kept, which makes the file ~20 %
    smaller and changes nothing it computes. ``front_end`` (raw inputs): ``"fft"`` or
    ``"dft"``, see :func:`kfusion.export.raw_inputs.raw_input_model`.
    Writes ``<out>.json`` beside it (inputs, outputs, quantisation, versions). Returns ``out``.
    """
    where = "export_model"
    given_classes = _export_classes(model, classes, representative)
    model, features = _prepare(model, raw_inputs, features, where)
    checks.choice(f"{where}: format", format, FORMATS)
    checks.choice(f"{where}: quantize", quantize, QUANTIZATIONS)
    checks.choice(f"{where}: front_end", front_end, FRONT_END_METHODS)
    if format == "savedmodel" and quantize != "none":
        raise ConfigError(f"{where}: quantize={quantize!r} applies to format='tflite' only")
    window = window or WindowConfig()
    class_names = _class_names(model_targets(model), given_classes)
    out = Path(out)
    rep = None
    if quantize == "int8":
        if representative is None:
            raise ConfigError(f"{where}: quantize='int8' needs representative windows "
                              "(a WindowedDataset, RecordingWindows or a dict of arrays)")
        rep = representative_inputs(representative, model, raw_inputs, representative_size, seed,
                                    features)
    exported = raw_input_model(model, features, front_end=front_end) if raw_inputs else model
    out.parent.mkdir(parents=True, exist_ok=True)
    content = ops = None
    if format == "savedmodel":
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        _saved_model(exported, out)
    else:
        with tempfile.TemporaryDirectory(prefix="kfusion-export-") as tmp:
            saved = Path(tmp) / "saved_model"
            _saved_model(exported, saved)
            scopes = _front_end_scopes(exported) if raw_inputs else []
            content, ops = _convert_variant(saved, quantize, rep, scopes)
        if not tensor_names:
            content = _drop_tensor_names(content, scopes)
        out.write_bytes(content)
    info = _sidecar(model, out, format, quantize, raw_inputs, features, class_names, window, content, ops,
                    front_end)
    sidecar_path(out).write_text(json.dumps(info, indent=2) + "\n")
    return out


def export_variants(model, out_dir, quantizations=QUANTIZATIONS, raw_inputs=(False, True),
                    representative=None, *, features: FeatureConfig | None = None,
                    classes: Mapping | None = None, window: WindowConfig | None = None,
                    representative_size: int = REPRESENTATIVE_SIZE, seed: int = 0, name: str = "model",
                    tensor_names: bool = False, front_end: str = "fft") -> dict:
    """Several TFLite variants of one model, exporting the SavedModel once per input kind.

    Files ``<out_dir>/<name>-<features|raw>-<quantization>.tflite`` (+ sidecars). Returns
    ``{(raw_inputs, quantization): path}``. ``representative`` is needed for ``int8`` (for a
    raw-input model with speech: raw windows). ``classes``, ``tensor_names``, ``front_end``: as
    in :func:`export_model`.
    """
    where = "export_variants"
    given_classes = _export_classes(model, classes, representative)
    model, features = _prepare(model, False, features, where)
    quantizations = [checks.choice(f"{where}: quantizations", q, QUANTIZATIONS) for q in quantizations]
    kinds = [bool(k) for k in raw_inputs]
    checks.choice(f"{where}: front_end", front_end, FRONT_END_METHODS)
    window = window or WindowConfig()
    class_names = _class_names(model_targets(model), given_classes)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for raw in kinds:
        rep = None
        if "int8" in quantizations:
            if representative is None:
                raise ConfigError(f"{where}: 'int8' needs representative windows")
            rep = representative_inputs(representative, model, raw, representative_size, seed, features)
        exported = raw_input_model(model, features, front_end=front_end) if raw else model
        scopes = _front_end_scopes(exported) if raw else []
        with tempfile.TemporaryDirectory(prefix="kfusion-export-") as tmp:
            saved = Path(tmp) / "saved_model"
            _saved_model(exported, saved)
            float_content = None
            for quantize in ["none"] + [q for q in quantizations if q != "none"]:
                if quantize == "none" and "none" not in quantizations and not scopes:
                    continue
                content, ops = _convert_variant(saved, quantize, rep, scopes, float_content)
                if quantize == "none":
                    float_content = content
                    if "none" not in quantizations:
                        continue
                path = out_dir / f"{name}-{'raw' if raw else 'features'}-{quantize}.tflite"
                if not tensor_names:
                    content = _drop_tensor_names(content, scopes)
                path.write_bytes(content)
                info = _sidecar(model, path, "tflite", quantize, raw, features, class_names, window, content,
                                ops, front_end)
                sidecar_path(path).write_text(json.dumps(info, indent=2) + "\n")
                paths[(raw, quantize)] = path
    return paths
