"""Prediction timelines from exported models: ``.keras``, SavedModel folder or ``.tflite`` alike.

:func:`load_predictor` picks the runtime by path and returns a :class:`Predictor` (one
interface: ``predict({input: [N, ...]}) -> {target: [N, classes]}``, and the facts an app
needs: raw or feature inputs, modalities, targets and class names, window length).
:func:`predict` cuts a recording into windows exactly as training does (same clock, same
windows, features computed by :mod:`kfusion.data.features` for a features-input model, raw
buffers for a raw-input one) and writes one row per window. :class:`StreamingPredictor`
takes raw samples as they arrive and predicts each window as soon as it is complete.

A level-aware model (a ``levels`` input, or ``calibration_<modality>`` inputs after
``raw_input_model``) needs each person's calibration: a calibration file (``kfusion
calibrate``), ``head:MINUTES`` (from the first minutes of the recording predicted),
``participant`` (all of it) or ``none`` (uncalibrated levels, for models trained so); see
:func:`predict`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kfusion import checks
from kfusion.config import CalibrationConfig, DataConfig, FeatureConfig, WindowConfig
from kfusion.data.calibration import (
    EXTRA_LEVEL_ROWS,
    ChannelStats,
    recording_calibration,
    signal_statistics,
    speech_statistics,
    with_speech_extras,
)
from kfusion.data.quality import StreamQuality
from kfusion.data.features import MFCC_SETTINGS, featurize, window_features
from kfusion.modalities import AUDIO_RATE, MODALITIES, NOMINAL_RATES, SPEECH, check_modalities
from kfusion.data.sources import load_recordings
from kfusion.data.windows import RecordingWindows, cut_windows, model_rate_series
from kfusion.errors import ConfigError, DataError
from kfusion.export.raw_inputs import CALIBRATION_INPUT, speech_level_extras
from kfusion.models.fusion import LEVELS
from kfusion.export.tflite import PRESENCE, SIGNATURE, _class_names, read_sidecar, sidecar_path

__all__ = ["Predictor", "load_predictor", "predict", "timeline", "recording_windows",
           "StreamingPredictor", "model_inputs_from_windows", "resolve_calibration", "GivenCalibration"]

#: How ``--calibration`` may be given (besides a calibration file).
CALIBRATION_HELP = "FILE (kfusion calibrate), head:MINUTES, participant or none"


# --------------------------------------------------------------------------- predictors

@dataclass
class Predictor:
    """A loaded model behind one interface (see :func:`load_predictor`).

    ``input_shapes``: input name -> shape without batch; ``raw_inputs``: True when the model
    takes raw buffers (the front end is in its graph); ``classes``: target -> class names in
    output order; ``window_seconds`` / ``hop_seconds``: the windows it was trained on;
    ``features``: how a features-input model's inputs are normalised; ``trained_calibration``:
    the calibration the model was trained with (from a ``kfusion train`` sidecar; None = unknown).
    """

    path: Path
    kind: str
    input_shapes: dict
    raw_inputs: bool
    classes: dict
    window_seconds: float
    hop_seconds: float = 3.0
    features: FeatureConfig = field(default_factory=FeatureConfig)
    trained_calibration: CalibrationConfig | None = None

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in MODALITIES if m in self.input_shapes)

    @property
    def uses_levels(self) -> bool:
        """True when the model takes calibrated window levels (``levels`` or
        ``calibration_<modality>`` inputs): it then needs each person's calibration."""
        return LEVELS in self.input_shapes or any(
            CALIBRATION_INPUT.format(m) in self.input_shapes for m in MODALITIES)

    @property
    def speech_prosody(self) -> bool:
        """True when the model's speech levels hold prosody (and its calibration its statistics)."""
        return self._speech_extras()[0]

    @property
    def speech_flux(self) -> bool:
        """True when the model's speech levels hold the cepstral flux (and its calibration its statistics)."""
        return self._speech_extras()[1]

    def _speech_extras(self) -> tuple[bool, bool]:
        name = CALIBRATION_INPUT.format(SPEECH)
        if name in self.input_shapes:  # raw inputs: 8 rows when the levels have extras
            if int(self.input_shapes[name][0]) < EXTRA_LEVEL_ROWS:
                return False, False
            found = (self.features.speech_prosody, self.features.speech_flux)
            return found if any(found) else (True, False)
        if LEVELS in self.input_shapes and SPEECH in self.input_shapes:
            return self.features.speech_prosody, self.features.speech_flux
        return False, False

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(self.classes)

    @property
    def uses_presence(self) -> bool:
        return PRESENCE in self.input_shapes

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``{input: float32 [N, ...]}`` -> ``{target: float32 [N, classes]}``."""
        arrays = self._check_inputs(inputs)
        n = next(iter(arrays.values())).shape[0]
        if n == 0:
            return {t: np.zeros((0, len(c)), dtype=np.float32) for t, c in self.classes.items()}
        out = self._run(arrays)
        return {t: np.asarray(out[t], dtype=np.float32).reshape(n, len(c))
                for t, c in self.classes.items()}

    def _check_inputs(self, inputs) -> dict[str, np.ndarray]:
        missing = [k for k in self.input_shapes if k not in inputs]
        if missing:
            raise ConfigError(f"{self.path}: missing model input(s) {', '.join(missing)}; the "
                              f"model takes {', '.join(self.input_shapes)}")
        arrays = {}
        for name, shape in self.input_shapes.items():
            value = np.asarray(inputs[name], dtype=np.float32)
            if tuple(value.shape[1:]) != tuple(shape):
                raise ConfigError(f"{self.path}: input {name!r}: expected [N, "
                                  f"{', '.join(map(str, shape))}], found {list(value.shape)}")
            arrays[name] = np.ascontiguousarray(value)
        if len({a.shape[0] for a in arrays.values()}) != 1:
            raise ConfigError(f"{self.path}: inputs have different numbers of windows: "
                              f"{ {k: a.shape[0] for k, a in arrays.items()} }")
        return arrays

    def _run(self, arrays: dict) -> dict:  # pragma: no cover - overridden
        raise NotImplementedError


class KerasPredictor(Predictor):
    model = None
    batch_size = 64

    def _run(self, arrays):
        n = next(iter(arrays.values())).shape[0]
        parts = []
        for begin in range(0, n, self.batch_size):
            batch = {k: v[begin:begin + self.batch_size] for k, v in arrays.items()}
            out = self.model(batch, training=False)
            parts.append({t: np.asarray(out[t]) for t in self.classes})
        return {t: np.concatenate([p[t] for p in parts]) for t in self.classes}


class SavedModelPredictor(Predictor):
    function = None
    batch_size = 64

    def _run(self, arrays):
        import tensorflow as tf

        n = next(iter(arrays.values())).shape[0]
        parts = []
        for begin in range(0, n, self.batch_size):
            batch = {k: tf.constant(v[begin:begin + self.batch_size]) for k, v in arrays.items()}
            out = self.function(**batch)
            parts.append({t: out[t].numpy() for t in self.classes})
        return {t: np.concatenate([p[t] for p in parts]) for t in self.classes}


class TFLitePredictor(Predictor):
    """Runs one window per call, as a phone does (LiteRT signature runner)."""

    runner = None

    def _run(self, arrays):
        n = next(iter(arrays.values())).shape[0]
        out = {t: np.empty((n, len(c)), dtype=np.float32) for t, c in self.classes.items()}
        for i in range(n):
            result = self.runner(**{k: v[i:i + 1] for k, v in arrays.items()})
            for t in self.classes:
                out[t][i] = result[t][0]
        return out


def _kind(path: Path) -> str:
    if path.suffix == ".tflite":
        return "tflite"
    if path.suffix == ".keras":
        return "keras"
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return "savedmodel"
    if path.is_dir():
        raise DataError(path, "saved_model.pb", "a SavedModel folder (with saved_model.pb)", "a folder without it")
    raise DataError(path, "model", "a .keras file, a SavedModel folder or a .tflite file",
                    f"'{path.name}'")


def _infer_raw(shapes: dict) -> bool:
    # A speech input of raw samples has rank 1; for wearable-only models raw and feature inputs
    # have the same shape, and z-scored windows are right for both (z-scoring is idempotent).
    # Calibration inputs exist only in raw-input models (raw_input_model).
    return (SPEECH in shapes and len(shapes[SPEECH]) == 1) or any(
        CALIBRATION_INPUT.format(m) in shapes for m in MODALITIES)


def _window_seconds(shapes: dict, raw: bool) -> float:
    for m in MODALITIES:
        if m in shapes:
            if m == SPEECH:
                samples = shapes[m][0] if raw else shapes[m][0] * MFCC_SETTINGS.hop_length
                return samples / AUDIO_RATE
            return shapes[m][0] / NOMINAL_RATES[m]
    raise ConfigError(f"model inputs {list(shapes)}: none named by a modality ({', '.join(MODALITIES)})")


def load_predictor(path, classes: Mapping | None = None, num_threads: int | None = 1) -> Predictor:
    """A :class:`Predictor` for ``path``: ``*.keras`` (Keras), a SavedModel folder or
    ``*.tflite`` (``ai_edge_litert`` interpreter, ``num_threads`` threads). Facts come from the
    sidecar ``<path>.json`` when there is one, else from the model itself. Class names are the
    data set's, from the sidecar or ``classes`` (which overrides); ``class_<i>`` for a target
    neither names (never guessed from the target's name). A ``.keras`` file from ``kfusion
    train`` has its facts in ``<name>.json`` (classes, window, features, the calibration it was
    trained with)."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "model", "an existing .keras file, SavedModel folder or .tflite file", "nothing")
    kind = _kind(path)
    side, side_file = _sidecar_of(path, kind)
    if kind == "keras":
        from kfusion.export.tflite import is_raw_input_model, load_keras_model, model_targets

        model = load_keras_model(path)
        shapes = {t.name.split(":")[0]: tuple(t.shape[1:]) for t in model.inputs}
        targets = model_targets(model)
        raw = is_raw_input_model(model)
        predictor_cls, extra = KerasPredictor, {"model": model}
    elif kind == "savedmodel":
        import tensorflow as tf

        try:
            loaded = tf.saved_model.load(str(path))
            function = loaded.signatures[SIGNATURE]
        except (OSError, ValueError, KeyError) as err:
            raise DataError(path, f"signature {SIGNATURE!r}", "a SavedModel exported by kfusion",
                            f"unreadable ({type(err).__name__}: {str(err)[:200]})") from None
        specs = function.structured_input_signature[1]
        shapes = {k: tuple(int(d) for d in v.shape[1:]) for k, v in specs.items()}
        targets = {k: int(v.shape[-1]) for k, v in function.structured_outputs.items()}
        raw = side.get("raw_inputs", _infer_raw(shapes))
        predictor_cls, extra = SavedModelPredictor, {"function": function, "_loaded": loaded}
    else:
        from ai_edge_litert.interpreter import Interpreter

        try:
            interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
            runner = interpreter.get_signature_runner(SIGNATURE)
        except (ValueError, RuntimeError) as err:
            raise DataError(path, f"signature {SIGNATURE!r}", "a TFLite model exported by kfusion",
                            f"unreadable ({str(err)[:200]})") from None
        shapes = {k: tuple(int(d) for d in v["shape"][1:]) for k, v in runner.get_input_details().items()}
        targets = {k: int(v["shape"][-1]) for k, v in runner.get_output_details().items()}
        raw = side.get("raw_inputs", _infer_raw(shapes))
        predictor_cls, extra = TFLitePredictor, {"runner": runner, "_interpreter": interpreter}
    if not any(m in shapes for m in MODALITIES):
        raise DataError(path, "inputs", f"inputs named by modality ({', '.join(MODALITIES)})",
                        ", ".join(shapes))
    side_classes = {o["name"]: o["classes"] for o in side.get("outputs") or [] if o.get("classes")}
    names = _class_names(targets, {**side_classes, **dict(classes or {})})
    window = side.get("window", {})
    # sidecars written before the flux levels existed: their models have none
    features = FeatureConfig.from_dict({"speech_flux": False, **side["features"]}, where=f"{side_file}: features") \
        if "features" in side else FeatureConfig()
    if LEVELS in shapes and not raw:  # the speech levels as the model was trained on them
        prosody, flux = speech_level_extras(shapes)
        features = features.replace(speech_prosody=prosody, speech_flux=flux)
    elif kind == "keras" and raw:  # the graph says which extra speech levels it computes
        from kfusion.models.feature_layers import ProsodyFrontEnd, SpectralFlux

        kinds = {type(layer) for layer in model.layers}
        features = features.replace(speech_prosody=ProsodyFrontEnd in kinds, speech_flux=SpectralFlux in kinds)
    predictor = predictor_cls(path=path, kind=kind, input_shapes=shapes, raw_inputs=bool(raw),
                              classes=names,
                              window_seconds=float(window.get("seconds", _window_seconds(shapes, bool(raw)))),
                              hop_seconds=float(window.get("hop_seconds", WindowConfig().hop)),
                              features=features)
    if isinstance(side.get("calibration"), dict):
        # sidecars written before level standardisation existed: trained without it
        trained = {"standardize_levels": False, **side["calibration"]}
        predictor.trained_calibration = CalibrationConfig.from_dict(trained, where=f"{side_file}: calibration")
    for key, value in extra.items():
        setattr(predictor, key, value)
    return predictor


def _sidecar_of(path: Path, kind: str) -> tuple[dict, Path]:
    """``(contents, file)`` of the model's sidecar: the export sidecar ``<path>.json``, else for
    a ``.keras`` file the ``kfusion train`` sidecar ``<name>.json`` (``{}`` when there is none),
    so errors in it name the file that was read."""
    side = read_sidecar(path)
    if side is not None or kind != "keras":
        return side or {}, sidecar_path(path)
    from kfusion.evaluation.deploy import model_sidecar_path, read_model_sidecar

    return read_model_sidecar(path) or {}, model_sidecar_path(path)


# --------------------------------------------------------------------------- calibration

@dataclass
class GivenCalibration:
    """Statistics given up front: ``stats`` = ``{participant: {modality: ChannelStats}}`` from a
    calibration file (``source`` = its path), or ``{"*": {...}}`` for every participant."""

    stats: dict
    source: str = "calibration"

    def of(self, participant: str) -> dict:
        """The participant's entry, else the only one (an app's user under another id)."""
        from kfusion.data.calibration_file import pick_calibration

        if set(self.stats) == {"*"}:
            return self.stats["*"]
        return pick_calibration(self.stats, participant, where=self.source)


def resolve_calibration(calibration) -> "CalibrationConfig | GivenCalibration | None":
    """``calibration`` as :func:`predict` takes it -> a :class:`CalibrationConfig` (computed from
    each recording), a :class:`GivenCalibration` (a file, or statistics) or None (not given)."""
    from kfusion.data.calibration_file import read_calibration

    if calibration is None or isinstance(calibration, (CalibrationConfig, GivenCalibration)):
        return calibration
    if isinstance(calibration, Mapping):
        if all(isinstance(v, ChannelStats) for v in calibration.values()):
            return GivenCalibration({"*": dict(calibration)})
        return GivenCalibration({str(p): dict(v) for p, v in calibration.items()})
    text = str(calibration)
    if text.partition(":")[0] in ("none", "participant", "head") and not Path(text).is_file():
        return CalibrationConfig.parse(text)
    return GivenCalibration(read_calibration(text), text)


def _participant_stats(calibration, participant: str, recording=None, modalities=(), series=None,
                       window: WindowConfig | None = None, prosody: bool = True, flux: bool = True) -> dict:
    """``{modality: ChannelStats}`` for one participant (missing modalities: uncalibrated);
    ``series``: the recording's model-rate series when already computed; ``window``: how the
    model's windows are cut (the level statistics use the same windows); ``prosody``, ``flux``:
    the model's speech levels hold prosody, cepstral flux."""
    if isinstance(calibration, CalibrationConfig):
        config = DataConfig(modalities=modalities, calibration=calibration, window=window or WindowConfig(),
                            features=FeatureConfig(speech_prosody=prosody, speech_flux=flux))
        return recording_calibration(recording, config, series)
    found = dict(calibration.of(participant))
    if SPEECH in found:  # a file may hold another layout of extra speech levels than the model's
        found[SPEECH] = with_speech_extras(found[SPEECH], prosody, flux)
    return found


def _missing_calibration(predictor: Predictor) -> ConfigError:
    inputs = [n for n in predictor.input_shapes if n == LEVELS or n.startswith("calibration_")]
    return ConfigError(f"{predictor.path}: the model takes calibrated levels (input(s) {', '.join(inputs)}): "
                       f"pass --calibration {CALIBRATION_HELP} (Python: calibration=...)")


def _default_calibration(predictor: Predictor):
    """Calibration for a level-aware model when none is given: identity when the model was
    trained without calibration (known from its sidecar), else an error."""
    trained = predictor.trained_calibration
    if trained is not None and all(trained.method(m) == "none" for m in predictor.modalities):
        return GivenCalibration({"*": {}})
    raise _missing_calibration(predictor)


# --------------------------------------------------------------------------- windows -> inputs

def recording_windows(source, config: DataConfig | None = None, participants=None) -> list[RecordingWindows]:
    """Raw windows (:class:`~kfusion.data.windows.RecordingWindows`) of every participant of a
    ``scheme:PATH`` source, cut as :func:`kfusion.data.dataset.build_dataset` cuts them."""
    config = config or DataConfig()
    loaded = load_recordings(source, config, participants=participants)
    return [cut_windows(recording, config) for recording in loaded.recordings]


def model_inputs_from_windows(predictor: Predictor, raw: Mapping, presence: Mapping,
                              calibration: Mapping | None = None) -> dict:
    """The model inputs of windows: raw buffers (raw-input model) or features, plus presence.

    ``raw``/``presence``: per modality ``[N, ...]`` raw windows and bool ``[N]`` (as in
    :class:`RecordingWindows`). ``calibration``: ``{modality: ChannelStats}`` of the person,
    needed by a level-aware model (a modality without statistics is used uncalibrated, as in
    training): its ``levels`` input is computed here, or its ``calibration_<modality>`` inputs
    are filled with the statistics."""
    from kfusion.models import presence_array

    if predictor.uses_levels and calibration is None:
        raise _missing_calibration(predictor)

    modalities = predictor.modalities
    missing = [m for m in modalities if m not in raw]
    if missing:
        raise ConfigError(f"windows lack the model's modalities {', '.join(missing)}")
    raw = {m: raw[m] for m in modalities}
    presence = {m: np.asarray(presence[m], dtype=bool) for m in modalities}
    stats = {}
    if predictor.uses_levels:
        stats = {m: calibration[m] for m in modalities if m in calibration}
        trained = predictor.trained_calibration
        if trained is not None and not trained.standardize_levels:  # as the model was trained
            stats = {m: s.without_levels() for m, s in stats.items()}
        for m, s in stats.items():
            channels = MFCC_SETTINGS.n_mfcc if m == SPEECH else raw[m].shape[-1]
            if np.shape(s.mean) != (channels,) or np.shape(s.std) != (channels,):
                raise ConfigError(f"calibration of {m}: expected {channels} means and standard deviations "
                                  f"(one per {'MFCC coefficient' if m == SPEECH else 'channel'}), found "
                                  f"{np.shape(s.mean)[0] if np.ndim(s.mean) else 0}")
    n = len(next(iter(presence.values())))
    if predictor.raw_inputs:
        inputs = {m: np.where(_expand(presence[m], raw[m].ndim), raw[m], 0.0).astype(np.float32)
                  for m in modalities}
        for m in modalities:
            name = CALIBRATION_INPUT.format(m)
            if name in predictor.input_shapes:
                s = stats.get(m) or ChannelStats.identity(predictor.input_shapes[name][-1])
                inputs[name] = np.repeat(s.rows(int(predictor.input_shapes[name][0]))[None], n, axis=0)
    elif LEVELS in predictor.input_shapes:
        inputs, levels = featurize(raw, presence, predictor.features, stats)
        inputs[LEVELS] = np.concatenate([levels[m] for m in modalities], axis=1).astype(np.float32)
    else:
        inputs = window_features(raw, presence, predictor.features)
    if predictor.uses_presence:
        inputs[PRESENCE] = presence_array(presence, modalities)
    return inputs


def _expand(mask: np.ndarray, ndim: int) -> np.ndarray:
    return mask.reshape(mask.shape + (1,) * (ndim - 1))


def _rows(predictor: Predictor, participant: str, starts: np.ndarray, origin: float,
          presence: Mapping, probabilities: Mapping) -> list[dict]:
    rows = []
    for i, start in enumerate(starts):
        row = {"participant": participant, "window_start": float(start),
               "time_from_start": float(start - origin)}
        for m in predictor.modalities:
            row[f"present_{m}"] = int(bool(presence[m][i]))
        for target, names in predictor.classes.items():
            p = probabilities[target][i]
            for name, value in zip(names, p):
                row[f"{target}_p_{name}"] = float(value)
            row[target] = names[int(np.argmax(p))]
        rows.append(row)
    return rows


def timeline(predictor: Predictor, windows: list[RecordingWindows], calibration: Mapping | None = None):
    """A ``pandas.DataFrame``, one row per window: ``participant``, ``window_start`` (UNIX s),
    ``time_from_start`` (s from the start of the participant's windowed span),
    ``present_<modality>`` (0/1), ``<target>_p_<class>`` probabilities and ``<target>`` (the
    most probable class). ``calibration``: ``{participant: {modality: ChannelStats}}`` for a
    level-aware model."""
    import pandas as pd

    rows = []
    for w in windows:
        if w.kept == 0:
            continue
        stats = None if calibration is None else calibration.get(w.participant)
        inputs = model_inputs_from_windows(predictor, w.raw, w.presence, stats)
        probabilities = predictor.predict(inputs)
        origin = float(w.span[0]) if w.span is not None else float(w.starts[0])
        rows.extend(_rows(predictor, w.participant, w.starts, origin, w.presence, probabilities))
    columns = ["participant", "window_start", "time_from_start"] + \
        [f"present_{m}" for m in predictor.modalities] + \
        [c for t, names in predictor.classes.items() for c in [f"{t}_p_{n}" for n in names] + [t]]
    return pd.DataFrame(rows, columns=columns)


def _predict_config(predictor: Predictor, config: DataConfig | None) -> DataConfig:
    if config is None:
        seconds = predictor.window_seconds
        overlap = max(0.0, seconds - predictor.hop_seconds)
        return DataConfig(modalities=predictor.modalities,
                          window=WindowConfig(seconds=seconds, overlap=overlap,
                                              missing="fill" if predictor.uses_presence else "drop"),
                          features=predictor.features)
    if not isinstance(config, DataConfig):
        raise ConfigError(f"predict: config: expected a DataConfig, found {type(config).__name__}")
    if tuple(config.modalities) != predictor.modalities:
        raise ConfigError(f"predict: config.modalities: expected the model's modalities "
                          f"{', '.join(predictor.modalities)}, found {', '.join(config.modalities)}")
    if abs(config.window.seconds - predictor.window_seconds) > 1e-6:
        raise ConfigError(f"predict: config.window.seconds: expected the model's window "
                          f"({predictor.window_seconds:g} s), found {config.window.seconds:g}")
    return config


#: Columns holding times (UNIX s or s from the start): written with millisecond precision.
TIME_COLUMNS = ("window_start", "time_from_start")


def write_timeline_csv(frame, out_csv) -> Path:
    """Write a :func:`timeline` frame: time columns with millisecond precision (``%.3f``, so
    UNIX seconds keep every window apart), probabilities with 6 significant digits."""
    out = frame.copy()
    for column in TIME_COLUMNS:
        if column in out.columns:
            out[column] = [f"{float(t):.3f}" for t in out[column]]
    out.to_csv(out_csv, index=False, float_format="%.6g")
    return Path(out_csv)


def predict(model_path, source, out_csv, plot=None, config: DataConfig | None = None,
            participants=None, classes: Mapping | None = None, calibration=None):
    """Write a per-window timeline CSV (see :func:`timeline`) of ``source`` (``scheme:PATH``)
    predicted by the model at ``model_path`` (``.keras``, SavedModel folder or ``.tflite``);
    optionally a PNG plot of the class probabilities over time. ``config`` defaults to the
    model's modalities and window (4 s, 3 s hop) with absent modalities zero-filled and masked
    (``missing="fill"``) when the model has a presence input, and the sidecar's feature
    normalisation; a given ``config.features`` wins for a features-input model.

    ``calibration`` (level-aware models only; others ignore it): a calibration file path
    (``kfusion calibrate``; each participant's own entry, or the file's only one),
    ``"head:MINUTES"`` / ``"participant"`` / a :class:`CalibrationConfig` (computed from each
    predicted recording: its first minutes / all of it), ``"none"`` (uncalibrated levels) or
    ``{modality: ChannelStats}`` for every participant. Without it a level-aware model is a
    ConfigError, unless its ``kfusion train`` sidecar says it was trained uncalibrated.
    Returns the DataFrame."""
    predictor = load_predictor(model_path, classes=classes)
    if config is not None and not predictor.raw_inputs:  # the normalisation given, the levels the model's
        prosody, flux = predictor.speech_prosody, predictor.speech_flux
        predictor.features = getattr(config, "features", predictor.features).replace(
            speech_prosody=prosody, speech_flux=flux)
    config = _predict_config(predictor, config)
    stats = None
    if predictor.uses_levels:
        wanted = resolve_calibration(calibration)
        if wanted is None:
            wanted = _default_calibration(predictor)
        loaded = load_recordings(source, config, participants=participants)
        windows, stats = [], {}
        for recording in loaded.recordings:  # each recording resampled once for both
            series = model_rate_series(recording, config.modalities, config.quality_checks)
            windows.append(cut_windows(recording, config, series))
            stats[recording.participant] = _participant_stats(wanted, recording.participant, recording,
                                                              predictor.modalities, series, config.window,
                                                              predictor.speech_prosody, predictor.speech_flux)
    else:
        windows = recording_windows(source, config, participants)
    frame = timeline(predictor, windows, stats)
    if frame.empty:
        raise DataError(str(source), "windows", f"at least one {config.window.seconds:g} s window "
                        f"with the model's modalities ({', '.join(predictor.modalities)})", "none")
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    write_timeline_csv(frame, out_csv)
    if plot is not None:
        plot_timeline(frame, predictor.classes, plot)
    return frame


def plot_timeline(frame, classes: Mapping, out, max_rows: int = 12) -> Path:
    """Stacked class probabilities over time, one panel per participant and target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(p, t) for p in dict.fromkeys(frame["participant"]) for t in classes]
    shown = panels[:max_rows]
    fig, axes = plt.subplots(len(shown), 1, figsize=(10, 1.8 * len(shown) + 0.6), squeeze=False,
                             sharex=False)
    for ax, (participant, target) in zip(axes[:, 0], shown):
        rows = frame[frame["participant"] == participant]
        t = rows["time_from_start"].to_numpy()
        values = [rows[f"{target}_p_{c}"].to_numpy() for c in classes[target]]
        ax.stackplot(t, values, labels=classes[target], step="post")
        ax.set_ylim(0, 1)
        ax.set_xlim(t.min(), t.max() if t.max() > t.min() else t.min() + 1)
        ax.set_ylabel(f"{participant}\n{target}", fontsize=8)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    axes[-1, 0].set_xlabel("time from start (s), window start")
    if len(panels) > len(shown):
        fig.suptitle(f"first {len(shown)} of {len(panels)} panels", fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# --------------------------------------------------------------------------- streaming

class StreamingPredictor:
    """Predictions from raw samples as they arrive, one per complete window.

    Push raw samples per modality (``push("bvp", samples)``): speech ``[n]`` at 16 kHz in
    [-1, 1]; wearables ``[n, channels]`` (or ``[n]`` for one channel) at the nominal rates
    (ACC 32, BVP 64, EDA 4, TEMP 4 Hz) in E4 units. Every stream starts at ``start`` (UNIX s).
    Window ``k`` covers ``[start + k hop, start + k hop + seconds)``; it is predicted as soon as
    every streamed modality holds it. Modalities not in ``modalities`` (default: all of the
    model's) are absent: zeros and presence 0. A window holding a NaN marks that modality
    absent, as in batch windowing. The outputs equal :func:`timeline`'s for the same samples.
    Samples before the next window are dropped, so memory stays at about one window.

    ``calibration`` (level-aware models): ``{modality: ChannelStats}`` (e.g. one participant of
    :func:`kfusion.data.calibration_file.read_calibration`), a calibration file, ``"none"``, or
    ``"head:MINUTES"`` / a head :class:`CalibrationConfig`: then the first MINUTES of every
    streamed modality are kept, the statistics computed from them once all have that much
    (:func:`predict` with ``head:MINUTES`` gives the same), and the windows held back meanwhile
    are predicted at once; :meth:`finish` calibrates on what arrived when a stream ends sooner.

    ``quality_checks``: the signal-quality checks of batch windowing
    (:class:`kfusion.data.quality.StreamQuality`): samples out of range or off the skin are NaN,
    so their windows lack that modality. A flat sensor is known only after
    :data:`~kfusion.data.quality.FLAT_SECONDS`: its samples still held are voided then, while
    windows already predicted stay as they were (batch would also drop them).
    """

    def __init__(self, predictor: Predictor, start: float = 0.0, modalities=None,
                 window: WindowConfig | None = None, participant: str = "stream", calibration=None,
                 quality_checks: bool = True):
        if not isinstance(predictor, Predictor):
            raise ConfigError(f"StreamingPredictor: predictor: expected a Predictor (load_predictor), "
                              f"found {type(predictor).__name__}")
        self.predictor = predictor
        self.window = window or WindowConfig(seconds=predictor.window_seconds,
                                             overlap=max(0.0, predictor.window_seconds - predictor.hop_seconds))
        if abs(self.window.seconds - predictor.window_seconds) > 1e-6:
            raise ConfigError(f"StreamingPredictor: window.seconds: expected the model's window "
                              f"({predictor.window_seconds:g} s), found {self.window.seconds:g}")
        streamed = predictor.modalities if modalities is None else check_modalities(modalities)
        unknown = [m for m in streamed if m not in predictor.modalities]
        if unknown:
            raise ConfigError(f"StreamingPredictor: modalities: the model takes "
                              f"{', '.join(predictor.modalities)}, not {', '.join(unknown)}")
        if not predictor.uses_presence and set(streamed) != set(predictor.modalities):
            raise ConfigError("StreamingPredictor: modalities: this model has no presence input, "
                              f"so every one of {', '.join(predictor.modalities)} must be streamed")
        self.streamed = tuple(m for m in predictor.modalities if m in streamed)
        self.start = float(start)
        self.participant = participant
        self.rates = {m: float(AUDIO_RATE) if m == SPEECH else NOMINAL_RATES[m]
                      for m in predictor.modalities}
        self.lengths = {m: int(round(self.window.seconds * r)) for m, r in self.rates.items()}
        self._buffers = {m: [] for m in self.streamed}
        self._buffered = {m: 0 for m in self.streamed}
        self._offset = {m: 0 for m in self.streamed}     # absolute index of the first kept sample
        self.next_window = 0
        self.calibration, self._head = self._calibration(calibration)
        checks.flag("StreamingPredictor: quality_checks", quality_checks)
        self._quality = ({m: StreamQuality(m, self.rates[m]) for m in self.streamed if m != SPEECH}
                         if quality_checks else {})

    def _calibration(self, calibration) -> tuple[dict | None, CalibrationConfig | None]:
        """``(statistics, None)``, or ``(None, config)`` while a head calibration is pending."""
        if not self.predictor.uses_levels:
            return {}, None
        wanted = resolve_calibration(calibration)
        if wanted is None:
            wanted = _default_calibration(self.predictor)
        if isinstance(wanted, CalibrationConfig):
            methods = {wanted.method(m) for m in self.streamed}
            if "participant" in methods:
                raise ConfigError("StreamingPredictor: calibration: 'participant' needs the whole recording; "
                                  "a stream calibrates from its start: use head:MINUTES or a calibration file")
            if methods == {"none"}:
                return {}, None
            return None, wanted
        return _participant_stats(wanted, self.participant, prosody=self.predictor.speech_prosody,
                                  flux=self.predictor.speech_flux), None

    def _head_ready(self, finished: bool = False) -> bool:
        """Compute the head calibration once every streamed modality holds its first minutes."""
        if self.calibration is not None:
            return True
        minutes = self._head.head_minutes
        calibrated = [m for m in self.streamed if self._head.method(m) == "head"]
        need = {m: int(round(minutes * 60.0 * self.rates[m])) for m in calibrated}
        if not finished and any(self._offset[m] + self._buffered[m] < need[m] for m in calibrated):
            return False
        stats = {}
        window = (self.window.seconds, self.window.hop) if self._head.standardize_levels else None
        for m in calibrated:
            data = np.concatenate(self._buffers[m]) if self._buffers[m] else np.zeros((0,) + self._shape(m))
            self._buffers[m] = [data] if data.shape[0] else []
            if m == SPEECH:
                found = speech_statistics(data, "head", minutes, window=window,
                                          prosody=self.predictor.speech_prosody,
                                          flux=self.predictor.speech_flux)
            else:
                found = signal_statistics(data, self.rates[m], "head", minutes, window=window)
            if found is not None:
                stats[m] = found
        self.calibration = stats
        return True

    def finish(self) -> list[dict]:
        """The stream has ended: calibrate on what arrived if a head calibration is still
        pending, and return the rows of the windows held back for it."""
        self._head_ready(finished=True)
        return self._drain()

    def _shape(self, modality: str) -> tuple:
        shape = self.predictor.input_shapes[modality]
        if modality == SPEECH:
            return ()
        return (shape[-1],)

    def push(self, modality: str, samples) -> list[dict]:
        """Append samples of one modality; returns the rows of the windows completed."""
        if modality not in self.streamed:
            raise ConfigError(f"StreamingPredictor.push: modality {modality!r} is not streamed "
                              f"(streamed: {', '.join(self.streamed)})")
        values = np.asarray(samples, dtype=np.float32)
        channels = self._shape(modality)
        if channels and values.ndim == 1 and channels == (1,):
            values = values[:, None]
        if values.shape[1:] != channels:
            raise ConfigError(f"StreamingPredictor.push: {modality}: expected samples of shape "
                              f"[n{', ' + str(channels[0]) if channels else ''}], found {list(values.shape)}")
        if modality in self._quality:
            values, void_from = self._quality[modality].check(values)
            if void_from is not None:
                self._void(modality, void_from)
        if values.shape[0]:
            self._buffers[modality].append(values)
            self._buffered[modality] += values.shape[0]
        return self._drain()

    def _void(self, modality: str, absolute: int) -> None:
        """Set the held samples of ``modality`` from absolute index ``absolute`` on to NaN."""
        if not self._buffers[modality]:
            return
        data = np.concatenate(self._buffers[modality])
        data[max(absolute - self._offset[modality], 0):] = np.nan
        self._buffers[modality] = [data]

    def push_many(self, chunks: Mapping) -> list[dict]:
        """Append chunks of several modalities at once (``{modality: samples}``)."""
        rows = []
        for modality, samples in chunks.items():
            rows.extend(self.push(modality, samples))
        return rows

    def _first_index(self, modality: str, k: int) -> int:
        return int(round(k * self.window.hop * self.rates[modality]))

    def _ready(self, k: int) -> bool:
        return all(self._offset[m] + self._buffered[m] >= self._first_index(m, k) + self.lengths[m]
                   for m in self.streamed)

    def _drain(self) -> list[dict]:
        if not self._head_ready():
            return []
        ready = []
        while self._ready(self.next_window + len(ready)):
            ready.append(self.next_window + len(ready))
        if not ready:
            return []
        raw, presence = {}, {}
        for m in self.predictor.modalities:
            n = self.lengths[m]
            shape = (len(ready), n) + self._shape(m)
            block = np.zeros(shape, dtype=np.float32)
            present = np.zeros(len(ready), dtype=bool)
            if m in self.streamed:
                data = np.concatenate(self._buffers[m]) if len(self._buffers[m]) > 1 else self._buffers[m][0]
                self._buffers[m] = [data]
                for row, k in enumerate(ready):
                    i0 = self._first_index(m, k) - self._offset[m]
                    window = data[i0:i0 + n]
                    if np.isfinite(window).all():
                        block[row] = window
                        present[row] = True
            raw[m], presence[m] = block, present
        self.next_window = ready[-1] + 1
        self._trim()
        starts = self.start + np.asarray(ready, dtype=np.float64) * self.window.hop
        inputs = model_inputs_from_windows(self.predictor, raw, presence, self.calibration)
        probabilities = self.predictor.predict(inputs)
        return _rows(self.predictor, self.participant, starts, self.start, presence, probabilities)

    def _trim(self) -> None:
        for m in self.streamed:
            keep_from = self._first_index(m, self.next_window)
            drop = keep_from - self._offset[m]
            if drop <= 0 or not self._buffers[m]:
                continue
            data = self._buffers[m][0] if len(self._buffers[m]) == 1 else np.concatenate(self._buffers[m])
            drop = min(drop, data.shape[0])
            self._buffers[m] = [data[drop:]]
            self._buffered[m] -= drop
            self._offset[m] += drop
