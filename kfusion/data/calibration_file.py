"""Calibration files: each participant's calibration statistics as JSON, for apps and
``kfusion predict --calibration FILE``.

``kfusion calibrate`` writes (:func:`write_calibration`)::

    {"kind": "kfusion-calibration", "format": 2,
     "source": "stresspredict:PATH", "data": {DataConfig}, "calibration": {CalibrationConfig},
     "channels": {"acc": "x, y, z in 1/64 g at 32 Hz", ..., "speech": "MFCC c0..c39 ..."},
     "participants": {"S02": {"acc": {"method": "participant", "seconds": 420.0,
                                      "mean": [x, y, z], "std": [x, y, z], "windows": 139,
                                      "level_mean": [6 values], "level_std": [6 values]}, ...}, ...},
     "notes": {"S01": ["eda: too little signal to calibrate (head)"]},
     "kfusion_version": "...", "created": "2025-01-01T00:00:00+00:00"}

``mean``/``std`` are per channel of the signal before windowing at the model rate (E4 units),
for speech per MFCC coefficient over the non-silent frames
(:func:`kfusion.data.calibration.recording_calibration`; ``method``: ``participant`` = the
whole recording, ``head`` = its first ``head_minutes``; ``seconds``: how much signal they came
from). ``level_mean``/``level_std`` (with ``calibration.standardize_levels``): of the window
levels (mean then log-std of each calibrated channel; speech: then the 5 prosody levels,
``kfusion.data.prosody.PROSODY_NAMES``, and the 13 flux levels, ``kfusion.data.spectral_flux.FLUX_NAMES``,
as the model's levels hold them) of ``windows`` windows of the same signal; the
model's levels are standardised by them (format 1 files have none: levels are used as they are).
A modality missing from a participant had too little signal; the model then
sees it uncalibrated, as in training. :func:`read_calibration` checks a file and returns
``{participant: {modality: ChannelStats}}``.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

import kfusion
from kfusion.config import DataConfig
from kfusion.data.calibration import ChannelStats, recording_calibration, speech_level_widths
from kfusion.modalities import CHANNELS, MODALITIES, N_MFCC, NOMINAL_RATES, SPEECH
from kfusion.data.sources import Source, load_recordings
from kfusion.data.tables import read_json_file
from kfusion.errors import ConfigError, DataError

CALIBRATION_KIND = "kfusion-calibration"
CALIBRATION_FORMAT = 2
#: Formats read: 1 (channel statistics only), 2 (+ the window levels' mean and std).
READ_FORMATS = (1, 2)
METHODS = ("participant", "head")

__all__ = ["CALIBRATION_KIND", "CALIBRATION_FORMAT", "channel_descriptions", "participant_calibrations",
           "calibration_document", "write_calibration", "read_calibration", "pick_calibration"]


def channel_descriptions(modalities=MODALITIES) -> dict:
    """What each modality's ``mean``/``std`` entries are, in order."""
    out = {}
    for m in modalities:
        if m == SPEECH:
            out[m] = (f"MFCC coefficients c0..c{N_MFCC - 1} (kfusion MFCC_SETTINGS, before CMVN) "
                      "over the non-silent 10 ms frames of 16 kHz mono audio")
        else:
            names = "x, y, z in 1/64 g" if m == "acc" else {"bvp": "BVP (E4 units)", "eda": "µS",
                                                            "temp": "°C"}[m]
            out[m] = f"{names} at {NOMINAL_RATES[m]:g} Hz ({CHANNELS[m]} channel{'s' * (CHANNELS[m] > 1)})"
    return out


def participant_calibrations(source, config: DataConfig | None = None,
                             participants=None) -> tuple[dict, dict]:
    """``({participant: {modality: ChannelStats}}, {participant: [notes]})`` of one
    ``scheme:PATH`` source: the statistics :func:`build_dataset` computes for each participant
    (``config.calibration``; ids as the reader gives them)."""
    config = config or DataConfig()
    if all(config.calibration.method(m) == "none" for m in config.modalities):
        raise ConfigError("calibration: expected participant or head[:MINUTES] for at least one of "
                          f"{', '.join(config.modalities)}, found none (nothing to compute)")
    loaded = load_recordings(source, config, participants=participants)
    stats, notes = {}, {}
    for recording in loaded.recordings:
        found = recording_calibration(recording, config)
        stats[recording.participant] = found
        lacking = [f"{m}: too little signal to calibrate ({config.calibration.method(m)})"
                   for m in config.modalities
                   if config.calibration.method(m) != "none" and m in recording.modalities and m not in found]
        if lacking:
            notes[recording.participant] = lacking
    for pid, err in loaded.problems.items():  # config.skip_bad
        notes[pid] = [f"not read: {err}"]
    return stats, notes


