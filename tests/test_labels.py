"""Labels: K-EmoCon binning and emotion mapping (tie rule), class schemes, window labels."""

from __future__ import annotations

import numpy as np
import pytest

from kfusion.data.labels import (TARGET_CLASSES, bin_levels, emotion_classes, interval_targets,
                                 window_labels)
from kfusion.data.recording import LabelIntervals
from kfusion.errors import DataError

T0 = 1_600_000_000.0
NAN = float("nan")


def test_target_classes():
    assert TARGET_CLASSES["arousal"] == ("low", "neutral", "high")
    assert TARGET_CLASSES["valence"] == ("low", "neutral", "high")
    assert TARGET_CLASSES["emotion"] == ("cheerful", "happy", "angry", "nervous", "sad", "neutral")


def test_level_binning_table():
    values = [1, 2, 3, 4, 5, NAN, 2.4, 2.5, 3.5, 3.6]
    np.testing.assert_array_equal(bin_levels(values), [0, 0, 1, 2, 2, -1, 0, 1, 1, 2])
    assert bin_levels([3]).dtype == np.int64


@pytest.mark.parametrize("bad", [0, 6, 5.5, float("inf")])
def test_level_out_of_range_names_file_and_column(bad):
    with pytest.raises(DataError) as err:
        bin_levels([3, bad], source="P1.self.csv", column="valence")
    assert err.value.file == "P1.self.csv"
    assert "valence" in err.value.field and "row 2" in err.value.field
    assert "1 to 5" in err.value.expected


@pytest.mark.parametrize("ratings, expected", [
    ([1, 1, 1, 1, 1], 5),          # all 1 -> neutral
    ([4, 1, 1, 1, 1], 0),          # cheerful
    ([1, 1, 1, 1, 2], 4),          # sad
    ([1, 2, 3, 1, 1], 2),          # angry highest
    ([1, 3, 3, 1, 1], 1),          # tie happy = angry -> happy (earlier in the order)
    ([2, 1, 1, 1, 2], 0),          # tie cheerful = sad -> cheerful
    ([1, 1, 1, 4, 4], 3),          # tie nervous = sad -> nervous
    ([2, 2, 2, 2, 2], 0),          # all equal but above 1 -> cheerful (first), not neutral
    ([1, NAN, 1, 1, 1], -1),       # missing rating -> unlabelled
])
def test_emotion_mapping_and_tie_rule(ratings, expected):
    assert emotion_classes(np.array([ratings], float))[0] == expected


def test_emotion_rating_out_of_range():
    with pytest.raises(DataError) as err:
        emotion_classes(np.array([[1, 1, 5, 1, 1]], float), source="P3.self.csv")
    assert err.value.file == "P3.self.csv" and "angry" in err.value.field


def kemocon_intervals(rows, start=T0, length=5.0, source="P1.self.csv") -> LabelIntervals:
    rows = np.asarray(rows, dtype=float)
    names = ("arousal", "valence", "cheerful", "happy", "angry", "nervous", "sad")
    starts = start + length * np.arange(len(rows))
    return LabelIntervals(starts, starts + length, {n: rows[:, i] for i, n in enumerate(names)},
                          source=source, scheme="kemocon")


def test_interval_targets_kemocon():
    labels = kemocon_intervals([[1, 5, 1, 1, 1, 1, 1], [3, 4, 2, 3, 1, 1, 1], [NAN, 2, 1, 1, 1, 1, 4]])
    targets, classes = interval_targets(labels)
    np.testing.assert_array_equal(targets["arousal"], [0, 1, -1])
    np.testing.assert_array_equal(targets["valence"], [2, 2, 0])
    np.testing.assert_array_equal(targets["emotion"], [5, 1, 4])
    assert classes == {t: TARGET_CLASSES[t] for t in ("arousal", "valence", "emotion")}


