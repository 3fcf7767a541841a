"""Reader for the K-EmoCon release (source ``kemocon:PATH``).

``PATH`` is the folder holding the release's archives extracted side by side::

    metadata/subjects.csv                        pid, initTime, startTime, endTime (UNIX ms)
    e4_data/<pid>/E4_{ACC,BVP,EDA,TEMP,HR,IBI}.csv
        timestamp (UNIX ms, float), value (ACC: x, y, z in 1/64 g), device_serial, ...
    emotion_annotations/self_annotations/P<pid>.self.csv
    emotion_annotations/partner_annotations/P<pid>.partner.csv
    emotion_annotations/external_annotations/P<pid>.R<k>.csv    (one file per external rater)
    emotion_annotations/aggregated_external_annotations/P<pid>.external.csv
    debate_audios/p<a>.p<b>.wav                  one per debate, both debaters

A folder extracted into a folder of its own name (``e4_data/e4_data/...``), as some copies of
the release are laid out, is accepted too.

Participants are the pids of ``subjects.csv`` as strings (``"1"``, ``"31"``). Each becomes a
:class:`~kfusion.data.recording.Recording` on the UNIX-seconds clock with ``span`` = the debate
(startTime, endTime). E4 samples carry their own timestamps (streaming API); they are put on a
regular grid at the nominal rate (aligned to startTime) by linear interpolation, with NaN inside
gaps longer than :data:`GAP_PERIODS` sample periods. Annotation row ``k`` covers
``[startTime + 5k, startTime + 5(k+1))`` s once the rows that do not fit in the debate are
dropped from the start. Assumptions (not documented by the release): the debate audio starts at
startTime, and a stereo file ``p<a>.p<b>.wav`` holds ``a`` in channel 0 and ``b`` in channel 1.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kfusion.config import DataConfig
from kfusion.modalities import ACC, BVP, EDA, MODALITIES, NOMINAL_RATES, SPEECH, TEMP
from kfusion.data.recording import Audio, LabelIntervals, Recording, Signal
from kfusion.data.tables import MAX_SPAN_SECONDS, check_unix_time, check_unix_times, read_table, require_file
from kfusion.errors import DataError

#: E4 file of each wearable modality and its value columns.
E4_FILES: dict[str, str] = {ACC: "E4_ACC.csv", BVP: "E4_BVP.csv", EDA: "E4_EDA.csv",
                            TEMP: "E4_TEMP.csv"}
E4_VALUE_COLUMNS: dict[str, tuple[str, ...]] = {ACC: ("x", "y", "z"), BVP: ("value",),
                                                EDA: ("value",), TEMP: ("value",)}
#: Participants whose E4 files hold rows of several devices: the device to keep
#: (``"*"`` = every file not listed by name).
DEVICE_SERIALS: dict[str, dict[str, str]] = {
    "31": {"*": "A013E1", "E4_IBI.csv": "A01525"},
    "32": {"*": "A01A3A"},
}
#: Raw annotation columns kept, with their valid rating range.
RATING_RANGES: dict[str, tuple[int, int]] = {
    "arousal": (1, 5), "valence": (1, 5),
    "cheerful": (1, 4), "happy": (1, 4), "angry": (1, 4), "nervous": (1, 4), "sad": (1, 4),
}
#: Annotation folder and file name pattern of each perspective (``external`` also accepts one
#: file per rater, ``P<pid>.R<k>.csv``, combined by their per-row median).
ANNOTATION_FILES: dict[str, tuple[str, str]] = {
    "self": ("self_annotations", "P{pid}.self.csv"),
    "partner": ("partner_annotations", "P{pid}.partner.csv"),
    "external": ("external_annotations", "P{pid}.external.csv"),
    "aggregated_external": ("aggregated_external_annotations", "P{pid}.external.csv"),
}
SLOT_SECONDS = 5.0          # one annotation row per 5 s of debate
GAP_PERIODS = 2.5           # sample intervals longer than this many periods are left as NaN
RATE_TOLERANCE = 0.10       # allowed relative error of the median sampling interval
ZERO_EDA_FRACTION = 0.95    # EDA at least this much zero gets a warning note
_AUDIO_NAME = re.compile(r"^p0*(\d+)\.p0*(\d+)\.wav$", re.IGNORECASE)
_SUBJECT_COLUMNS = ["pid", "initTime", "startTime", "endTime"]


@dataclass(frozen=True)
class Subject:
    """One row of ``subjects.csv``; times in UNIX seconds (``init`` may be NaN)."""

    pid: str
    init: float
    start: float
    end: float


def folder(root: Path, name: str) -> Path:
    """``root/name``, or ``root/name/name`` when an archive was extracted into its own name."""
    nested = Path(root) / name / name
    return nested if nested.is_dir() else Path(root) / name


def read_subjects(root: Path) -> dict[str, Subject]:
    """Read ``metadata/subjects.csv`` into ``{pid: Subject}`` (pids as strings, file order)."""
    path = folder(root, "metadata") / "subjects.csv"
    table = read_table(path, _SUBJECT_COLUMNS, numeric=["pid", "startTime", "endTime"],
                       optional_numeric=["initTime"], what="K-EmoCon subjects (pid, times in UNIX ms)")
    subjects: dict[str, Subject] = {}
    for i, row in enumerate(table[_SUBJECT_COLUMNS].itertuples(index=False)):
        line = i + 2
        pid_value, init_ms, start_ms, end_ms = (float(v) for v in row)
        if pid_value != int(pid_value) or pid_value < 0:
            raise DataError(path, f"column 'pid', line {line}", "a whole participant number", pid_value)
        pid = str(int(pid_value))
        if pid in subjects:
            raise DataError(path, f"column 'pid', line {line}", "each pid once", f"pid {pid} again")
        check_unix_time(start_ms, path, f"column 'startTime', line {line}", unit="ms")
        check_unix_time(end_ms, path, f"column 'endTime', line {line}", unit="ms")
        if not end_ms > start_ms:
            raise DataError(path, f"column 'endTime', line {line}",
                            f"a time after startTime ({start_ms!r})", end_ms)
        subjects[pid] = Subject(pid, init_ms / 1000.0, start_ms / 1000.0, end_ms / 1000.0)
    return subjects


# --------------------------------------------------------------------------- E4 files

def _read_e4_columns(path: Path, value_columns: tuple[str, ...]) -> pd.DataFrame:
    """Read timestamp, value columns and device_serial (if present) with numbers checked.

    A fast pandas parse is tried first; anything odd falls back to :func:`read_table`, whose
    error names the column and line."""
    wanted = {"timestamp", *value_columns, "device_serial"}
    numeric = ["timestamp", *value_columns]
    require_file(path, "an Empatica E4 signal table")
    try:
        table = pd.read_csv(path, usecols=lambda c: str(c).strip() in wanted,
                            skipinitialspace=True, dtype={"device_serial": str})
        table.columns = [str(c).strip() for c in table.columns]
        fast = (len(table) > 0 and all(c in table.columns for c in numeric)
                and all(table[c].dtype.kind in "fi" for c in numeric)
                and bool(np.isfinite(table[numeric].to_numpy(dtype=np.float64)).all()))
    except Exception:  # noqa: BLE001 - any parse problem: the careful path below reports it precisely
        fast = False
    if not fast:
        table = read_table(path, numeric, numeric=numeric, what="an Empatica E4 signal table")
    if "device_serial" in table.columns:
        table["device_serial"] = table["device_serial"].astype(str).str.strip()
    return table


def read_e4_samples(path: Path, participant: str, value_columns: tuple[str, ...]
                    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read one K-EmoCon E4 file: ``(times [n] UNIX s, values [n, c] float64, notes)``.

    Rows of other devices are dropped (:data:`DEVICE_SERIALS`, else the device with the most
    rows), then exact duplicate rows; a conflicting duplicate or decreasing timestamp raises.
    """
    path = Path(path)
    table = _read_e4_columns(path, value_columns)
    notes: list[str] = []
    keep = _device_rows(path, participant, table, notes)
    lines = np.flatnonzero(keep) + 2  # file line numbers (header = line 1)
    times_ms = table["timestamp"].to_numpy(dtype=np.float64)[keep]
    check_unix_times(times_ms, path, "column 'timestamp'", unit="ms", first_line=lines)
    values = table[list(value_columns)].to_numpy(dtype=np.float64)[keep]
    times_ms, values, lines = _drop_duplicates_checked(path, times_ms, values, lines, notes)
    return times_ms / 1000.0, values, notes


