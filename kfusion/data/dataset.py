"""Windowed data sets: every participant of one or several sources cut into model inputs.

:func:`build_dataset` reads each participant (``kfusion.data.sources``), cuts windows
(:mod:`~kfusion.data.windows`), computes features (:mod:`~kfusion.data.features`) and window
labels (:mod:`~kfusion.data.labels`), and caches the result on disk keyed by a fingerprint of
the source files' contents, the :class:`~kfusion.config.DataConfig` and the feature settings.

``contents="inputs"`` builds only what the self-supervised pretraining stages read (inputs,
presence, participants, starts, lengths): no labels, window levels, calibration statistics
beyond what the inputs need, or whole-recording physiology/prosody. Such a set says so
(``WindowedDataset.contents``) and reading what it does not hold raises :class:`ConfigError`.

Participant ids from several sources are made unique: an id found in more than one source is
prefixed with its source's scheme (``"e4-S01"``, ``"stresspredict-S01"``), or with the scheme
and the source's 1-based position when the schemes are the same too (``"e41-S01"``,
``"e42-S01"``); ids found in one source only are kept as they are.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import kfusion
from kfusion.config import DataConfig
from kfusion.data.calibration import recording_calibration
from kfusion.data.features import featurize, feature_settings
from kfusion.data.labels import UNLABELLED, window_labels
from kfusion.modalities import AUDIO_RATE, SPEECH, WEARABLES, input_shape
from kfusion.data.recording import Recording
from kfusion.data.sources import Source, get_reader, load_recordings, source_modalities
from kfusion.data.tables import read_json_file
from kfusion.data.windows import RESAMPLING, RecordingWindows, cut_windows, model_rate_series
from kfusion.errors import BadParticipantsError, ConfigError, DataError, KfusionError

#: Bump when the saved layout or the meaning of the arrays changes (invalidates caches).
DATA_FORMAT_VERSION = 2
ARRAYS_FILE = "arrays.npz"
META_FILE = "meta.json"
HASH_MEMO_FILE = "file-hashes.json"
#: What :func:`build_dataset` computes: everything, or only what pretraining reads.
CONTENTS: tuple[str, ...] = ("all", "inputs")
#: The fields an inputs-only data set does not hold.
NOT_IN_INPUTS_ONLY: tuple[str, ...] = ("labels", "classes", "levels", "calibration", "physio", "physio_names")


def check_contents(name: str, value) -> str:
    """``value`` if it is one of :data:`CONTENTS`, else :class:`ConfigError` naming ``name``."""
    from kfusion import checks

    return checks.choice(name, value, CONTENTS)


class NotBuilt:
    """Stands for a field of a data set built with ``contents="inputs"``: any use of it (an item,
    a key test, iteration, its length or truth, an array of it, an attribute) raises
    :class:`ConfigError` naming the field, so nothing takes zeros or "none" for levels, labels
    or physiology that were never computed. ``x is None`` is False."""

    def __init__(self, field: str):
        self._field = field

    def _fail(self, *args, **kwargs):
        raise ConfigError(f"WindowedDataset.{self._field}: not computed, the data set was built with "
                          "contents='inputs' (inputs, presence, participants, starts only, for "
                          "pretraining); build it with build_dataset(..., contents='all')")

    __getitem__ = __contains__ = __iter__ = __len__ = __bool__ = __array__ = _fail

    def __getattr__(self, name):
        if name.startswith("_"):  # copy / pickle protocol lookups (and _field before it is set): absence
            raise AttributeError(name)
        self._fail()

    def __repr__(self) -> str:
        return f"<{self._field}: not built (contents='inputs')>"

    def __eq__(self, other):
        return isinstance(other, NotBuilt) and other._field == self._field

    def __hash__(self):
        return hash(("NotBuilt", self._field))


# --------------------------------------------------------------------------- the data set

@dataclass
class WindowedDataset:
    """Windows of all participants, ready for the models.

    ``inputs``: modality -> float32 ``[N, T, C]`` (``config.modalities`` order; speech
    ``[N, 400, 40]`` MFCCs for 4 s), zeros where absent; ``presence``: modality -> bool ``[N]``;
    ``labels``: target -> int64 ``[N]`` (-1 = unlabelled); ``classes``: target -> class names;
    ``participants``: str ``[N]``; ``starts``: float64 ``[N]`` window start (UNIX s);
    ``fingerprint``: identifies sources + config + feature settings (and the selection, for
    a subset); ``report``: JSON-able account of the build (see :func:`build_dataset`).
    ``levels``: modality -> float32 ``[N, 2C]`` each window's calibrated level (mean and
    log-std per channel, :func:`kfusion.data.calibration.window_levels`; speech ``[N, 80]``,
    ``[N, 98]`` with prosody and cepstral flux),
    zeros where absent; ``calibration``: participant -> modality -> calibration statistics
    (:meth:`ChannelStats.to_dict`; empty without calibration). ``physio``: float32 ``[N, P]``
    physiological and prosodic features computed over each whole recording
    (:mod:`kfusion.data.physio`; NaN where undefined) named by ``physio_names``.
    ``lengths``: float32 ``[N]`` seconds of real signal per window, recorded when some source
    has segments (clip corpora: a window of an utterance shorter than the window is zero-padded
    after its real length); None when every window is real throughout.
    ``contents``: ``"all"`` or ``"inputs"`` (built for pretraining: ``labels``, ``classes``,
    ``levels``, ``calibration``, ``physio`` and ``physio_names`` are then :class:`NotBuilt`,
    whatever was passed, and reading them raises :class:`ConfigError`).
    """

    inputs: dict
    presence: dict
    labels: dict
    classes: dict
    participants: np.ndarray
    starts: np.ndarray
    config: DataConfig
    fingerprint: str = ""
    report: dict = field(default_factory=dict)
    levels: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)
    physio: np.ndarray | None = None
    physio_names: tuple = ()
    lengths: np.ndarray | None = None
    contents: str = "all"

    def __post_init__(self):
        self.contents = check_contents("WindowedDataset: contents", self.contents)
        if self.contents == "inputs":  # never the fallback below: levels of the inputs are not the set's levels
            for name in NOT_IN_INPUTS_ONLY:
                setattr(self, name, NotBuilt(name))
            return
        if not self.levels:  # built by hand without levels: raw levels of the inputs
            from kfusion.data.calibration import window_levels

            self.levels = {m: np.where(np.asarray(self.presence[m], bool)[:, None], window_levels(v), 0.0)
                           .astype(np.float32) for m, v in self.inputs.items()}

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.inputs)

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(self.labels)

    @property
    def inputs_only(self) -> bool:
        """True for a set built with ``contents="inputs"`` (no labels, levels, calibration, physio)."""
        return self.contents == "inputs"

    def without_extras(self, fingerprint: str | None = None) -> "WindowedDataset":
        """This set as ``build_dataset(..., contents="inputs")`` builds it: the same arrays
        (shared, not copied) without labels, levels, calibration and physio; ``fingerprint``:
        the inputs-only set's (default: this one's)."""
        report = {**self.report, "contents": "inputs"}
        for key in ("labels", "calibration"):
            report.pop(key, None)
        return WindowedDataset(dict(self.inputs), dict(self.presence), {}, {}, self.participants, self.starts,
                               self.config, self.fingerprint if fingerprint is None else fingerprint, report,
                               lengths=self.lengths, contents="inputs")

    def select(self, mask_or_indices) -> "WindowedDataset":
        """The windows picked by a bool mask ``[N]`` or an array of indices (order kept)."""
        picked = np.asarray(mask_or_indices)
        if picked.dtype == bool:
            if picked.shape != (len(self),):
                raise ConfigError(f"select: expected a bool mask of length {len(self)}, "
                                  f"found shape {picked.shape}")
            index = np.flatnonzero(picked)
        else:
            if picked.size and not np.issubdtype(picked.dtype, np.integer):
                raise ConfigError(f"select: expected a bool mask or integer indices, found {picked.dtype}")
            index = picked.astype(np.int64).reshape(-1)
            if index.size and (index.min() < -len(self) or index.max() >= len(self)):
                raise ConfigError(f"select: indices must lie in 0..{len(self) - 1}")
        digest = hashlib.sha256(self.fingerprint.encode() + index.tobytes()).hexdigest()[:32]
        common = dict(inputs={m: v[index] for m, v in self.inputs.items()},
                      presence={m: v[index] for m, v in self.presence.items()},
                      participants=self.participants[index], starts=self.starts[index], config=self.config,
                      fingerprint=digest, report=self.report,
                      lengths=None if self.lengths is None else self.lengths[index], contents=self.contents)
        if self.inputs_only:
            return WindowedDataset(labels={}, classes={}, **common)
        kept = set(np.asarray(self.participants)[index].astype(str).tolist())
        return WindowedDataset(
            labels={t: v[index] for t, v in self.labels.items()}, classes=dict(self.classes),
            levels={m: v[index] for m, v in self.levels.items()},
            calibration={p: c for p, c in self.calibration.items() if p in kept},
            physio=None if self.physio is None else self.physio[index], physio_names=self.physio_names,
            **common)

    def subset(self, participants) -> "WindowedDataset":
        """Windows of the given participant ids."""
        wanted = [str(p) for p in ([participants] if isinstance(participants, str) else participants)]
        known = set(self.participant_ids())
        unknown = [p for p in wanted if p not in known]
        if unknown:
            raise ConfigError(f"unknown participant(s) {', '.join(unknown)}: expected some of "
                              f"{', '.join(self.participant_ids())}")
        return self.select(np.isin(self.participants, wanted))

    def labelled(self, target: str) -> "WindowedDataset":
        """Only the windows that have a label for ``target``."""
        if target not in self.labels:  # inputs-only: NotBuilt raises here
            raise ConfigError(f"unknown target {target!r}: expected one of "
                              f"{', '.join(self.labels) or '(no labels in this data set)'}")
        return self.select(self.labels[target] != UNLABELLED)

    def level_matrix(self, modalities, index=None) -> np.ndarray:
        """The learned heads' ``levels`` input ``[N, L]`` float32: each modality's window levels
        side by side, in the given order (rows ``index``, default all)."""
        rows = slice(None) if index is None else index
        return np.concatenate([np.asarray(self.levels[m], dtype=np.float32)[rows] for m in modalities], axis=1)

    def participant_ids(self) -> list[str]:
        """Participant ids in order of first appearance."""
        _, first = np.unique(self.participants, return_index=True)
        return [str(self.participants[i]) for i in sorted(first)]

    # ------------------------------------------------------------------ save / load
    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``arrays.npz`` (no pickled objects) and ``meta.json`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {"starts": self.starts.astype(np.float64),
                  "participants": np.asarray(self.participants, dtype=str)}
        full = not self.inputs_only
        for m in self.inputs:
            arrays[f"inputs__{m}"] = self.inputs[m]
            arrays[f"presence__{m}"] = self.presence[m]
            if full:
                arrays[f"levels__{m}"] = self.levels[m]
        for t in (self.labels if full else ()):
            arrays[f"labels__{t}"] = self.labels[t]
        if full and self.physio is not None:
            arrays["physio"] = self.physio
        if self.lengths is not None:
            arrays["lengths"] = self.lengths
        np.savez(directory / ARRAYS_FILE, **arrays)
        meta = {"format_version": DATA_FORMAT_VERSION, "fingerprint": self.fingerprint,
                "config": self.config.to_dict(), "modalities": list(self.inputs),
                "targets": list(self.labels) if full else [],
                "classes": {t: list(c) for t, c in self.classes.items()} if full else {},
                "windows": len(self), "report": self.report, "calibration": self.calibration if full else {},
                "physio_names": list(self.physio_names) if full else [], "contents": self.contents}
        (directory / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=False) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "WindowedDataset":
        """Read a data set written by :meth:`save`."""
        directory = Path(directory)
        meta_path, arrays_path = directory / META_FILE, directory / ARRAYS_FILE
        meta = read_json_file(meta_path, "a saved kfusion data set (meta.json + arrays.npz)")
        if not arrays_path.is_file():
            raise DataError(arrays_path, "file", "a saved kfusion data set (meta.json + arrays.npz)", "nothing")
        if meta.get("format_version") != DATA_FORMAT_VERSION:
            raise DataError(meta_path, "format_version", str(DATA_FORMAT_VERSION),
                            meta.get("format_version"))
        try:
            with np.load(arrays_path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as err:
            raise DataError(arrays_path, "contents", "a numpy .npz archive", f"unreadable ({err})") from None
        contents = meta.get("contents", "all")  # written before the key existed: everything
        if contents not in CONTENTS:
            raise DataError(meta_path, "contents", " or ".join(CONTENTS), contents)
        try:
            common = dict(inputs={m: arrays[f"inputs__{m}"] for m in meta["modalities"]},
                          presence={m: arrays[f"presence__{m}"] for m in meta["modalities"]},
                          participants=arrays["participants"], starts=arrays["starts"],
                          config=DataConfig.from_dict(meta["config"], where=str(meta_path)),
                          fingerprint=meta["fingerprint"], report=meta["report"], lengths=arrays.get("lengths"),
                          contents=contents)
            if contents == "inputs":
                return cls(labels={}, classes={}, **common)
            return cls(
                labels={t: arrays[f"labels__{t}"] for t in meta["targets"]},
                classes={t: tuple(c) for t, c in meta["classes"].items()},
                levels={m: arrays[f"levels__{m}"] for m in meta["modalities"]},
                calibration=meta["calibration"], physio=arrays.get("physio"),
                physio_names=tuple(meta["physio_names"]), **common)
        except KeyError as err:
            raise DataError(arrays_path if "__" in str(err) else meta_path, str(err).strip("'"),
                            "the entry written by WindowedDataset.save", "nothing") from None


# --------------------------------------------------------------------------- fingerprint

def default_cache_dir() -> Path:
    """``$KFUSION_CACHE`` or ``~/.cache/kfusion``."""
    return Path(os.environ.get("KFUSION_CACHE") or Path.home() / ".cache" / "kfusion").expanduser()


def resolve_cache_dir(cache_dir) -> Path | None:
    """``None``/``True`` -> default, ``False`` -> no cache, else the given folder."""
    if cache_dir is False:
        return None
    if cache_dir is None or cache_dir is True:
        return default_cache_dir()
    return Path(cache_dir).expanduser()


def _not_regular(path: Path) -> str | None:
    """None for a regular file (or a symlink to one), else what ``path`` is instead."""
    try:
        st = path.stat()
    except OSError as err:
        if path.is_symlink():
            return "a symlink loop" if err.errno == errno.ELOOP else "a broken symlink"
        return f"unreadable ({err.strerror or err})"
    if stat.S_ISREG(st.st_mode):
        return None
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))
    return next((name for test, name in kinds if test(st.st_mode)), "not a regular file")


def source_files(source: Source, ignored: list | None = None) -> list[Path]:
    """The regular files a source's data set depends on, sorted.

    A reader may name them itself with an optional ``source_files(root) -> list[Path]``
    method (the built-in e4, stresspredict and generic readers name the files they read, so
    other files are never opened); otherwise every file under the source path is used
    (folders walked recursively, hidden names skipped). Anything that is not a regular file
    (a named pipe, a broken or looping symlink, a socket) is left out and, when ``ignored``
    is a list, described there (``"<path>: a named pipe; not read"``).
    """
    root = source.path
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise DataError(root, "path", f"an existing folder or file for the '{source.scheme}' reader",
                        "nothing")
    named = getattr(get_reader(source.scheme), "source_files", None)
    if callable(named):
        candidates = [Path(p) for p in named(root)]
    else:
        candidates = []

        def unreadable(err: OSError) -> None:
            if ignored is not None:
                ignored.append(f"{err.filename}: unreadable folder ({err.strerror or err}); not read")

        for folder, dirs, files in os.walk(root, onerror=unreadable):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            candidates.extend(Path(folder) / f for f in files if not f.startswith("."))
    found = []
    for path in sorted(set(candidates)):
        kind = _not_regular(path)
        if kind is None:
            found.append(path)
        elif ignored is not None and kind != "a folder":
            ignored.append(f"{path}: {kind}; not read")
    return found


class FileHashes:
    """Content hashes of files, memoised by ``(size, mtime_ns, ctime_ns, inode)`` in a JSON
    file so unchanged 100 MB files are not re-read; any write to a file changes its ctime."""

    def __init__(self, memo_path: Path | None = None):
        self.memo_path = memo_path
        self.memo: dict = {}
        self.changed = False
        if memo_path is not None and memo_path.is_file():
            try:
                self.memo = json.loads(memo_path.read_text())
            except (OSError, ValueError):
                self.memo = {}

    def digest(self, path: Path) -> tuple[int, str]:
        """``(size, blake2b hex)`` of ``path``."""
        try:
            st = path.stat()
        except OSError:
            raise DataError(path, "file", "an existing, readable file of the data source", "nothing") from None
        if not stat.S_ISREG(st.st_mode):  # never open a named pipe (it would block)
            raise DataError(path, "file", "a regular file of the data source", _not_regular(path))
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        key = str(path.resolve())
        entry = self.memo.get(key)
        if entry is not None and entry[:4] == stamp:
            return st.st_size, entry[4]
        h = hashlib.blake2b(digest_size=20)
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        self.memo[key] = stamp + [h.hexdigest()]
        self.changed = True
        return st.st_size, h.hexdigest()

    def flush(self) -> None:
        if self.memo_path is None or not self.changed:
            return
        try:
            self.memo_path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".file-hashes.", dir=self.memo_path.parent)
            with os.fdopen(fd, "w") as fh:
                json.dump(self.memo, fh)
            os.replace(tmp, self.memo_path)
            self.changed = False
        except OSError as err:
            warnings.warn(f"kfusion: could not write the file-hash memo {self.memo_path}: {err}", stacklevel=2)


def dataset_fingerprint(sources, config: DataConfig | None = None, participants=None,
                        hashes: FileHashes | None = None, ignored: list | None = None,
                        contents: str = "all") -> str:
    """Hex key of a data set: each source's participant ids and files (relative path, size,
    content hash), the DataConfig JSON, the participant selection, the data-format version,
    the feature and resampling settings and, for ``contents="inputs"``, that (a full set's key
    is the one it had before the option existed, so existing caches stay valid). ``ignored``: a
    list to which the entries that are not regular files (and so are left out) are added (see
    :func:`source_files`)."""
    contents = check_contents("dataset_fingerprint: contents", contents)
    config = config or default_config(sources)
    hashes = hashes or FileHashes()
    described = []
    for source in _parse_sources(sources):
        base = source.path if source.path.is_dir() else source.path.parent
        files = [[_relative(p, base), *hashes.digest(p)] for p in source_files(source, ignored)]
        ids = ([str(p) for p in get_reader(source.scheme).participants(source.path)]
               if source.path.exists() else [])
        described.append({"scheme": source.scheme, "files": files, "participants": ids})
    key = {"format_version": DATA_FORMAT_VERSION, "kfusion": kfusion.__version__,
           "features": feature_settings(), "resampling": RESAMPLING, "config": config.to_dict(),
           "participants": None if participants is None else sorted(str(p) for p in participants),
           "sources": described}
    if contents != "all":
        key["contents"] = contents
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def _relative(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:  # a file a reader named outside the source folder
        return path.resolve().as_posix()


# --------------------------------------------------------------------------- building

def default_config(sources) -> DataConfig:
    """The DataConfig of ``build_dataset(sources, config=None)``: defaults, with the modalities
    found in the sources' files (:func:`~kfusion.data.sources.source_modalities`)."""
    return DataConfig(modalities=source_modalities(_parse_sources(sources)))


