"""Per-person calibration: statistics of one participant's own signals, and windows in them.

Arousal lives partly in levels (skin-conductance level, heart rate, loudness, spectral
envelope) that differ more between people than between states of one person. Per-window
normalisation removes the levels altogether; calibration keeps them, measured against the
person's own baseline, as speaker normalisation does in speech emotion recognition and baseline
normalisation in physiology.

:func:`recording_calibration` computes, per modality, the mean and standard deviation of each
channel from the signal before windowing (at the model rate; speech: of each MFCC coefficient
over the recording's non-silent frames), from all of the participant's recording
(``"participant"``) or from its first ``head_minutes`` (``"head"``). Labels never enter.
:func:`calibrate` standardises values by them, and :func:`window_levels` gives each window's
level: the mean and ``log(std + LEVEL_EPS)`` of every (calibrated) channel over the window.
With ``CalibrationConfig.standardize_levels`` the same stretch of signal is also cut into
windows and the mean and standard deviation of their levels are kept
(``ChannelStats.level_mean/level_std``); :func:`standardize_levels` then standardises every
window level by them: the per-speaker feature normalisation of speech emotion recognition, from
the person's own unlabelled signal like the rest of calibration.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kfusion.config import DataConfig
from kfusion.modalities import AUDIO_RATE, SPEECH
from kfusion.data.recording import Recording

#: Added to a window's standard deviation before the log (in calibrated units: a thousandth of
#: the person's own spread), so a flat window has a finite level.
LEVEL_EPS = 1e-3
#: Speech frames more than this many dB below the recording's loud frames (95th percentile of
#: the frames' energy) count as silence and do not enter the statistics.
SILENCE_DB = 35.0
#: Audio is turned into MFCC frames in segments of this many seconds (bounded memory).
SEGMENT_SECONDS = 60
#: Fewer usable samples than this (seconds of signal) make calibration impossible.
MIN_SECONDS = 10.0
#: Fewer complete windows than this leave the window levels unstandardised (identity rows).
MIN_LEVEL_WINDOWS = 3
#: Rows of a calibration array (:meth:`ChannelStats.rows`): channel mean, channel std, level
#: mean (means part, log-std part), level std (means part, log-std part).
CALIBRATION_ROWS = 6
#: Rows with extra level columns (speech prosody and cepstral flux): then also their level mean
#: and std, padded to the channel count with 0 and 1.
EXTRA_LEVEL_ROWS = 8


@dataclass(frozen=True)
class ChannelStats:
    """Calibration of one modality of one participant: ``mean``/``std`` per channel ``[C]``
    (speech: per MFCC coefficient), the ``method`` and the ``seconds`` of signal they came from;
    optionally ``level_mean``/``level_std`` ``[2C + E]``: of the window levels of the same
    signal (``E`` extra level columns: speech prosody and flux, :func:`speech_extra_names`), from
    ``windows`` windows (None: window levels are used as they are)."""

    mean: np.ndarray
    std: np.ndarray
    method: str
    seconds: float
    level_mean: np.ndarray | None = None
    level_std: np.ndarray | None = None
    windows: int = 0

    def to_dict(self) -> dict:
        out = {"method": self.method, "seconds": round(float(self.seconds), 3),
               "mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}
        if self.level_mean is not None:
            out.update(windows=int(self.windows), level_mean=[float(v) for v in self.level_mean],
                       level_std=[float(v) for v in self.level_std])
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "ChannelStats":
        levels = {}
        if data.get("level_mean") is not None:
            levels = {"level_mean": np.asarray(data["level_mean"], dtype=np.float64),
                      "level_std": np.asarray(data["level_std"], dtype=np.float64),
                      "windows": int(data.get("windows", 0))}
        return cls(np.asarray(data["mean"], dtype=np.float64), np.asarray(data["std"], dtype=np.float64),
                   str(data["method"]), float(data["seconds"]), **levels)

    @classmethod
    def identity(cls, channels: int) -> "ChannelStats":
        """Statistics that change nothing (an uncalibrated modality)."""
        return cls(np.zeros(channels), np.ones(channels), "none", 0.0)

    def without_levels(self) -> "ChannelStats":
        return ChannelStats(self.mean, self.std, self.method, self.seconds)

    def rows(self, n_rows: int = CALIBRATION_ROWS) -> np.ndarray:
        """The calibration as a model input ``[n_rows, C]`` float32: mean, std, then (6 rows)
        the level mean and std split into their means and log-std halves, then (8 rows) the
        extra level columns' mean and std, padded with 0 and 1; identity rows (0, 1) where
        level statistics are missing."""
        channels = int(np.shape(self.mean)[0])
        out = [self.mean, self.std]
        if n_rows in (CALIBRATION_ROWS, EXTRA_LEVEL_ROWS):
            width = 2 * channels + (channels if n_rows == EXTRA_LEVEL_ROWS else 0)
            level_mean, level_std = pad_level_statistics(self, width)
            out += [level_mean[:channels], level_mean[channels:2 * channels],
                    level_std[:channels], level_std[channels:2 * channels]]
            if n_rows == EXTRA_LEVEL_ROWS:
                out += [level_mean[2 * channels:], level_std[2 * channels:]]
        elif n_rows != 2:
            raise ValueError(f"ChannelStats.rows: n_rows must be 2, {CALIBRATION_ROWS} or "
                             f"{EXTRA_LEVEL_ROWS}, found {n_rows}")
        return np.stack([np.asarray(r, dtype=np.float64) for r in out]).astype(np.float32)


def pad_level_statistics(stats: ChannelStats | None, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``stats``' level mean and std as ``[width]`` each: cut, or padded with identity (0, 1)
    where they are missing (no level statistics, or fewer columns: a file from before a level
    column was added)."""
    mean, std = np.zeros(width), np.ones(width)
    if stats is not None and stats.level_mean is not None:
        k = min(width, int(np.shape(stats.level_mean)[0]))
        mean[:k], std[:k] = stats.level_mean[:k], stats.level_std[:k]
    return mean, std