def _device_rows(path: Path, participant: str, table: pd.DataFrame, notes: list[str]) -> np.ndarray:
    """Boolean mask of the rows of the device this participant wore."""
    n = len(table)
    rule = DEVICE_SERIALS.get(str(participant), {})
    wanted = rule.get(path.name, rule.get("*"))
    if "device_serial" not in table.columns:
        if wanted is not None:
            raise DataError(path, "header", f"a device_serial column (rows of device {wanted} are "
                            f"kept for participant {participant})", "no such column")
        return np.ones(n, dtype=bool)
    serials = table["device_serial"].to_numpy(dtype=object)
    present, counts = np.unique(serials.astype(str), return_counts=True)
    if wanted is None:
        if len(present) <= 1:
            return np.ones(n, dtype=bool)
        wanted = str(present[np.argmax(counts)])
        reason = "the device with the most rows"
    elif wanted not in present:
        if len(present) == 1:
            notes.append(f"{path.name}: device {present[0]} kept (expected {wanted} for participant "
                         f"{participant}; it is the only device in the file)")
            return np.ones(n, dtype=bool)
        raise DataError(path, "column 'device_serial'", f"rows of device {wanted} (participant "
                        f"{participant})", f"only devices {', '.join(map(str, present))}")
    else:
        reason = f"the device of participant {participant}"
    keep = serials == wanted
    dropped = int(n - keep.sum())
    if dropped:
        notes.append(f"{path.name}: kept device_serial {wanted} ({reason}); dropped {dropped} "
                     f"row(s) of device(s) {', '.join(str(s) for s in present if s != wanted)}")
    return keep


