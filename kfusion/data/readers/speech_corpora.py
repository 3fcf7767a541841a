"""Acted speech-emotion corpora, one WAV file per utterance, labels in the file names:
``emodb:PATH`` (Berlin EmoDB), ``ravdess:PATH`` (RAVDESS audio-only) and ``cremad:PATH``
(CREMA-D). Speaker = participant; each file is one segment of the speaker's recording and one
label interval (:func:`kfusion.data.readers.clips.clips_recording`): no window straddles two
utterances, a short one is zero-padded, a long one cut into windows.

Targets: ``emotion`` (the corpus' own categories, in its documented code order), ``arousal`` and
``valence`` (``low``/``neutral``/``high``, from :data:`AROUSAL_VALENCE`: each category's place in
Russell's circumplex, our mapping), and ``intensity`` where the corpus codes it (RAVDESS
normal/strong, CREMA-D low/medium/high; CREMA-D's ``XX`` = unspecified -> unlabelled).

Layouts (file names as documented by each release):

- **EmoDB** ``PATH/wav/03a01Fa.wav`` (or PATH = the ``wav`` folder): speaker (2 digits), text
  code (``a01``..``b10``), emotion letter (German initial: W Wut/anger, L Langeweile/boredom,
  E Ekel/disgust, A Angst/fear, F Freude/happiness, T Trauer/sadness, N neutral), version letter
  (``a``, ``b``, ...: several takes of one sentence, all kept).
- **RAVDESS** ``PATH/Actor_01/03-01-06-01-02-01-01.wav``: modality (03 audio-only), vocal
  channel (01 speech, 02 song), emotion (01 neutral, 02 calm, 03 happy, 04 sad, 05 angry,
  06 fearful, 07 disgust, 08 surprised), intensity (01 normal, 02 strong; none strong for
  neutral), statement (01, 02), repetition (01, 02), actor (01-24, = the folder's). Song files
  (vocal channel 02, a separate zip of the release; none for actor 18) are skipped with a note:
  sung emotion is another task. ``RavdessReader(song=True)`` reads them as more utterances.
- **CREMA-D** ``PATH/AudioWAV/1001_DFA_ANG_XX.wav`` (or PATH = ``AudioWAV``): actor (1001-1091),
  sentence (IEO, TIE, IOM, IWW, TAI, MTI, IWL, ITH, DFA, ITS, TSI, WSI), emotion (ANG, DIS, FEA,
  HAP, NEU, SAD), level (LO, MD, HI, XX unspecified). One file of early releases is named with a
  one-letter level (``1040_ITH_SAD_X.wav``): read as ``XX``, with a note.

A ``.wav`` name that does not parse is a :class:`~kfusion.errors.DataError` naming the file and
the expected pattern (when reading its speaker; a name without even a speaker, when listing).
Files without samples are skipped with a note; other unreadable files are errors.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import numpy as np

from kfusion.config import DataConfig
from kfusion.modalities import SPEECH
from kfusion.data.readers.clips import LEVELS, Clip, clips_recording, natural_key, wav_files
from kfusion.data.recording import Recording
from kfusion.errors import DataError

#: Arousal and valence level of each emotion category (our mapping, after the categories'
#: places in Russell's circumplex of affect, 1980; documented in README and docs/data-formats.md).
#: Disgust: unpleasant, neither clearly activated nor calm; surprise: activated, of either sign.
AROUSAL_VALENCE: dict[str, tuple[str, str]] = {
    "neutral": ("neutral", "neutral"),
    "calm": ("low", "high"),
    "happiness": ("high", "high"), "happy": ("high", "high"),
    "sadness": ("low", "low"), "sad": ("low", "low"),
    "anger": ("high", "low"), "angry": ("high", "low"),
    "fear": ("high", "low"), "fearful": ("high", "low"),
    "disgust": ("neutral", "low"),
    "boredom": ("low", "low"),
    "surprised": ("high", "neutral"),
}


def _targets(emotions: tuple[str, ...], intensity: tuple[str, ...] = ()) -> dict[str, tuple[str, ...]]:
    classes = {"emotion": emotions, "arousal": LEVELS, "valence": LEVELS}
    if intensity:
        classes["intensity"] = intensity
    return classes


def _labels(classes: dict, emotion: str, intensity: str | None = None) -> dict[str, float]:
    arousal, valence = AROUSAL_VALENCE[emotion]
    out = {"emotion": float(classes["emotion"].index(emotion)), "arousal": float(LEVELS.index(arousal)),
           "valence": float(LEVELS.index(valence))}
    if "intensity" in classes:
        out["intensity"] = np.nan if intensity is None else float(classes["intensity"].index(intensity))
    return out


@functools.lru_cache(maxsize=16)
def _listing(folder: str, mtime_ns: int) -> tuple[Path, ...]:
    return tuple(wav_files(Path(folder)))


def _wavs(folder: Path) -> tuple[Path, ...]:
    """WAV files of ``folder`` (cached per process by the folder's mtime)."""
    return _listing(str(folder), folder.stat().st_mtime_ns)


class _FlatCorpus:
    """A corpus whose WAV files sit in one folder (``PATH/<folder>`` or PATH itself), the
    speaker at the start of each name."""

    modalities = (SPEECH,)
    folder = ""         # the release's audio folder
    speaker = r""       # regex for the speaker prefix of a name
    pattern = ""        # the expected name, for messages
    name = ""

    def audio_folder(self, root: Path) -> Path:
        root = Path(root)
        if not root.is_dir():
            raise DataError(root, "path", f"the {self.name} folder holding {self.folder}/", "not a folder")
        inside = root / self.folder
        if inside.is_dir():
            return inside
        if any(re.match(self.speaker, p.name) for p in _wavs(root)):
            return root  # PATH is the audio folder itself
        raise DataError(root, "folder", f"{self.name}'s {self.folder}/ folder of {self.pattern} files "
                        f"(PATH/{self.folder}/{self.example})", "no such folder and no such files in PATH")

    def _by_speaker(self, root: Path) -> dict[str, list[Path]]:
        folder = self.audio_folder(root)
        out: dict[str, list[Path]] = {}
        for path in _wavs(folder):
            match = re.match(self.speaker, path.name)
            if match is None:
                raise DataError(path, "file name", f"{self.pattern} (e.g. {self.example})", path.name)
            out.setdefault(match.group(1), []).append(path)
        if not out:
            raise DataError(folder, "files", f"{self.name} WAV files named {self.pattern}", "none")
        return out

    def participants(self, root: Path) -> list[str]:
        return sorted(self._by_speaker(root), key=natural_key)

    def source_files(self, root: Path) -> list[Path]:
        return [p for files in self._by_speaker(root).values() for p in files]

    def read(self, root: Path, participant: str, config: DataConfig | None = None) -> Recording:
        config = config or DataConfig()
        files = self._by_speaker(root).get(participant)
        if files is None:
            raise DataError(self.audio_folder(root), "speaker", f"files of speaker {participant}", "none")
        notes: list[str] = []
        clips = [Clip(path, self.parse(path, notes)) for path in files]
        return clips_recording(participant, clips, self.classes, str(self.audio_folder(root)), config, notes)


class EmodbReader(_FlatCorpus):
    """``emodb:PATH``: Berlin EmoDB (see the module)."""

    name, folder, example = "EmoDB", "wav", "03a01Fa.wav"
    speaker = r"^(\d{2})"
    pattern = ("SSTTTEV.wav: speaker (2 digits), text code (a01..b10), emotion letter "
               "(W, L, E, A, F, T or N), version letter")
    LETTERS = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness",
               "T": "sadness", "N": "neutral"}
    classes = _targets(tuple(LETTERS.values()))

    def parse(self, path: Path, notes: list) -> dict[str, float]:
        match = re.fullmatch(r"(\d{2})([ab]\d{2})([A-Za-z])([a-z])\.(?i:wav)", path.name)
        if match is None:
            raise DataError(path, "file name", f"{self.pattern} (e.g. {self.example})", path.name)
        letter = match.group(3)
        if letter not in self.LETTERS:
            raise DataError(path, "file name, emotion letter (6th character)",
                            "W (anger), L (boredom), E (disgust), A (fear), F (happiness), T (sadness) "
                            "or N (neutral)", repr(letter))
        return _labels(self.classes, self.LETTERS[letter])