def _stats(values: np.ndarray, method: str, seconds: float) -> ChannelStats:
    values = np.asarray(values, dtype=np.float64)
    mean = values.mean(axis=0)
    std = values.std(axis=0)
    # A flat channel (an E4 off the skin, digital silence) keeps unit scale: calibrated values
    # are then deviations from its constant level rather than a division by zero.
    std = np.where(std <= 1e-6 * (1.0 + np.abs(mean)), 1.0, std)
    return ChannelStats(mean, std, method, seconds)


def with_level_statistics(stats: ChannelStats, levels: np.ndarray) -> ChannelStats:
    """``stats`` plus the mean/std of window ``levels`` ``[n, 2C]`` (unchanged if too few)."""
    levels = np.asarray(levels, dtype=np.float64)
    if levels.shape[0] < MIN_LEVEL_WINDOWS:
        return stats
    found = _stats(levels, stats.method, 0.0)
    return ChannelStats(stats.mean, stats.std, stats.method, stats.seconds, found.mean, found.std,
                        int(levels.shape[0]))


def _window_starts(n: int, length: int, hop: int) -> np.ndarray:
    return np.arange(0, n - length + 1, hop) if n >= length and length > 0 and hop > 0 else np.zeros(0, int)


def standardize_levels(levels: np.ndarray, stats: ChannelStats | None) -> np.ndarray:
    """Window levels ``[N, 2C + E]`` standardised by the person's level statistics (unchanged
    without them; columns they lack stay as they are)."""
    if stats is None or stats.level_mean is None:
        return np.asarray(levels, dtype=np.float32)
    mean, std = pad_level_statistics(stats, np.shape(levels)[-1])
    return ((np.asarray(levels, dtype=np.float64) - mean) / std).astype(np.float32)


