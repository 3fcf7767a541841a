"""Reader for the WESAD release (source ``wesad:PATH``).

WESAD (Schmidt et al., ICMI 2018): 15 subjects (``S2`` .. ``S17``; S1 and S12 are missing
from the release) in a lab protocol of baseline, stress (TSST), amusement and meditation.
``PATH`` is the unzipped release folder::

    S<k>/S<k>.pkl          Python 2 pickle (read with encoding latin1): a dict with
                           signal.wrist.ACC [n, 3] 32 Hz (1/64 g), .BVP [n, 1] 64 Hz,
                           .EDA [n, 1] 4 Hz (µS), .TEMP [n, 1] 4 Hz (°C);
                           signal.chest (RespiBAN, 700 Hz; not read); subject ('S2');
                           label [n] at 700 Hz: 1 baseline, 2 stress, 3 amusement,
                           4 meditation; 0 and 5-7 are not annotated
    S<k>/S<k>_quest.csv    optional: protocol and self-reports, ';'-separated lines
                           "# ORDER;Base;TSST;Medi 1;Fun;Medi 2;sRead;fRead",
                           "# START;..." / "# END;..." (minutes.seconds from the chest
                           device's start: 7.08 = 7 min 8 s, 50.3 = 50 min 30 s),
                           "# PANAS;...", "# STAI;...", "# DIM;valence;arousal" (SAM, 1-9;
                           one line per rated condition, in ORDER without the readings),
                           "# SSSQ;..."
    S<k>/S<k>_E4_Data/     the unzipped E4 Connect export: not read here (``e4:`` reads it,
                           without labels: its clock is the E4's own, not the protocol's)

Participant ids are the folder names (``S2`` .. ``S17``). Only the pickles of the folder the
user names are opened, with a restricted unpickler (dicts, strings, numbers and numpy arrays
only; see :mod:`kfusion.data.readers.wrist_pickle`).

**Clock.** The wrist signals and ``label`` share the pickle's clock; it is kept, with sample 0
at the nominal UNIX time 1 000 000 000 (:data:`~kfusion.data.readers.wrist_pickle.NOMINAL_START`;
the pickle holds no date). ``label`` sample ``i`` covers ``[i, i + 1) / 700`` s.

**Targets** (``LabelIntervals`` scheme ``classes``; one interval per run of one label code):

* ``condition``: ``baseline``, ``stress``, ``amusement`` (codes 1-3), plus ``meditation``
  (code 4) with ``DataConfig(meditation=True)`` / ``--meditation``; without it meditation
  periods are unlabelled for every target (the usual three-class WESAD set-up).
* ``stress``: ``non-stress`` / ``stress`` (as for Stress-Predict): stress = TSST, non-stress =
  baseline and amusement (and meditation when included).
* ``arousal`` / ``valence`` (only with ``S<k>_quest.csv``): the SAM rating of the condition a
  label run belongs to (``# DIM`` lines, matched to ``# ORDER``'s rated conditions in order),
  mapped onto kfusion's three levels by the K-EmoCon cut points on the 1-9 scale stretched onto
  1-5 (``(r + 1) / 2``): 1-3 low, 4-6 neutral, 7-9 high. A condition rated twice (``Medi 1``,
  ``Medi 2``) gives the k-th rating to the k-th run of its code; if the runs and ratings do not
  pair up, each run takes the rating whose ``START``/``END`` midpoint is nearest. Without the
  questionnaire file the conditions are still there (with a note).

Codes 0 and 5-7 are never labelled. Errors name the file, the key in the pickle (dotted:
``signal.wrist.BVP``) or the questionnaire line, and what was expected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kfusion.config import DataConfig
from kfusion.data.labels import LEVELS, bin_levels
from kfusion.modalities import WEARABLES
from kfusion.data.readers.stress_predict import STRESS_CLASSES
from kfusion.data.readers.wrist_pickle import (NOMINAL_START, code_array, code_runs, release_files,
                                               subject_folders, subject_pickle, wrist_signals)
from kfusion.data.recording import LabelIntervals, Recording
from kfusion.errors import DataError

LABEL_KEY = "label"
LABEL_RATE = 700.0
#: WESAD label codes -> condition; 0 and 5-7 are not annotated.
CONDITIONS: dict[int, str] = {1: "baseline", 2: "stress", 3: "amusement", 4: "meditation"}
MEDITATION = 4
STRESS_CODE = 2
LABEL_CODES = tuple(range(8))
LABEL_MEANING = "0-7 (1 baseline, 2 stress, 3 amusement, 4 meditation; 0 and 5-7 not annotated)"
SAM_RANGE = (1.0, 9.0)
QUEST_SUFFIX = "_quest.csv"
#: ``# ORDER`` entries (lower case, without spaces) -> label code; readings carry no ratings.
_QUEST_CONDITIONS = {"base": 1, "tsst": 2, "fun": 3}
_MEDI = re.compile(r"medi\d*")
_READING = re.compile(r"[a-z]?read")


def sam_levels(ratings: np.ndarray) -> np.ndarray:
    """SAM ratings 1-9 -> int64 levels (0 low 1-3, 1 neutral 4-6, 2 high 7-9; NaN -> -1): the
    K-EmoCon cut points (:func:`kfusion.data.labels.bin_levels`) on ``(r + 1) / 2``."""
    ratings = np.asarray(ratings, dtype=np.float64)
    return bin_levels((ratings + 1.0) / 2.0)


@dataclass
class Quest:
    """What the reader takes from ``S<k>_quest.csv``: the ``# ORDER`` entries, their label code
    (None for readings), ``# START`` / ``# END`` in seconds from the chest device's start (None
    when absent), and per rated entry (ORDER without readings) its ``(valence, arousal)``."""

    path: Path
    order: list
    codes: list
    start: list | None
    end: list | None
    ratings: dict = field(default_factory=dict)  # ORDER index -> (valence, arousal)


def quest_seconds(cell: str, path: Path, field: str) -> float:
    """A ``# START`` / ``# END`` cell, minutes.seconds (``7.08`` = 7 min 8 s; ``50.3`` =
    50 min 30 s, a trailing zero dropped as spreadsheets do), as seconds."""
    match = re.fullmatch(r"(\d+)(?:\.(\d{1,2}))?", cell)
    expected = ("a time as minutes.seconds from the chest device's start "
                "(7.08 = 7 min 8 s, 50.3 = 50 min 30 s)")
    if not match:
        raise DataError(path, field, expected, repr(cell) if cell else "an empty cell")
    seconds = int(match.group(2).ljust(2, "0")) if match.group(2) else 0
    if seconds >= 60:
        raise DataError(path, field, expected, f"{cell!r} ({seconds} seconds)")
    return int(match.group(1)) * 60.0 + seconds


def _cells(line: str) -> list[str]:
    cells = [c.strip() for c in line.split(";")]
    while len(cells) > 1 and not cells[-1]:
        cells.pop()
    return cells


def read_quest(path: Path) -> Quest:
    """Parse ``S<k>_quest.csv`` (``;``-separated, trailing empty cells, ``# KEY`` lines; the
    PANAS, STAI and SSSQ lines are not used)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin1")
    lines: dict[str, list[tuple[int, list[str]]]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        cells = _cells(line)
        if not cells[0].startswith("#"):
            continue
        key = cells[0].lstrip("#").strip().upper()
        lines.setdefault(key, []).append((number, cells[1:]))
    order_lines = lines.get("ORDER", [])
    if len(order_lines) != 1:
        raise DataError(path, "# ORDER line", "one line '# ORDER;Base;TSST;Medi 1;Fun;Medi 2;...'",
                        f"{len(order_lines)} such lines")
    number, order = order_lines[0]
    codes = []
    for i, entry in enumerate(order):
        name = entry.lower().replace(" ", "").replace("_", "")
        if name in _QUEST_CONDITIONS:
            codes.append(_QUEST_CONDITIONS[name])
        elif _MEDI.fullmatch(name):
            codes.append(MEDITATION)
        elif _READING.fullmatch(name):
            codes.append(None)
        else:
            raise DataError(path, f"line {number} (# ORDER), entry {i + 1}",
                            "a condition Base, TSST, Fun, Medi 1, Medi 2 or a reading (sRead, fRead, bRead)",
                            repr(entry) if entry else "an empty cell")
    if not order:
        raise DataError(path, f"line {number} (# ORDER)", "the conditions in protocol order", "none")
    times = {}
    for key in ("START", "END"):
        found = lines.get(key, [])
        if not found:
            times[key] = None
            continue
        if len(found) > 1:
            raise DataError(path, f"# {key} line", f"one '# {key}' line", f"{len(found)} (lines "
                            f"{', '.join(str(n) for n, _ in found)})")
        line_number, cells = found[0]
        if len(cells) != len(order):
            raise DataError(path, f"line {line_number} (# {key})",
                            f"{len(order)} times, one per # ORDER entry", f"{len(cells)}")
        times[key] = [quest_seconds(c, path, f"line {line_number} (# {key}), entry {i + 1} ({order[i]})")
                      for i, c in enumerate(cells)]
    rated = [i for i, code in enumerate(codes) if code is not None]
    dims = lines.get("DIM", [])
    names = ", ".join(order[i] for i in rated)
    if len(dims) != len(rated):
        raise DataError(path, "# DIM lines", f"{len(rated)} lines '# DIM;valence;arousal', one per rated "
                        f"condition of # ORDER ({names})", f"{len(dims)}")
    ratings = {}
    for i, (line_number, cells) in zip(rated, dims):
        pair = []
        for j, what in enumerate(("valence", "arousal")):
            cell = cells[j] if j < len(cells) else ""
            field_name = f"line {line_number} (# DIM for {order[i]}), {what}"
            if not cell:
                pair.append(np.nan)
                continue
            try:
                value = float(cell)
            except ValueError:
                value = np.nan
            if not np.isfinite(value) or not SAM_RANGE[0] <= value <= SAM_RANGE[1]:
                raise DataError(path, field_name, "a SAM rating from 1 to 9 (or an empty cell)", repr(cell))
            pair.append(value)
        ratings[i] = tuple(pair)
    return Quest(path, list(order), codes, times["START"], times["END"], ratings)


def _run_ratings(quest: Quest, first: np.ndarray, end: np.ndarray, codes: np.ndarray,
                 notes: list[str]) -> np.ndarray:
    """``[runs, 2]`` (valence, arousal) of each label run from the questionnaire (NaN where no
    rating belongs to it)."""
    out = np.full((codes.size, 2), np.nan)
    for code in sorted(set(codes.tolist())):
        entries = [i for i, c in enumerate(quest.codes) if c == code and i in quest.ratings]
        runs = np.flatnonzero(codes == code)
        if not entries:
            notes.append(f"{quest.path.name}: no rating for {CONDITIONS[code]} (label {code})")
            continue
        if quest.start is not None:
            entries.sort(key=lambda i: quest.start[i])
        if len(entries) == 1:
            chosen = [entries[0]] * runs.size
        elif len(entries) == runs.size:
            chosen = entries
        elif quest.start is not None and quest.end is not None:
            middle = np.array([(quest.start[i] + quest.end[i]) / 2 for i in entries])
            run_middle = (first[runs] + end[runs]) / 2 / LABEL_RATE
            chosen = [entries[int(np.argmin(np.abs(middle - t)))] for t in run_middle]
            notes.append(f"{quest.path.name}: {runs.size} periods of {CONDITIONS[code]} for "
                         f"{len(entries)} ratings ({', '.join(quest.order[i] for i in entries)}): "
                         "each takes the rating whose # START/# END is nearest")
        else:
            notes.append(f"{quest.path.name}: {runs.size} periods of {CONDITIONS[code]} for "
                         f"{len(entries)} ratings and no # START/# END to pair them: not rated")
            continue
        for run, entry in zip(runs, chosen):
            out[run] = quest.ratings[entry]
    return out


class WesadReader:
    """``wesad:PATH`` with PATH the unzipped WESAD release (``S2/`` .. ``S17/``)."""

    modalities = WEARABLES
    description = ("WESAD release: S<k>/S<k>.pkl wrist signals + 700 Hz protocol labels "
                   "(condition, stress), S<k>_quest.csv SAM ratings (arousal, valence)")

    def participants(self, root: Path) -> list[str]:
        return subject_folders(root, "wesad", "WESAD")

    def source_files(self, root: Path) -> list[Path]:
        """Each subject's pickle and questionnaire (the E4 folders and the rest are never opened)."""
        return release_files(root, self.participants(root),
                             lambda folder, pid: [folder / f"{pid}{QUEST_SUFFIX}"])

    def read(self, root: Path, participant: str, config: DataConfig | None = None) -> Recording:
        config = config or DataConfig()
        path, data = subject_pickle(root, participant, "the WESAD subject pickle S<k>/S<k>.pkl")
        codes = code_array(data, LABEL_KEY, path, LABEL_CODES, LABEL_MEANING)
        signals, notes = wrist_signals(data, path, config.modalities,
                                       (LABEL_KEY, codes.size, LABEL_RATE))
        meditation = config.meditation
        included = [1, 2, 3] + ([MEDITATION] if meditation else [])
        first, end, run_codes = code_runs(codes)
        keep = np.isin(run_codes, included)
        unannotated = float(np.sum((end - first)[~np.isin(run_codes, list(CONDITIONS))])) / LABEL_RATE
        if unannotated:
            notes.append(f"{path.name}: {unannotated:.0f} s with label 0 or 5-7 (not annotated)")
        medi_seconds = float(np.sum((end - first)[run_codes == MEDITATION])) / LABEL_RATE
        if medi_seconds and not meditation:
            notes.append(f"{path.name}: {medi_seconds:.0f} s of meditation left unlabelled "
                         "(DataConfig(meditation=True) or --meditation labels it)")
        first, end, run_codes = first[keep], end[keep], run_codes[keep]
        names = tuple(CONDITIONS[c] for c in included)
        columns = {"condition": np.array([included.index(c) for c in run_codes], dtype=np.float64),
                   "stress": (run_codes == STRESS_CODE).astype(np.float64)}
        classes = {"condition": names, "stress": STRESS_CLASSES}
        quest_path = path.parent / f"{participant}{QUEST_SUFFIX}"
        if quest_path.is_file():
            quest = read_quest(quest_path)
            ratings = _run_ratings(quest, first, end, run_codes, notes)
            columns["arousal"] = sam_levels(ratings[:, 1]).astype(np.float64)
            columns["valence"] = sam_levels(ratings[:, 0]).astype(np.float64)
            for name in ("arousal", "valence"):
                columns[name][columns[name] < 0] = np.nan
                classes[name] = LEVELS
        else:
            notes.append(f"no {quest_path.name}: conditions only, no arousal/valence ratings")
        labels = LabelIntervals(start=NOMINAL_START + first / LABEL_RATE,
                                end=NOMINAL_START + end / LABEL_RATE, columns=columns,
                                source=str(path), scheme="classes", classes=classes)
        return Recording(participant=participant, signals=signals, labels=labels, notes=notes,
                         source=str(path.parent))


READER = WesadReader()