class CremadReader(_FlatCorpus):
    """``cremad:PATH``: CREMA-D (see the module)."""

    name, folder, example = "CREMA-D", "AudioWAV", "1001_DFA_ANG_XX.wav"
    speaker = r"^(\d{4})_"
    pattern = ("AAAA_SSS_EEE_LL.wav: actor (4 digits), sentence (IEO, TIE, IOM, IWW, TAI, MTI, IWL, "
               "ITH, DFA, ITS, TSI, WSI), emotion (ANG, DIS, FEA, HAP, NEU, SAD), level (LO, MD, HI, XX)")
    SENTENCES = ("IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI")
    EMOTIONS = {"ANG": "anger", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
    LEVEL_CODES = {"LO": "low", "MD": "medium", "HI": "high", "XX": None}
    classes = _targets(tuple(EMOTIONS.values()), ("low", "medium", "high"))

    def parse(self, path: Path, notes: list) -> dict[str, float]:
        match = re.fullmatch(r"(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{1,2})\.(?i:wav)", path.name)
        if match is None:
            raise DataError(path, "file name", f"{self.pattern} (e.g. {self.example})", path.name)
        _, sentence, emotion, level = match.groups()
        if sentence not in self.SENTENCES:
            raise DataError(path, "file name, sentence (2nd part)", ", ".join(self.SENTENCES), repr(sentence))
        if emotion not in self.EMOTIONS:
            raise DataError(path, "file name, emotion (3rd part)", ", ".join(self.EMOTIONS), repr(emotion))
        if level == "X":  # 1040_ITH_SAD_X.wav in early releases
            notes.append(f"{path.name}: level 'X' read as XX (unspecified)")
            level = "XX"
        if level not in self.LEVEL_CODES:
            raise DataError(path, "file name, level (4th part)", "LO, MD, HI or XX (unspecified)", repr(level))
        return _labels(self.classes, self.EMOTIONS[emotion], self.LEVEL_CODES[level])


class RavdessReader:
    """``ravdess:PATH``: RAVDESS audio-only files in ``PATH/Actor_XX/`` (see the module).
    ``song``: also read the song files (vocal channel 02) instead of skipping them."""

    modalities = (SPEECH,)
    pattern = ("MM-VV-EE-II-SS-RR-AA.wav: modality 03 (audio-only), vocal channel 01 (speech) or 02 "
               "(song), emotion 01-08, intensity 01-02, statement 01-02, repetition 01-02, actor 01-24")
    example = "03-01-06-01-02-01-01.wav"
    EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
    classes = _targets(EMOTIONS, ("normal", "strong"))

    def __init__(self, song: bool = False):
        self.song = bool(song)

    def _actors(self, root: Path) -> dict[str, Path]:
        root = Path(root)
        if not root.is_dir():
            raise DataError(root, "path", "the RAVDESS folder holding Actor_01/ .. Actor_24/", "not a folder")
        actors = {}
        for name in os.listdir(root):
            match = re.fullmatch(r"Actor_(\d{2})", name)
            if match and (root / name).is_dir():
                actors[match.group(1)] = root / name
        if actors:
            return actors
        if re.fullmatch(r"Actor_\d{2}", root.name):
            raise DataError(root, "folder", "the folder holding the Actor_XX/ folders",
                            f"one actor's folder: use ravdess:{Path(os.path.abspath(root)).parent}")
        below = sorted(str(p) for p in root.glob("*/Actor_[0-9][0-9]") if p.is_dir())
        hint = f" (they are one level down: use ravdess:{Path(below[0]).parent})" if below else ""
        raise DataError(root, "folders", f"Actor_01/ .. Actor_24/ folders of {self.example}-style WAV files",
                        "none" + hint)

    def participants(self, root: Path) -> list[str]:
        return sorted(self._actors(root), key=natural_key)

    def source_files(self, root: Path) -> list[Path]:
        return [p for folder in self._actors(root).values() for p in _wavs(folder)]

    def parse(self, path: Path, actor: str) -> tuple[dict[str, float], bool]:
        """``(labels, is_song)`` of one file of ``Actor_<actor>/``."""
        match = re.fullmatch(r"(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})\.(?i:wav)", path.name)
        if match is None:
            raise DataError(path, "file name", f"{self.pattern} (e.g. {self.example})", path.name)
        modality, channel, emotion, intensity, statement, repetition, who = (int(g) for g in match.groups())
        checks = [("modality (1st part)", modality, (3,), "03 (audio-only; 01 and 02 are video files)"),
                  ("vocal channel (2nd part)", channel, (1, 2), "01 (speech) or 02 (song)"),
                  ("emotion (3rd part)", emotion, range(1, 9), "01 (neutral) .. 08 (surprised)"),
                  ("intensity (4th part)", intensity, (1, 2), "01 (normal) or 02 (strong)"),
                  ("statement (5th part)", statement, (1, 2), "01 or 02"),
                  ("repetition (6th part)", repetition, (1, 2), "01 or 02"),
                  ("actor (7th part)", who, range(1, 25), "01 .. 24")]
        for field, value, allowed, expected in checks:
            if value not in allowed:
                raise DataError(path, f"file name, {field}", expected, f"{value:02d}")
        if who != int(actor):
            raise DataError(path, "file name, actor (7th part)", f"{int(actor):02d}, the actor of its folder "
                            f"Actor_{actor}", f"{who:02d}")
        labels = _labels(self.classes, self.EMOTIONS[emotion - 1], ("normal", "strong")[intensity - 1])
        return labels, channel == 2

    def read(self, root: Path, participant: str, config: DataConfig | None = None) -> Recording:
        config = config or DataConfig()
        actors = self._actors(root)
        folder = actors.get(participant)
        if folder is None:
            raise DataError(root, "folder", f"Actor_{participant}/", "nothing")
        clips, songs, notes = [], 0, []
        for path in _wavs(folder):
            labels, song = self.parse(path, participant)
            if song and not self.song:
                songs += 1
                continue
            clips.append(Clip(path, labels))
        if songs:
            notes.append(f"{songs} song file(s) (vocal channel 02) skipped: speech only "
                         "(RavdessReader(song=True) reads them)")
        return clips_recording(participant, clips, self.classes, str(folder), config, notes)


EMODB = EmodbReader()
RAVDESS = RavdessReader()
CREMAD = CremadReader()
