"""Reader for "your own data" in a simple folder layout (source ``generic:PATH``)::

    PATH/
      dataset.json          optional, see below
      <participant>/        one folder per participant (folder name = participant id)
        ACC.csv BVP.csv EDA.csv TEMP.csv   Empatica E4 export files, any subset
        audio.wav           optional speech (.wav, .flac, .ogg or .mp3), any rate
        audio.json          {"start": UNIX s of the first audio sample, "channel": optional}
        labels.csv          start,end (UNIX s) and one column per label

``dataset.json`` (every key optional)::

    {"label_scheme": "classes",            # or "kemocon"
     "labels": {"stress": {"classes": ["calm", "stressed"]}},
     "description": "free text"}

Label cells (empty = not annotated):

- scheme ``classes``: a column declared in ``labels`` holds class names or class indices
  0..k-1 (a cell equal to a class name is that class; integer cells are indices unless some
  class name is itself a number). An undeclared column must hold dense class indices: over
  all participants its values are 0..K-1 with every index used and K <= 50; its classes are
  named ``"0" .. "K-1"`` (at least 2), so every participant gets the same class list. A value
  beyond the dense run (a typo like 999999, or a gap) is an error naming its line.
- scheme ``kemocon``: raw K-EmoCon-style ratings, columns among arousal and valence (1-5),
  cheerful, happy, angry, nervous, sad (1-4).

Consecutive rows that touch (one's end is the next one's start) and carry the same labels are
merged into one interval, so a 1 Hz label file works as well as a list of long intervals.
Rows that overlap in time must agree: different labels in one column of two overlapping rows
are an error naming both lines. All times (label start/end, the audio start) are UNIX seconds
between 2000 and 2100 (:func:`kfusion.data.tables.check_unix_times`).

Stereo audio is averaged over its channels unless ``audio.json`` names a ``channel``
(0-based). Only the modalities in ``DataConfig.modalities`` are read; without a config
(``kfusion`` commands without ``--modalities``, ``build_dataset(..., config=None)``) those are
the modalities some participant folder holds files of (:meth:`GenericReader.found_modalities`).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile

from kfusion.config import DataConfig
from kfusion.modalities import MODALITIES, SPEECH
from kfusion.data.readers.e4 import (E4_FILES, e4_folder_files, e4_modalities_in, find_e4_files, natural_key,
                                     read_e4_folder)
from kfusion.data.recording import Audio, LabelIntervals, Recording
from kfusion.data.tables import check_unix_time, check_unix_times, read_table
from kfusion.errors import DataError

DATASET_FILE, LABELS_FILE, AUDIO_META_FILE = "dataset.json", "labels.csv", "audio.json"
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
SCHEMES = ("classes", "kemocon")
#: K-EmoCon rating columns and their ranges.
KEMOCON_RANGES: dict[str, tuple[float, float]] = {
    "arousal": (1, 5), "valence": (1, 5),
    "cheerful": (1, 4), "happy": (1, 4), "angry": (1, 4), "nervous": (1, 4), "sad": (1, 4)}
_DATASET_KEYS = ("label_scheme", "labels", "description")
_AUDIO_META_KEYS = ("start", "channel")


def _load_json(path: Path, what: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(path, "contents", f"valid JSON ({what})", f"{err.msg} at line {err.lineno}") from None
    except UnicodeDecodeError:
        raise DataError(path, "contents", f"UTF-8 JSON text ({what})", "binary data") from None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


@functools.lru_cache(maxsize=16)
def _dataset_spec_cached(path: str, mtime_ns: int) -> tuple[str, dict[str, tuple[str, ...]]]:
    path = Path(path)
    spec = _load_json(path, "the data set description")
    if not isinstance(spec, dict):
        raise DataError(path, "contents", "a JSON object", type(spec).__name__)
    unknown = sorted(set(spec) - set(_DATASET_KEYS))
    if unknown:
        raise DataError(path, f"key {unknown[0]!r}", f"only the keys {', '.join(_DATASET_KEYS)}",
                        ", ".join(map(repr, unknown)))
    scheme = spec.get("label_scheme", "classes")
    if scheme not in SCHEMES:
        raise DataError(path, "label_scheme", " or ".join(map(repr, SCHEMES)), repr(scheme))
    labels = spec.get("labels", {})
    if not isinstance(labels, dict):
        raise DataError(path, "labels", 'an object like {"stress": {"classes": ["calm", "stressed"]}}',
                        repr(labels))
    if labels and scheme == "kemocon":
        raise DataError(path, "labels", "no 'labels' with label_scheme 'kemocon' (its columns "
                        f"are fixed: {', '.join(KEMOCON_RANGES)})", ", ".join(labels))
    classes = {}
    for column, entry in labels.items():
        field = f"labels.{column}"
        if column in ("start", "end") or not column.strip():
            raise DataError(path, field, "a label column name other than start and end", repr(column))
        if not isinstance(entry, dict) or set(entry) != {"classes"}:
            raise DataError(path, field, 'an object with one key "classes"', json.dumps(entry))
        names = entry["classes"]
        if (not isinstance(names, list) or len(names) < 2
                or not all(isinstance(n, str) and n.strip() for n in names)):
            raise DataError(path, f"{field}.classes", "a list of at least two class names (strings)",
                            json.dumps(names))
        names = [n.strip() for n in names]
        if len(set(names)) != len(names):
            raise DataError(path, f"{field}.classes", "distinct class names", json.dumps(names))
        classes[column] = tuple(names)
    return scheme, classes


def dataset_spec(root: Path) -> tuple[str, dict[str, tuple[str, ...]]]:
    """``(label_scheme, {column: class names})`` from ``root/dataset.json`` (defaults without it)."""
    path = Path(root) / DATASET_FILE
    if not path.is_file():
        return "classes", {}
    return _dataset_spec_cached(str(path.resolve()), path.stat().st_mtime_ns)


def _participant_dirs(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))]


def _is_audio_name(name: str) -> bool:
    """``audio.<wav|flac|ogg|mp3>`` (any case): the name of a participant's audio file."""
    path = Path(name)
    return path.stem.lower() == "audio" and path.suffix.lower() in AUDIO_SUFFIXES