def calibration_document(source, config: DataConfig | None = None, participants=None) -> dict:
    """The JSON document ``kfusion calibrate`` writes (see the module docstring)."""
    config = config or DataConfig()
    stats, notes = participant_calibrations(source, config, participants)
    return {"kind": CALIBRATION_KIND, "format": CALIBRATION_FORMAT, "source": str(Source.parse(source)),
            "data": config.to_dict(), "calibration": config.calibration.to_dict(),
            "channels": channel_descriptions(config.modalities),
            "participants": {pid: {m: s.to_dict() for m, s in found.items()} for pid, found in stats.items()},
            "notes": notes, "kfusion_version": kfusion.__version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def write_calibration(path, source, config: DataConfig | None = None, participants=None) -> dict:
    """Compute the calibration of ``source`` and write it to ``path`` (JSON); returns the document."""
    document = calibration_document(source, config, participants)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n")
    return document


def _numbers(path, where: str, values) -> list[float]:
    if not isinstance(values, list) or not values or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in values):
        raise DataError(path, where, "a non-empty list of finite numbers", repr(values)[:80])
    return [float(v) for v in values]


def _stats(path, where: str, entry) -> ChannelStats:
    if not isinstance(entry, dict):
        raise DataError(path, where, "an object with method, seconds, mean and std", type(entry).__name__)
    missing = [k for k in ("method", "seconds", "mean", "std") if k not in entry]
    if missing:
        raise DataError(path, f"{where}.{missing[0]}", "a value (method, seconds, mean, std)", "nothing")
    mean = _numbers(path, f"{where}.mean", entry["mean"])
    std = _numbers(path, f"{where}.std", entry["std"])
    if len(std) != len(mean):
        raise DataError(path, f"{where}.std", f"{len(mean)} values (one per channel, as mean)", len(std))
    if min(std) <= 0:
        raise DataError(path, f"{where}.std", "positive standard deviations", min(std))
    if entry["method"] not in METHODS:
        raise DataError(path, f"{where}.method", f"one of {', '.join(METHODS)}", repr(entry["method"]))
    seconds = entry["seconds"]
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < math.inf:
        raise DataError(path, f"{where}.seconds", "a number of seconds >= 0", repr(seconds))
    if "level_mean" in entry or "level_std" in entry:
        for key in ("level_mean", "level_std"):
            values = _numbers(path, f"{where}.{key}", entry.get(key))
            speech = where.rsplit(".", 1)[-1] == SPEECH
            widths = speech_level_widths(2 * len(mean)) if speech else [2 * len(mean)]
            if len(values) not in widths:
                more = ", ".join(map(str, widths[1:-1])) + f" or {widths[-1]}"
                raise DataError(path, f"{where}.{key}", f"{widths[0]} values (mean then log-std level "
                                "of each channel" + (f"; or {more} with the prosody and/or flux levels "
                                                     "after them" if speech else "") + ")", len(values))
        if min(entry["level_std"]) <= 0:
            raise DataError(path, f"{where}.level_std", "positive standard deviations", min(entry["level_std"]))
    return ChannelStats.from_dict(entry)


def read_calibration(path) -> dict[str, dict[str, ChannelStats]]:
    """``{participant: {modality: ChannelStats}}`` of a calibration file, checked (errors name
    the file and the field)."""
    path = Path(path)
    document = read_json_file(path, "a calibration JSON file written by kfusion calibrate")
    if not isinstance(document, dict) or document.get("kind") != CALIBRATION_KIND:
        raise DataError(path, "kind", f"'{CALIBRATION_KIND}' (a file written by kfusion calibrate)",
                        repr(document.get("kind")) if isinstance(document, dict) else type(document).__name__)
    if document.get("format") not in READ_FORMATS:
        raise DataError(path, "format", " or ".join(map(str, READ_FORMATS)), repr(document.get("format")))
    participants = document.get("participants")
    if not isinstance(participants, dict) or not participants:
        raise DataError(path, "participants", "an object {participant: {modality: statistics}} with "
                        "at least one participant", repr(participants)[:80])
    out = {}
    for pid, modalities in participants.items():
        if not isinstance(modalities, dict):
            raise DataError(path, f"participants.{pid}", "an object {modality: statistics}",
                            type(modalities).__name__)
        out[str(pid)] = {}
        for m, entry in modalities.items():
            if m not in MODALITIES:
                raise DataError(path, f"participants.{pid}", f"modalities among {', '.join(MODALITIES)}", repr(m))
            stats = _stats(path, f"participants.{pid}.{m}", entry)
            want = N_MFCC if m == SPEECH else CHANNELS[m]
            if stats.mean.shape[0] != want:
                raise DataError(path, f"participants.{pid}.{m}.mean",
                                f"{want} values (one per {'MFCC coefficient' if m == SPEECH else 'channel'})",
                                stats.mean.shape[0])
            out[str(pid)][m] = stats
    return out


def pick_calibration(calibrations: dict, participant: str, where="calibration") -> dict[str, ChannelStats]:
    """The statistics for ``participant``: its own entry, else the file's only one (an app's
    user calibrated under another id); several others and none for it is an error."""
    if participant in calibrations:
        return calibrations[participant]
    if len(calibrations) == 1:
        return next(iter(calibrations.values()))
    raise DataError(where, "participants", f"an entry for participant {participant} (or a file with "
                    "a single participant)", ", ".join(calibrations))