def _parse_sources(sources) -> list[Source]:
    if isinstance(sources, (str, Source, os.PathLike)):
        sources = [sources]
    parsed = [Source.parse(s if isinstance(s, Source) else str(s)) for s in sources]
    if not parsed:
        raise ConfigError("build_dataset: expected at least one data source like 'kemocon:PATH'")
    return parsed


def plan_participants(sources, participants=None) -> list[tuple[Source, str, str]]:
    """``(source, reader id, data-set id)`` for every participant to read, in source order.

    Ids found in several sources are prefixed (see the module docstring). ``participants``
    restricts to those data-set ids (unknown ones are a :class:`DataError`).
    """
    sources = _parse_sources(sources)
    per_source = []
    for source in sources:
        if not source.path.exists():
            raise DataError(source.path, "path",
                            f"an existing folder for the '{source.scheme}' reader", "nothing")
        per_source.append((source, [str(p) for p in get_reader(source.scheme).participants(source.path)]))
    in_sources = Counter(pid for _, ids in per_source for pid in set(ids))
    schemes = Counter(source.scheme for source, _ in per_source)
    plan = []
    for position, (source, ids) in enumerate(per_source, start=1):
        for rid in ids:
            if in_sources[rid] == 1:
                pid = rid
            elif schemes[source.scheme] == 1:
                pid = f"{source.scheme}-{rid}"
            else:
                pid = f"{source.scheme}{position}-{rid}"
            plan.append((source, rid, pid))
    repeated = [pid for pid, n in Counter(p for _, _, p in plan).items() if n > 1]
    if repeated:
        raise DataError(sources[0].path, "participant", "participant ids unique across the sources",
                        ", ".join(repeated))
    if participants is not None:
        wanted = [str(p) for p in ([participants] if isinstance(participants, str) else participants)]
        known = [pid for _, _, pid in plan]
        unknown = [p for p in wanted if p not in known]
        if unknown:
            raise DataError(", ".join(str(s.path) for s in sources), "participant",
                            f"one of {', '.join(known)}", ", ".join(unknown))
        plan = [entry for entry in plan if entry[2] in wanted]
    return plan


