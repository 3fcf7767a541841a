"""The hand-crafted baseline (our addition to Table 1): the window features a researcher in the
field would use and a classic classifier, under the same leave-one-subject-out protocol.

Features of a window (:func:`handcrafted_features`):

- every wearable channel, and for ACC also the magnitude over its three axes: mean, standard
  deviation, minimum, maximum, median, slope (least squares over the window, per window length),
  skewness and kurtosis (excess; 0 for a constant series) of the model input (the window's
  shape when per-window normalisation is on);
- each modality's window level (calibrated mean and log-std per channel, per MFCC coefficient
  for speech: the MFCC functionals on calibrated frames);
- the physiological and prosodic features computed over the whole recording
  (``WindowedDataset.physio``: EDA tonic level and phasic responses, heart rate from BVP, ACC
  activity, TEMP trend; f0, energy, voicing and rate of speech);
- one presence flag per modality (absent modalities are zeros in the data set).

With per-person calibration (``DataConfig.calibration``) each feature is then standardised per
participant by that participant's own windows (all, or those of the first minutes), labels
never used: :func:`calibrate_features`.

Classifier (:func:`handcrafted_classifier`): ``StandardScaler`` and a multinomial
``LogisticRegression`` (default) or a ``HistGradientBoostingClassifier``; fitted on the
training participants' windows only.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from kfusion.modalities import ACC, MODALITIES, SPEECH
from kfusion.errors import ConfigError

#: The hand-crafted row's classifiers.
CLASSIFIERS: tuple[str, ...] = ("logistic", "boosting")
SERIES_STATISTICS: tuple[str, ...] = ("mean", "std", "min", "max", "median", "slope", "skewness",
                                      "kurtosis")
_EPS = 1e-12


def _series_statistics(series: np.ndarray) -> np.ndarray:
    """Statistics ``[N, 8]`` of series ``[N, T]`` (see :data:`SERIES_STATISTICS`)."""
    series = series.astype(np.float64)
    steps = series.shape[1]
    mean = series.mean(axis=1)
    centred = series - mean[:, None]
    variance = np.mean(centred ** 2, axis=1)
    std = np.sqrt(variance)
    time = (np.arange(steps) - (steps - 1) / 2.0) / max(steps, 1)
    denominator = np.sum(time ** 2)
    slope = (centred @ time) / denominator if denominator > 0 else np.zeros_like(mean)
    flat = variance <= _EPS
    safe = np.where(flat, 1.0, variance)
    skewness = np.where(flat, 0.0, np.mean(centred ** 3, axis=1) / safe ** 1.5)
    kurtosis = np.where(flat, 0.0, np.mean(centred ** 4, axis=1) / safe ** 2 - 3.0)
    return np.stack([mean, std, series.min(axis=1), series.max(axis=1), np.median(series, axis=1),
                     slope, skewness, kurtosis], axis=1)


def _series_of(modality: str, windows: np.ndarray) -> list[tuple[str, np.ndarray]]:
    named = [(f"{modality}_{c}" if windows.shape[2] > 1 else modality, windows[:, :, c])
             for c in range(windows.shape[2])]
    if modality == ACC and windows.shape[2] == 3:
        named.append((f"{modality}_magnitude", np.sqrt(np.sum(windows.astype(np.float64) ** 2, axis=2))))
    return named


def handcrafted_features(inputs: Mapping[str, np.ndarray], presence: Mapping[str, np.ndarray],
                         levels: Mapping[str, np.ndarray] | None = None, physio: np.ndarray | None = None,
                         physio_names=None) -> tuple[np.ndarray, list[str]]:
    """Features ``[N, F]`` float64 and their names, from a data set's ``inputs``
    (``{modality: [N, T, C]}``), ``presence`` (``{modality: bool [N]}``), optionally its
    ``levels`` (``{modality: [N, 2C]}``, speech ``[N, 80 + 18]`` with prosody and flux) and
    whole-recording ``physio`` features ``[N, P]`` (NaN where undefined:
    :func:`calibrate_features` ignores NaN in its statistics and turns it
    into 0)."""
    from kfusion.data.calibration import level_names, speech_extra_names, speech_extras_of_width, speech_level_widths

    modalities = [m for m in MODALITIES if m in inputs]
    if not modalities:
        raise ConfigError(f"handcrafted_features: inputs: expected some of {', '.join(MODALITIES)}, "
                          f"found {', '.join(map(str, inputs)) or 'nothing'}")
    columns, names = [], []
    for m in modalities:
        windows = np.asarray(inputs[m])
        if windows.ndim != 3:
            raise ConfigError(f"handcrafted_features: inputs[{m!r}]: expected [N, T, C], "
                              f"found shape {windows.shape}")
        if m == SPEECH:
            if levels is None:
                columns += [windows.mean(axis=1), windows.std(axis=1)]
                names += [f"speech_mfcc{c}_{s}" for s in ("mean", "std") for c in range(windows.shape[2])]
        else:
            for series_name, series in _series_of(m, windows):
                columns.append(_series_statistics(series))
                names += [f"{series_name}_{s}" for s in SERIES_STATISTICS]
        if levels is not None:
            width, base = np.shape(levels[m])[1], 2 * windows.shape[2]
            extras = speech_extras_of_width(width - base) if m == SPEECH else (None if width != base else ())
            if extras is None:
                widths = speech_level_widths(base) if m == SPEECH else [base]
                raise ConfigError(f"handcrafted_features: levels[{m!r}]: expected {' or '.join(map(str, widths))} "
                                  "columns (mean and log-std per channel"
                                  + (", then prosody and/or flux" if m == SPEECH else "") + f"), found {width}")
            columns.append(np.asarray(levels[m], dtype=np.float64))
            names += (level_names(m, windows.shape[2]) if m != SPEECH else
                      [f"speech_mfcc{c}_{s}" for s in ("level_mean", "level_logstd")
                       for c in range(windows.shape[2])]
                      + [f"speech_level_{n}" for n in speech_extra_names(*extras)])
        columns.append(np.asarray(presence[m], dtype=np.float64).reshape(-1, 1))
        names.append(f"{m}_present")
    if physio is not None and np.shape(physio)[1]:
        columns.append(np.asarray(physio, dtype=np.float64))
        names += list(physio_names) if physio_names is not None else [
            f"physio_{i}" for i in range(np.shape(physio)[1])]
    features = np.concatenate([np.asarray(c, dtype=np.float64) for c in columns], axis=1)
    return features, names


def calibrate_features(features: np.ndarray, participants, starts, method: str = "participant",
                       head_minutes: float = 10.0) -> np.ndarray:
    """Standardise every column of ``features [N, F]`` per participant by the mean and standard
    deviation of that participant's own windows: all of them (``"participant"``) or those
    starting in the first ``head_minutes`` after the participant's first window (``"head"``);
    ``"none"`` returns the features unchanged. NaN cells are ignored in the statistics and
    become 0 afterwards (the participant's average); constant columns become 0."""
    features = np.asarray(features, dtype=np.float64)
    if method == "none":
        return np.nan_to_num(features, nan=0.0, posinf=0.0, neginf=0.0)
    participants = np.asarray(participants).astype(str)
    starts = np.asarray(starts, dtype=np.float64)
    out = np.zeros_like(features)
    for pid in np.unique(participants):
        rows = np.flatnonzero(participants == pid)
        block = features[rows]
        reference = block
        if method == "head":
            first = starts[rows].min()
            reference = block[starts[rows] < first + head_minutes * 60.0]
        finite = np.isfinite(reference)
        count = finite.sum(axis=0)
        filled = np.where(finite, reference, 0.0)
        mean = np.divide(filled.sum(axis=0), count, out=np.zeros(block.shape[1]), where=count > 0)
        spread = np.where(finite, reference - mean, 0.0)
        std = np.sqrt(np.divide((spread ** 2).sum(axis=0), count, out=np.zeros(block.shape[1]),
                                where=count > 0))
        scaled = (block - mean) / np.where(std > 1e-12, std, 1.0)
        scaled[:, std <= 1e-12] = 0.0
        out[rows] = scaled
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def handcrafted_classifier(c: float = 1.0, seed: int = 0, class_weight: str = "none",
                           kind: str = "logistic") -> Pipeline:
    """``StandardScaler`` -> multinomial ``LogisticRegression(C=c)`` (lbfgs, deterministic), or
    (``kind="boosting"``) a ``HistGradientBoostingClassifier`` (200 iterations, no early
    stopping, seeded); ``class_weight="balanced"`` weights classes by their share of the
    training windows."""
    if kind not in CLASSIFIERS:
        raise ConfigError(f"handcrafted classifier: expected one of {', '.join(CLASSIFIERS)}, found {kind!r}")
    weights = None if class_weight == "none" else class_weight
    if kind == "boosting":
        classify = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, max_leaf_nodes=15,
                                                  l2_regularization=1.0, early_stopping=False,
                                                  random_state=seed, class_weight=weights)
    else:
        classify = LogisticRegression(C=c, max_iter=2000, random_state=seed, class_weight=weights)
    return Pipeline([("scale", StandardScaler()), ("classify", classify)])


