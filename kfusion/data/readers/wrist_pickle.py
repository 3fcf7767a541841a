"""What the WESAD and PPG-DaLiA readers share: their releases keep each subject in
``S<k>/S<k>.pkl``, a Python 2 pickle (read with ``encoding="latin1"``) of one dict whose
``signal`` -> ``wrist`` holds the Empatica E4 signals ``ACC`` ``[n, 3]`` (1/64 g), ``BVP``,
``EDA`` and ``TEMP`` ``[n, 1]`` at 32 / 64 / 4 / 4 Hz, beside integer label arrays on the same
clock.

**Pickles.** Unpickling can run code named in the file, so kfusion opens only the pickles of a
source the user names (``wesad:PATH``, ``ppgdalia:PATH``; nothing is ever downloaded or looked
for elsewhere) and with a restricted unpickler that rebuilds nothing but dicts, lists, tuples,
strings, numbers and numpy arrays / scalars: any other object in the file is an error naming it.

**Clock.** The pickle holds no date: sample 0 of every array is the start of the synchronised
recording (the chest device's start). kfusion puts that instant at the fixed nominal UNIX time
:data:`NOMINAL_START` = 1 000 000 000 (2001-09-09 01:46:40 UTC), so a window starting at UNIX
``1000000123`` starts 123 s into the recording. Wrist signals and labels keep their common
clock; none is re-aligned.
"""

from __future__ import annotations

import importlib
import os
import pickle
import re
from pathlib import Path

import numpy as np

from kfusion.modalities import ACC, BVP, CHANNELS, EDA, NOMINAL_RATES, TEMP, WEARABLES
from kfusion.data.readers.e4 import natural_key
from kfusion.data.readers.stress_predict import label_runs
from kfusion.data.recording import Signal
from kfusion.data.tables import require_file
from kfusion.errors import DataError, KfusionError

#: UNIX time given to sample 0 of a pickle (it holds no date): 2001-09-09 01:46:40 UTC.
NOMINAL_START = 1_000_000_000.0
#: Key of each wearable modality in ``signal.wrist``; rates are the E4's 32/64/4/4 Hz
#: (:data:`~kfusion.modalities.NOMINAL_RATES`).
WRIST_KEYS: dict[str, str] = {ACC: "ACC", BVP: "BVP", EDA: "EDA", TEMP: "TEMP"}
#: Subject folders of both releases: ``S2``, ``S17``.
SUBJECT_FOLDER = re.compile(r"S(\d+)")
#: A wrist signal may end this far (relative, plus 1 s) from the labels before it is an error
#: (a wrong rate or a cut file); more than 2 s is noted.
DURATION_TOLERANCE = 0.05

# (module, name) -> (modules to try, attribute): everything the restricted unpickler rebuilds.
# Python 2 pickles (the releases) name numpy.core, numpy 2 keeps it as numpy._core.
_NUMPY_CORE = ("numpy._core", "numpy.core")
_ALLOWED = {
    ("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"),
}
_ALLOWED_PLAIN = {
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    ("_codecs", "encode"): ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
    ("collections", "OrderedDict"): ("collections", "OrderedDict"),
    ("__builtin__", "set"): ("builtins", "set"), ("builtins", "set"): ("builtins", "set"),
    ("__builtin__", "frozenset"): ("builtins", "frozenset"),
    ("builtins", "frozenset"): ("builtins", "frozenset"),
}


class _Refused(Exception):
    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")
        self.what = f"{module}.{name}"


class _ArraysOnly(pickle.Unpickler):
    """Unpickler that rebuilds only plain containers, numbers, strings and numpy arrays."""

    def find_class(self, module, name):
        for prefix in ("numpy.core.", "numpy._core."):
            if module.startswith(prefix) and (module[len(prefix):], name) in _ALLOWED:
                for base in _NUMPY_CORE:
                    try:
                        return getattr(importlib.import_module(f"{base}.{module[len(prefix):]}"), name)
                    except (ImportError, AttributeError):
                        continue
        if (module, name) in _ALLOWED_PLAIN:
            target_module, target = _ALLOWED_PLAIN[(module, name)]
            return getattr(importlib.import_module(target_module), target)
        raise _Refused(module, name)


def load_pickle(path: str | os.PathLike, what: str) -> object:
    """The object in the pickle ``path`` (``encoding="latin1"``, as the Python 2 releases need),
    rebuilt by a restricted unpickler. Errors name the file and what it should hold."""
    path = require_file(path, what)
    expected = f"a Python pickle ({what})"
    head = b""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
            handle.seek(0)
            return _ArraysOnly(handle, encoding="latin1").load()
    except _Refused as refused:
        raise DataError(path, "contents", f"{what} holding only dicts, lists, strings, numbers and "
                        "numpy arrays (kfusion rebuilds nothing else from a pickle)",
                        f"a reference to {refused.what}") from None
    except KfusionError:
        raise
    except MemoryError:
        raise DataError(path, "contents", expected, "more data than fits in memory") from None
    except Exception as err:  # noqa: BLE001 - a damaged or foreign file raises anything, EOFError to KeyError
        if head.startswith(b"PK\x03\x04"):
            found = "a zip archive (unzip the release first)"
        elif head[:1] != b"\x80" and head[:1].isascii() and _looks_like_text(path):
            found = "a text file"
        else:
            found = f"unreadable ({type(err).__name__}: {err})"
        raise DataError(path, "contents", expected, found) from None