def _fmt_span(span) -> str:
    return f"{span[0]:.3f}-{span[1]:.3f} (UNIX s, {span[1] - span[0]:.1f} s)"


def _durations(recording: Recording, modalities) -> dict:
    """Seconds of each modality (with segments: inside the segments, not the silence between)."""
    out = {}
    segments = recording.segments
    for m in modalities:
        data = recording.audio if m == SPEECH else recording.signals.get(m)
        if data is None:
            continue
        if segments is None:
            out[m] = round(float(data.duration), 3)
        else:
            inside = np.minimum(segments.end, data.end) - np.maximum(segments.start, data.start)
            out[m] = round(float(np.clip(inside, 0.0, None).sum()), 3)
    return out


def _missing_reason(modalities, have) -> str:
    missing = [m for m in modalities if m not in have]
    wearables_missing = [m for m in missing if m in WEARABLES]
    parts = []
    if wearables_missing and len(wearables_missing) == sum(m in WEARABLES for m in modalities):
        parts.append("no E4 data")
    elif wearables_missing:
        parts.append("no " + ", ".join(wearables_missing) + " data")
    if SPEECH in missing:
        parts.append("no speech")
    return "; ".join(parts)


def _keep_hint(modalities, have, windows: RecordingWindows, config: DataConfig) -> str:
    """Which flag keeps the windows of a participant whose every window was dropped."""
    seconds = config.window.seconds
    if windows.total == 0:
        span = "" if windows.span is None else f" ({windows.span[1] - windows.span[0]:.1f} s)"
        return f"its data{span} is shorter than one {seconds:g} s window (--window sets the length)"
    if config.window.missing == "fill":
        return ""  # no window holds any requested modality in full: no flag helps
    # the modalities that failed some window: absent, not covering it, or with a gap in it
    failing = {m for m in modalities for reason in windows.dropped
               if reason in (f"no {m} data", f"{m} not covered", f"gap in {m}")}
    usable = [m for m in modalities if m in have and m not in failing]
    options = []
    if len(modalities) > 1 and any(m in have for m in modalities):
        options.append("--missing fill (absent modalities zero-filled and masked)")
    if usable:
        options.append(f"--modalities {','.join(usable)}")
    return ("to keep its windows pass " + " or ".join(options)) if options else ""