def _drop_duplicates_checked(path: Path, times_ms: np.ndarray, values: np.ndarray,
                             lines: np.ndarray, notes: list[str]):
    """Drop rows repeating the previous row exactly; raise on any other non-increasing time."""
    if times_ms.size < 2:
        return times_ms, values, lines
    step = np.diff(times_ms)
    repeat = step == 0
    exact = repeat & np.all(values[1:] == values[:-1], axis=1)
    conflict = (repeat & ~exact) | (step < 0)
    if conflict.any():
        i = int(np.argmax(conflict)) + 1
        kind = ("a duplicate timestamp with different values" if step[i - 1] == 0
                else "a decreasing timestamp")
        raise DataError(path, f"column 'timestamp', line {lines[i]}", "strictly increasing timestamps",
                        f"{kind} ({times_ms[i]!r} after {times_ms[i - 1]!r} on line {lines[i - 1]})")
    if exact.any():
        keep = np.concatenate([[True], ~exact])
        notes.append(f"{path.name}: dropped {int(exact.sum())} exact duplicate row(s)")
        return times_ms[keep], values[keep], lines[keep]
    return times_ms, values, lines


def regular_grid(times: np.ndarray, values: np.ndarray, rate: float, origin: float,
                 path: Path | str = "") -> tuple[float, np.ndarray, float]:
    """Put timestamped samples on the grid ``origin + k / rate`` (UNIX s).

    Linear interpolation between neighbouring samples; grid points inside an interval longer
    than :data:`GAP_PERIODS` periods are NaN. Returns ``(start, values [m, c] float32,
    seconds in gaps)``. Raises if the median interval is off the nominal rate by more than
    :data:`RATE_TOLERANCE`.
    """
    period = 1.0 / rate
    if times.size < 2:
        raise DataError(path, "rows", f"at least two samples at {rate:g} Hz", f"{times.size}")
    step = np.diff(times)
    median = float(np.median(step))
    if abs(median / period - 1.0) > RATE_TOLERANCE:
        raise DataError(path, "column 'timestamp'",
                        f"a median sampling interval of {period * 1000:.2f} ms ({rate:g} Hz nominal)",
                        f"{median * 1000:.3f} ms: rate inconsistent with timestamps")
    if times[-1] - times[0] > MAX_SPAN_SECONDS:  # the grid is sized by the time span
        jump = int(np.argmax(step))
        raise DataError(path, "column 'timestamp'",
                        f"samples spanning at most {MAX_SPAN_SECONDS / 86400:g} days",
                        f"{times[0]:.3f} .. {times[-1]:.3f} UNIX s (a jump of {step[jump]:.0f} s "
                        f"after {times[jump]:.3f})")
    first = math.ceil((times[0] - origin) * rate - 1e-6)
    last = math.floor((times[-1] - origin) * rate + 1e-6)
    grid = origin + np.arange(first, last + 1, dtype=np.float64) / rate
    out = np.empty((grid.size, values.shape[1]), dtype=np.float32)
    for c in range(values.shape[1]):
        out[:, c] = np.interp(grid, times, values[:, c])
    long_gap = step > GAP_PERIODS * period
    gap_seconds = 0.0
    if long_gap.any():
        left = np.clip(np.searchsorted(times, grid, side="right") - 1, 0, times.size - 2)
        inside = long_gap[left] & (grid > times[left]) & (grid < times[left + 1])
        out[inside] = np.nan
        gap_seconds = float(step[long_gap].sum())
    return float(origin + first / rate), out, gap_seconds


