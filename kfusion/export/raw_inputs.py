"""Raw-input models: the in-graph feature layers (:mod:`kfusion.models.feature_layers`) put in
front of a features-input model, so a phone app hands the model raw sensor buffers instead of
features it would have to compute exactly as training did.
"""

from __future__ import annotations

import keras

from kfusion.config import FeatureConfig
from kfusion.data.calibration import calibration_rows, speech_extras_of_width, speech_level_widths
from kfusion.data.prosody import PROSODY_NAMES
from kfusion.data.features import MFCC_SETTINGS
from kfusion.modalities import MODALITIES, SPEECH
from kfusion.errors import ConfigError
from kfusion.models.feature_layers import (CalibratedLevels, MfccFrontEnd, ProsodyFrontEnd, SpectralFlux,
                                           WindowNormalization)
from kfusion.models.fusion import LEVELS, PRESENCE

#: Raw-input models of level-aware models take each modality's calibration under this name.
CALIBRATION_INPUT = "calibration_{}"


def _model_inputs(model: keras.Model) -> dict[str, tuple]:
    """``{input name: shape without batch}`` of a features-input kfusion model."""
    out = {}
    for tensor in model.inputs:
        name = tensor.name.split(":")[0]
        out[name] = tuple(tensor.shape[1:])
    unknown = [n for n in out if n not in MODALITIES and n not in (PRESENCE, LEVELS)]
    if unknown or not any(n in MODALITIES for n in out):
        raise ConfigError(f"model {model.name!r}: expected inputs named by modality "
                          f"({', '.join(MODALITIES)}) and optionally {PRESENCE!r} and {LEVELS!r}, "
                          f"found {list(out)}")
    return out


def raw_input_shapes(model: keras.Model) -> dict[str, tuple]:
    """Raw-buffer shape (no batch) of every input of a features-input ``model``: speech
    ``(frames * hop,)`` audio samples (``(64000,)`` for 400 frames), wearables unchanged
    (samples at the nominal rate x channels), presence unchanged."""
    shapes = {}
    for name, shape in _model_inputs(model).items():
        if name == SPEECH:
            if shape[-1] != MFCC_SETTINGS.n_mfcc:
                raise ConfigError(f"model {model.name!r}: speech input: expected [frames, "
                                  f"{MFCC_SETTINGS.n_mfcc}] MFCCs, found {list(shape)}")
            shapes[name] = (shape[0] * MFCC_SETTINGS.hop_length,)
        elif name == LEVELS:
            continue  # computed in the graph from the raw windows and the calibration inputs
        else:
            shapes[name] = shape
    return shapes


def speech_level_extras(model) -> tuple[bool, bool]:
    """``(prosody, flux)``: what the ``levels`` input of a features-input ``model`` (or its
    ``{input name: shape}``) holds after the modalities' ``2C`` columns each: speech prosody
    (:data:`PROSODY_NAMES`), cepstral flux (:data:`~kfusion.data.spectral_flux.FLUX_NAMES`), both (the default since
    flux), or neither (models trained before prosody, or with it switched off in
    :class:`FeatureConfig`)."""
    found = _model_inputs(model) if isinstance(model, keras.Model) else {k: tuple(v) for k, v in model.items()}
    name = model.name if isinstance(model, keras.Model) else "model"
    if LEVELS not in found:
        return False, False
    plain = sum(2 * (MFCC_SETTINGS.n_mfcc if m == SPEECH else found[m][-1]) for m in found if m in MODALITIES)
    width = found[LEVELS][-1]
    extras = speech_extras_of_width(width - plain) if SPEECH in found else (None if width != plain else (False, False))
    if extras is None:
        options = speech_level_widths(plain)
        raise ConfigError(f"{name!r}: levels input: expected {plain} columns (mean and "
                          "log-std per channel of its modalities)"
                          + (f" or {', '.join(map(str, options[1:]))} (with speech prosody {options[1]}, "
                             f"flux {options[2]}, or both)" if SPEECH in found else "")
                          + f", found {width}")
    return extras