def _participant_files(folder: Path) -> list[str]:
    """Names of the files in ``folder`` that belong in a participant folder (E4 signal files,
    audio, audio.json, labels.csv); never raises."""
    try:
        entries = sorted(os.listdir(folder))
    except OSError:
        return []
    e4 = {name.lower() for name in E4_FILES.values()}
    return [n for n in entries if n.lower() in e4 or n in (AUDIO_META_FILE, LABELS_FILE)
            or _is_audio_name(n)]


#: Most classes an undeclared label column may have (more: declare them in dataset.json).
MAX_UNDECLARED_CLASSES = 50


@functools.lru_cache(maxsize=16)
def _inferred_classes_cached(files: tuple[tuple[str, int], ...], declared: tuple[str, ...]
                             ) -> dict[str, tuple[int, tuple[int, ...]]]:
    """``{column: (K, values used above the dense range)}`` over every participant's labels."""
    used: dict[str, set] = {}
    for name, _ in files:
        try:
            table = pd.read_csv(name, dtype=str, keep_default_na=False, skipinitialspace=True)
        except Exception:  # noqa: BLE001 - that participant's own read reports the problem
            continue
        for column in table.columns:
            column_name = str(column).strip()
            if column_name in ("start", "end") or column_name in declared:
                continue
            values = pd.to_numeric(table[column].str.strip(), errors="coerce").to_numpy(np.float64)
            values = values[np.isfinite(values) & (values >= 0) & (values == np.round(values))]
            # (other cells are errors the participant's own read names)
            used.setdefault(column_name, set()).update(np.unique(values).astype(np.int64).tolist())
    out = {}
    for column, values in used.items():
        dense = 0  # 0..dense-1 all used, capped
        while dense in values and dense < MAX_UNDECLARED_CLASSES:
            dense += 1
        out[column] = (max(dense, 2), tuple(sorted(v for v in values if v >= max(dense, 2))))
    return out


