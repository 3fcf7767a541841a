"""Cutting a :class:`~kfusion.data.recording.Recording` into fixed-length windows.

Every modality is cut on the one UNIX clock. Window ``k`` starts at ``span0 + k * hop``
(``hop = seconds - overlap``) for as long as it ends inside the span, where the span is the
recording's ``span`` if the reader set one, else the union of the requested modalities'
coverage; a span longer than 7 days (times in another unit or a wrong date) is a
:class:`~kfusion.errors.DataError` naming every file's span, raised before anything is sized by
it. Before cutting, wearable signals are brought to their nominal rate
(:data:`~kfusion.modalities.NOMINAL_RATES`) and audio to 16 kHz, so a 4 s window is
ACC ``[128, 3]``, BVP ``[256, 1]``, EDA ``[16, 1]``, TEMP ``[16, 1]`` and speech ``[64000]``.

A window lacks a modality when the recording has none, when the modality does not cover the
whole window, or when the window holds a NaN (a gap). ``window.missing == "drop"`` drops such
windows and counts them under the first failing modality (in the requested order) with the
reason ``"no eda data"``, ``"eda not covered"`` or ``"gap in eda"``; ``"fill"`` keeps them
zero-filled with ``presence[modality] = False`` (windows with no modality at all are still
dropped, as ``"no requested modality present"``).

A recording with :class:`~kfusion.data.recording.Segments` (the utterances of a clip corpus) is
cut per segment instead (:func:`segment_window_starts`): no window straddles two segments, and a
segment shorter than a window gives one window whose samples after the segment's end are zeros;
its real length is kept (``RecordingWindows.lengths``) and only that part must be covered.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
from scipy.signal import resample_poly

from kfusion.config import DataConfig
from kfusion.modalities import AUDIO_RATE, CHANNELS, NOMINAL_RATES, SPEECH, check_modalities
from kfusion.data.quality import clean_signal
from kfusion.data.recording import Audio, Recording, Signal
from kfusion.data.tables import MAX_SPAN_SECONDS
from kfusion.errors import DataError

#: Seconds of float slack when deciding whether the last window still fits in the span.
TIME_TOLERANCE = 1e-5
#: How signals are brought to the nominal rate (part of the data-set fingerprint).
RESAMPLING = "scipy.signal.resample_poly(padtype=line for wearables, constant for audio), " \
             "ratio limit_denominator(1000), NaN gaps linearly bridged then re-marked"
NO_MODALITY_REASON = "no requested modality present"


@dataclass
class RecordingWindows:
    """The windows kept from one recording, before feature extraction.

    ``starts``: ``[N]`` float64 UNIX seconds. ``raw``: modality -> float32 ``[N, n, C]`` at the
    nominal rate (speech: ``[N, n]`` mono 16 kHz samples); windows where the modality is absent
    hold zeros. ``presence``: modality -> bool ``[N]``. ``total``: candidate windows in the span;
    ``dropped``: reason -> count (``total == N + sum(dropped.values())``). ``coverage``:
    modality -> ``(start, end)`` UNIX s of the data the recording has; ``files``: modality ->
    source file. ``lengths``: ``[N]`` float64 seconds of real signal in each window (the window
    length, or less for a zero-padded short segment); None for a recording without segments.
    """

    participant: str
    starts: np.ndarray
    raw: dict
    presence: dict
    total: int
    dropped: dict = field(default_factory=dict)
    span: tuple | None = None
    coverage: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)
    quality: dict = field(default_factory=dict)
    lengths: np.ndarray | None = None

    @property
    def kept(self) -> int:
        return int(self.starts.shape[0])


def window_starts(span_start: float, span_end: float, seconds: float, hop: float) -> np.ndarray:
    """UNIX start times of all windows of ``seconds`` that fit in ``[span_start, span_end]``.

    ``start_k = span_start + k * hop`` while ``start_k + seconds <= span_end`` (within
    :data:`TIME_TOLERANCE`). E.g. a 20 s span, 4 s windows, 3 s hop -> offsets 0, 3, ..., 15.
    """
    length = float(span_end) - float(span_start)
    if not length <= MAX_SPAN_SECONDS:  # never size an array by an absurd span (NaN included)
        raise DataError(None, "time span", f"a span of at most {MAX_SPAN_SECONDS / 86400:g} days "
                        "(UNIX seconds)", f"{float(span_start):.3f}-{float(span_end):.3f} "
                        f"({length:.0f} s)")
    if length + TIME_TOLERANCE < seconds:
        return np.zeros(0, dtype=np.float64)
    count = int(np.floor((length - seconds + TIME_TOLERANCE) / hop)) + 1
    return float(span_start) + np.arange(count, dtype=np.float64) * hop


def segment_window_starts(segments, seconds: float, hop: float,
                          span: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(starts, lengths)`` of the windows of :class:`~kfusion.data.recording.Segments`, each
    segment cut on its own: a segment at least ``seconds`` long gives the windows of
    :func:`window_starts` inside it (length ``seconds``); a shorter one gives a single window at
    its start whose length is the segment's (the rest is zero padding). Segments outside
    ``span`` are left out and those crossing its ends are clipped to it.
    """
    starts, lengths = [], []
    for s0, s1 in zip(segments.start, segments.end):
        if span is not None:
            s0, s1 = max(float(s0), float(span[0])), min(float(s1), float(span[1]))
            if s1 <= s0:
                continue
        if s1 - s0 + TIME_TOLERANCE >= seconds:
            inside = window_starts(s0, s1, seconds, hop)
            starts.append(inside)
            lengths.append(np.full(inside.shape[0], float(seconds)))
        else:
            starts.append(np.array([float(s0)]))
            lengths.append(np.array([float(s1) - float(s0)]))
    if not starts:
        return np.zeros(0, dtype=np.float64), np.zeros(0, dtype=np.float64)
    return np.concatenate(starts).astype(np.float64), np.concatenate(lengths).astype(np.float64)