def _check_overlap(recording: Recording, windows: RecordingWindows, config: DataConfig) -> None:
    """Raise when the requested modalities (or the span) leave no room for one window."""
    seconds = config.window.seconds
    present = [m for m in config.modalities if m in windows.coverage]
    ranges = [windows.coverage[m] for m in present]
    if windows.span is not None:
        ranges.append(windows.span)
    if config.window.missing == "drop":
        room = min(r[1] for r in ranges) - max(r[0] for r in ranges)
        if room >= seconds:
            return
        expected = f"the time spans of {', '.join(present)} to overlap by at least one window ({seconds:g} s)"
    else:
        span = windows.span
        room = max(min(c[1], span[1]) - max(c[0], span[0]) for c in (windows.coverage[m] for m in present))
        if room >= seconds:
            return
        expected = f"data of at least one of {', '.join(present)} inside the windowed span for {seconds:g} s"
    found = "; ".join(f"{m} {_fmt_span(windows.coverage[m])} from {windows.files.get(m) or '?'}"
                      for m in present)
    if recording.span is not None:
        found += f"; recording span {_fmt_span(recording.span)}"
    files = ", ".join(sorted({windows.files.get(m) or "" for m in present} - {""})) or recording.source
    raise DataError(files or None, "time span", expected, found, participant=recording.participant)


