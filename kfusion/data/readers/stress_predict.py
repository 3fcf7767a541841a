"""Reader for the Stress-Predict data set (source ``stresspredict:PATH``).

Stress-Predict (Iqbal et al., Sensors 22(21):8135, 2022; MIT licence): 35 people, about an
hour each of native Empatica E4 exports, and a 1 Hz binary stress label for participants 2-35.
``PATH`` is the data set root::

    Raw_data/S01 .. S35/         E4 exports (ACC, BVP, EDA, TEMP, HR, IBI, tags_SXX.csv)
    Processed_data/Improved_All_Combined_hr_rsp_binary.csv
                                 Participant,HR,respr,Time(sec),Label  (Time: UNIX s, 1 Hz;
                                 Label 0 = non-stress, 1 = stress)

Participant ids are the folder names (``S01`` .. ``S35``), the same ids ``e4:PATH/Raw_data``
gives; the label file's ``Participant`` number ``k`` belongs to folder ``S<k>``. Each label row
covers the second ``[t, t + 1)``; consecutive seconds with the same label are merged into one
interval (column ``stress``, classes non-stress / stress). S01 has no labels: its recording
has ``labels=None`` and a note.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from kfusion.config import DataConfig
from kfusion.modalities import WEARABLES
from kfusion.data.readers.e4 import e4_folder_files, e4_modalities_in, natural_key, read_e4_folder
from kfusion.data.recording import LabelIntervals, Recording
from kfusion.data.tables import check_increasing, check_unix_times, require_file, to_numbers
from kfusion.errors import DataError

RAW_DIR = "Raw_data"
LABEL_FILE = Path("Processed_data") / "Improved_All_Combined_hr_rsp_binary.csv"
PARTICIPANT, TIME, LABEL = "Participant", "Time(sec)", "Label"
STRESS_CLASSES = ("non-stress", "stress")


def participant_number(participant: str) -> int | None:
    """``"S02"`` -> 2 (None if the name carries no number)."""
    match = re.fullmatch(r"\D*(\d+)", participant)
    return int(match.group(1)) if match else None


def _check_columns(path: Path) -> None:
    try:
        header = pd.read_csv(path, nrows=0, encoding="utf-8", encoding_errors="replace").columns
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(path, "header", "a CSV header line", f"unreadable ({err})") from None
    header = [str(c).strip() for c in header]
    missing = [c for c in (PARTICIPANT, TIME, LABEL) if c not in header]
    if missing:
        raise DataError(path, "header", f"columns {PARTICIPANT}, {TIME}, {LABEL}",
                        f"columns {', '.join(header)} (missing {', '.join(missing)})")


def _read_label_columns(path: Path) -> dict[str, np.ndarray]:
    """The three label columns as float64; errors name the file line."""
    _check_columns(path)
    try:
        table = pd.read_csv(path, usecols=[PARTICIPANT, TIME, LABEL], dtype=np.float64,
                            engine="c", skipinitialspace=True)
        columns = {c: table[c].to_numpy(np.float64) for c in (PARTICIPANT, TIME, LABEL)}
        if all(np.isfinite(v).all() for v in columns.values()) and len(table):
            return columns
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError):
        pass
    # slow path: find the offending line
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True,
                            encoding="utf-8", encoding_errors="replace")
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(path, "contents", "a CSV table", f"unreadable ({err})") from None
    table.columns = [str(c).strip() for c in table.columns]
    if len(table) == 0:
        raise DataError(path, "rows", "at least one label row", "a header only")
    return {c: to_numbers(table[c].to_numpy(), path, c) for c in (PARTICIPANT, TIME, LABEL)}


@functools.lru_cache(maxsize=4)
def _labels_by_participant(path: str, mtime_ns: int, size: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """``{participant number: (times, labels)}`` from the label CSV, checked; cached per file
    version (the 112 k-row file is shared by all participants)."""
    path = Path(path)
    columns = _read_label_columns(path)
    pids, times, labels = columns[PARTICIPANT], columns[TIME], columns[LABEL]
    line = np.arange(len(pids)) + 2  # header is line 1
    check_unix_times(times, path, f"column '{TIME}'", first_line=2)
    bad = (pids != np.round(pids)) | (pids < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(path, f"column '{PARTICIPANT}', line {line[i]}", "a participant number",
                        repr(pids[i]))
    bad = (labels != 0) & (labels != 1)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(path, f"column '{LABEL}', line {line[i]}",
                        "0 (non-stress) or 1 (stress)", repr(labels[i]))
    out = {}
    for pid in np.unique(pids).astype(int):
        rows = np.flatnonzero(pids == pid)
        if np.any(np.diff(rows) != 1):
            i = rows[int(np.argmax(np.diff(rows) != 1)) + 1]
            raise DataError(path, f"column '{PARTICIPANT}', line {line[i]}",
                            f"the rows of participant {pid} in one block", "them split up")
        check_increasing(times[rows], path, f"column '{TIME}' (participant {pid})",
                         first_line=int(line[rows[0]]))
        out[int(pid)] = (times[rows], labels[rows])
    return out


def label_runs(times: np.ndarray, labels: np.ndarray, step: float = 1.0
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge 1 Hz label rows into intervals: each row covers ``[t, t + step)``; consecutive rows
    with the same label and no gap become one interval. Returns ``(start, end, label)``.

    Windowing labels a window by the single interval covering most of it, so one-second
    intervals would leave every 4 s window unlabelled.
    """
    times = np.asarray(times, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if times.size == 0:
        return times, times, labels
    ends = times + step
    breaks = np.flatnonzero((labels[1:] != labels[:-1]) | (times[1:] != ends[:-1])) + 1
    first = np.concatenate([[0], breaks])
    last = np.concatenate([breaks, [times.size]]) - 1
    return times[first], ends[last], labels[first]


def read_stress_labels(root: Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per participant number: label times (UNIX s, 1 Hz) and labels (0/1)."""
    path = require_file(Path(root) / LABEL_FILE, "the Stress-Predict 1 Hz stress labels")
    stat = path.stat()
    return _labels_by_participant(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


class StressPredictReader:
    """``stresspredict:PATH`` with PATH the Stress-Predict root."""

    modalities = WEARABLES

    def participants(self, root: Path) -> list[str]:
        raw = Path(root) / RAW_DIR
        if not raw.is_dir():
            raise DataError(raw, "folder", "the Stress-Predict Raw_data folder (S01 .. S35)",
                            "nothing")
        names = [p.name for p in raw.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))]
        if not names:
            raise DataError(raw, "folder", "participant folders S01 .. S35", "none")
        return sorted(names, key=natural_key)

    def source_files(self, root: Path) -> list[Path]:
        """The E4 signal and tag files of every participant and the label file."""
        root = Path(root)
        files = [p for pid in self.participants(root) for p in e4_folder_files(root / RAW_DIR / pid)]
        return files + ([root / LABEL_FILE] if os.path.lexists(root / LABEL_FILE) else [])

    def found_modalities(self, root: Path) -> tuple[str, ...]:
        """The modalities whose E4 files exist in some participant's folder (names only)."""
        root = Path(root)
        found = e4_modalities_in(root / RAW_DIR / pid for pid in self.participants(root))
        return tuple(m for m in WEARABLES if m in found)

    def read(self, root: Path, participant: str, config: DataConfig | None = None) -> Recording:
        config = config or DataConfig()
        root = Path(root)
        folder = root / RAW_DIR / participant
        signals, notes = read_e4_folder(folder, config.modalities)
        number = participant_number(participant)
        by_participant = read_stress_labels(root)
        label_path = root / LABEL_FILE
        labels = None
        if number in by_participant:
            start, end, values = label_runs(*by_participant[number])
            labels = LabelIntervals(start=start, end=end, columns={"stress": values},
                                    source=str(label_path), scheme="classes",
                                    classes={"stress": STRESS_CLASSES})
        else:
            notes.append(f"{label_path.name}: no stress labels for participant {participant} "
                         "(unlabelled; usable for self-supervised pretraining)")
        return Recording(participant=participant, signals=signals, labels=labels, notes=notes,
                         source=str(folder))


READER = StressPredictReader()