def _looks_like_text(path: Path) -> bool:
    with open(path, "rb") as handle:
        sample = handle.read(512)
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError:
        return False
    # a protocol-0 pickle is text too, but it ends with '.' and holds opcodes like "(dp0"
    return not re.match(rb"\((dp|lp)\d|c[\w.]+\n", sample)


def subject_number(name: str) -> int | None:
    """``"S2"`` -> 2 (None for any other name)."""
    match = SUBJECT_FOLDER.fullmatch(str(name).strip())
    return int(match.group(1)) if match else None


def subject_folders(root: Path, scheme: str, release: str) -> list[str]:
    """The ``S<k>`` folders of a release root, naturally sorted. A root that is itself a subject
    folder (or a pickle), or that holds the release one level down, is an error pointing to the
    right folder."""
    root = Path(root)
    expected = f"the {release} release folder holding S<k>/ subject folders (each with S<k>.pkl)"
    if root.is_file():
        hint = (f": point {scheme}: at {scheme}:{root.parent.parent}" if subject_number(root.stem) is not None
                else "")
        raise DataError(root, "path", expected, f"a file{hint}")
    if not root.is_dir():
        raise DataError(root, "path", expected, "not a folder")
    entries = [p for p in root.iterdir() if not p.name.startswith((".", "_"))]
    names = [p.name for p in entries if p.is_dir() and subject_number(p.name) is not None]
    if names:
        return sorted(names, key=natural_key)
    own = sorted(p.name for p in entries if p.is_file() and p.suffix == ".pkl"
                 and subject_number(p.stem) is not None)
    if own:
        parent = Path(os.path.abspath(root)).parent
        raise DataError(root, "folders", expected,
                        f"one subject's files directly in it ({', '.join(own)}): point {scheme}: at the "
                        f"parent folder, {scheme}:{parent}, which holds {root.name}/")
    nested = [p for p in entries if p.is_dir()
              and any(q.is_dir() and subject_number(q.name) is not None for q in p.iterdir())]
    if len(nested) == 1:
        raise DataError(root, "folders", expected,
                        f"none here, but {nested[0].name}/ holds them: use {scheme}:{nested[0]}")
    found = ", ".join(sorted(p.name + ("/" if p.is_dir() else "") for p in entries)[:8]) or "an empty folder"
    raise DataError(root, "folders", expected, found)


def subject_pickle(root: Path, participant: str, what: str) -> tuple[Path, dict]:
    """``(path, dict)`` of ``root/S<k>/S<k>.pkl``, checked to be a dict whose ``subject`` is
    this folder's subject."""
    folder = Path(root) / participant
    path = folder / f"{participant}.pkl"
    if not path.is_file() and not os.path.lexists(path) and folder.is_dir():
        others = sorted(p.name for p in folder.iterdir() if p.suffix == ".pkl")
        if others:
            raise DataError(path, "file", f"an existing file ({what}: S<k>/S<k>.pkl with one k)",
                            f"nothing; {participant}/ holds {', '.join(others)} (another subject's file?)")
    data = load_pickle(path, what)
    if not isinstance(data, dict):
        raise DataError(path, "contents", f"a dict ({what})", f"a {type(data).__name__}")
    subject = require_key(data, "subject", path, "the subject id, e.g. 'S2'")
    if isinstance(subject, bytes):
        subject = subject.decode("latin1")
    if isinstance(subject, np.ndarray) and subject.size == 1:
        subject = subject.item()
    if subject_number(str(subject)) != subject_number(participant):
        raise DataError(path, "subject", f"{participant!r} (the folder and file name)",
                        f"{subject!r} (another subject's file in this folder?)")
    return path, data


def require_key(container, key: str, path: Path, expected: str, where: str = ""):
    """``container[key]``; a missing key (or a container that is no dict) is an error naming the
    dotted path in the pickle (``signal.wrist.BVP``)."""
    field = f"{where}.{key}" if where else key
    if not isinstance(container, dict):
        raise DataError(path, where or "contents", f"a dict with the key {key!r}",
                        f"a {type(container).__name__}")
    if key not in container:
        keys = ", ".join(sorted(map(str, container))) or "none"
        raise DataError(path, field, f"a key {key!r} in {where or 'the top-level dict'} ({expected})",
                        f"keys {keys}")
    return container[key]