def _check_labels_inside(recording: Recording, span) -> None:
    labels = recording.labels
    if labels is None or span is None or len(labels) == 0:
        return
    if np.any((labels.end > span[0]) & (labels.start < span[1])):
        return
    raise DataError(labels.source or recording.source or None, "annotation times",
                    f"annotation intervals overlapping the recording span {_fmt_span(span)}",
                    f"intervals from {labels.start.min():.3f} to {labels.end.max():.3f} (UNIX s), "
                    "entirely outside", participant=recording.participant)


def _outside_notes(windows: RecordingWindows) -> list[str]:
    notes = []
    if windows.span is None:
        return notes
    for m, (start, end) in windows.coverage.items():
        if end <= windows.span[0] or start >= windows.span[1]:
            notes.append(f"{m} data ({windows.files.get(m) or '?'}, {_fmt_span((start, end))}) lies "
                         f"entirely outside the windowed span {_fmt_span(windows.span)}")
    return notes


def _label_counts(labels: np.ndarray, classes) -> dict:
    counts = {name: int(np.sum(labels == i)) for i, name in enumerate(classes)}
    counts["unlabelled"] = int(np.sum(labels == UNLABELLED))
    return counts


@dataclass
class _Part:
    pid: str
    inputs: dict
    presence: dict
    labels: dict
    classes: dict
    starts: np.ndarray
    levels: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)
    physio: np.ndarray | None = None
    physio_names: tuple = ()
    lengths: np.ndarray | None = None