def signal_statistics(values: np.ndarray, rate: float, method: str, head_minutes: float,
                      offset: int = 0, window: tuple[float, float] | None = None) -> ChannelStats | None:
    """Statistics of ``values [n, C]`` sampled at ``rate`` Hz (NaN = gap): all finite samples
    from ``offset`` on (``"participant"``) or those of the ``head_minutes`` after ``offset``
    (``"head"``). None when fewer than :data:`MIN_SECONDS` of finite samples are left.
    ``window``: ``(seconds, hop seconds)``: also the level statistics of the gap-free windows
    of that stretch, cut from its start."""
    values = np.asarray(values)
    if values.ndim == 1:
        values = values[:, None]
    values = values[max(int(offset), 0):]
    if method == "head":
        values = values[:int(round(head_minutes * 60.0 * rate))]
    good = np.isfinite(values).all(axis=1)
    finite = values[good]
    if finite.shape[0] < MIN_SECONDS * rate:
        return None
    stats = _stats(finite, method, finite.shape[0] / rate)
    if window is None:
        return stats
    length, hop = int(round(window[0] * rate)), int(round(window[1] * rate))
    starts = _window_starts(values.shape[0], length, hop)
    if not starts.size:
        return stats
    bad = np.concatenate([[0], np.cumsum(~good)])
    starts = starts[bad[starts + length] == bad[starts]]  # gap-free windows only
    if not starts.size:
        return stats
    windows = np.stack([values[s:s + length] for s in starts])
    return with_level_statistics(stats, window_levels(calibrate(windows, stats)))