def read_signal(path: Path, participant: str, modality: str, origin: float,
                span: tuple[float, float] | None = None) -> tuple[Signal, list[str]]:
    """Read one E4 file of ``modality`` into a regular :class:`Signal` (grid aligned to
    ``origin``); ``span`` only scopes the coverage notes."""
    rate = NOMINAL_RATES[modality]
    times, values, notes = read_e4_samples(path, participant, E4_VALUE_COLUMNS[modality])
    start, grid_values, gap_seconds = regular_grid(times, values, rate, origin, path)
    if gap_seconds > 0:
        notes.append(f"{Path(path).name}: {gap_seconds:.1f} s in gaps longer than {GAP_PERIODS:g} "
                     "sample periods left as NaN")
    signal = Signal(grid_values, rate, start, source=str(path))
    if span is not None and (signal.end <= span[0] or signal.start >= span[1]):
        notes.append(f"{Path(path).name}: no samples during the debate "
                     f"({signal.start:.0f}-{signal.end:.0f} s vs {span[0]:.0f}-{span[1]:.0f} s)")
    return signal, notes


def _eda_zero_note(signal: Signal, span: tuple[float, float]) -> str | None:
    values = signal.values[:, 0]
    first = max(0, int((span[0] - signal.start) * signal.rate))
    last = max(first, int((span[1] - signal.start) * signal.rate))
    part = values[first:last] if last - first > 0 else values
    part = part[np.isfinite(part)]
    if part.size == 0:
        return None
    zeros = float(np.mean(np.abs(part) < 1e-6))
    if zeros >= ZERO_EDA_FRACTION:
        return (f"warning: EDA is {100 * zeros:.1f} % zeros during the debate (no skin contact?); "
                "its windows carry no information")
    return None


# --------------------------------------------------------------------------- annotations

def annotation_path(root: Path, participant: str, perspective: str) -> Path:
    """Where the ``perspective`` annotation file of ``participant`` is expected."""
    sub, pattern = ANNOTATION_FILES[perspective]
    return folder(root, "emotion_annotations") / sub / pattern.format(pid=participant)


def _read_ratings(path: Path, n_max: int) -> tuple[dict[str, np.ndarray], int]:
    """Rating columns of one annotation file, range-checked, with the rows that do not fit in
    the debate dropped from the start. Returns ``(columns, rows dropped)``."""
    names = list(RATING_RANGES)
    table = read_table(path, names, optional_numeric=names + ["seconds"],
                       what="K-EmoCon emotion annotations")
    columns = {}
    for name, (low, high) in RATING_RANGES.items():
        values = table[name].to_numpy(dtype=np.float64)
        bad = np.isfinite(values) & ((values < low) | (values > high))
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(path, f"column '{name}', line {i + 2}",
                            f"a rating in {low}..{high} (or empty)", values[i])
        columns[name] = values
    dropped = max(0, len(table) - n_max)
    return {k: v[dropped:] for k, v in columns.items()}, dropped


