"""Reader for Empatica E4 Connect exports (source ``e4:PATH``).

An export folder holds ``ACC.csv BVP.csv EDA.csv TEMP.csv`` (plus ``HR.csv``, ``IBI.csv``,
``tags.csv`` / ``tags_*.csv``, ``info.txt``). In each signal file line 1 is the start time
(UNIX s), line 2 the sample rate (Hz), and every further line one sample; ``ACC.csv`` has three
columns (x, y, z in 1/64 g) and repeats start and rate per column.

``PATH`` is one participant folder (participant id = its name) or a folder of participant
folders. Any subset of the four signal files is fine. HR and IBI are not read (derived from
BVP); tags are read into ``Recording.notes`` as event marks (an empty ``tags.csv``, as E4
Connect writes when the button was never pressed, means no marks).

The other readers (Stress-Predict, generic) use :func:`read_e4_folder` for their E4 files.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from kfusion.config import DataConfig
from kfusion.modalities import ACC, BVP, CHANNELS, EDA, TEMP, WEARABLES
from kfusion.data.recording import Recording, Signal
from kfusion.data.tables import (UNIX_MAX, UNIX_MIN, check_excel_export, check_unix_time,  # noqa: F401
                                 require_file)
from kfusion.errors import DataError

#: Signal file name of each wearable modality in an E4 export.
E4_FILES: dict[str, str] = {ACC: "ACC.csv", BVP: "BVP.csv", EDA: "EDA.csv", TEMP: "TEMP.csv"}
#: Column names used in error messages (ACC: x, y, z).
_COLUMN_NAMES: dict[str, tuple[str, ...]] = {ACC: ("x", "y", "z"), BVP: ("value",),
                                              EDA: ("value",), TEMP: ("value",)}
_SAMPLES_FIRST_LINE = 3  # lines 1 and 2 are start time and rate


def natural_key(name: str) -> list:
    """Sort key that puts ``p2`` before ``p10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def find_e4_files(folder: Path) -> dict[str, Path]:
    """Map each modality whose signal file is in ``folder`` to that file (names matched
    case-insensitively, so ``acc.csv`` works too)."""
    by_lower: dict[str, list[Path]] = {}
    if folder.is_dir():
        for entry in folder.iterdir():
            if entry.is_file():
                by_lower.setdefault(entry.name.lower(), []).append(entry)
    found = {}
    for modality, name in E4_FILES.items():
        matches = by_lower.get(name.lower(), [])
        if len(matches) > 1:
            raise DataError(folder, "file", f"one {name}",
                            ", ".join(sorted(p.name for p in matches)))
        if matches:
            found[modality] = matches[0]
    return found


def find_tag_files(folder: Path) -> list[Path]:
    """``tags.csv`` and ``tags_*.csv`` in ``folder`` (sorted)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file()
                  and re.fullmatch(r"tags(_.*)?\.csv", p.name, flags=re.IGNORECASE))


def e4_folder_files(folder: Path) -> list[Path]:
    """Every entry of ``folder`` named like a file the E4 reader reads (signal files and
    ``tags*.csv``, case-insensitively), whatever it is: the data-set fingerprint hashes these
    and leaves out (with a note) any that is not a regular file. Never raises."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    wanted = {name.lower() for name in E4_FILES.values()}
    return [Path(folder) / n for n in names
            if n.lower() in wanted or re.fullmatch(r"tags(_.*)?\.csv", n, flags=re.IGNORECASE)]


def _header_cells(line: str | None) -> list[str] | None:
    if line is None or not line.strip():
        return None
    return [cell.strip() for cell in line.lstrip("\ufeff").strip().split(",")]


def _header_number(cells: list[str], path, field: str, expected: str, names) -> float:
    """One number from a header row; every column must hold the same value."""
    values = []
    for cell in cells:
        try:
            value = float(cell)
        except ValueError:
            value = float("nan")
        if not np.isfinite(value):
            raise DataError(path, field, expected, repr(cell) if cell else "an empty value")
        values.append(value)
    if any(v != values[0] for v in values[1:]):
        found = ", ".join(f"{n}={v!r}" for n, v in zip(names, values))
        raise DataError(path, field, f"the same value in all {len(values)} columns", found)
    return values[0]