def _physio(series: dict, windows: RecordingWindows, config: DataConfig) -> tuple[np.ndarray, list]:
    """Whole-recording physiological / prosodic features of the kept windows from the
    recording's model-rate ``series`` (NaN where it lacks the modality): wearable columns if any
    wearable is requested, speech columns if speech is."""
    from kfusion.data.physio import speech_prosody, wearable_physio

    seconds = config.window.seconds
    blocks, names = [], []
    if any(m in WEARABLES for m in config.modalities):
        signals = {m: (series[m].values, series[m].rate, series[m].start) for m in WEARABLES if m in series}
        values, columns = wearable_physio(signals, windows.starts, seconds)
        blocks.append(values)
        names += columns
    if SPEECH in config.modalities:
        audio = series.get(SPEECH)
        values, columns = speech_prosody(None if audio is None else audio.values, AUDIO_RATE,
                                         0.0 if audio is None else audio.start, windows.starts, seconds,
                                         windows.lengths)
        blocks.append(values)
        names += columns
    return np.concatenate(blocks, axis=1).astype(np.float32), names


def _input_calibration(recording: Recording, config: DataConfig, series: dict) -> dict:
    """The calibration statistics the model inputs themselves use: only those of modalities
    without per-window normalisation (:func:`featurize` feeds the calibrated window there; a
    normalised window ignores them), computed as for the whole set."""
    features = config.features
    needed = tuple(m for m in config.modalities
                   if (features.speech_norm == "none" if m == SPEECH else features.wearable_norm == "none"))
    if not needed:
        return {}
    return recording_calibration(recording, config.replace(modalities=needed), series)


def _process(recording: Recording, pid: str, config: DataConfig, entry: dict,
             contents: str = "all") -> _Part | None:
    """Windows, features and labels of one recording; fills the report ``entry``.
    ``contents="inputs"``: inputs and presence only (no labels, levels, physio; calibration
    only where the inputs use it)."""
    modalities = config.modalities
    have = recording.modalities
    entry["durations"] = _durations(recording, modalities)
    entry["notes"] = [str(n) for n in recording.notes]
    if recording.labels is not None:
        entry["label_scheme"] = recording.labels.scheme  # "kemocon": the paper's ratings
    if not any(m in have for m in modalities):
        entry["status"] = "skipped: " + _missing_reason(modalities, have)
        entry["windows"] = {"total": 0, "kept": 0, "dropped": {}}
        entry["notes"].append(f"none of the requested modalities ({', '.join(modalities)}) in its "
                              "files: to use it, request the ones it holds with --modalities")
        return None
    series = model_rate_series(recording, modalities, config.quality_checks)  # resampled once
    windows = cut_windows(recording, config, series)
    entry["windows"] = {"total": windows.total, "kept": windows.kept, "dropped": dict(windows.dropped)}
    if recording.segments is not None:
        entry["segments"] = len(recording.segments)
        entry["windows"]["padded"] = int(np.sum(windows.lengths < config.window.seconds - 1e-6))
    if windows.quality:
        entry["quality"] = dict(windows.quality)
        entry["notes"].extend(f"signal quality: {n} window(s) with {why}: that modality counted absent"
                              for why, n in windows.quality.items())
    entry["notes"].extend(_outside_notes(windows))
    if windows.kept == 0:
        if config.window.missing == "fill" or all(m in have for m in modalities):
            _check_overlap(recording, windows, config)
        dropped = ", ".join(f"{n} {r}" for r, n in windows.dropped.items())
        entry["status"] = "skipped: " + (_missing_reason(modalities, have) or "no windows") + (
            f" (all {windows.total} windows dropped: {dropped})" if windows.total else "")
        hint = _keep_hint(modalities, have, windows, config)
        if hint:
            entry["hint"] = "; " + hint
            entry["notes"].append((f"all {windows.total} windows dropped ({dropped}): " if windows.total
                                   else "no windows: ") + hint)
        return None
    _check_labels_inside(recording, windows.span)  # also inputs-only: the same participants kept
    if contents == "inputs":
        inputs, _ = featurize(windows.raw, windows.presence, config.features,
                              _input_calibration(recording, config, series), windows.lengths, with_levels=False)
        _check_input_shapes(inputs, windows, recording, config)
        entry["status"] = "ok"
        return _Part(pid, inputs, windows.presence, {}, {}, windows.starts, lengths=windows.lengths)
    labels, classes = window_labels(windows.starts, config.window.seconds if windows.lengths is None
                                    else windows.lengths, recording.labels,
                                    config.window.min_label_coverage)
    calibration = recording_calibration(recording, config, series)
    for m in config.modalities:
        if config.calibration.method(m) != "none" and m in have and m not in calibration:
            entry["notes"].append(f"{m}: too little signal to calibrate ({config.calibration.method(m)}); "
                                  "its levels are uncalibrated")
    entry["calibration"] = {m: {"method": c.method, "seconds": round(c.seconds, 1)}
                            for m, c in calibration.items()}
    inputs, levels = featurize(windows.raw, windows.presence, config.features, calibration, windows.lengths)
    _check_input_shapes(inputs, windows, recording, config)
    entry["status"] = "ok"
    entry["labels"] = {t: _label_counts(v, classes[t]) for t, v in labels.items()}
    physio, physio_names = _physio(series, windows, config)
    return _Part(pid, inputs, windows.presence, labels, classes, windows.starts, levels,
                 {m: c.to_dict() for m, c in calibration.items()}, physio, tuple(physio_names),
                 windows.lengths)


