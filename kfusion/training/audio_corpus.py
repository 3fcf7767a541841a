"""Unlabelled speech for the autoencoder: a folder tree of audio files cut into MFCC windows.

Any tree works: VoxCeleb-like ``id10001/<video>/00001.wav`` (the speaker is the first folder
under the root) or a flat folder of files (each file is its own speaker). Files are read with
``soundfile``, mixed down to mono, resampled to 16 kHz, cut into windows of ``seconds`` with
``overlap`` seconds shared by neighbours, and turned into MFCC frames with the same front end
and normalisation as the data sets (:func:`kfusion.data.features.speech_features`): 4 s gives
``[400, 40]``. A file shorter than one window is zero-padded to one window (as the authors' app
pads short buffers).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from math import gcd
from pathlib import Path

import numpy as np

from kfusion import checks
from kfusion.data.features import speech_features
from kfusion.modalities import AUDIO_RATE
from kfusion.errors import DataError

__all__ = ["AUDIO_SUFFIXES", "AudioCorpus", "find_audio_files", "speaker_of", "audio_windows",
           "read_audio_corpus"]

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


@dataclass
class AudioCorpus:
    """MFCC windows of an audio folder: ``inputs`` ``[N, frames, 40]`` float32, ``speakers``
    ``[N]`` str, ``fingerprint`` (file names, sizes and modification times + settings) and
    ``report`` (files, windows per speaker, padded files)."""

    inputs: np.ndarray
    speakers: np.ndarray
    fingerprint: str
    report: dict = field(default_factory=dict)


def find_audio_files(root: str | Path) -> list[Path]:
    """Every audio file under ``root`` (recursively), in a fixed sorted order."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "path", "a folder of audio files (.wav, .flac, .ogg)", "nothing")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise DataError(root, "files", f"at least one audio file ({', '.join(AUDIO_SUFFIXES)})", "none")
    return files


def speaker_of(path: Path, root: Path) -> str:
    """The first folder under ``root`` (VoxCeleb speaker id), or the file's stem when flat."""
    parts = Path(path).relative_to(root).parts
    return parts[0] if len(parts) > 1 else Path(path).stem


def audio_windows(path: str | Path, seconds: float = 4.0, overlap: float = 1.0) -> np.ndarray:
    """Windows ``[N, seconds * 16000]`` float32 of one file (mono, 16 kHz)."""
    import scipy.signal
    import soundfile

    path = Path(path)
    try:
        audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as err:
        raise DataError(path, "audio", "a readable audio file", f"unreadable ({err})") from None
    audio = audio.mean(axis=1)
    if rate != AUDIO_RATE:
        common = gcd(int(rate), AUDIO_RATE)
        audio = scipy.signal.resample_poly(audio, AUDIO_RATE // common, int(rate) // common).astype(np.float32)
    length = int(round(seconds * AUDIO_RATE))
    hop = int(round((seconds - overlap) * AUDIO_RATE))
    if audio.size < length:
        audio = np.pad(audio, (0, length - audio.size))
    starts = np.arange(0, audio.size - length + 1, hop)
    return np.stack([audio[s:s + length] for s in starts]).astype(np.float32)


def read_audio_corpus(root: str | Path, seconds: float = 4.0, overlap: float = 1.0, norm: str = "cmvn",
                      max_windows_per_file: int | None = None, seed: int = 0) -> AudioCorpus:
    """MFCC windows of every audio file under ``root``. ``max_windows_per_file``: keep at most
    this many windows per file (drawn with ``seed``) to bound memory on big corpora."""
    seconds = checks.positive("audio windows: seconds", seconds, "a positive number of seconds")
    overlap = checks.number("audio windows: overlap", overlap, 0, seconds, high_open=True, what="a number of seconds")
    max_windows_per_file = checks.optional_whole("max_windows_per_file", max_windows_per_file, 1)
    root = Path(root)
    files = find_audio_files(root)
    rng = np.random.default_rng(seed)
    digest = hashlib.sha256(repr((seconds, overlap, norm, max_windows_per_file, seed)).encode())
    blocks, speakers, padded, per_speaker = [], [], [], {}
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        raw = audio_windows(path, seconds, overlap)
        if raw.shape[0] == 1 and stat.st_size and _shorter_than(path, seconds):
            padded.append(str(path.relative_to(root)))
        if max_windows_per_file is not None and raw.shape[0] > max_windows_per_file:
            raw = raw[np.sort(rng.choice(raw.shape[0], max_windows_per_file, replace=False))]
        blocks.append(speech_features(raw, norm))
        who = speaker_of(path, root)
        speakers.extend([who] * raw.shape[0])
        per_speaker[who] = per_speaker.get(who, 0) + raw.shape[0]
    inputs = np.concatenate(blocks).astype(np.float32)
    report = {"root": str(root), "files": len(files), "windows": int(inputs.shape[0]),
              "windows_per_speaker": per_speaker, "zero_padded_files": padded}
    return AudioCorpus(inputs, np.asarray(speakers), digest.hexdigest()[:32], report)


def _shorter_than(path: Path, seconds: float) -> bool:
    import soundfile

    info = soundfile.info(str(path))
    return info.frames < seconds * info.samplerate