def read_header(path: Path, modality: str) -> tuple[float, float]:
    """Start time (UNIX s) and sample rate (Hz) from the first two lines of an E4 file."""
    names = _COLUMN_NAMES[modality]
    with open(path, encoding="utf-8", errors="replace") as handle:
        first, second = handle.readline(), handle.readline()
    start_cells, rate_cells = _header_cells(first), _header_cells(second)
    start_field, rate_field = "row 1 (start time)", "row 2 (sample rate)"
    if start_cells is None:
        raise DataError(path, start_field, "the start time in UNIX seconds", "an empty line")
    if len(start_cells) != len(names):
        check_excel_export(path, first, 1, len(names))
        expected = ("3 columns (x, y, z in 1/64 g)" if modality == ACC
                    else f"1 column ({E4_FILES[modality]} holds one value per line)")
        raise DataError(path, "columns", expected, f"{len(start_cells)} in row 1")
    start = _header_number(start_cells, path, start_field, "the start time in UNIX seconds", names)
    check_unix_time(start, path, start_field)
    if rate_cells is None:
        raise DataError(path, rate_field, "the sample rate in Hz", "nothing" if not second else "an empty line")
    if len(rate_cells) != len(names):
        check_excel_export(path, second, 2, len(names))
        raise DataError(path, "columns", f"{len(names)} column(s) in every row",
                        f"{len(rate_cells)} in row 2")
    rate = _header_number(rate_cells, path, rate_field, "the sample rate in Hz (a number)", names)
    if rate <= 0:
        raise DataError(path, rate_field, "a positive sample rate in Hz", repr(rate))
    return start, rate