def numeric_array(value, path: Path, field: str, expected: str) -> np.ndarray:
    """``value`` as a non-empty numeric numpy array, or an error naming ``field``."""
    if not isinstance(value, np.ndarray):
        raise DataError(path, field, f"a numpy array ({expected})", f"a {type(value).__name__}")
    if value.dtype.kind not in "iuf":
        raise DataError(path, field, f"a numeric array ({expected})", f"dtype {value.dtype}")
    if value.size == 0:
        raise DataError(path, field, f"a non-empty array ({expected})", f"shape {list(value.shape)}")
    return value


def wrist_signals(data: dict, path: Path, modalities, reference: tuple[str, int, float]
                  ) -> tuple[dict[str, Signal], list[str]]:
    """The requested wrist signals of a release pickle as :class:`Signal` s from
    :data:`NOMINAL_START`. ``reference``: ``(field, samples, rate)`` of the label array the signals
    must span (a wrist signal more than 5 % + 1 s longer or shorter is an error: a wrong rate or a
    cut file)."""
    wanted = [m for m in WEARABLES if m in modalities]
    signals, notes = {}, []
    if not wanted:
        return signals, notes
    signal = require_key(data, "signal", path, "a dict with the keys chest and wrist")
    wrist = require_key(signal, "wrist", path, "a dict with the keys ACC, BVP, EDA, TEMP", "signal")
    ref_field, ref_samples, ref_rate = reference
    ref_seconds = ref_samples / ref_rate
    for modality in wanted:
        key, rate, channels = WRIST_KEYS[modality], NOMINAL_RATES[modality], CHANNELS[modality]
        field = f"signal.wrist.{key}"
        shape = f"[n, {channels}]" if channels > 1 else "[n, 1] or [n]"
        expected = f"{key} samples at {rate:g} Hz, shape {shape}"
        values = numeric_array(require_key(wrist, key, path, f"{key} at {rate:g} Hz", "signal.wrist"),
                               path, field, expected)
        if values.ndim == 1 and channels == 1:
            values = values[:, None]
        if values.ndim != 2 or values.shape[1] != channels:
            raise DataError(path, field, f"shape {shape} ({key} at {rate:g} Hz)",
                            f"shape {list(values.shape)}")
        seconds = values.shape[0] / rate
        gap = abs(seconds - ref_seconds)
        if gap > DURATION_TOLERANCE * ref_seconds + 1.0:
            raise DataError(path, field, f"{rate:g} Hz samples spanning the {ref_seconds:.1f} s of "
                            f"'{ref_field}' ({ref_samples} samples at {ref_rate:g} Hz)",
                            f"{values.shape[0]} samples = {seconds:.1f} s")
        if gap > 2.0:
            notes.append(f"{path.name}: {field} spans {seconds:.1f} s, '{ref_field}' {ref_seconds:.1f} s")
        with np.errstate(over="ignore"):  # beyond float32: inf, named by the quality checks
            signals[modality] = Signal(values.astype(np.float32), rate, NOMINAL_START,
                                       source=f"{path} [{field}]")
    return signals, notes


def code_array(data: dict, key: str, path: Path, codes, meaning: str) -> np.ndarray:
    """Integer label codes ``[n]`` from ``data[key]`` (shape ``[n]`` or ``[n, 1]``, any numeric
    dtype holding whole numbers); a value not in ``codes`` is an error naming its sample."""
    expected = f"integer codes {meaning}, shape [n] or [n, 1]"
    values = numeric_array(require_key(data, key, path, expected), path, key, expected)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise DataError(path, key, f"shape [n] or [n, 1] ({meaning})", f"shape {list(values.shape)}")
    allowed = np.asarray(sorted(codes), dtype=np.float64)
    as_float = values.astype(np.float64)
    bad = ~np.isin(as_float, allowed)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(path, f"{key}, sample {i}", f"an integer code {meaning}",
                        repr(float(as_float[i])) if values.dtype.kind == "f" else repr(int(values[i])))
    return as_float.astype(np.int64)


def code_runs(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximal runs of equal codes: ``(first sample, end sample (exclusive), code)``, int64 (the
    runs of :func:`~kfusion.data.readers.stress_predict.label_runs` on the sample numbers)."""
    codes = np.asarray(codes)
    first, end, run_codes = label_runs(np.arange(codes.size), codes)
    return first.astype(np.int64), end.astype(np.int64), run_codes.astype(np.int64)


def release_files(root: Path, participants, extra=lambda folder, pid: []) -> list[Path]:
    """Each subject's pickle (and ``extra(folder, pid)`` files) that exist, for the fingerprint."""
    files = []
    for pid in participants:
        folder = Path(root) / pid
        for path in [folder / f"{pid}.pkl", *extra(folder, pid)]:
            if os.path.lexists(path):
                files.append(path)
    return files
