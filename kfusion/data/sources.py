"""Data sources: ``scheme:PATH`` strings resolved to readers, and loading with bad-participant
handling.

A reader is any object with ``participants(root) -> list[str]`` and
``read(root, participant, config) -> Recording``. Register new ones with
:func:`register_reader`; the built-in schemes are ``kemocon``, ``e4``, ``stresspredict``,
``generic`` and the clip corpora ``emodb``, ``ravdess``, ``cremad`` and ``clips``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from kfusion.config import DataConfig
from kfusion.data.recording import Recording
from kfusion.errors import BadParticipantsError, ConfigError, DataError, KfusionError


class Reader(Protocol):
    """Optional members: ``modalities`` (what the format can hold), ``found_modalities(root)``
    (the modalities a copy holds files of, from file names only: the default modalities),
    ``source_files(root)`` (the files the data-set fingerprint hashes) and ``description``."""

    def participants(self, root: Path) -> list[str]: ...

    def read(self, root: Path, participant: str, config: DataConfig) -> Recording: ...


# scheme -> "module:attribute" (imported lazily) or a reader object
_READERS: dict[str, object] = {
    "kemocon": "kfusion.data.readers.kemocon:READER",
    "e4": "kfusion.data.readers.e4:READER",
    "stresspredict": "kfusion.data.readers.stress_predict:READER",
    "generic": "kfusion.data.readers.generic:READER",
    "wesad": "kfusion.data.readers.wesad:READER",
    "ppgdalia": "kfusion.data.readers.ppgdalia:READER",
    "emodb": "kfusion.data.readers.speech_corpora:EMODB",
    "ravdess": "kfusion.data.readers.speech_corpora:RAVDESS",
    "cremad": "kfusion.data.readers.speech_corpora:CREMAD",
    "clips": "kfusion.data.readers.clips:READER",
}


# scheme -> one line for ``kfusion data sources`` (here, so that listing imports no reader; a
# scheme without an entry is described by its reader's ``description`` or docstring)
_DESCRIPTIONS: dict[str, str] = {
    "kemocon": "K-EmoCon release (metadata/, e4_data/, emotion_annotations/, debate_audios/): "
               "speech + E4; arousal, valence, emotion",
    "e4": "Empatica E4 Connect export (ACC/BVP/EDA/TEMP.csv), or a folder of them; no labels",
    "stresspredict": "Stress-Predict root (Raw_data/S01..S35 E4 exports, Processed_data/ "
                     "1 Hz labels); stress",
    "generic": "your own data: PATH/<participant>/ with E4 files, audio + audio.json, labels.csv; "
               "optional dataset.json",
    "wesad": "WESAD release (S<k>/S<k>.pkl wrist signals + protocol labels, S<k>_quest.csv); "
             "condition, stress, arousal, valence",
    "ppgdalia": "PPG-DaLiA release (S<k>/S<k>.pkl wrist signals + 4 Hz activity labels); activity",
    "emodb": "Berlin EmoDB (wav/03a01Fa.wav, one file per utterance): speech; emotion (7), arousal, "
             "valence",
    "ravdess": "RAVDESS audio-only (Actor_01/03-01-06-01-02-01-01.wav; song files skipped): speech; "
               "emotion (8), arousal, valence, intensity",
    "cremad": "CREMA-D (AudioWAV/1001_DFA_ANG_XX.wav): speech; emotion (6), arousal, valence, intensity",
    "clips": "any clip corpus: PATH/manifest.csv (file, participant, label columns), one audio "
             "file per utterance: speech",
}


def _reader_description(reader) -> str:
    text = getattr(reader, "description", None)
    if not text:
        doc = (type(reader).__doc__ or "").strip()
        text = doc.splitlines()[0].strip() if doc else ""
    return " ".join(str(text).split())


def register_reader(scheme: str, reader: Reader, description: str | None = None) -> None:
    """Make ``scheme:PATH`` sources use ``reader``. ``description``: its line in ``kfusion data
    sources`` (default: the reader's ``description`` attribute, else its docstring's first line)."""
    if not scheme.isidentifier():
        raise ConfigError(f"reader scheme {scheme!r}: expected a plain name like 'mydata'")
    _READERS[scheme] = reader
    _DESCRIPTIONS[scheme] = description if description is not None else _reader_description(reader)


def reader_schemes() -> list[str]:
    return sorted(_READERS)


def reader_descriptions() -> dict[str, str]:
    """``{scheme: one-line description}`` of every reader, sorted by scheme."""
    return {scheme: _DESCRIPTIONS.get(scheme) or _reader_description(get_reader(scheme))
            for scheme in reader_schemes()}


def get_reader(scheme: str) -> Reader:
    try:
        reader = _READERS[scheme]
    except KeyError:
        raise ConfigError(f"unknown data source scheme {scheme!r}: expected one of "
                          f"{', '.join(reader_schemes())} (as in 'kemocon:PATH')") from None
    if isinstance(reader, str):
        module, attr = reader.split(":")
        reader = getattr(importlib.import_module(module), attr)
        _READERS[scheme] = reader
    return reader


def found_modalities(source: "str | Source") -> tuple[str, ...] | None:
    """The modalities ``source``'s files hold, from a cheap scan of file names (no signal read)
    by its reader's ``found_modalities(root)``, in the canonical order; None when the reader
    has no scan, the scan fails (the read then reports the problem) or finds nothing."""
    from kfusion.modalities import MODALITIES

    source = Source.parse(source)
    scan = getattr(get_reader(source.scheme), "found_modalities", None)
    if scan is None or not source.path.exists():
        return None
    try:
        found = set(scan(source.path))
    except (KfusionError, OSError, ValueError):
        return None
    return tuple(m for m in MODALITIES if m in found) or None


def source_modalities(sources, scan: bool = True) -> tuple[str, ...]:
    """The default modalities of a data set read from ``sources``, in the canonical order: the
    union over the sources of the modalities found in their files (:func:`found_modalities`;
    ``scan=False``, or a reader that cannot tell: what its format can hold, i.e. its
    ``modalities`` attribute, else all five).

    This is what ``kfusion`` commands use without ``--modalities`` and
    ``build_dataset(..., config=None)`` without a config: an audio-only ``generic:`` set is
    speech-only, a wearable-only one wearable-only. An explicit ``DataConfig.modalities``
    (including the default of a plain ``DataConfig()``, all five) always wins."""
    from kfusion.modalities import MODALITIES

    if isinstance(sources, (str, Source)):
        sources = [sources]
    have = set()
    for source in sources:
        source = Source.parse(source)
        found = found_modalities(source) if scan else None
        have |= set(found or getattr(get_reader(source.scheme), "modalities", MODALITIES))
    return tuple(m for m in MODALITIES if m in have)


@dataclass(frozen=True)
class Source:
    """A parsed ``scheme:PATH`` data source."""

    scheme: str
    path: Path

    @classmethod
    def parse(cls, text: "str | Source") -> "Source":
        if isinstance(text, Source):
            return text
        scheme, sep, path = str(text).partition(":")
        if not sep or not path:
            raise ConfigError(f"data source {text!r}: expected SCHEME:PATH with SCHEME one of "
                              f"{', '.join(reader_schemes())}, e.g. 'e4:Raw_data/S01'")
        get_reader(scheme)  # validates the scheme
        return cls(scheme, Path(path).expanduser())

    def __str__(self) -> str:
        return f"{self.scheme}:{self.path}"


@dataclass
class LoadResult:
    """Recordings read from a source, plus the participants that failed (``problems``)."""

    source: Source
    recordings: list = field(default_factory=list)
    problems: dict = field(default_factory=dict)


def load_recordings(source: "str | Source", config: DataConfig | None = None,
                    participants: list[str] | None = None) -> LoadResult:
    """Read every participant of ``source`` (or only ``participants``).

    A participant whose files are bad raises :class:`BadParticipantsError` listing all bad
    participants, unless ``config.skip_bad``, in which case they are reported in
    ``LoadResult.problems`` and the others are returned.
    """
    config = config or DataConfig()
    source = Source.parse(source)
    if not source.path.exists():
        raise DataError(source.path, "path", f"an existing folder for the '{source.scheme}' reader",
                        "nothing")
    reader = get_reader(source.scheme)
    available = reader.participants(source.path)
    if participants is not None:
        unknown = [p for p in participants if str(p) not in available]
        if unknown:
            raise DataError(source.path, "participant",
                            f"one of {', '.join(available)}", ", ".join(map(str, unknown)))
        wanted = [str(p) for p in participants]
    else:
        wanted = available
    result = LoadResult(source)
    for pid in wanted:
        try:
            result.recordings.append(reader.read(source.path, pid, config))
        except KfusionError as err:
            result.problems[pid] = err
    if result.problems and not config.skip_bad:
        raise BadParticipantsError(result.problems)
    return result