def inferred_classes(root: Path, declared) -> dict[str, tuple[int, tuple[int, ...]]]:
    """Classes of each undeclared label column over every participant's labels.csv:
    ``{column: (K, out_of_line)}``. The values used must be dense class indices: every index
    from 0 up to the largest occurs in some participant's file, and there are at most
    :data:`MAX_UNDECLARED_CLASSES`. K is the length of the dense run 0..K-1 (at least 2);
    ``out_of_line`` lists the values beyond it (a typo such as 999999, or a gap), which are
    errors in the files that hold them."""
    files = []
    for folder in _participant_dirs(Path(root)):
        path = folder / LABELS_FILE
        if path.is_file():
            files.append((str(path), path.stat().st_mtime_ns))
    return _inferred_classes_cached(tuple(sorted(files)), tuple(sorted(declared)))


def inferred_class_counts(root: Path, declared) -> dict[str, int]:
    """Number of classes of each undeclared label column (see :func:`inferred_classes`)."""
    return {column: k for column, (k, _) in inferred_classes(root, declared).items()}


def _class_column(raw: np.ndarray, names: tuple[str, ...], path: Path, column: str) -> np.ndarray:
    """Class indices (NaN = empty) from cells holding class names or indices."""
    lookup = {name: i for i, name in enumerate(names)}
    numeric_names = any(_parses_as_number(n) for n in names)
    out = np.full(len(raw), np.nan)
    for i, cell in enumerate(raw):
        cell = str(cell).strip()
        if cell == "":
            continue
        if cell in lookup:
            out[i] = lookup[cell]
            continue
        field = f"column '{column}', line {i + 2}"
        known = ", ".join(names)
        if not numeric_names and _parses_as_number(cell):
            value = float(cell)
            if value != int(value) or not 0 <= value < len(names):
                raise DataError(path, field, f"a class index 0..{len(names) - 1} or a class name "
                                f"({known})", repr(cell))
            out[i] = value
            continue
        raise DataError(path, field, f"one of the classes {known} (from {DATASET_FILE})"
                        + ("" if numeric_names else " or their index"), repr(cell))
    return out


def _parses_as_number(text: str) -> bool:
    try:
        return np.isfinite(float(text))
    except ValueError:
        return False


