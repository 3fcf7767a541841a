"""Heads on a fusion backbone: fusion pretraining (paper Fig. 1(e)) and emotion (Fig. 1(f)).

Both builders put new layers on the backbone's graph, so the returned model holds the
backbone's layers themselves (``model.get_layer("fusion")`` works, weights are shared with the
backbone and with any other model built on it). Outputs are dicts keyed by target name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras

from kfusion.modalities import STATISTICS
from kfusion.errors import ConfigError
from kfusion import checks
from kfusion.models.fusion import LEVELS, PROJECTION_LAYER, backbone_modalities
from kfusion.models.layers import PACKAGE, StatisticHeads, Standardization

#: Emotion targets and their class counts (arousal/valence: low, neutral, high; emotion:
#: cheerful, happy, angry, nervous, sad, neutral).
EMOTION_CLASSES: dict[str, int] = {"arousal": 3, "valence": 3, "emotion": 6}
DEFAULT_HEAD_UNITS = (16,)
DEFAULT_EMOTION_UNITS = (32, 16)
#: The layer that standardises the ``levels`` input (statistics set by the trainer per fit).
LEVELS_STANDARDIZATION = "levels_standardization"
#: The layer holding the fusion-pretraining heads (:class:`~kfusion.models.StatisticHeads`).
STATISTIC_HEADS = "statistics"
#: A ``linear_levels`` head's layers, ``<target><suffix>``: the hidden stack's logits, the
#: levels' linear logits (started at a logistic regression by the trainer), their sum.
HIDDEN_LOGITS, LEVELS_LOGITS, LOGITS_SUM = "_logits", "_levels_logits", "_sum"
LINEAR_LEVELS_SUFFIXES = (HIDDEN_LOGITS, LEVELS_LOGITS, LOGITS_SUM)

__all__ = ["STATISTICS", "EMOTION_CLASSES", "statistic_targets", "fusion_pretraining_model",
           "pretraining_targets", "summed_absolute_error", "emotion_model"]


def statistic_targets(modalities, statistics: Sequence[str] = STATISTICS) -> list[str]:
    """Target names ``f"{modality}_{statistic}"``, modality-major (``speech_mean, speech_std, ...``)."""
    return [f"{m}_{s}" for m in modalities for s in statistics]


def _projection(backbone: keras.Model, where: str):
    if not isinstance(backbone, keras.Model):
        raise ConfigError(f"{where}: backbone: expected a keras.Model from fusion_backbone, "
                          f"found {type(backbone).__name__}")
    try:
        return backbone.get_layer(PROJECTION_LAYER).output
    except ValueError:
        raise ConfigError(f"{where}: backbone: no layer named {PROJECTION_LAYER!r}; expected a model "
                          "built by kfusion.models.fusion_backbone") from None


def _check_target_names(where: str, names: list[str], backbone: keras.Model, depth: int,
                        linear_levels: bool = False) -> None:
    taken = {layer.name for layer in backbone.layers}
    for target in names:
        checks.layer_name(f"{where}: target", target)
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: targets: expected unique names, found {names}")
    generated = [n for t in names for n in _head_layer_names(t, depth, linear_levels)]
    if len(set(generated)) != len(generated):
        raise ConfigError(f"{where}: targets: the names {names} give clashing layer names "
                          f"(a target's hidden layers are named <target>_dense_<i>)")
    clashes = sorted(taken & set(generated))
    if clashes:
        raise ConfigError(f"{where}: targets: {', '.join(clashes)} already name layers of the "
                          "backbone; choose other target names")


def _head_layer_names(target: str, depth: int, linear_levels: bool = False) -> list[str]:
    extra = [f"{target}{suffix}" for suffix in LINEAR_LEVELS_SUFFIXES] if linear_levels else []
    return [target] + [f"{target}_dense_{i}" for i in range(1, depth + 1)] + extra


def _dense_stack(x, target: str, units: tuple[int, ...]):
    for i, width in enumerate(units, start=1):
        x = keras.layers.Dense(width, activation="relu", name=f"{target}_dense_{i}")(x)
    return x


def fusion_pretraining_model(backbone: keras.Model, targets: Sequence[str] | None = None,
                             head_units=DEFAULT_HEAD_UNITS,
                             name: str = "fusion_pretraining") -> keras.Model:
    """Backbone + one regression head per target: ``Dense(u, ReLU)`` per ``head_units`` then a
    linear ``Dense(1)``, the heads held together by one :class:`~kfusion.models.StatisticHeads`
    layer named ``"statistics"``. Output ``[B, len(targets)]``, column ``i`` = ``targets[i]``
    (:func:`pretraining_targets` reads them back from a model); train it with
    :func:`summed_absolute_error` on targets stacked in that order.

    ``targets`` default: :func:`statistic_targets` of the backbone's modalities (8 per modality,
    40 for all five).
    """
    where = "fusion_pretraining_model"
    features = _projection(backbone, where)
    if targets is None:
        targets = statistic_targets(backbone_modalities(backbone))
    if isinstance(targets, str) or not isinstance(targets, Sequence) or not targets:
        raise ConfigError(f"{where}: targets: expected a non-empty list of names, found {targets!r}")
    targets = list(targets)
    head_units = checks.units(f"{where}: head_units", head_units, min_length=0)
    for target in targets:
        checks.layer_name(f"{where}: target", target)
    if len(set(targets)) != len(targets):
        raise ConfigError(f"{where}: targets: expected unique names, found {targets}")
    if STATISTIC_HEADS in {layer.name for layer in backbone.layers}:
        raise ConfigError(f"{where}: backbone: a layer is already named {STATISTIC_HEADS!r}")
    name = checks.layer_name(f"{where}: name", name)
    outputs = StatisticHeads(targets, head_units, name=STATISTIC_HEADS)(features)
    return keras.Model(backbone.input, outputs, name=name)


def pretraining_targets(model: keras.Model) -> list[str]:
    """The target of each output column of a :func:`fusion_pretraining_model`, in order."""
    try:
        heads = model.get_layer(STATISTIC_HEADS)
    except ValueError:
        raise ConfigError(f"model {model.name!r}: no layer named {STATISTIC_HEADS!r}; expected a model "
                          "built by kfusion.models.fusion_pretraining_model") from None
    return list(heads.targets)


@keras.saving.register_keras_serializable(package=PACKAGE)
def summed_absolute_error(y_true, y_pred):
    """``[B, T] -> [B]``: the sum over targets of ``|y_true - y_pred|``. Keras averages it over
    the batch, so the loss is the sum of the targets' mean absolute errors, the loss of one
    ``"mae"`` per head output (the paper's MAE per fusion head)."""
    return keras.ops.sum(keras.ops.abs(keras.ops.cast(y_true, y_pred.dtype) - y_pred), axis=-1)


def emotion_model(backbone: keras.Model, targets: Mapping[str, int] | Sequence[str] | None = None,
                  units=DEFAULT_EMOTION_UNITS, name: str = "emotion_model", levels: int = 0,
                  linear_levels: bool = False) -> keras.Model:
    """Backbone + one classifier per target: ``Dense(u, ReLU)`` per ``units`` then
    ``Dense(n_classes, softmax)`` named by the target. Outputs ``{target: [B, n_classes]}``.

    ``levels``: width of an extra input ``"levels"`` ``[B, levels]`` (the windows' calibrated
    levels, ``kfusion.data.calibration.window_levels``), standardised (:class:`Standardization`
    named ``levels_standardization``, statistics from the training windows) and concatenated to
    the projection before the heads; 0 = none (the paper's head).

    ``linear_levels`` (needs ``levels``): the softmax (named by the target) takes the sum of the
    hidden stack's logits (``Dense(n_classes)`` named ``<target>_logits``, kernel starting at
    zero) and a linear map of the standardised levels (``<target>_levels_logits``), which
    :class:`~kfusion.training.emotion.EmotionTrainer` starts at a logistic regression fitted on
    the training windows: training starts from that regression and may only improve on it on
    the validation windows. The speech-only row's head (bench/RESULTS.md, "A logistic-regression
    start").

    ``targets``: ``{name: n_classes}`` or a list of names from :data:`EMOTION_CLASSES`;
    default all three (arousal 3, valence 3, emotion 6).
    """
    where = "emotion_model"
    features = _projection(backbone, where)
    if targets is None:
        targets = dict(EMOTION_CLASSES)
    elif not isinstance(targets, Mapping):
        if isinstance(targets, str) or not isinstance(targets, Sequence):
            raise ConfigError(f"{where}: targets: expected {{name: n_classes}} or a list of names, "
                              f"found {targets!r}")
        unknown = [t for t in targets if t not in EMOTION_CLASSES]
        if unknown:
            raise ConfigError(f"{where}: targets: no default class count for {unknown}; give a dict "
                              f"{{name: n_classes}} (known: {', '.join(EMOTION_CLASSES)})")
        targets = {t: EMOTION_CLASSES[t] for t in targets}
    if not targets:
        raise ConfigError(f"{where}: targets: expected at least one target")
    classes = {t: checks.whole(f"{where}: targets[{t!r}] (classes)", n, 2)
               for t, n in targets.items()}
    units = checks.units(f"{where}: units", units, min_length=0)
    linear_levels = checks.flag(f"{where}: linear_levels", linear_levels)
    _check_target_names(where, list(classes), backbone, len(units), linear_levels)
    name = checks.layer_name(f"{where}: name", name)
    inputs = backbone.input
    levels = checks.whole(f"{where}: levels", levels, 0)
    if linear_levels and not levels:
        raise ConfigError(f"{where}: linear_levels: expected a levels input (levels > 0), found levels=0")
    if levels:
        if not isinstance(inputs, dict):
            raise ConfigError(f"{where}: levels: expected a backbone with dict inputs")
        level_input = keras.Input((levels,), name=LEVELS)
        scaled = Standardization(name=LEVELS_STANDARDIZATION)(level_input)
        inputs = {**inputs, LEVELS: level_input}
        features = keras.layers.Concatenate(name="with_levels")([features, scaled])
    if linear_levels:
        outputs = {}
        for t, n in classes.items():
            hidden = keras.layers.Dense(n, kernel_initializer="zeros", name=t + HIDDEN_LOGITS)(
                _dense_stack(features, t, units))
            linear = keras.layers.Dense(n, kernel_initializer="zeros", name=t + LEVELS_LOGITS)(scaled)
            summed = keras.layers.Add(name=t + LOGITS_SUM)([hidden, linear])
            outputs[t] = keras.layers.Activation("softmax", name=t)(summed)
        return keras.Model(inputs, outputs, name=name)
    outputs = {t: keras.layers.Dense(n, activation="softmax", name=t)(_dense_stack(features, t, units))
               for t, n in classes.items()}
    return keras.Model(inputs, outputs, name=name)