def _rate_ratio(rate_in: float, rate_out: float) -> tuple[int, int]:
    ratio = Fraction(float(rate_out) / float(rate_in)).limit_denominator(1000)
    return ratio.numerator, ratio.denominator


def _bridge_gaps(values: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """Linearly interpolate each channel over the samples in ``bad`` (all-bad -> zeros)."""
    good = ~bad
    out = values.copy()
    if not good.any():
        out[:] = 0.0
        return out
    index = np.arange(values.shape[0])
    for c in range(values.shape[1]):
        out[bad, c] = np.interp(index[bad], index[good], values[good, c])
    return out


def resample(values: np.ndarray, rate_in: float, rate_out: float, padtype: str = "line") -> np.ndarray:
    """Resample ``[n, C]`` (or ``[n]``) samples from ``rate_in`` to ``rate_out`` Hz.

    Polyphase filtering (``scipy.signal.resample_poly``); output length ``ceil(n * up / down)``.
    NaN gaps are bridged linearly for the filter and marked NaN again afterwards: an output
    sample is NaN when any input sample within half an output period of it is NaN, so a gap
    grows by at most about one sample on each side and never smears through the filter.
    """
    values = np.asarray(values, dtype=np.float64)
    squeeze = values.ndim == 1
    if squeeze:
        values = values[:, None]
    if float(rate_in) == float(rate_out) or values.shape[0] == 0:
        out = values
    else:
        up, down = _rate_ratio(rate_in, rate_out)
        bad = ~np.isfinite(values).all(axis=1)
        filled = _bridge_gaps(values, bad) if bad.any() else values
        out = resample_poly(filled, up, down, axis=0, padtype=padtype)
        if bad.any():
            n_in = values.shape[0]
            positions = np.arange(out.shape[0]) * (down / up)  # in input samples
            half = 0.5 * down / up
            lo = np.clip(np.floor(positions - half).astype(np.int64), 0, n_in - 1)
            hi = np.clip(np.ceil(positions + half).astype(np.int64), 0, n_in - 1)
            bad_before = np.concatenate([[0], np.cumsum(bad)])
            out[(bad_before[hi + 1] - bad_before[lo]) > 0] = np.nan
    out = out.astype(np.float32)
    return out[:, 0] if squeeze else out


def to_nominal_rate(signal: Signal, modality: str) -> Signal:
    """``signal`` at ``NOMINAL_RATES[modality]`` (unchanged when already there)."""
    rate = NOMINAL_RATES[modality]
    if float(signal.rate) == rate:
        return signal
    return Signal(resample(signal.values, signal.rate, rate, padtype="line"), rate,
                  signal.start, signal.source)


def to_audio_rate(audio: Audio) -> Audio:
    """``audio`` at 16 kHz (unchanged when already there)."""
    if int(audio.rate) == AUDIO_RATE:
        return audio
    return Audio(resample(audio.samples, audio.rate, AUDIO_RATE, padtype="constant"), AUDIO_RATE,
                 audio.start, audio.source)


@dataclass
class ModelRateSeries:
    """One modality of a recording at its model rate (audio 16 kHz, wearables nominal):
    ``values`` ``[n, C]`` (speech ``[n]``), ``rate`` Hz, ``start`` UNIX s, ``source`` file, and
    ``flags``: ``(reason, bool [n0], rate0, start0)`` per failed quality check
    (:mod:`kfusion.data.quality`) on the signal as read, whose samples are NaN in ``values``."""

    values: np.ndarray
    rate: float
    start: float
    source: str
    flags: list = field(default_factory=list)


def model_rate_series(recording: Recording, modalities, checks: bool = True) -> dict[str, ModelRateSeries]:
    """Every requested modality the recording has, resampled once to its model rate (and
    quality-checked when ``checks``): what windows, calibration and physiology all read."""
    out = {}
    for modality in modalities:
        if modality == SPEECH:
            if recording.audio is None:
                continue
            audio = to_audio_rate(recording.audio)
            out[modality] = ModelRateSeries(audio.samples, float(audio.rate), float(audio.start), audio.source)
            continue
        signal = recording.signals.get(modality)
        if signal is None:
            continue
        signal, found = clean_signal(modality, signal) if checks else (signal, {})
        flags = [(r, mask, float(signal.rate), float(signal.start)) for r, mask in found.items()]
        signal = to_nominal_rate(signal, modality)
        out[modality] = ModelRateSeries(signal.values, float(signal.rate), float(signal.start), signal.source,
                                        flags)
    return out


def _flagged_windows(starts: np.ndarray, seconds, mask: np.ndarray, rate: float,
                     start: float) -> np.ndarray:
    """Bool ``[N]``: windows touching a flagged sample of a signal at ``rate`` from ``start``
    (``seconds``: the window length, or ``[N]`` real lengths of segment windows)."""
    before = np.concatenate([[0], np.cumsum(mask)])
    i0 = np.clip(np.rint((starts - start) * rate).astype(np.int64), 0, mask.shape[0])
    n = (int(round(seconds * rate)) if np.ndim(seconds) == 0
         else np.rint(np.asarray(seconds) * rate).astype(np.int64))
    i1 = np.clip(i0 + n, 0, mask.shape[0])
    return (before[i1] - before[i0]) > 0


def recording_span(recording: Recording, modalities) -> tuple[float, float] | None:
    """The span windows are cut from: ``recording.span`` or the union of the coverage of the
    requested modalities the recording has (None when it has none of them)."""
    if recording.span is not None:
        return float(recording.span[0]), float(recording.span[1])
    ranges = []
    for m in modalities:
        if m == SPEECH and recording.audio is not None:
            ranges.append((recording.audio.start, recording.audio.end))
        elif m in recording.signals:
            ranges.append((recording.signals[m].start, recording.signals[m].end))
    if not ranges:
        return None
    return float(min(r[0] for r in ranges)), float(max(r[1] for r in ranges))


def _fmt(start: float, end: float) -> str:
    return f"{start:.3f}-{end:.3f} (UNIX s, {end - start:.1f} s)"


def check_span(recording: Recording, modalities, span: tuple[float, float] | None) -> None:
    """Raise a :class:`DataError` naming every file and its time span when the windowed
    ``span`` is longer than :data:`~kfusion.data.tables.MAX_SPAN_SECONDS` (7 days): the times of
    one participant's files are then on different clocks or units (e.g. an audio start in
    milliseconds next to E4 files in seconds), and windows would be sized by the span."""
    if span is None or span[1] - span[0] <= MAX_SPAN_SECONDS:
        return
    groups: dict[tuple[float, float], list[str]] = {}  # modalities with the same span together
    files = []
    for m in modalities:
        data = recording.audio if m == SPEECH else recording.signals.get(m)
        if data is None:
            continue
        name = os.path.basename(data.source) if data.source else "?"
        groups.setdefault((float(data.start), float(data.end)), []).append(f"{m} ({name})")
        if data.source and data.source not in files:
            files.append(data.source)
    parts = [f"{', '.join(ms)} {_fmt(*span_)}" for span_, ms in groups.items()]
    if recording.span is not None:
        parts.append(f"reader span {_fmt(float(recording.span[0]), float(recording.span[1]))}")
    days = MAX_SPAN_SECONDS / 86400
    raise DataError(", ".join(files) or recording.source or None, "time span",
                    f"the files of participant {recording.participant} within {days:g} days of "
                    "each other on one clock (UNIX seconds; a longer span means a time in another "
                    "unit or a wrong date)", "; ".join(parts), participant=recording.participant)


def cut_windows(recording: Recording, config: DataConfig | None = None,
                series: dict | None = None) -> RecordingWindows:
    """Cut ``recording`` into the windows of ``config.window`` for ``config.modalities``.
    ``series``: :func:`model_rate_series` of the recording when the caller has it already.

    Sample index of the window starting at ``t``: ``i0 = round((t - start) * rate)`` with
    ``n = round(seconds * rate)`` samples, ``start``/``rate`` those of the (resampled) series.
    With segments, a window of real length ``L < seconds`` takes ``round(L * rate)`` samples
    from ``i0`` and zeros after them.
    """
    config = config or DataConfig()
    modalities = check_modalities(config.modalities)
    seconds, hop = config.window.seconds, config.window.hop
    span = recording_span(recording, modalities)
    check_span(recording, modalities, span)
    lengths = None
    if span is None:
        starts = np.zeros(0, dtype=np.float64)
    elif recording.segments is not None:
        starts, lengths = segment_window_starts(recording.segments, seconds, hop, span)
    else:
        starts = window_starts(span[0], span[1], seconds, hop)
    total = int(starts.shape[0])
    if series is None:
        series = model_rate_series(recording, modalities, config.quality_checks)

    present, cuts = {}, {}
    reason = np.full(total, None, dtype=object)
    coverage, files, quality = {}, {}, {}
    for m in modalities:
        if m not in series:
            present[m] = np.zeros(total, dtype=bool)
            reason[reason == None] = f"no {m} data"  # noqa: E711 (element-wise)
            continue
        values, rate, start, source = series[m].values, series[m].rate, series[m].start, series[m].source
        flags = series[m].flags
        n_samples = values.shape[0]
        coverage[m] = (start, start + n_samples / rate)
        files[m] = source
        n = int(round(seconds * rate))
        i0 = np.rint((starts - start) * rate).astype(np.int64)
        # samples of real signal per window: n, fewer in a zero-padded short segment
        real = n if lengths is None else np.minimum(n, np.rint(lengths * rate).astype(np.int64))
        covered = (i0 >= 0) & (i0 + real <= n_samples)
        finite = np.isfinite(values) if values.ndim == 1 else np.isfinite(values).all(axis=1)
        bad_before = np.concatenate([[0], np.cumsum(~finite)])
        gap = np.zeros(total, dtype=bool)
        ends = i0 + real
        gap[covered] = (bad_before[ends[covered]] - bad_before[i0[covered]]) > 0
        present[m] = covered & ~gap
        free = reason == None  # noqa: E711
        reason[free & ~covered] = f"{m} not covered"
        for why, mask, rate0, start0 in flags:  # a failed check names itself, not "gap"
            hit = covered & _flagged_windows(starts, seconds if lengths is None else lengths,
                                             mask, rate0, start0)
            quality[why] = int(hit.sum())
            reason[(reason == None) & hit] = why  # noqa: E711
        reason[(reason == None) & covered & gap] = f"gap in {m}"  # noqa: E711
        cuts[m] = (i0, n, real)

    if config.window.missing == "drop":
        keep = np.ones(total, dtype=bool)
        for m in modalities:
            keep &= present[m]
    else:
        keep = np.zeros(total, dtype=bool)
        for m in modalities:
            keep |= present[m]
        reason[~keep] = NO_MODALITY_REASON

    dropped: dict[str, int] = {}
    for r in reason[~keep]:
        dropped[r] = dropped.get(r, 0) + 1

    kept_index = np.flatnonzero(keep)
    raw, presence = {}, {}
    for m in modalities:
        presence[m] = present[m][kept_index]
        if m == SPEECH:
            n = cuts[m][1] if m in cuts else int(round(seconds * AUDIO_RATE))
            shape = (kept_index.size, n)
        else:
            rate = NOMINAL_RATES[m]
            n = cuts[m][1] if m in cuts else int(round(seconds * rate))
            channels = series[m].values.shape[1] if m in series else CHANNELS[m]
            shape = (kept_index.size, n, channels)
        block = np.zeros(shape, dtype=np.float32)
        if m in cuts:
            i0, real = cuts[m][0], cuts[m][2]
            for row, w in enumerate(kept_index):
                if present[m][w]:
                    if lengths is None:
                        block[row] = series[m].values[i0[w]:i0[w] + n]
                    else:  # zeros after a short segment's end
                        block[row, :real[w]] = series[m].values[i0[w]:i0[w] + real[w]]
        raw[m] = block
    return RecordingWindows(recording.participant, starts[kept_index], raw, presence, total,
                            dropped, span, coverage, files, quality,
                            None if lengths is None else lengths[kept_index])