def fit_handcrafted(features: np.ndarray, labels: np.ndarray, train, c: float = 1.0,
                    seed: int = 0, class_weight: str = "none", kind: str = "logistic") -> Pipeline:
    """Fit :func:`handcrafted_classifier` on the rows ``train`` only (scaler included). With a
    single class among them the classifier is a constant predictor of that class."""
    train = np.asarray(train, dtype=np.int64)
    x, y = features[train], np.asarray(labels)[train]
    if np.unique(y).size < 2:
        pipeline = Pipeline([("scale", StandardScaler()),
                             ("classify", DummyClassifier(strategy="most_frequent"))])
    else:
        pipeline = handcrafted_classifier(c, seed, class_weight, kind)
    # One BLAS thread: beside TensorFlow's spinning thread pools, a multi-threaded BLAS runs
    # several times slower on a small machine.
    with threadpool_limits(limits=1):
        return pipeline.fit(x, y)


def predict_handcrafted(pipeline: Pipeline, features: np.ndarray, index, n_classes: int) -> np.ndarray:
    """Class probabilities ``[n, n_classes]`` for the rows ``index`` (classes never seen in
    training get probability 0)."""
    index = np.asarray(index, dtype=np.int64)
    partial = pipeline.predict_proba(features[index])
    probabilities = np.zeros((index.size, n_classes))
    probabilities[:, pipeline.classes_.astype(np.int64)] = partial
    return probabilities