def raw_input_model(model: keras.Model, features: FeatureConfig | None = None,
                    name: str | None = None, front_end: str = "fft") -> keras.Model:
    """``model`` (features in) behind the front end (raw buffers in), sharing its weights.

    Inputs, named as ``model``'s: ``speech [B, 64000]`` 16 kHz samples in [-1, 1] ->
    :class:`MfccFrontEnd` (+ :class:`WindowNormalization` when ``features.speech_norm ==
    "cmvn"``); ``acc [B, 128, 3]`` (1/64 g), ``bvp [B, 256, 1]``, ``eda [B, 16, 1]`` (µS),
    ``temp [B, 16, 1]`` (°C) at the nominal rates -> :class:`WindowNormalization` when
    ``features.wearable_norm == "zscore"``; ``presence`` passed through. A model with a
    ``levels`` input gets one ``calibration_<modality> [B, 6, C]`` input per modality (the
    person's mean and std per channel, MFCC coefficient for speech, then the mean and std of
    the person's window levels: ``ChannelStats.rows()``; ``kfusion calibrate`` writes them) and
    computes the levels in the graph (:class:`CalibratedLevels`; speech levels with prosody
    and flux: also :class:`ProsodyFrontEnd` and :class:`SpectralFlux`, and
    ``calibration_speech [B, 8, 40]``), zeroed for
    a modality marked absent in ``presence`` (as in the data sets). Outputs: ``model``'s.
    ``front_end``: how :class:`MfccFrontEnd` computes the spectrum, ``"fft"`` (a factored
    DFT, small and fast) or ``"dft"`` (one DFT matrix: fewer kinds of operations, for a
    runtime or delegate without BATCH_MATMUL or 5-D TRANSPOSE); the same MFCCs either way.
    """
    features = features or FeatureConfig()
    if not isinstance(features, FeatureConfig):
        raise ConfigError(f"raw_input_model: features: expected a FeatureConfig, found "
                          f"{type(features).__name__}")
    shapes = raw_input_shapes(model)
    inputs, fed, unnormalised = {}, {}, {}
    for input_name, shape in shapes.items():
        inputs[input_name] = keras.Input(shape, name=input_name)
        x = inputs[input_name]
        if input_name == SPEECH:
            x = MfccFrontEnd(name="speech_mfcc", method=front_end)(x)
            unnormalised[input_name] = x
            if features.speech_norm == "cmvn":
                x = WindowNormalization(name="speech_cmvn")(x)
        elif input_name != PRESENCE and features.wearable_norm == "zscore":
            x = WindowNormalization(name=f"{input_name}_zscore")(x)
        fed[input_name] = x
    if LEVELS in _model_inputs(model):
        parts = []
        ordered = [m for m in MODALITIES if m in shapes]  # canonical order, as in training
        prosody, flux = speech_level_extras(model)
        for column, m in enumerate(ordered):
            raw = unnormalised.get(m, inputs[m])
            channels = MFCC_SETTINGS.n_mfcc if m == SPEECH else shapes[m][-1]
            extras = m == SPEECH and (prosody or flux)
            rows = calibration_rows(m, prosody, flux)
            calibration = inputs[CALIBRATION_INPUT.format(m)] = keras.Input(
                (rows, channels), name=CALIBRATION_INPUT.format(m))
            level = CalibratedLevels(name=f"{m}_levels")(raw, calibration)
            if extras:
                parts_of_level = [level]
                if prosody:
                    parts_of_level.append(ProsodyFrontEnd(name="speech_prosody")(inputs[m], calibration))
                if flux:
                    z = fed[m] if features.speech_norm == "cmvn" else WindowNormalization(name="speech_flux_cmvn")(raw)
                    parts_of_level.append(SpectralFlux(offset=len(PROSODY_NAMES) if prosody else 0,
                                                       name="speech_flux")(z, calibration))
                level = keras.layers.Concatenate(name="speech_levels_and_prosody")(parts_of_level)
            if PRESENCE in inputs:  # an absent modality's level is zeros in training
                n = len(ordered)
                flag = keras.layers.Reshape((n, 1), name=f"{m}_presence_column")(inputs[PRESENCE])
                flag = keras.layers.Cropping1D((column, n - column - 1), name=f"{m}_presence_crop")(flag)
                flag = keras.layers.Reshape((1,), name=f"{m}_present")(flag)
                level = keras.layers.Multiply(name=f"{m}_levels_if_present")([level, flag])
            parts.append(level)
        fed[LEVELS] = keras.layers.Concatenate(name="levels")(parts) if len(parts) > 1 else parts[0]
    outputs = model(fed)
    if isinstance(outputs, dict):  # keep the targets as output names (not the nested model's name)
        outputs = {t: keras.layers.Identity(name=t)(v) for t, v in outputs.items()}
    return keras.Model(inputs, outputs, name=name or f"{model.name}_raw")

