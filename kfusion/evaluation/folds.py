"""Participant-wise splits: every fold of the protocol, the tuner and the deployable model.

- :func:`loso_folds`: the protocol's outer leave-one-subject-out folds;
- :func:`inner_folds`: the tuner's participant-group folds (of the participants it may see);
- :func:`participant_split`: ``kfusion train``'s one training/validation split (no test);
- :func:`labelled_view`: the windows of the data set labelled for one target, which they split.

Every split picks its validation participants with :func:`validation_participants` from a seed
derived from the run's seed and the split (``kfusion.training.emotion.derive_seed``), so a
split depends only on the seed and the set of participants, never on the windows' order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kfusion import checks
from kfusion.data.labels import UNLABELLED
from kfusion.errors import ConfigError, DataError
from kfusion.training.emotion import derive_seed

__all__ = ["Fold", "InnerFold", "TargetView", "loso_folds", "inner_folds", "participant_split",
           "labelled_view", "validation_participants"]


def validation_participants(participants: Sequence[str], fraction: float, seed: int) -> list[str]:
    """Pick ``max(1, round(fraction * n))`` of the (training) ``participants`` for validation,
    leaving at least one for training; the choice depends only on ``seed`` and the set."""
    pool = sorted(str(p) for p in set(participants))
    if len(pool) < 2:
        raise ConfigError(f"validation split: expected at least 2 training participants (one to "
                          f"train on, one to validate on), found {len(pool)}: {pool}")
    fraction = checks.fraction("validation_fraction", fraction, low_open=True, high_open=True)
    count = min(max(1, int(round(fraction * len(pool)))), len(pool) - 1)
    rng = np.random.default_rng(seed)
    return sorted(pool[i] for i in rng.choice(len(pool), size=count, replace=False))


def _positions(participants: np.ndarray, test, validation) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, validation, test) positions of the windows of ``participants``."""
    tested = np.isin(participants, list(test))
    validating = np.isin(participants, list(validation))
    return np.flatnonzero(~tested & ~validating), np.flatnonzero(validating), np.flatnonzero(tested)


@dataclass(frozen=True)
class Fold:
    """One leave-one-subject-out fold; indices are positions in the target's labelled windows."""

    index: int
    held_out: str
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    validation_participants: tuple


def loso_folds(participants, seed: int = 0, validation_fraction: float = 0.15,
               where: str = "participants") -> list[Fold]:
    """A fold per participant of ``participants`` (one id per window, in the order the ids first
    appear): that participant's windows are the test set; of the others, ``validation_fraction``
    (at least one, chosen by ``seed`` and the held-out id) validate and the rest train."""
    participants = np.asarray(participants).astype(str)
    _, first = np.unique(participants, return_index=True)
    ids = [str(participants[i]) for i in sorted(first)]
    if len(ids) < 3:
        raise DataError(None, where, "at least 3 participants with labelled windows (one held out, "
                        "one to train on, one to validate on)", f"{len(ids)}: {', '.join(ids) or 'none'}")
    folds = []
    for index, held_out in enumerate(ids):
        others = [p for p in ids if p != held_out]
        chosen = validation_participants(others, validation_fraction, derive_seed(seed, "validation", held_out))
        train, validation, test = _positions(participants, [held_out], chosen)
        folds.append(Fold(index, held_out, train, validation, test, tuple(chosen)))
    return folds


@dataclass(frozen=True)
class InnerFold:
    """One participant-wise inner fold of the tuner; indices are positions in the tuned windows."""

    index: int
    test_participants: tuple
    validation_participants: tuple
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


def inner_folds(participants, folds: int, seed: int, validation_fraction: float = 0.15,
                where: str = "participants") -> list[InnerFold]:
    """Split the participants (one id per window) into ``min(folds, n)`` groups (shuffled with
    ``seed``, sizes differing by at most one); fold k tests on group k, validates on
    ``validation_fraction`` of the other participants (at least one) and trains on the rest.
    Raises :class:`DataError` when a fold would not keep one participant to train on and one to
    validate on."""
    participants = np.asarray(participants).astype(str)
    ids = sorted(set(participants.tolist()))
    count = min(int(folds), len(ids))
    if count < 2 or len(ids) - math.ceil(len(ids) / count) < 2:
        raise DataError(None, where, f"at least 3 participants with labelled windows (inner folds of "
                        f"at least one test participant, each leaving one to train on and one to "
                        f"validate on; {folds} inner folds asked)", f"{len(ids)}: {', '.join(ids) or 'none'}")
    order = np.random.default_rng(derive_seed(seed, "inner folds")).permutation(len(ids))
    groups = [sorted(ids[i] for i in part) for part in np.array_split(order, count)]
    result = []
    for k, group in enumerate(groups):
        others = [p for p in ids if p not in group]
        chosen = validation_participants(others, validation_fraction, derive_seed(seed, "inner validation", k))
        train, validation, test = _positions(participants, group, chosen)
        result.append(InnerFold(k, tuple(group), tuple(chosen), train, validation, test))
    return result


def participant_split(participants, fraction: float, seed: int, where: str = "participants"
                      ) -> tuple[np.ndarray, np.ndarray, list, list]:
    """``kfusion train``'s split: (training positions, validation positions, training ids,
    validation ids) of the windows of ``participants``; nobody is held out."""
    participants = np.asarray(participants).astype(str)
    ids = sorted(set(participants.tolist()))
    if len(ids) < 2:
        raise DataError(None, where, "at least 2 participants with labelled windows (one to train on, one to "
                        "validate on for early stopping)", f"{len(ids)}: {', '.join(ids) or 'none'}")
    chosen = validation_participants(ids, fraction, derive_seed(seed, "deploy", "validation"))
    train, validation, _ = _positions(participants, [], chosen)
    return train, validation, [p for p in ids if p not in chosen], chosen


@dataclass
class TargetView:
    """The windows labelled for one target: ``index`` into the data set, labels ``y``, each
    window's participant, and the folds over them (filled by the caller)."""

    target: str
    n_classes: int
    index: np.ndarray
    y: np.ndarray
    participants: np.ndarray
    folds: list


def labelled_view(dataset, target: str) -> TargetView:
    """The windows of ``dataset`` labelled for ``target`` (no folds yet), class indices checked."""
    index = np.flatnonzero(np.asarray(dataset.labels[target]) != UNLABELLED)
    participants = np.asarray(dataset.participants)[index].astype(str)
    n_classes = len(dataset.classes[target])
    y = np.asarray(dataset.labels[target])[index].astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise DataError(None, f"labels of target '{target}'", f"class indices 0..{n_classes - 1}",
                        f"{y.min()}..{y.max()}")
    return TargetView(target, n_classes, index, y, participants, [])