def _check_input_shapes(inputs: dict, windows: RecordingWindows, recording: Recording, config: DataConfig) -> None:
    for m, block in inputs.items():
        want = input_shape(m, config.window.seconds)
        if block.shape[1:] != want:
            raise DataError(windows.files.get(m) or recording.source or None, f"{m} channels",
                            f"windows of shape {list(want)}", list(block.shape[1:]),
                            participant=recording.participant)


def _assemble(parts: list[_Part], config: DataConfig,
              contents: str = "all") -> tuple[dict, dict, dict, dict, np.ndarray, np.ndarray, dict]:
    seconds = config.window.seconds
    inputs, presence, levels = {}, {}, {}
    for m in config.modalities:
        width = 2 * input_shape(m, seconds)[1]
        if contents == "all":
            levels[m] = (np.concatenate([p.levels[m] for p in parts]) if parts
                         else np.zeros((0, width), dtype=np.float32))
        blocks = [p.inputs[m] for p in parts]
        inputs[m] = (np.concatenate(blocks) if blocks
                     else np.zeros((0, *input_shape(m, seconds)), dtype=np.float32))
        presence[m] = (np.concatenate([p.presence[m] for p in parts]) if parts
                       else np.zeros(0, dtype=bool))
    classes: dict = {}
    for part in parts:
        for target, names in part.classes.items():
            names = tuple(names)
            if classes.setdefault(target, names) != names:
                raise DataError(None, f"classes of target '{target}'",
                                f"the same classes in every participant ({', '.join(classes[target])})",
                                f"{', '.join(names)} for participant {part.pid}")
    labels = {}
    for target in classes:
        labels[target] = (np.concatenate([p.labels.get(target, np.full(p.starts.shape[0], UNLABELLED,
                                                                        dtype=np.int64))
                                          for p in parts]).astype(np.int64))
    participants = (np.concatenate([np.full(p.starts.shape[0], p.pid) for p in parts]).astype(str)
                    if parts else np.zeros(0, dtype="<U1"))
    starts = (np.concatenate([p.starts for p in parts]) if parts else np.zeros(0)).astype(np.float64)
    return inputs, presence, labels, classes, participants, starts, levels


def _assemble_lengths(parts: list[_Part], seconds: float) -> np.ndarray | None:
    """Real seconds per window, when some part has segments (the others: whole windows)."""
    if not any(p.lengths is not None for p in parts):
        return None
    return np.concatenate([np.full(p.starts.shape[0], seconds) if p.lengths is None else p.lengths
                           for p in parts]).astype(np.float32)


def _assemble_physio(parts: list[_Part]) -> tuple[np.ndarray | None, tuple]:
    if not parts:
        return None, ()
    return np.concatenate([p.physio for p in parts]).astype(np.float32), parts[0].physio_names


def _build(sources: list[Source], config: DataConfig, participants, progress: bool,
           fingerprint: str, contents: str = "all") -> WindowedDataset:
    plan = plan_participants(sources, participants)
    report: dict = {"format_version": DATA_FORMAT_VERSION, "contents": contents,
                    "sources": [str(s) for s in sources],
                    "modalities": list(config.modalities), "window": config.window.to_dict(),
                    "features": config.features.to_dict(), "participants": {}, "problems": {},
                    "skipped": {}}
    reader_problems: dict[str, Exception] = {}
    parts: list[_Part] = []
    iterator = plan
    if progress:
        from tqdm import tqdm

        iterator = tqdm(plan, desc="participants", unit="participant")
    for source, rid, pid in iterator:
        entry = {"source": str(source), "reader_id": rid}
        report["participants"][pid] = entry
        try:
            loaded = load_recordings(source, config, participants=[rid])
            if loaded.problems:  # config.skip_bad
                raise next(iter(loaded.problems.values()))
            part = _process(loaded.recordings[0], pid, config, entry, contents)
        except BadParticipantsError as err:
            if err.problems:  # this participant's (last) problem
                reader_problems[pid] = list(err.problems.values())[-1]
            entry["status"] = "problem"
            report["problems"][pid] = "; ".join(str(e) for e in err.problems.values())
            continue
        except KfusionError as err:
            if not config.skip_bad:
                raise
            entry["status"] = "problem"
            report["problems"][pid] = str(err)
            continue
        if part is None:
            report["skipped"][pid] = entry["status"].removeprefix("skipped: ") + entry.get("hint", "")
        else:
            parts.append(part)
    if reader_problems and not config.skip_bad:
        raise BadParticipantsError(reader_problems)

    inputs, presence, labels, classes, ids, starts, levels = _assemble(parts, config, contents)
    total = Counter()
    dropped: Counter = Counter()
    for entry in report["participants"].values():
        windows = entry.get("windows", {})
        total["total"] += windows.get("total", 0)
        total["kept"] += windows.get("kept", 0)
        total["padded"] += windows.get("padded", 0)
        dropped.update(windows.get("dropped", {}))
    report["windows"] = {"total": total["total"], "kept": total["kept"], "dropped": dict(dropped)}
    if any("padded" in entry.get("windows", {}) for entry in report["participants"].values()):
        report["windows"]["padded"] = total["padded"]
    if contents == "inputs":
        return WindowedDataset(inputs, presence, {}, {}, ids, starts, config, fingerprint, report,
                               lengths=_assemble_lengths(parts, config.window.seconds), contents="inputs")
    report["labels"] = {t: _label_counts(v, classes[t]) for t, v in labels.items()}
    # Recount per participant on the assembled arrays: a participant without annotations
    # then shows all its windows as unlabelled for every target.
    for part in parts:
        rows = ids == part.pid
        report["participants"][part.pid]["labels"] = {
            t: _label_counts(v[rows], classes[t]) for t, v in labels.items()}
    report["calibration"] = config.calibration.to_dict()
    report["label_schemes"] = sorted({report["participants"][p.pid]["label_scheme"] for p in parts
                                      if "label_scheme" in report["participants"][p.pid]})
    physio, physio_names = _assemble_physio(parts)
    return WindowedDataset(inputs, presence, labels, {t: tuple(c) for t, c in classes.items()},
                           ids, starts, config, fingerprint, report, levels,
                           {part.pid: part.calibration for part in parts}, physio, physio_names,
                           _assemble_lengths(parts, config.window.seconds))