def test_window_labels_5s_slots_vs_4s_windows():
    # slots [0,5) a=low, [5,10) neutral, [10,15) high, [15,20) low (arousal 1, 3, 5, 2)
    labels = kemocon_intervals([[1, 3, 1, 1, 1, 1, 1], [3, 3, 1, 1, 1, 1, 1],
                                [5, 3, 1, 1, 1, 1, 1], [2, 3, 1, 1, 1, 1, 1]])
    starts = T0 + np.array([0, 3, 6, 9, 12, 15], float)
    # windows: [0,4) slot0 4 s | [3,7) slot0 2 s = slot1 2 s -> tie, earlier slot0 |
    # [6,10) slot1 4 s | [9,13) slot2 3 s | [12,16) slot2 3 s | [15,19) slot3 4 s
    out, classes = window_labels(starts, 4.0, labels, min_coverage=0.5)
    np.testing.assert_array_equal(out["arousal"], [0, 0, 1, 2, 2, 0])
    np.testing.assert_array_equal(out["valence"], [1, 1, 1, 1, 1, 1])
    # coverage 0.8 needs 3.2 s: the 2 s tie window and the 3 s windows become unlabelled
    strict, _ = window_labels(starts, 4.0, labels, min_coverage=0.8)
    np.testing.assert_array_equal(strict["arousal"], [0, -1, 1, -1, -1, 0])
    # coverage 0.75 needs exactly 3 s: the 3 s windows are kept
    edge, _ = window_labels(starts, 4.0, labels, min_coverage=0.75)
    np.testing.assert_array_equal(edge["arousal"], [0, -1, 1, 2, 2, 0])


def test_window_labels_outside_annotations_and_unsorted_intervals():
    labels = LabelIntervals(start=T0 + np.array([10.0, 0.0]), end=T0 + np.array([15.0, 5.0]),
                            columns={"stress": [1, 0]}, scheme="classes",
                            classes={"stress": ("calm", "stress")}, source="labels.csv")
    starts = T0 + np.array([0, 3, 6, 9, 12, 15, 30], float)
    out, classes = window_labels(starts, 4.0, labels, min_coverage=0.5)
    # [3,7): 2 s of [0,5) -> 0; [6,10): nothing -> -1; [9,13): 3 s of [10,15) -> 1; [15,19) -> -1
    np.testing.assert_array_equal(out["stress"], [0, 0, -1, 1, 1, -1, -1])
    assert classes == {"stress": ("calm", "stress")}


def test_nan_label_inside_best_interval_is_unlabelled():
    labels = kemocon_intervals([[NAN, 3, 1, 1, 1, 1, 1], [4, 3, 1, 1, 1, 1, 1]])
    out, _ = window_labels(T0 + np.array([0.0, 6.0]), 4.0, labels)
    np.testing.assert_array_equal(out["arousal"], [-1, 2])
    np.testing.assert_array_equal(out["valence"], [1, 1])


def test_classes_scheme_checks_indices_and_names():
    ok = LabelIntervals([0, 1], [1, 2], {"task": [2, NAN]}, scheme="classes",
                        classes={"task": ("rest", "stroop", "talk")}, source="tags.csv")
    targets, classes = interval_targets(ok)
    np.testing.assert_array_equal(targets["task"], [2, -1])
    bad = LabelIntervals([0], [1], {"task": [3]}, scheme="classes",
                         classes={"task": ("rest", "stroop", "talk")}, source="tags.csv")
    with pytest.raises(DataError) as err:
        interval_targets(bad)
    assert err.value.file == "tags.csv" and "task" in err.value.field
    fractional = LabelIntervals([0], [1], {"task": [1.5]}, scheme="classes",
                                classes={"task": ("a", "b", "c")}, source="tags.csv")
    with pytest.raises(DataError):
        interval_targets(fractional)
    unnamed = LabelIntervals([0], [1], {"task": [0]}, scheme="classes", source="tags.csv")
    with pytest.raises(DataError, match="classes of column 'task'"):
        interval_targets(unnamed)
    with pytest.raises(DataError, match="scheme"):
        interval_targets(LabelIntervals([0], [1], {"x": [0]}, scheme="bogus"))


def test_no_labels_gives_no_targets():
    assert window_labels(np.array([T0]), 4.0, None) == ({}, {})