def read_labels(root: Path, subject: Subject, perspective: str) -> tuple[LabelIntervals, list[str]]:
    """The ``perspective`` annotations of ``subject`` as 5-s intervals from startTime."""
    n_max = int(math.floor((subject.end - subject.start) / SLOT_SECONDS + 1e-9))
    path = annotation_path(root, subject.pid, perspective)
    notes: list[str] = []
    if perspective == "external" and not path.is_file():
        columns, source = _read_rater_files(path, subject.pid, n_max, notes)
    else:
        if not path.is_file():
            raise DataError(path, "file", f"the {perspective} annotations of participant "
                            f"{subject.pid}", "nothing")
        columns, dropped = _read_ratings(path, n_max)
        source = str(path)
        if dropped:
            notes.append(f"{path.name}: dropped {dropped} row(s) from the start that do not fit "
                         f"in the debate ({n_max} x {SLOT_SECONDS:g} s)")
    k = len(next(iter(columns.values())))
    starts = subject.start + SLOT_SECONDS * np.arange(k, dtype=np.float64)
    labels = LabelIntervals(starts, starts + SLOT_SECONDS, columns, source=source, scheme="kemocon")
    return labels, notes


def _read_rater_files(path: Path, pid: str, n_max: int, notes: list[str]):
    """Combine per-rater external files ``P<pid>.R<k>.csv``: rows aligned at their end,
    per-row median over the raters who rated, rounded half up."""
    pattern = re.compile(rf"^P0*{int(pid)}\.R(\d+)\.csv$", re.IGNORECASE)
    raters = sorted((p for p in path.parent.glob("*.csv") if pattern.match(p.name)),
                    key=lambda p: int(pattern.match(p.name).group(1))) if path.parent.is_dir() else []
    if not raters:
        raise DataError(path, "file", f"the external annotations of participant {pid} "
                        f"({path.name}, or one file per rater P{pid}.R<k>.csv)", "nothing")
    per_rater = [_read_ratings(p, n_max)[0] for p in raters]
    k = min(len(r["arousal"]) for r in per_rater)
    columns = {}
    for name in RATING_RANGES:
        stack = np.stack([r[name][len(r[name]) - k:] for r in per_rater])
        rated = np.isfinite(stack).any(axis=0)
        median = np.full(k, np.nan)
        if rated.any():
            median[rated] = np.nanmedian(stack[:, rated], axis=0)
        columns[name] = np.floor(median + 0.5)
    notes.append(f"external annotations: per-row median of {len(raters)} rater file(s) "
                 f"({', '.join(p.name for p in raters)})")
    return columns, ";".join(str(p) for p in raters)


# --------------------------------------------------------------------------- audio

def find_debate_audio(root: Path, participant: str) -> tuple[Path, int] | None:
    """The debate audio file naming ``participant`` and the channel index of that participant
    (0 = first-named), or None."""
    audio_dir = folder(root, "debate_audios")
    if not audio_dir.is_dir():
        return None
    matches = []
    for entry in sorted(audio_dir.iterdir()):
        found = _AUDIO_NAME.match(entry.name)
        if found and entry.is_file():
            pids = [str(int(g)) for g in found.groups()]
            if str(participant) in pids:
                matches.append((entry, pids.index(str(participant))))
    if len(matches) > 1:
        raise DataError(audio_dir, "file name", f"one debate audio naming participant {participant}",
                        ", ".join(p.name for p, _ in matches))
    return matches[0] if matches else None