def _integer_column(raw: np.ndarray, path: Path, column: str, n_classes: int,
                    out_of_line: tuple[int, ...] = ()) -> np.ndarray:
    text = pd.Series(raw, dtype=str).str.strip()
    values = pd.to_numeric(text, errors="coerce").to_numpy(np.float64, copy=True)
    empty = text.eq("").to_numpy()
    bad = ~empty & ~(np.isfinite(values) & (values == np.round(values)) & (values >= 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(path, f"column '{column}', line {i + 2}",
                        f"an integer class index >= 0 (or declare the class names of '{column}' "
                        f"in {DATASET_FILE})", repr(text.iloc[i]))
    values[empty] = np.nan
    beyond = np.nan_to_num(values, nan=-1) >= n_classes
    if beyond.any():
        i = int(np.argmax(beyond))
        others = [v for v in out_of_line if v != values[i]][:3]
        found = f"{values[i]:.0f}" + (f" (other values beyond it: {', '.join(map(str, others))})"
                                      if others else "")
        raise DataError(path, f"column '{column}', line {i + 2}",
                        f"a dense class index 0..{n_classes - 1}: without {DATASET_FILE} a label "
                        "column's values over all participants must be 0, 1, ..., K-1 with every "
                        f"index used and K <= {MAX_UNDECLARED_CLASSES} (declare the classes of "
                        f"'{column}' in {DATASET_FILE} for other values)", found)
    return values


def _rating_column(raw: np.ndarray, path: Path, column: str) -> np.ndarray:
    text = pd.Series(raw, dtype=str).str.strip()
    values = pd.to_numeric(text, errors="coerce").to_numpy(np.float64, copy=True)
    empty = text.eq("").to_numpy()
    low, high = KEMOCON_RANGES[column]
    bad = ~empty & ~(np.isfinite(values) & (values >= low) & (values <= high))
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(path, f"column '{column}', line {i + 2}",
                        f"a rating from {low:g} to {high:g} (or an empty cell)", repr(text.iloc[i]))
    values[empty] = np.nan
    return values


def merge_contiguous(start: np.ndarray, end: np.ndarray, columns: dict[str, np.ndarray]
                     ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Merge consecutive rows that touch (``end[i] == start[i + 1]``) and carry the same labels
    (e.g. a 1 Hz label file) into one interval; windowing labels a window by the single
    interval covering most of it, so short pieces would leave windows unlabelled."""
    n = len(start)
    if n < 2:
        return start, end, columns
    same = end[:-1] == start[1:]
    for values in columns.values():
        before, after = values[:-1], values[1:]
        same &= (before == after) | (np.isnan(before) & np.isnan(after))
    first = np.flatnonzero(np.concatenate([[True], ~same]))
    last = np.concatenate([first[1:], [n]]) - 1
    return start[first], end[last], {k: v[first] for k, v in columns.items()}


#: Rows overlapping by less than this (s) do not contradict each other (float round-off).
OVERLAP_TOLERANCE = 1e-3


def check_contradictions(path: Path, start: np.ndarray, end: np.ndarray,
                         columns: dict[str, np.ndarray], raw: dict[str, np.ndarray]) -> None:
    """Raise when two rows overlap in time and hold different labels in one column (naming
    both lines and the column); overlapping rows that agree, or where one cell is empty, are
    fine. ``raw``: the cells as written, for the message."""
    n = len(start)
    if n < 2:
        return
    order = np.argsort(start, kind="stable")
    s, e = start[order], end[order]
    reach = np.maximum.accumulate(e)  # latest end among the rows sorted up to here
    overlaps = s[1:] < reach[:-1] - OVERLAP_TOLERANCE  # row k overlaps some earlier row
    if not overlaps.any():
        return
    # groups of rows chained by overlaps; only those with two or more rows need a look
    first = np.flatnonzero(np.concatenate([[True], ~overlaps]))
    last = np.concatenate([first[1:], [n]])
    for g0, g1 in zip(first, last):
        if g1 - g0 < 2:
            continue
        for column, values in columns.items():
            latest: dict[float, tuple[float, int]] = {}  # label -> (latest end, its row)
            for k in range(g0, g1):
                row = int(order[k])
                value = values[row]
                if not np.isfinite(value):
                    continue
                for other, (other_end, other_row) in latest.items():
                    if other != value and other_end > s[k] + OVERLAP_TOLERANCE:
                        a, b = sorted((other_row, row))
                        lo, hi = max(start[a], start[b]), min(end[a], end[b])
                        raise DataError(
                            path, f"column '{column}', lines {a + 2} and {b + 2}",
                            "one label at a time: rows whose times overlap must hold the same "
                            "label (or leave one cell empty)",
                            f"{str(raw[column][a]).strip()!r} on line {a + 2} and "
                            f"{str(raw[column][b]).strip()!r} on line {b + 2}, overlapping for "
                            f"{hi - lo:g} s from UNIX {lo:.3f}")
                if value not in latest or latest[value][0] < e[k]:
                    latest[value] = (float(e[k]), row)


def read_labels(path: Path, root: Path) -> LabelIntervals:
    """``labels.csv`` as :class:`LabelIntervals` under the data set's label scheme."""
    scheme, declared = dataset_spec(root)
    table = read_table(path, required=["start", "end"], numeric=["start", "end"],
                       what="label intervals: start,end (UNIX s) and label columns")
    start = check_unix_times(table["start"].to_numpy(np.float64), path, "column 'start'", first_line=2)
    end = check_unix_times(table["end"].to_numpy(np.float64), path, "column 'end'", first_line=2)
    bad = ~(end > start)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(path, f"column 'end', line {i + 2}", f"a time after start ({float(start[i])!r})",
                        repr(float(end[i])))
    label_columns = [c for c in table.columns if c not in ("start", "end")]
    if not label_columns:
        raise DataError(path, "header", "at least one label column after start,end",
                        "only start,end")
    columns, classes = {}, {}
    if scheme == "kemocon":
        for column in label_columns:
            if column not in KEMOCON_RANGES:
                raise DataError(path, f"column '{column}'", "K-EmoCon rating columns (one of "
                                f"{', '.join(KEMOCON_RANGES)}) with label_scheme 'kemocon'",
                                repr(column))
            columns[column] = _rating_column(table[column].to_numpy(), path, column)
    else:
        inferred = None
        for column in label_columns:
            raw = table[column].to_numpy()
            if column in declared:
                names = declared[column]
                columns[column] = _class_column(raw, names, path, column)
            else:
                if inferred is None:
                    inferred = inferred_classes(root, declared)
                n_classes, out_of_line = inferred.get(column, (2, ()))
                columns[column] = _integer_column(raw, path, column, n_classes, out_of_line)
                names = tuple(str(k) for k in range(n_classes))
            classes[column] = names
    check_contradictions(path, start, end, columns, {c: table[c].to_numpy() for c in columns})
    start, end, columns = merge_contiguous(start, end, columns)
    return LabelIntervals(start=start, end=end, columns=columns, source=str(path),
                          scheme=scheme, classes=classes)


def find_audio(folder: Path) -> Path | None:
    """``audio.<wav|flac|ogg|mp3>`` in ``folder`` (None if there is none)."""
    found = [p for p in folder.iterdir()
             if p.is_file() and _is_audio_name(p.name)]
    if len(found) > 1:
        raise DataError(folder, "audio file", "one audio file", ", ".join(sorted(p.name for p in found)))
    return found[0] if found else None


def read_sound(path: Path) -> tuple[np.ndarray, int]:
    """``(float32 samples [n, channels], rate)`` of an audio file. Unreadable files raise a
    :class:`DataError` naming the file (a Git LFS pointer in place of the audio is named as such)."""
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.SoundFileError, RuntimeError, TypeError, ValueError) as err:
        try:
            with open(path, "rb") as fh:
                head = fh.read(64)
        except OSError:
            head = b""
        if head.startswith(b"version https://git-lfs"):
            raise DataError(path, "contents", "audio (WAV)", "a Git LFS pointer instead of the audio "
                            "(fetch the files with 'git lfs pull')") from None
        raise DataError(path, "contents", "audio readable by libsndfile (WAV, FLAC, OGG, MP3)",
                        f"unreadable ({str(err).strip() or type(err).__name__})") from None
    return samples, int(rate)


def read_audio(path: Path) -> tuple[Audio, list[str]]:
    """Audio file + its ``audio.json`` as mono :class:`Audio` at the file's own rate."""
    meta_path = path.parent / AUDIO_META_FILE
    if not meta_path.is_file():
        raise DataError(meta_path, "file", f'{AUDIO_META_FILE} holding {{"start": <UNIX s of the '
                        f'first sample>}} next to {path.name}', "nothing")
    meta = _load_json(meta_path, "the audio start time")
    if not isinstance(meta, dict):
        raise DataError(meta_path, "contents", 'a JSON object like {"start": 1644228016.0}',
                        type(meta).__name__)
    unknown = sorted(set(meta) - set(_AUDIO_META_KEYS))
    if unknown:
        raise DataError(meta_path, f"key {unknown[0]!r}", f"only the keys {', '.join(_AUDIO_META_KEYS)}",
                        ", ".join(map(repr, unknown)))
    if "start" not in meta or not _is_number(meta["start"]):
        raise DataError(meta_path, "start", "the UNIX time in seconds of the first audio sample "
                        "(a number)", repr(meta.get("start")) if "start" in meta else "no 'start' key")
    check_unix_time(meta["start"], meta_path, "start")
    samples, rate = read_sound(path)
    if samples.shape[0] == 0:
        raise DataError(path, "samples", "at least one audio sample", "none")
    notes = []
    channels = samples.shape[1]
    channel = meta.get("channel")
    if channel is not None:
        if not isinstance(channel, int) or isinstance(channel, bool) or not 0 <= channel < channels:
            raise DataError(meta_path, "channel", f"a channel index 0..{channels - 1} of {path.name}",
                            repr(channel))
        mono = samples[:, channel]
        notes.append(f"{path.name}: channel {channel} of {channels}")
    else:
        mono = samples.mean(axis=1)
        if channels > 1:
            notes.append(f"{path.name}: mean of {channels} channels")
    return Audio(mono, int(rate), float(meta["start"]), source=str(path)), notes


def _check_labels_overlap(labels: LabelIntervals, spans: list[tuple[float, float]]) -> None:
    if not spans or len(labels) == 0:
        return
    overlaps = np.zeros(len(labels), dtype=bool)
    for lo, hi in spans:
        overlaps |= (labels.start < hi) & (labels.end > lo)
    if not overlaps.any():
        lo, hi = min(s for s, _ in spans), max(e for _, e in spans)
        raise DataError(labels.source, "start/end",
                        f"intervals overlapping the recording (UNIX s {lo:.3f} .. {hi:.3f})",
                        f"all intervals in {labels.start.min():.3f} .. {labels.end.max():.3f}")


class GenericReader:
    """``generic:PATH``: the folder layout above."""

    def participants(self, root: Path) -> list[str]:
        root = Path(root)
        if not root.is_dir():
            raise DataError(root, "path", "a data set folder holding one folder per participant",
                            "not a folder")
        dataset_spec(root)  # a bad dataset.json is reported once, here
        folders = _participant_dirs(root)
        own = _participant_files(root)
        if own and not any(_participant_files(folder) for folder in folders):
            parent = Path(os.path.abspath(root)).parent
            raise DataError(
                root, "folders", "a data set folder holding one folder per participant",
                f"one participant's files directly in it ({', '.join(own)}): point generic: at "
                f"the parent folder, generic:{parent}, which holds {root.name}/ and should hold "
                f"one folder per participant (to read its E4 files alone, without audio or "
                f"labels, use e4:PATH with this folder: e4:{root})")
        names = [p.name for p in folders]
        if not names:
            raise DataError(root, "folders", "one folder per participant", "none")
        return sorted(names, key=natural_key)

    def source_files(self, root: Path) -> list[Path]:
        """``dataset.json`` and, per participant, the E4 signal and tag files, the audio file,
        ``audio.json`` and ``labels.csv`` (other files in the folders are never opened)."""
        root = Path(root)
        files = [root / DATASET_FILE] if os.path.lexists(root / DATASET_FILE) else []
        for pid in self.participants(root):
            folder = root / pid
            files += e4_folder_files(folder)
            try:
                names = os.listdir(folder)
            except OSError:
                continue
            files += [folder / n for n in names if n in (AUDIO_META_FILE, LABELS_FILE)
                      or _is_audio_name(n)]
        return files

    def found_modalities(self, root: Path) -> tuple[str, ...]:
        """The modalities some participant folder holds a file of (E4 signal files, an audio
        file): the names only, no signal read. The default modalities of a data set read
        from ``root`` (an audio-only set is speech-only, a wearable-only set wearable-only)."""
        root = Path(root)
        folders = [root / pid for pid in self.participants(root)]
        found = e4_modalities_in(folders)
        if any(_is_audio_name(n) for folder in folders for n in _participant_files(folder)):
            found.add(SPEECH)
        return tuple(m for m in MODALITIES if m in found)

    def read(self, root: Path, participant: str, config: DataConfig | None = None) -> Recording:
        config = config or DataConfig()
        root = Path(root)
        folder = root / participant
        if not folder.is_dir():
            raise DataError(folder, "folder", f"the folder of participant {participant}", "nothing")
        audio_path = find_audio(folder)
        if not find_e4_files(folder) and audio_path is None:
            raise DataError(folder, "files", "at least one data file: "
                            + ", ".join(E4_FILES.values()) + " or audio" + "/".join(AUDIO_SUFFIXES),
                            "none")
        if audio_path is None and (folder / AUDIO_META_FILE).is_file():
            raise DataError(folder / AUDIO_META_FILE, "file", f"an audio file ({', '.join(AUDIO_SUFFIXES)}) "
                            "next to it", "no audio file")
        signals, notes = read_e4_folder(folder, config.modalities, require=False)
        audio = None
        if audio_path is not None and SPEECH in config.modalities:
            audio, audio_notes = read_audio(audio_path)
            notes.extend(audio_notes)
        labels = None
        if (folder / LABELS_FILE).exists():
            labels = read_labels(folder / LABELS_FILE, root)
            spans = [(s.start, s.end) for s in signals.values()]
            if audio is not None:
                spans.append((audio.start, audio.end))
            _check_labels_overlap(labels, spans)
        else:
            notes.append(f"no {LABELS_FILE}: unlabelled (usable for self-supervised pretraining)")
        return Recording(participant=participant, signals=signals, audio=audio, labels=labels,
                         notes=notes, source=str(folder))


READER = GenericReader()
