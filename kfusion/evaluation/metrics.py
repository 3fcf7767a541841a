"""Per-fold metrics: accuracy and macro F1.

Class convention of macro F1 (the scikit-learn default, ``f1_score(average="macro")``): the
average runs over the classes that occur in the true labels *or* in the predictions of the
fold; a class that occurs in neither is left out; a class with no true and some predicted
windows (or the reverse) scores 0. A held-out participant often shows only some classes, so
averaging over all classes would count classes the fold cannot test as 0.
"""

from __future__ import annotations

import numpy as np

from kfusion.errors import ConfigError
from kfusion.training.emotion import macro_f1_score


def _labels(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true).reshape(-1)
    y_pred = np.asarray(y_pred).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ConfigError(f"metrics: expected as many predictions as labels, found {y_pred.size} "
                          f"predictions for {y_true.size} labels")
    if y_true.size == 0:
        raise ConfigError("metrics: expected at least one labelled window, found none")
    return y_true, y_pred


def accuracy(y_true, y_pred) -> float:
    """Fraction of windows whose predicted class is the true one."""
    y_true, y_pred = _labels(y_true, y_pred)
    return float(np.mean(y_true == y_pred))


def macro_f1(y_true, y_pred) -> float:
    """Unweighted mean over classes of F1 = 2 TP / (2 TP + FP + FN), over the classes present in
    ``y_true`` or ``y_pred`` (see the module docstring)."""
    return macro_f1_score(*_labels(y_true, y_pred))


def fold_metrics(y_true, probabilities) -> dict:
    """``{"accuracy", "f1", "n_test"}`` of class probabilities ``[n, n_classes]`` (or predicted
    classes ``[n]``) against true classes ``[n]``."""
    probabilities = np.asarray(probabilities)
    predicted = probabilities.argmax(axis=-1) if probabilities.ndim == 2 else probabilities
    y_true, predicted = _labels(y_true, predicted)
    return {"accuracy": accuracy(y_true, predicted), "f1": macro_f1(y_true, predicted),
            "n_test": int(y_true.size)}
