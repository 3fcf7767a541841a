"""Clip corpora: one audio file per utterance, speaker = participant (source ``clips:PATH``, and
the shared machinery of ``emodb:``, ``ravdess:`` and ``cremad:`` in
:mod:`kfusion.data.readers.speech_corpora`).

A speaker's utterances become one :class:`~kfusion.data.recording.Recording`: each file is read,
averaged to mono, resampled on its own to 16 kHz (the windowing's ``resample_poly``, so no filter
reaches across two utterances) and laid end to end on a synthetic clock starting at
:data:`CLIP_CLOCK_START` (2000-01-01 00:00 UTC), :data:`CLIP_GAP_SECONDS` of digital silence
between two files. Each file is one of the recording's
:class:`~kfusion.data.recording.Segments`, so no window straddles two utterances: an utterance
shorter than a window gives one window zero-padded after its end (its real length kept), a
longer one is cut into windows from its start. Each utterance is one label interval.

``clips:PATH`` reads any such corpus from ``PATH/manifest.csv``::

    file,participant,emotion,arousal
    spk1/hello_angry.wav,spk1,angry,high
    spk1/bye.flac,spk1,,low            (an empty cell: not labelled for that column)

``file`` is relative to PATH (any format libsndfile reads, any rate); every other column is a
target whose classes are its distinct non-empty values over the whole manifest, sorted (as
numbers when all are numbers), so every speaker gets the same class list. Without label columns
the clips are unlabelled (usable for self-supervised pretraining).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kfusion.config import DataConfig
from kfusion.modalities import AUDIO_RATE, SPEECH
from kfusion.data.readers.e4 import natural_key
from kfusion.data.readers.generic import read_sound
from kfusion.data.recording import Audio, LabelIntervals, Recording, Segments
from kfusion.errors import DataError

#: UNIX time of the first utterance of every speaker (2000-01-01 00:00:00 UTC): clip corpora
#: have no real clock, and this one passes every plausibility check on times.
CLIP_CLOCK_START = 946_684_800.0
#: Seconds of digital silence (exact zeros) between two utterances on that clock.
CLIP_GAP_SECONDS = 1.0
#: Arousal and valence classes of the clip corpora (the K-EmoCon levels).
LEVELS = ("low", "neutral", "high")
MANIFEST_FILE = "manifest.csv"


@dataclass
class Clip:
    """One utterance: its file and its class index per target (NaN = not labelled)."""

    path: Path
    labels: dict = field(default_factory=dict)


def read_clip(path: Path) -> tuple[np.ndarray | None, int, int]:
    """``(mono samples at 16 kHz or None when the file holds no sample, rate of the file,
    channels)``. Unreadable files raise a :class:`DataError` naming the file (a Git LFS pointer
    in place of the audio is named as such)."""
    from kfusion.data.windows import resample

    samples, rate = read_sound(path)
    channels = int(samples.shape[1])
    if samples.shape[0] == 0:
        return None, int(rate), channels
    mono = samples.mean(axis=1) if channels > 1 else samples[:, 0]
    return resample(mono, rate, AUDIO_RATE, padtype="constant"), int(rate), channels


def clips_recording(participant: str, clips: list[Clip], classes: dict, source: str,
                    config: DataConfig, notes: list | None = None,
                    describe: str = "utterances") -> Recording:
    """The :class:`Recording` of one speaker's ``clips`` (in the given order): audio on the clip
    clock, one segment and one label interval per non-empty file. ``classes``: target -> class
    names (the label columns). Audio is read only when speech is requested."""
    notes = list(notes or [])
    if not clips:
        notes.append(f"no {describe} of this speaker")
        return Recording(participant, notes=notes, source=source)
    if SPEECH not in config.modalities:
        notes.append(f"{len(clips)} {describe}: speech not requested, audio not read")
        return Recording(participant, notes=notes, source=source)
    gap = int(round(CLIP_GAP_SECONDS * AUDIO_RATE))
    pieces, starts, ends, names, kept, empty, stereo = [], [], [], [], [], [], 0
    offset = 0
    for clip in clips:
        samples, _, channels = read_clip(clip.path)
        if samples is None:
            empty.append(clip.path.name)
            continue
        stereo += channels > 1
        if pieces:
            pieces.append(np.zeros(gap, dtype=np.float32))
            offset += gap
        pieces.append(samples)
        starts.append(CLIP_CLOCK_START + offset / AUDIO_RATE)
        offset += samples.shape[0]
        ends.append(CLIP_CLOCK_START + offset / AUDIO_RATE)
        names.append(clip.path.name)
        kept.append(clip)
    if empty:
        notes.append(f"{len(empty)} file(s) without audio samples skipped: {', '.join(empty[:5])}"
                     + (" ..." if len(empty) > 5 else ""))
    if stereo:
        notes.append(f"{stereo} file(s) with several channels: their mean used")
    if not kept:
        return Recording(participant, notes=notes, source=source)
    audio = Audio(np.concatenate(pieces), AUDIO_RATE, CLIP_CLOCK_START, source=source)
    seconds = np.asarray(ends) - np.asarray(starts)
    notes.append(f"{len(kept)} {describe} ({seconds.sum():.1f} s, {seconds.min():.2f}-{seconds.max():.2f} s "
                 f"each), each its own segment, laid end to end on one clock from 2000-01-01 UTC "
                 f"with {CLIP_GAP_SECONDS:g} s of silence between them")
    labels = None
    if classes:
        columns = {t: np.array([c.labels.get(t, np.nan) for c in kept], dtype=np.float64) for t in classes}
        labels = LabelIntervals(starts, ends, columns, source=source, scheme="classes",
                                classes={t: tuple(names_) for t, names_ in classes.items()})
    return Recording(participant, audio=audio, labels=labels, notes=notes, source=source,
                     segments=Segments(starts, ends, names))


def wav_files(folder: Path) -> list[Path]:
    """The ``.wav`` files (any case) directly in ``folder``, hidden names skipped, sorted."""
    try:
        names = os.listdir(folder)
    except OSError as err:
        raise DataError(folder, "folder", "a readable folder of WAV files", str(err.strerror or err)) from None
    return sorted((folder / n for n in names if n.lower().endswith(".wav") and not n.startswith(".")),
                  key=lambda p: natural_key(p.name))


# --------------------------------------------------------------------------- clips:PATH

def _class_names(values: list[str]) -> tuple[str, ...]:
    distinct = sorted(set(values))
    try:
        return tuple(sorted(distinct, key=float))
    except ValueError:
        return tuple(distinct)


@functools.lru_cache(maxsize=8)
def _manifest_cached(path: str, mtime_ns: int, size: int):
    from kfusion.data.tables import read_table

    manifest = Path(path)
    table = read_table(manifest, required=["file", "participant"],
                       what="a clip manifest: file,participant and label columns, one row per audio file")
    columns = [c for c in table.columns if c not in ("file", "participant")]
    for c in columns:
        if not c or c.startswith("Unnamed:"):
            raise DataError(manifest, "header", "a name for every label column", repr(c))
    root = manifest.parent
    classes = {}
    for c in columns:
        cells = [str(v).strip() for v in table[c]]
        names = _class_names([v for v in cells if v])
        if len(names) < 2:
            raise DataError(manifest, f"column '{c}'", "a label column with at least two different "
                            "classes over all rows (or leave it out)", ", ".join(names) or "only empty cells")
        classes[c] = names
    speakers: dict[str, list[Clip]] = {}
    seen: dict[str, int] = {}
    for i, row in enumerate(table.itertuples(index=False)):
        line = i + 2
        record = dict(zip(table.columns, row))
        name = str(record["file"]).strip()
        pid = str(record["participant"]).strip()
        if not name:
            raise DataError(manifest, f"column 'file', line {line}", "the audio file's path relative "
                            f"to {root}", "an empty cell")
        if not pid:
            raise DataError(manifest, f"column 'participant', line {line}", "the speaker's id", "an empty cell")
        if "/" in pid or "\\" in pid:
            raise DataError(manifest, f"column 'participant', line {line}", "an id without slashes", repr(pid))
        key = name.replace("\\", "/")
        if key in seen:
            raise DataError(manifest, f"column 'file', line {line}", "each file once",
                            f"{name!r} on lines {seen[key]} and {line}")
        seen[key] = line
        path = root / key
        if Path(key).is_absolute() or ".." in Path(key).parts:
            raise DataError(manifest, f"column 'file', line {line}", f"a path inside {root}", repr(name))
        labels = {}
        for c in columns:
            cell = str(record[c]).strip()
            labels[c] = float(classes[c].index(cell)) if cell else np.nan
        speakers.setdefault(pid, []).append(Clip(path, labels))
    return speakers, classes


def read_manifest(root: Path) -> tuple[dict[str, list[Clip]], dict[str, tuple[str, ...]]]:
    """``({participant: clips in manifest order}, {label column: class names})`` of
    ``root/manifest.csv`` (cached per process by path, size and mtime)."""
    root = Path(root)
    manifest = root / MANIFEST_FILE
    if not root.is_dir():
        raise DataError(root, "path", f"a folder holding {MANIFEST_FILE} (file,participant,<labels>) "
                        "and the audio files", "not a folder")
    if not manifest.is_file():
        raise DataError(manifest, "file", f"{MANIFEST_FILE} with the columns file, participant and one "
                        "column per label (one row per audio file)", "nothing")
    st = manifest.stat()
    return _manifest_cached(str(manifest.resolve()), st.st_mtime_ns, st.st_size)


class ManifestClipsReader:
    """``clips:PATH``: any clip corpus listed in ``PATH/manifest.csv`` (see the module)."""

    modalities = (SPEECH,)

    def participants(self, root: Path) -> list[str]:
        return sorted(read_manifest(root)[0], key=natural_key)

    def source_files(self, root: Path) -> list[Path]:
        speakers, _ = read_manifest(root)
        return [Path(root) / MANIFEST_FILE] + [c.path for clips in speakers.values() for c in clips]

    def read(self, root: Path, participant: str, config: DataConfig | None = None) -> Recording:
        config = config or DataConfig()
        speakers, classes = read_manifest(root)
        clips = speakers.get(participant)
        if clips is None:
            raise DataError(Path(root) / MANIFEST_FILE, "column 'participant'",
                            f"a row of participant {participant}", "none")
        manifest = Path(root) / MANIFEST_FILE
        for clip in clips:
            if not clip.path.is_file():
                raise DataError(clip.path, "file", f"the audio file listed in {manifest}", "nothing",
                                participant=participant)
        notes = [] if classes else [f"{MANIFEST_FILE} has no label columns: unlabelled (usable for "
                                    "self-supervised pretraining)"]
        return clips_recording(participant, clips, classes, str(manifest), config, notes)


READER = ManifestClipsReader()