def _write_cache(dataset: WindowedDataset, final: Path) -> None:
    """Save into a temporary sibling folder, then rename: a crash never leaves half a cache."""
    tmp = None
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        dataset.save(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    except OSError as err:
        warnings.warn(f"kfusion: could not write the data-set cache {final}: {err}", stacklevel=2)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def build_dataset(sources, config: DataConfig | None = None, cache_dir=None, participants=None,
                  progress: bool = False, contents: str = "all") -> WindowedDataset:
    """Window, featurise and label every participant of ``sources``.

    ``sources``: a ``"scheme:PATH"`` string, a :class:`Source`, or a list of them.
    ``cache_dir``: folder of the on-disk cache (default ``$KFUSION_CACHE`` or
    ``~/.cache/kfusion``; ``False`` disables it). A cached data set is returned without
    reading the sources again; the key changes when any source file's bytes, the config, the
    selection or the feature settings change. ``participants``: only these data-set ids.
    ``progress``: show a tqdm bar over participants. ``contents``: ``"all"`` (default) or
    ``"inputs"``: only what the pretraining stages read (inputs, presence, participants, starts,
    lengths), skipping labels, window levels, the calibration statistics the inputs do not use
    and whole-recording physiology/prosody; the set's ``contents`` says so, its other fields
    raise :class:`ConfigError` when read, and it has its own cache key (an inputs-only cache is
    never returned for ``"all"``; a cached full set serves an inputs-only request, stripped, under
    the inputs-only fingerprint). ``config=None``: the defaults with the
    modalities found in the sources' files (:func:`default_config`: an audio-only set is
    speech-only); a DataConfig given, even a plain ``DataConfig()`` (all five), is used as is.

    ``report`` holds per participant (``report["participants"][id]``) its source, status
    (``ok``, ``skipped: ...`` or ``problem``), durations per modality (s), windows
    total/kept/dropped by reason, label counts per target, and notes (the reader's and ours);
    totals in ``report["windows"]`` and ``report["labels"]``; bad participants (with
    ``config.skip_bad``) in ``report["problems"]``; participants without windows in
    ``report["skipped"]``.

    Raises :class:`DataError` for annotations entirely outside a recording, or requested
    modalities that never overlap for one window (unless ``config.skip_bad``: then the
    participant goes to ``report["problems"]``), and :class:`BadParticipantsError` for
    participants the readers reject (same rule).
    """
    contents = check_contents("build_dataset: contents", contents)
    parsed = _parse_sources(sources)
    config = default_config(parsed) if config is None else config
    if not isinstance(config, DataConfig):
        raise ConfigError(f"build_dataset: config must be a DataConfig, found {type(config).__name__}")
    root = resolve_cache_dir(cache_dir)
    hashes = FileHashes(root / HASH_MEMO_FILE if root is not None else None)
    ignored: list[str] = []
    fingerprint = dataset_fingerprint(parsed, config, participants, hashes, ignored, contents)
    full_print = (dataset_fingerprint(parsed, config, participants, hashes) if contents == "inputs"
                  and root is not None else None)  # file hashes memoised above: cheap
    hashes.flush()
    if ignored:
        warnings.warn("kfusion: not regular files, left out of the data set: " + "; ".join(ignored),
                      stacklevel=2)
    cached = root / "datasets" / fingerprint if root is not None else None
    candidates = [] if cached is None else [cached] + ([root / "datasets" / full_print] if full_print else [])
    for folder in candidates:  # this request's own cache first, then (inputs-only) a full set's
        if not (folder / META_FILE).is_file():
            continue
        try:
            dataset = WindowedDataset.load(folder)
        except (KfusionError, OSError, ValueError) as err:
            warnings.warn(f"kfusion: ignoring an unreadable data-set cache {folder} ({err}); rebuilding",
                          stacklevel=2)
            continue
        if dataset.contents != contents:
            if contents == "all":  # cannot happen (its own key differs): rebuild rather than serve it
                continue
            dataset = dataset.without_extras(fingerprint)
        dataset.report["cache"] = {"path": str(folder), "hit": True}
        dataset.report["ignored_files"] = ignored
        return dataset
    dataset = _build(parsed, config, participants, progress, fingerprint, contents)
    dataset.report["ignored_files"] = ignored
    if cached is not None:
        _write_cache(dataset, cached)
        dataset.report["cache"] = {"path": str(cached), "hit": False}
    return dataset