def speech_frames(samples: np.ndarray) -> np.ndarray:
    """MFCC frames ``[F, 40]`` of a whole 16 kHz recording, computed in segments."""
    from kfusion.data.features import MFCC_SETTINGS, mfcc

    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    segment = SEGMENT_SECONDS * AUDIO_RATE
    n_frames = MFCC_SETTINGS.frames(samples.shape[0])
    if n_frames == 0:
        return np.zeros((0, MFCC_SETTINGS.n_mfcc), dtype=np.float32)
    count = -(-samples.shape[0] // segment)
    padded = np.zeros(count * segment, dtype=np.float32)
    padded[:samples.shape[0]] = samples
    frames = mfcc(padded.reshape(count, segment)).reshape(-1, MFCC_SETTINGS.n_mfcc)
    return frames[:n_frames]


def frame_energy_db(samples: np.ndarray, n_frames: int) -> np.ndarray:
    """``[n_frames]`` energy (dB) of the 25 ms frame centred on every 10 ms step of 16 kHz
    ``samples`` (the MFCC frames' grid)."""
    from kfusion.data.features import MFCC_SETTINGS

    hop, size = MFCC_SETTINGS.hop_length, MFCC_SETTINGS.n_fft
    power = np.asarray(samples, dtype=np.float64).reshape(-1) ** 2
    padded = np.concatenate([np.zeros(size // 2), power, np.zeros(size // 2 + hop)])
    cumulative = np.concatenate([[0.0], np.cumsum(padded)])
    begin = np.arange(n_frames) * hop
    energy = (cumulative[begin + size] - cumulative[begin]) / size
    return 10.0 * np.log10(energy + 1e-10)


def voiced_frames(energy_db: np.ndarray) -> np.ndarray:
    """Bool ``[F]``: frames within :data:`SILENCE_DB` of the recording's loud frames (95th
    percentile of the frame energies) and above digital silence."""
    if energy_db.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    return (energy_db >= np.percentile(energy_db, 95) - SILENCE_DB) & (energy_db > -90.0)


def speech_statistics(samples: np.ndarray, method: str, head_minutes: float,
                      offset: int = 0, window: tuple[float, float] | None = None,
                      prosody: bool = False, flux: bool = False) -> ChannelStats | None:
    """Statistics of each MFCC coefficient over the non-silent frames of 16 kHz ``samples``
    from sample ``offset`` on (all, or the first ``head_minutes``). ``window``: ``(seconds, hop
    seconds)``: also the level statistics of the windows of frames cut from the start that hold
    some non-silent frame; with ``prosody`` / ``flux``, their levels include the windows'
    :func:`~kfusion.data.prosody.window_prosody` / :func:`~kfusion.data.spectral_flux.window_flux`
    (as the data sets' speech levels do)."""
    samples = np.asarray(samples).reshape(-1)[max(int(offset), 0):]
    if method == "head":
        samples = samples[:int(round(head_minutes * 60.0 * AUDIO_RATE))]
    frames = speech_frames(samples)
    voiced = voiced_frames(frame_energy_db(samples, frames.shape[0]))
    frame_rate = AUDIO_RATE / 160.0
    if voiced.sum() < MIN_SECONDS * frame_rate * 0.1:  # at least 1 s of speech
        return None
    stats = _stats(frames[voiced], method, voiced.sum() / frame_rate)
    if window is None:
        return stats
    length, hop = int(round(window[0] * frame_rate)), int(round(window[1] * frame_rate))
    starts = _window_starts(frames.shape[0], length, hop)
    count = np.concatenate([[0], np.cumsum(voiced)])
    starts = starts[count[starts + length] > count[starts]] if starts.size else starts
    if not starts.size:
        return stats
    windows = np.stack([frames[s:s + length] for s in starts])
    levels = [window_levels(calibrate(windows, stats))]
    if prosody:
        from kfusion.data.features import MFCC_SETTINGS

        audio_starts = starts * MFCC_SETTINGS.hop_length
        levels.append(_prosody_of(samples, audio_starts, int(round(window[0] * AUDIO_RATE))))
    if flux:
        from kfusion.data.spectral_flux import window_flux

        levels.append(window_flux(windows))
    return with_level_statistics(stats, np.concatenate(levels, axis=1))


def _prosody_of(samples: np.ndarray, starts: np.ndarray, length: int, chunk: int = 64) -> np.ndarray:
    """:func:`~kfusion.data.prosody.window_prosody` of the ``length``-sample windows of
    ``samples`` at ``starts`` (stacked a chunk at a time: bounded memory)."""
    from kfusion.data.prosody import window_prosody

    samples = np.asarray(samples, dtype=np.float32)
    return np.concatenate([window_prosody(np.stack([samples[s:s + length] for s in starts[i:i + chunk]]))
                           for i in range(0, starts.size, chunk)])


def recording_calibration(recording: Recording, config: DataConfig | None = None,
                          series: dict | None = None) -> dict[str, ChannelStats]:
    """``{modality: ChannelStats}`` of the requested modalities the recording has and whose
    calibration (``config.calibration``) is not ``"none"``. ``"head"`` starts at the windowed
    span's start (the reader's span, else the modality's own start). ``series``: the
    recording's :func:`~kfusion.data.windows.model_rate_series` when the caller has it already
    (quality-checked samples are NaN there and never enter the statistics)."""
    from kfusion.data.windows import model_rate_series

    config = config or DataConfig()
    wanted = [m for m in config.modalities if config.calibration.method(m) != "none"]
    if series is None:
        series = model_rate_series(recording, wanted, config.quality_checks)
    out = {}
    span_start = None if recording.span is None else float(recording.span[0])
    minutes = config.calibration.head_minutes
    window = (config.window.seconds, config.window.hop) if config.calibration.standardize_levels else None
    for modality in wanted:
        if modality not in series:
            continue
        method, found = config.calibration.method(modality), series[modality]
        offset = 0 if span_start is None else int(round((span_start - found.start) * found.rate))
        stats = (speech_statistics(found.values, method, minutes, offset, window, config.features.speech_prosody,
                                   config.features.speech_flux)
                 if modality == SPEECH
                 else signal_statistics(found.values, found.rate, method, minutes, offset, window))
        if stats is not None:
            out[modality] = stats
    return out


def calibrate(values: np.ndarray, stats: ChannelStats | None) -> np.ndarray:
    """``(values - mean) / std`` over the last axis (channels); unchanged without ``stats``."""
    if stats is None:
        return np.asarray(values, dtype=np.float32)
    return ((np.asarray(values, dtype=np.float64) - stats.mean) / stats.std).astype(np.float32)


def window_levels(windows: np.ndarray) -> np.ndarray:
    """Level of windows ``[N, T, C]``: ``[N, 2C]`` = mean per channel, then
    ``log(std + LEVEL_EPS)`` per channel (float32)."""
    x = np.asarray(windows, dtype=np.float64)
    mean = x.mean(axis=1)
    spread = np.log(x.std(axis=1) + LEVEL_EPS)
    return np.concatenate([mean, spread], axis=1).astype(np.float32)


def speech_extra_names(prosody: bool, flux: bool) -> list[str]:
    """Names of the extra speech level columns after the ``2C`` MFCC levels, in their order:
    the prosody (:data:`~kfusion.data.prosody.PROSODY_NAMES`), then the cepstral flux
    (:data:`~kfusion.data.spectral_flux.FLUX_NAMES`)."""
    from kfusion.data.prosody import PROSODY_NAMES
    from kfusion.data.spectral_flux import FLUX_NAMES

    return (list(PROSODY_NAMES) if prosody else []) + (list(FLUX_NAMES) if flux else [])


#: Every layout of the extra speech level columns, ``(prosody, flux)``, narrowest first
#: (0, 5, 13 and 18 columns).
SPEECH_EXTRA_LAYOUTS: tuple[tuple[bool, bool], ...] = ((False, False), (True, False), (False, True), (True, True))


def speech_extras_of_width(extra: int) -> tuple[bool, bool] | None:
    """``(prosody, flux)`` of speech levels with ``extra`` columns after the MFCC levels
    (None when no layout has that many)."""
    return next((layout for layout in SPEECH_EXTRA_LAYOUTS if len(speech_extra_names(*layout)) == extra), None)


def speech_level_widths(base: int) -> list[int]:
    """The widths speech levels with ``base`` MFCC level columns may have, narrowest first."""
    return [base + len(speech_extra_names(*layout)) for layout in SPEECH_EXTRA_LAYOUTS]


def calibration_rows(modality: str, prosody: bool = False, flux: bool = False) -> int:
    """Rows of ``modality``'s calibration input (:meth:`ChannelStats.rows`) for a model whose
    speech levels hold ``prosody`` / ``flux``."""
    return EXTRA_LEVEL_ROWS if modality == SPEECH and (prosody or flux) else CALIBRATION_ROWS


def with_speech_extras(stats: ChannelStats, prosody: bool, flux: bool) -> ChannelStats:
    """Speech ``stats`` with their level statistics laid out for levels holding ``prosody`` and
    ``flux`` (:func:`speech_extra_names`): a calibration file written for another layout (a model
    with other extra columns) keeps the columns both have, and identity (0, 1) for the ones it
    lacks. Statistics without level statistics, or with a width no layout has, are returned
    unchanged."""
    if stats.level_mean is None:
        return stats
    base = 2 * int(np.shape(stats.mean)[0])
    found = speech_extras_of_width(int(np.shape(stats.level_mean)[0]) - base)
    if found is None or found == (prosody, flux):
        return stats
    have = speech_extra_names(*found)
    mean, std = [stats.level_mean[:base]], [stats.level_std[:base]]
    for name in speech_extra_names(prosody, flux):
        k = have.index(name) if name in have else None
        mean.append([0.0] if k is None else [stats.level_mean[base + k]])
        std.append([1.0] if k is None else [stats.level_std[base + k]])
    return ChannelStats(stats.mean, stats.std, stats.method, stats.seconds, np.concatenate(mean),
                        np.concatenate(std), stats.windows)


def level_names(modality: str, channels: int, prosody: bool = False, flux: bool = False) -> list[str]:
    """Column names of :func:`window_levels` for ``modality`` (+ speech ``prosody``, ``flux``)."""
    suffix = [str(c) for c in range(channels)] if channels > 1 else [""]
    if modality == "acc" and channels == 3:
        suffix = ["x", "y", "z"]
    base = [f"{modality}{'_' + s if s else ''}" for s in suffix]
    extra = [f"{modality}_level_{n}" for n in speech_extra_names(prosody, flux)]
    return [f"{b}_level_mean" for b in base] + [f"{b}_level_logstd" for b in base] + extra


def calibration_settings() -> dict:
    """Everything about calibration that changes the numbers (for cache keys)."""
    return {"level_eps": LEVEL_EPS, "silence_db": SILENCE_DB, "segment_seconds": SEGMENT_SECONDS,
            "min_seconds": MIN_SECONDS, "levels": "mean, log(std + eps) per channel",
            "level_statistics": f"windows cut from the calibration signal's start, >= {MIN_LEVEL_WINDOWS}; "
                                "speech windows with a non-silent frame"}