def _read_samples_slowly(path: Path, names: tuple[str, ...]) -> np.ndarray:
    """Line-by-line parse that names the first bad line (used when the fast parse fails)."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()[2:]
    while lines and not lines[-1].strip():  # blank lines at the very end are harmless
        lines.pop()
    if not lines:
        raise DataError(path, "samples", "at least one sample after the two header rows",
                        "no sample rows")
    n_columns = len(names)
    cells = []
    for i, line in enumerate(lines):
        number = i + _SAMPLES_FIRST_LINE
        if not line.strip():
            raise DataError(path, f"line {number}", "a sample", "an empty line")
        row = [c.strip() for c in line.split(",")]
        if len(row) != n_columns:
            check_excel_export(path, line, number, n_columns)
            raise DataError(path, f"line {number}", f"{n_columns} comma-separated value(s)",
                            f"{len(row)} ({line.strip()!r})")
        cells.append(row)
    text = np.asarray(cells, dtype=object)
    values = np.empty(text.shape, dtype=np.float64)
    for j in range(n_columns):
        values[:, j] = pd.to_numeric(pd.Series(text[:, j], dtype=str), errors="coerce")
    bad_rows = ~np.isfinite(values).all(axis=1)
    if bad_rows.any():
        i = int(np.argmax(bad_rows))
        j = int(np.argmax(~np.isfinite(values[i])))
        cell = text[i, j]
        found = "an empty value" if cell == "" else repr(cell)
        field = f"line {i + _SAMPLES_FIRST_LINE}" if n_columns == 1 else \
            f"column {names[j]}, line {i + _SAMPLES_FIRST_LINE}"
        raise DataError(path, field, "a finite number", found)
    return values


def read_samples(path: Path, modality: str) -> np.ndarray:
    """Samples ``[n, channels]`` float64 below the two header rows.

    Fast path: pandas' C parser with a float dtype. Any failure (text, empty cells, NaN, wrong
    column count) falls back to a line-by-line parse that names the offending line.
    """
    names = _COLUMN_NAMES[modality]
    try:
        table = pd.read_csv(path, header=None, skiprows=2, dtype=np.float64, engine="c",
                            skip_blank_lines=False, encoding="utf-8")
    except pd.errors.EmptyDataError:
        raise DataError(path, "samples", "at least one sample after the two header rows",
                        "no sample rows") from None
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError):
        return _read_samples_slowly(path, names)
    values = table.to_numpy(dtype=np.float64)
    if values.shape[1] != len(names) or len(values) == 0 or not np.isfinite(values).all():
        return _read_samples_slowly(path, names)
    return values


def read_e4_file(path: str | Path, modality: str) -> Signal:
    """One E4 signal file as a :class:`Signal` at the file's own rate (windowing resamples
    other rates to the nominal E4 rate)."""
    path = require_file(path, f"an Empatica E4 {E4_FILES[modality]} export")
    start, rate = read_header(path, modality)
    values = read_samples(path, modality)
    assert values.shape[1] == CHANNELS[modality]
    with np.errstate(over="ignore"):  # values beyond float32 become inf: the quality checks name them
        values = values.astype(np.float32)
    return Signal(values, rate, start, source=str(path))


def read_tags(path: str | Path) -> np.ndarray:
    """Event marks (UNIX s) from a ``tags.csv``: one time per line; an empty file means none."""
    path = Path(path)
    if path.stat().st_size == 0:
        return np.zeros(0)
    times = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        cell = line.lstrip("\ufeff").strip().rstrip(",").strip()
        if not cell:
            continue
        try:
            value = float(cell)
        except ValueError:
            check_excel_export(path, cell, number, columns=1)
            raise DataError(path, f"line {number}", "an event time in UNIX seconds", repr(cell)) from None
        times.append(check_unix_time(value, path, f"line {number}"))
    return np.asarray(times, dtype=np.float64)


def e4_modalities_in(folders) -> set[str]:
    """Wearable modalities whose E4 signal file (any case) is a file in some of ``folders``:
    the names only, no file opened; never raises (a folder that cannot be listed holds none)."""
    by_name = {name.lower(): modality for modality, name in E4_FILES.items()}
    found: set[str] = set()
    for folder in folders:
        try:
            with os.scandir(folder) as entries:
                found |= {by_name[e.name.lower()] for e in entries
                          if e.name.lower() in by_name and e.is_file()}
        except OSError:
            continue
    return found


def _one_level_down(folder: Path) -> str:
    """A hint when E4 files sit one folder deeper (WESAD's ``S2/S2_E4_Data/``) or the folder is a
    WESAD / PPG-DaLiA subject folder (``S2/S2.pkl``); empty otherwise. Never raises."""
    try:
        inner = [p for p in Path(folder).iterdir() if p.is_dir() and find_e4_files(p)]
        pickled = Path(folder, f"{Path(folder).name}.pkl").is_file()
    except (OSError, DataError):
        return ""
    hints = []
    if len(inner) == 1:
        hints.append(f"they are one level down: e4:{inner[0]} reads them, without labels")
    if pickled:
        hints.append(f"{Path(folder).name}.pkl here looks like a WESAD or PPG-DaLiA subject: "
                     f"wesad:{Path(folder).parent} or ppgdalia:{Path(folder).parent} read it with its labels")
    return f" ({'; '.join(hints)})" if hints else ""


def read_e4_folder(folder: Path, modalities=WEARABLES, require: bool = True
                   ) -> tuple[dict[str, Signal], list[str]]:
    """Read the E4 signal files of one participant folder.

    Only modalities in ``modalities`` are read. ``require``: raise when the folder holds none
    of the four signal files. Returns ``(signals, notes)``; the notes list the tag event marks.
    """
    files = find_e4_files(folder)
    if require and not files:
        raise DataError(folder, "files", "at least one of " + ", ".join(E4_FILES.values()),
                        "none of them" + _one_level_down(folder) if folder.is_dir() else "no such folder")
    signals, notes = {}, []
    for modality, path in files.items():
        if modality not in modalities:
            continue
        signals[modality] = read_e4_file(path, modality)
    origin = min((s.start for s in signals.values()), default=None)
    for tag_file in find_tag_files(folder):
        tags = read_tags(tag_file)
        if tags.size == 0:
            continue
        if origin is None:
            marks = ", ".join(f"{t:.0f}" for t in tags)
            notes.append(f"{tag_file.name}: {tags.size} event mark(s) at UNIX s {marks}")
        else:
            marks = ", ".join(f"{t - origin:+.0f} s" for t in tags)
            notes.append(f"{tag_file.name}: {tags.size} event mark(s) at {marks} "
                         f"from the first signal start (UNIX {origin:.0f})")
    return signals, notes


def _is_participant_dir(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith((".", "_"))


class E4Reader:
    """``e4:PATH``: one E4 export folder, or a folder of them (one per participant)."""

    #: what this format can hold: the default modalities of a data set read with it
    modalities = WEARABLES

    def participants(self, root: Path) -> list[str]:
        root = Path(root)
        if find_e4_files(root):
            return [root.name]
        if not root.is_dir():
            raise DataError(root, "path", "an E4 export folder or a folder of them", "not a folder")
        names = [p.name for p in root.iterdir() if _is_participant_dir(p)]
        if not names:
            raise DataError(root, "files", "ACC.csv, BVP.csv, EDA.csv or TEMP.csv, or participant "
                            "folders holding them", "neither")
        return sorted(names, key=natural_key)

    def source_files(self, root: Path) -> list[Path]:
        """The signal and tag files of every participant (what the data-set fingerprint
        hashes; other files in the folders are never opened)."""
        root = Path(root)
        return [p for pid in self.participants(root) for p in e4_folder_files(self.folder(root, pid))]

    def folder(self, root: Path, participant: str) -> Path:
        root = Path(root)
        if find_e4_files(root) and participant == root.name:
            return root
        return root / participant

    def found_modalities(self, root: Path) -> tuple[str, ...]:
        """The modalities whose signal files exist in some participant's folder (names only)."""
        found = e4_modalities_in(self.folder(root, pid) for pid in self.participants(root))
        return tuple(m for m in WEARABLES if m in found)

    def read(self, root: Path, participant: str, config: DataConfig | None = None) -> Recording:
        config = config or DataConfig()
        folder = self.folder(root, participant)
        signals, notes = read_e4_folder(folder, config.modalities)
        return Recording(participant=participant, signals=signals, notes=notes, source=str(folder))


READER = E4Reader()
