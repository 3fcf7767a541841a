"""The hand-crafted baseline (our addition to Table 1): fixed window statistics and a linear
classifier, evaluated under the same leave-one-subject-out protocol as the learned rows.

Features of a window (:func:`handcrafted_features`):

- every wearable channel, and for ACC also the magnitude over its three axes: mean, standard
  deviation, minimum, maximum, median, slope (least squares over the window, per window length),
  skewness and kurtosis (excess; 0 for a constant series);
- speech: mean and standard deviation of every MFCC coefficient over the window's frames;
- one presence flag per modality (absent modalities are zeros in the data set).

With the default per-window z-scoring of wearables (``FeatureConfig.wearable_norm``) their mean
and standard deviation carry little; the shape statistics still do.

Classifier (:func:`handcrafted_classifier`): a scikit-learn pipeline of a ``StandardScaler`` and
a multinomial ``LogisticRegression``; both are fitted on the training participants' windows only.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from kfusion.data.modalities import ACC, MODALITIES, SPEECH
from kfusion.errors import ConfigError

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


def handcrafted_features(inputs: Mapping[str, np.ndarray],
                         presence: Mapping[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """Features ``[N, F]`` float64 and their names, from a data set's ``inputs``
    (``{modality: [N, T, C]}``) and ``presence`` (``{modality: bool [N]}``)."""
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
            columns += [windows.mean(axis=1), windows.std(axis=1)]
            names += [f"speech_mfcc{c}_{s}" for s in ("mean", "std") for c in range(windows.shape[2])]
        else:
            for series_name, series in _series_of(m, windows):
                columns.append(_series_statistics(series))
                names += [f"{series_name}_{s}" for s in SERIES_STATISTICS]
        columns.append(np.asarray(presence[m], dtype=np.float64).reshape(-1, 1))
        names.append(f"{m}_present")
    features = np.concatenate([np.asarray(c, dtype=np.float64) for c in columns], axis=1)
    return np.nan_to_num(features, nan=0.0, posinf=0.0, neginf=0.0), names


def handcrafted_classifier(c: float = 1.0, seed: int = 0, class_weight: str = "none") -> Pipeline:
    """``StandardScaler`` -> multinomial ``LogisticRegression(C=c)`` (lbfgs, deterministic);
    ``class_weight="balanced"`` weights classes by their share of the training windows."""
    weights = None if class_weight == "none" else class_weight
    return Pipeline([("scale", StandardScaler()),
                     ("classify", LogisticRegression(C=c, max_iter=2000, random_state=seed,
                                                     class_weight=weights))])


def fit_handcrafted(features: np.ndarray, labels: np.ndarray, train, c: float = 1.0,
                    seed: int = 0, class_weight: str = "none") -> Pipeline:
    """Fit :func:`handcrafted_classifier` on the rows ``train`` only (scaler included). With a
    single class among them the classifier is a constant predictor of that class."""
    train = np.asarray(train, dtype=np.int64)
    x, y = features[train], np.asarray(labels)[train]
    if np.unique(y).size < 2:
        pipeline = Pipeline([("scale", StandardScaler()),
                             ("classify", DummyClassifier(strategy="most_frequent"))])
    else:
        pipeline = handcrafted_classifier(c, seed, class_weight)
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