def read_debate_audio(path: Path, channel: int, start: float) -> tuple[Audio, list[str]]:
    """Read this participant's channel of a debate WAV (stereo) or the whole mono file."""
    import soundfile as sf

    path = Path(path)
    try:
        info = sf.info(str(path))
        if info.frames <= 0:
            raise DataError(path, "frames", "a non-empty debate recording", "0 audio frames")
        if info.channels > 2:
            raise DataError(path, "channels", "1 (mono) or 2 (one debater per channel)",
                            info.channels)
        parts = [block[:, channel if info.channels == 2 else 0].copy()
                 for block in sf.blocks(str(path), blocksize=1 << 20, dtype="float32", always_2d=True)]
    except DataError:
        raise
    except (RuntimeError, sf.SoundFileError, ValueError, OSError, EOFError) as err:
        raise DataError(path, "contents", "a readable WAV file", f"unreadable ({err})") from None
    samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    if samples.size == 0:
        raise DataError(path, "frames", "a non-empty debate recording", "0 audio frames")
    notes = []
    if info.channels == 1:
        channel = 0
        notes.append(f"{path.name}: mono debate audio: both speakers' speech in this "
                     "participant's windows")
    return Audio(samples, int(info.samplerate), start, source=f"{path}#channel{channel}"), notes


# --------------------------------------------------------------------------- reader

class KEmoConReader:
    """``participants(root)`` and ``read(root, participant, config)`` for K-EmoCon."""

    def participants(self, root: Path) -> list[str]:
        return sorted(read_subjects(Path(root)), key=int)

    def found_modalities(self, root: Path) -> tuple[str, ...]:
        """The modalities the release copy holds files of: an ``E4_<modality>.csv`` in some
        ``e4_data/<pid>/`` folder, a ``debate_audios/p<a>.p<b>.wav`` (names only, nothing read): a
        copy extracted without one of the release's archives defaults to what it has."""
        found: set[str] = set()
        e4_root = folder(root, "e4_data")
        try:
            participants = [p for p in e4_root.iterdir() if p.is_dir()] if e4_root.is_dir() else []
        except OSError:
            participants = []
        for modality, name in E4_FILES.items():
            if any((p / name).is_file() for p in participants):
                found.add(modality)
        audio_dir = folder(root, "debate_audios")
        try:
            if audio_dir.is_dir() and any(_AUDIO_NAME.match(p.name) and p.is_file() for p in audio_dir.iterdir()):
                found.add(SPEECH)
        except OSError:
            pass
        return tuple(m for m in MODALITIES if m in found)

    def read(self, root: Path, participant: str, config: DataConfig) -> Recording:
        root = Path(root)
        subjects = read_subjects(root)
        pid = str(participant).strip()
        if pid not in subjects:
            raise DataError(folder(root, "metadata") / "subjects.csv", "pid",
                            f"one of {', '.join(sorted(subjects, key=int))}", pid, participant=pid)
        subject = subjects[pid]
        span = (subject.start, subject.end)
        recording = Recording(participant=pid, span=span, source=str(root))
        notes = recording.notes

        e4_dir = folder(root, "e4_data") / pid
        wearables = [m for m in config.modalities if m in E4_FILES]
        if wearables and not e4_dir.is_dir():
            notes.append(f"no E4 data (no folder {e4_dir})")
        elif wearables:
            for modality in wearables:
                signal, file_notes = read_signal(e4_dir / E4_FILES[modality], pid, modality,
                                                 origin=subject.start, span=span)
                recording.signals[modality] = signal
                notes.extend(file_notes)
            if EDA in recording.signals:
                zero_note = _eda_zero_note(recording.signals[EDA], span)
                if zero_note:
                    notes.append(zero_note)

        labels, label_notes = read_labels(root, subject, config.annotations)
        recording.labels = labels
        notes.extend(label_notes)

        if SPEECH in config.modalities:
            found = find_debate_audio(root, pid)
            if found is None:
                notes.append(f"no debate audio (no {folder(root, 'debate_audios').name}/p<a>.p<b>.wav "
                             f"naming participant {pid})")
            else:
                audio, audio_notes = read_debate_audio(found[0], found[1], subject.start)
                recording.audio = audio
                notes.extend(audio_notes)
                debate = subject.end - subject.start
                if abs(audio.duration - debate) > 10.0:
                    notes.append(f"{found[0].name}: audio lasts {audio.duration:.0f} s, the debate "
                                 f"{debate:.0f} s (audio assumed to start at startTime)")
        return recording


READER = KEmoConReader()
