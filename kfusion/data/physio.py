"""Hand-crafted physiology and prosody baseline features, per window.

Each signal is processed over a participant's whole continuous recording (filters, tonic/phasic
decomposition and beat / SCR detection see context, not 4-second snippets) and the results are
then aggregated per window. Window ``k`` covers ``[starts[k], starts[k] + seconds)``; sample or
frame ``i`` of a series sits at time ``start + i / rate``.

Columns (units), always all of them; a modality that is absent gives NaN columns:

* ``acc_mag_std`` (g): std of the magnitude ``sqrt(x² + y² + z²) / 64``;
  ``acc_activity`` (g/s): mean absolute first difference of the magnitude times the rate;
  ``acc_move_frac`` (0-1): fraction of samples with ``|magnitude - 1 g| > 0.1 g``.
* ``bvp_hr_mean`` (bpm): mean instantaneous heart rate ``60 / IBI``; ``bvp_ibi_std`` (ms): std
  of the inter-beat intervals; ``bvp_rmssd`` (ms); ``bvp_n_beats``: beats used. Beats come from
  NeuroKit2 (``ppg_clean`` + ``ppg_findpeaks``, Elgendi 2013); an interval counts when both its
  beats fall in the window, it does not span a gap and its rate is within 35-200 bpm.
* ``eda_tonic_mean`` (µS); ``eda_tonic_slope`` (µS/s); ``eda_phasic_std`` (µS);
  ``eda_scr_rate`` (SCR peaks per minute); ``eda_scr_amp`` (µS, mean SCR amplitude, 0 when none).
  NeuroKit2 ``eda_clean`` -> ``eda_phasic`` -> ``eda_peaks`` on the phasic part.
* ``temp_mean`` (°C); ``temp_slope`` (°C/min), least squares over the window's samples.
* ``speech_f0_mean``, ``speech_f0_std`` (semitones re 100 Hz, voiced frames); ``speech_energy_mean``,
  ``speech_energy_std`` (dB re full scale, non-silent frames); ``speech_voiced_frac`` (0-1);
  ``speech_rate`` (energy peaks per second, a syllable-rate proxy). librosa ``yin`` and ``rms``.

A window that touches a NaN sample (a gap) or reaches outside the recording gets NaN for that
modality, except the beat features, which use only the clean beats in the window. Every setting
that changes the numbers is in :data:`PHYSIO_SETTINGS`. No randomness.
"""

from __future__ import annotations

import warnings

import numpy as np

from kfusion import checks
from kfusion.modalities import ACC, BVP, CHANNELS, EDA, SPEECH, TEMP, WEARABLES
from kfusion.errors import ConfigError

#: Every setting that changes the numbers (JSON-able; part of feature cache keys).
PHYSIO_SETTINGS: dict = {
    "version": 1,
    "window_tolerance_samples": 1e-3,   # sample times within this of a window edge count as on it
    "coverage_tolerance_samples": 0.5,  # a window may reach this far past the recording ends
    ACC: {
        "units_per_g": 64.0,
        "movement_threshold_g": 0.1,     # |magnitude - 1 g| above this is movement
    },
    BVP: {
        "clean_method": "elgendi",       # nk.ppg_clean: 0.5-8 Hz Butterworth band-pass, order 2
        "peaks_method": "elgendi",       # nk.ppg_findpeaks: Elgendi et al. 2013 systolic peaks
        "min_run_seconds": 10.0,         # gap-free stretches shorter than this give no beats
        "hr_min_bpm": 35.0,              # intervals outside [60/200, 60/35] s are dropped
        "hr_max_bpm": 200.0,
        "min_intervals_hr": 1,           # = 2 beats
        "min_intervals_ibi_std": 2,
        "min_successive_differences_rmssd": 1,
        "ibi_std_ddof": 0,
    },
    EDA: {
        "clean_method": "neurokit",      # nk.eda_clean: at <= 6 Hz NeuroKit skips its 3 Hz low-pass
                                         # ("biosppy" needs > 10 Hz: its 5 Hz cut-off fails at 4 Hz)
        "phasic_method": "highpass",     # nk.eda_phasic: Butterworth split at 0.05 Hz (NeuroKit default)
        "peaks_method": "neurokit",      # nk.eda_peaks (NeuroKit default)
        "peaks_amplitude_min": 0.1,      # relative to the largest SCR of the gap-free stretch
        "scr_amplitude_min_us": 0.01,    # absolute floor so noise in SCR-free stretches is no SCR
        "min_run_seconds": 30.0,         # shorter gap-free stretches give NaN
    },
    TEMP: {},
    SPEECH: {
        "frame_seconds": 0.064,          # 1024 samples at 16 kHz (yin and rms frame)
        "hop_seconds": 0.010,            # 160 samples at 16 kHz
        "center": True,                  # frame k centred on sample k * hop, zero padding
        "fmin_hz": 60.0,
        "fmax_hz": 400.0,
        "yin_trough_threshold": 0.1,     # librosa default
        "f0_boundary_margin": 0.03,      # voiced f0 within (fmin * 1.03, fmax / 1.03)
        "max_aperiodicity": 0.5,         # 1 - normalised autocorrelation at the yin period
        "energy_amin": 1e-5,             # rms floor before 20 log10 (-100 dB)
        "energy_ref_percentile": 95.0,   # of the recording's frame energies (dB)
        "energy_range_db": 30.0,         # non-silent: within this of that percentile ...
        "energy_floor_db": -80.0,        # ... and above this absolute level
        "semitone_ref_hz": 100.0,
        "min_voiced_frames": 5,          # fewer voiced frames in a window -> NaN f0
        "min_nonsilent_frames": 2,       # fewer non-silent frames -> NaN energy mean / std
        "rate_smooth_seconds": 0.05,     # moving average of the dB envelope before peak picking
        "rate_min_distance_seconds": 0.1,
        "rate_min_prominence_db": 3.0,
        "rate_prominence_window_seconds": 1.0,
        "chunk_frames": 2000,            # processing block; results do not depend on it
    },
}

ACC_NAMES = ("acc_mag_std", "acc_activity", "acc_move_frac")
BVP_NAMES = ("bvp_hr_mean", "bvp_ibi_std", "bvp_rmssd", "bvp_n_beats")
EDA_NAMES = ("eda_tonic_mean", "eda_tonic_slope", "eda_phasic_std", "eda_scr_rate", "eda_scr_amp")
TEMP_NAMES = ("temp_mean", "temp_slope")
#: Column names of :func:`wearable_physio`, in order.
WEARABLE_PHYSIO_NAMES: tuple[str, ...] = ACC_NAMES + BVP_NAMES + EDA_NAMES + TEMP_NAMES
#: Column names of :func:`speech_prosody`, in order.
SPEECH_PROSODY_NAMES: tuple[str, ...] = ("speech_f0_mean", "speech_f0_std", "speech_energy_mean",
                                         "speech_energy_std", "speech_voiced_frac", "speech_rate")
_NAMES = {ACC: ACC_NAMES, BVP: BVP_NAMES, EDA: EDA_NAMES, TEMP: TEMP_NAMES}

# Largest window-by-sample matrix built at once (elements) by the dense aggregations.
_GATHER_BUDGET = 2_000_000
# NeuroKit raises these on stretches it cannot process (too short, flat, no waves).
_NK_FAILURES = (ValueError, TypeError, IndexError)


# ------------------------------------------------------------------------------------------
# Arguments and windows
# ------------------------------------------------------------------------------------------

def _check_windows(starts, seconds) -> tuple[np.ndarray, float]:
    starts = np.asarray(starts, dtype=np.float64)
    if starts.ndim != 1:
        raise ConfigError(f"window starts must be a 1-D array of UNIX seconds, got shape {starts.shape}")
    if not np.all(np.isfinite(starts)):
        raise ConfigError("window starts must be finite UNIX seconds")
    return starts, checks.positive("window length", seconds, "a positive number of seconds")


def _check_rate(rate, what: str) -> float:
    return checks.positive(f"{what}: sample rate", rate, "a positive number of Hz")


def _check_start(start, what: str) -> float:
    return checks.number(f"{what}: start", start, what="finite UNIX seconds")


def _check_values(modality: str, values) -> np.ndarray:
    """``[n, C]`` float64 (1-D accepted for one-channel modalities)."""
    v = np.asarray(values, dtype=np.float64)
    channels = CHANNELS[modality]
    if v.ndim == 1 and channels == 1:
        v = v[:, None]
    if v.ndim != 2 or v.shape[1] != channels:
        raise ConfigError(f"{modality}: values must have shape [samples, {channels}], got {v.shape}")
    return np.where(np.isfinite(v), v, np.nan)  # ±inf is a gap too


def _window_index(starts: np.ndarray, seconds: float, start: float, rate: float,
                  n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per window, the half-open sample range ``[i0, i1)`` and whether the recording covers it."""
    tol = PHYSIO_SETTINGS["window_tolerance_samples"]
    edge = PHYSIO_SETTINGS["coverage_tolerance_samples"]
    rel0 = (starts - start) * rate
    rel1 = (starts + seconds - start) * rate
    i0 = np.clip(np.ceil(rel0 - tol), 0, n).astype(np.int64)
    i1 = np.clip(np.ceil(rel1 - tol), 0, n).astype(np.int64)
    covered = (rel0 >= -edge) & (rel1 <= n + edge) & (i1 > i0)
    return i0, i1, covered


def _count_in(cum: np.ndarray, i0: np.ndarray, i1: np.ndarray) -> np.ndarray:
    """Window sums from a cumulative sum with a leading 0."""
    return cum[i1] - cum[i0]


def _has_nan(x: np.ndarray, i0: np.ndarray, i1: np.ndarray) -> np.ndarray:
    cum = np.concatenate([[0], np.cumsum(np.isnan(x), dtype=np.int64)])
    return _count_in(cum, i0, i1) > 0


def _runs(finite: np.ndarray, min_length: int = 1) -> list[tuple[int, int]]:
    """Half-open ``(begin, end)`` of every stretch of True at least ``min_length`` long."""
    edges = np.diff(np.concatenate([[0], finite.astype(np.int8), [0]]))
    runs = zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist())
    return [(b, e) for b, e in runs if e - b >= min_length]


def _dense_stats(x: np.ndarray, i0: np.ndarray, i1: np.ndarray, rate: float,
                 threshold: float | None = None) -> dict[str, np.ndarray]:
    """Mean, std, least-squares slope (per second), mean |first difference| x rate and, with
    ``threshold``, the fraction of ``|x| > threshold`` over each window's samples.

    ``x`` must be NaN-free here (gaps are masked by the caller). Built from small window x
    sample matrices in blocks, which is exact (no cumulative-sum cancellation).
    """
    n_win = len(i0)
    out = {k: np.full(n_win, np.nan) for k in ("mean", "std", "slope", "absdiff", "frac")}
    if n_win == 0 or len(x) == 0:
        return out
    length = int(max(np.max(i1 - i0), 1))
    block = max(1, _GATHER_BUDGET // length)
    offsets = np.arange(length)
    t = offsets / rate
    xp = np.concatenate([x, [0.0]])  # index len(x) is a harmless pad for positions past i1
    for b0 in range(0, n_win, block):
        sl = slice(b0, min(b0 + block, n_win))
        idx = i0[sl, None] + offsets[None, :]
        mask = idx < i1[sl, None]
        vals = np.where(mask, xp[np.minimum(idx, len(x))], 0.0)
        count = mask.sum(axis=1).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = vals.sum(axis=1) / count
            dev = np.where(mask, vals - mean[:, None], 0.0)
            out["mean"][sl] = mean
            out["std"][sl] = np.sqrt((dev ** 2).sum(axis=1) / count)
            tm = (mask * t).sum(axis=1) / count
            tdev = np.where(mask, t[None, :] - tm[:, None], 0.0)
            sxx = (tdev ** 2).sum(axis=1)
            out["slope"][sl] = np.where(count >= 2, (tdev * dev).sum(axis=1) / sxx, np.nan)
            pairs = mask[:, 1:] & mask[:, :-1]
            npairs = pairs.sum(axis=1)
            absdiff = np.where(pairs, np.abs(vals[:, 1:] - vals[:, :-1]), 0.0).sum(axis=1)
            out["absdiff"][sl] = np.where(npairs > 0, absdiff / npairs * rate, np.nan)
            if threshold is not None:
                out["frac"][sl] = (mask & (np.abs(vals) > threshold)).sum(axis=1) / count
    return out


# ------------------------------------------------------------------------------------------
# Wearables
# ------------------------------------------------------------------------------------------

def _acc_features(values: np.ndarray, rate: float, start: float, starts: np.ndarray,
                  seconds: float) -> np.ndarray:
    cfg = PHYSIO_SETTINGS[ACC]
    magnitude = np.sqrt((values ** 2).sum(axis=1)) / cfg["units_per_g"]  # NaN if any axis is
    i0, i1, covered = _window_index(starts, seconds, start, rate, len(magnitude))
    bad = ~covered | _has_nan(magnitude, i0, i1)
    s = _dense_stats(np.nan_to_num(magnitude - 1.0), i0, i1, rate, cfg["movement_threshold_g"])
    out = np.stack([s["std"], s["absdiff"], s["frac"]], axis=1)
    out[bad] = np.nan
    return out


def _temp_features(values: np.ndarray, rate: float, start: float, starts: np.ndarray,
                   seconds: float) -> np.ndarray:
    x = values[:, 0]
    i0, i1, covered = _window_index(starts, seconds, start, rate, len(x))
    bad = ~covered | _has_nan(x, i0, i1)
    finite = x[np.isfinite(x)]
    centre = float(np.median(finite)) if len(finite) else 0.0  # centred for precision
    s = _dense_stats(np.nan_to_num(x - centre), i0, i1, rate)
    out = np.stack([s["mean"] + centre, s["slope"] * 60.0], axis=1)
    out[bad] = np.nan
    return out


def _eda_decompose(x: np.ndarray, rate: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Tonic, phasic (NaN outside processed stretches), SCR peak sample indices and amplitudes."""
    import neurokit2 as nk

    cfg = PHYSIO_SETTINGS[EDA]
    tonic = np.full(len(x), np.nan)
    phasic = np.full(len(x), np.nan)
    peaks, amps = [], []
    min_len = int(np.ceil(cfg["min_run_seconds"] * rate))
    for b, e in _runs(np.isfinite(x), min_len):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                clean = np.asarray(nk.eda_clean(x[b:e], sampling_rate=rate, method=cfg["clean_method"]),
                                   dtype=np.float64)
                parts = nk.eda_phasic(clean, sampling_rate=rate, method=cfg["phasic_method"])
            except _NK_FAILURES:
                continue
            t_part = parts["EDA_Tonic"].to_numpy(dtype=np.float64)
            p_part = parts["EDA_Phasic"].to_numpy(dtype=np.float64)
            tonic[b:e], phasic[b:e] = t_part, p_part
            try:
                _, info = nk.eda_peaks(p_part, sampling_rate=rate, method=cfg["peaks_method"],
                                       amplitude_min=cfg["peaks_amplitude_min"])
            except _NK_FAILURES:  # no SCR at all in this stretch
                continue
        pk = np.asarray(info["SCR_Peaks"], dtype=np.float64)
        amp = np.asarray(info["SCR_Amplitude"], dtype=np.float64)
        keep = np.isfinite(pk) & np.isfinite(amp) & (amp >= cfg["scr_amplitude_min_us"])
        peaks.append(pk[keep].astype(np.int64) + b)
        amps.append(amp[keep])
    peaks_all = np.concatenate(peaks) if peaks else np.zeros(0, np.int64)
    amps_all = np.concatenate(amps) if amps else np.zeros(0)
    order = np.argsort(peaks_all, kind="stable")
    return tonic, phasic, peaks_all[order], amps_all[order]


def _eda_features(values: np.ndarray, rate: float, start: float, starts: np.ndarray,
                  seconds: float) -> np.ndarray:
    x = values[:, 0]
    tonic, phasic, peaks, amps = _eda_decompose(x, rate)
    i0, i1, covered = _window_index(starts, seconds, start, rate, len(x))
    bad = ~covered | _has_nan(tonic, i0, i1)  # input gaps and stretches NeuroKit could not take
    centre = float(np.nanmedian(tonic)) if np.any(np.isfinite(tonic)) else 0.0
    st = _dense_stats(np.nan_to_num(tonic - centre), i0, i1, rate)
    sp = _dense_stats(np.nan_to_num(phasic), i0, i1, rate)
    p0 = np.searchsorted(peaks, i0, side="left")
    p1 = np.searchsorted(peaks, i1, side="left")
    n_scr = (p1 - p0).astype(np.float64)
    cum_amp = np.concatenate([[0.0], np.cumsum(amps)])
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_amp = np.where(n_scr > 0, (cum_amp[p1] - cum_amp[p0]) / n_scr, 0.0)
    out = np.stack([st["mean"] + centre, st["slope"], sp["std"], n_scr * 60.0 / seconds, mean_amp], axis=1)
    out[bad] = np.nan
    return out


def _beat_intervals(x: np.ndarray, rate: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Valid inter-beat intervals: start beat, end beat (sample indices), length (s)."""
    import neurokit2 as nk

    cfg = PHYSIO_SETTINGS[BVP]
    lo_s, hi_s = 60.0 / cfg["hr_max_bpm"], 60.0 / cfg["hr_min_bpm"]
    min_len = int(np.ceil(cfg["min_run_seconds"] * rate))
    a_all, b_all = [], []
    for b, e in _runs(np.isfinite(x), min_len):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                clean = nk.ppg_clean(x[b:e], sampling_rate=rate, method=cfg["clean_method"])
                found = nk.ppg_findpeaks(clean, sampling_rate=rate, method=cfg["peaks_method"])
            except _NK_FAILURES:  # no pulse wave found
                continue
        beats = np.unique(np.asarray(found["PPG_Peaks"], dtype=np.int64)) + b
        if len(beats) < 2:
            continue
        ibi = np.diff(beats) / rate
        keep = (ibi >= lo_s) & (ibi <= hi_s)
        a_all.append(beats[:-1][keep])
        b_all.append(beats[1:][keep])
    if not a_all:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    a = np.concatenate(a_all)
    b = np.concatenate(b_all)
    return a, b, (b - a) / rate


def _bvp_features(values: np.ndarray, rate: float, start: float, starts: np.ndarray,
                  seconds: float) -> np.ndarray:
    cfg = PHYSIO_SETTINGS[BVP]
    x = values[:, 0]
    a, b, ibi = _beat_intervals(x, rate)
    i0, i1, covered = _window_index(starts, seconds, start, rate, len(x))
    finite_cum = np.concatenate([[0], np.cumsum(np.isfinite(x), dtype=np.int64)])
    observed = covered & (_count_in(finite_cum, i0, i1) > 0)  # inside the recording, some clean signal

    # Intervals with both beats in [i0, i1): a >= i0 and b < i1; a and b both increase.
    lo = np.searchsorted(a, i0, side="left")
    hi = np.searchsorted(b, i1, side="left")
    n_int = np.maximum(hi - lo, 0)
    hi = np.maximum(hi, lo)
    centre = float(np.median(ibi)) if len(ibi) else 0.0
    cum = lambda v: np.concatenate([[0.0], np.cumsum(v)])  # noqa: E731
    c_hr, c_d, c_d2 = cum(60.0 / ibi), cum(ibi - centre), cum((ibi - centre) ** 2)
    # Successive differences between adjacent intervals (sharing a beat): pair j = (j, j + 1).
    adjacent = np.zeros(len(ibi))
    sq_diff = np.zeros(len(ibi))
    if len(ibi) > 1:
        adjacent[:-1] = b[:-1] == a[1:]
        sq_diff[:-1] = adjacent[:-1] * np.diff(ibi) ** 2
    c_adj, c_sq = cum(adjacent), cum(sq_diff)
    p_hi = np.maximum(hi - 1, lo)  # pairs j in [lo, hi - 2]
    n_pairs = c_adj[p_hi] - c_adj[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        hr = (c_hr[hi] - c_hr[lo]) / n_int
        mean_d = (c_d[hi] - c_d[lo]) / n_int
        var = np.maximum((c_d2[hi] - c_d2[lo]) / n_int - mean_d ** 2, 0.0)
        ddof = cfg["ibi_std_ddof"]
        ibi_std = np.sqrt(var * n_int / (n_int - ddof)) * 1000.0
        rmssd = np.sqrt((c_sq[p_hi] - c_sq[lo]) / n_pairs) * 1000.0
    n_beats = np.where(n_int > 0, 2 * n_int - n_pairs, 0).astype(np.float64)
    hr[n_int < cfg["min_intervals_hr"]] = np.nan
    ibi_std[n_int < cfg["min_intervals_ibi_std"]] = np.nan
    rmssd[n_pairs < cfg["min_successive_differences_rmssd"]] = np.nan
    out = np.stack([hr, ibi_std, rmssd, n_beats], axis=1)
    out[~observed] = np.nan
    return out


_WEARABLE_FUNCS = {ACC: _acc_features, BVP: _bvp_features, EDA: _eda_features, TEMP: _temp_features}


def wearable_physio(signals: dict, starts: np.ndarray, seconds: float) -> tuple[np.ndarray, list[str]]:
    """Physiology features per window of a participant's whole E4 recording.

    ``signals`` maps any of ``"acc"``, ``"bvp"``, ``"eda"``, ``"temp"`` to ``(values, rate,
    start)``: values ``[n, C]`` (ACC: 3 axes in 1/64 g; BVP: PPG, arbitrary units; EDA: µS;
    TEMP: °C), rate in Hz, start the UNIX time of sample 0; NaN samples mark gaps.
    Returns float32 ``[len(starts), 14]`` and :data:`WEARABLE_PHYSIO_NAMES` (see the module
    docstring for units); absent modalities give NaN columns.
    """
    starts, seconds = _check_windows(starts, seconds)
    if not isinstance(signals, dict):
        raise ConfigError(f"signals must be a dict {{modality: (values, rate, start)}}, got {type(signals).__name__}")
    unknown = sorted(set(signals) - set(WEARABLES))
    if unknown:
        raise ConfigError(f"unknown wearable modality {unknown}: expected some of {', '.join(WEARABLES)}")
    blocks = []
    for modality in WEARABLES:
        width = len(_NAMES[modality])
        if signals.get(modality) is None:
            blocks.append(np.full((len(starts), width), np.nan))
            continue
        entry = signals[modality]
        if not isinstance(entry, (tuple, list)) or len(entry) != 3:
            raise ConfigError(f"{modality}: expected a (values, rate, start) tuple, got {type(entry).__name__}")
        values = _check_values(modality, entry[0])
        rate = _check_rate(entry[1], modality)
        start = _check_start(entry[2], modality)
        blocks.append(_WEARABLE_FUNCS[modality](values, rate, start, starts, seconds))
    return np.concatenate(blocks, axis=1).astype(np.float32), list(WEARABLE_PHYSIO_NAMES)


# ------------------------------------------------------------------------------------------
# Speech
# ------------------------------------------------------------------------------------------

def _frame_tracks(y: np.ndarray, rate: int, frame: int, hop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """yin f0 (Hz), rms energy (dB) and aperiodicity at the yin period, per centred frame.

    Frame ``k`` spans ``y[k * hop - frame // 2 : k * hop + frame // 2]`` (zeros outside). Done in
    blocks of frames, which gives the same numbers as one call on the whole signal.
    """
    import librosa

    cfg = PHYSIO_SETTINGS[SPEECH]
    half = frame // 2
    n_frames = 1 + len(y) // hop
    f0 = np.empty(n_frames)
    rms = np.empty(n_frames)
    aper = np.empty(n_frames)
    chunk = int(cfg["chunk_frames"])
    lags = np.arange(frame)
    for k0 in range(0, n_frames, chunk):
        k1 = min(k0 + chunk, n_frames)
        lo, hi = k0 * hop - half, (k1 - 1) * hop + half  # the block's span, zeros outside y
        seg = y[max(lo, 0):min(hi, len(y))]
        if lo < 0 or hi > len(y):
            seg = np.concatenate([np.zeros(max(-lo, 0), np.float32), seg, np.zeros(max(hi - len(y), 0), np.float32)])
        f0[k0:k1] = librosa.yin(seg, fmin=cfg["fmin_hz"], fmax=cfg["fmax_hz"], sr=rate, frame_length=frame,
                                hop_length=hop, center=False, trough_threshold=cfg["yin_trough_threshold"])
        rms[k0:k1] = librosa.feature.rms(y=seg, frame_length=frame, hop_length=hop, center=False)[0]
        # Aperiodicity 1 - 2 Σ y_j y_{j+T} / (Σ y_j² + Σ y_{j+T}²), j in [0, frame - T), T the
        # yin period rounded to samples: YIN's difference function relative to the energies.
        seg64 = seg.astype(np.float64)
        sq_cum = np.concatenate([[0.0], np.cumsum(seg64 ** 2)])
        first = np.arange(k1 - k0) * hop
        period = np.clip(np.rint(rate / f0[k0:k1]).astype(np.int64), 1, frame - 1)
        n_overlap = frame - period
        idx = first[:, None] + lags[None, :]
        inside = lags[None, :] < n_overlap[:, None]
        shifted = seg64[np.minimum(idx + period[:, None], len(seg) - 1)]
        cross = np.where(inside, seg64[idx] * shifted, 0.0).sum(axis=1)
        e0 = sq_cum[first + n_overlap] - sq_cum[first]
        e1 = sq_cum[first + frame] - sq_cum[first + period]
        with np.errstate(invalid="ignore", divide="ignore"):
            aper[k0:k1] = np.where(e0 + e1 > 0, 1.0 - 2.0 * cross / (e0 + e1), 1.0)
    energy = 20.0 * np.log10(np.maximum(rms, cfg["energy_amin"]))
    return f0, energy, aper


def _frames_touching(mask: np.ndarray, n_frames: int, frame: int, hop: int) -> np.ndarray:
    """Frames (centred, spanning ``[k * hop - frame // 2, k * hop + frame // 2)``) that contain a
    True sample of ``mask``."""
    out = np.zeros(n_frames + 1, np.int64)
    half = frame // 2
    for b, e in _runs(mask):  # each gap [b, e) hits frames with k*hop - half < e and k*hop + half > b
        lo = max(0, (b - half) // hop + 1)
        hi = min(n_frames, -(-(e + half) // hop))
        if hi > lo:
            out[lo] += 1
            out[hi] -= 1
    return np.cumsum(out[:-1]) > 0


def speech_prosody(samples: np.ndarray | None, rate: int, start: float, starts: np.ndarray,
                   seconds: float, lengths: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
    """Prosody features per window of a whole mono recording (``None`` -> NaN columns).

    ``samples``: float audio at ``rate`` Hz whose sample 0 is at UNIX time ``start``; NaN samples
    mark gaps. Returns float32 ``[len(starts), 6]`` and :data:`SPEECH_PROSODY_NAMES`.
    ``lengths``: ``[N]`` seconds of real signal per window (zero-padded windows of short
    utterances): each window's frames, voicing fraction and rate then cover that part only.
    """
    import scipy.ndimage
    import scipy.signal

    starts, seconds = _check_windows(starts, seconds)
    span = seconds if lengths is None else np.asarray(lengths, dtype=np.float64).reshape(-1)
    names = list(SPEECH_PROSODY_NAMES)
    nan_out = np.full((len(starts), len(names)), np.nan, np.float32)
    if samples is None:
        return nan_out, names
    cfg = PHYSIO_SETTINGS[SPEECH]
    rate = _check_rate(rate, SPEECH)
    if rate != int(rate):
        raise ConfigError(f"{SPEECH}: sample rate must be a whole number of Hz, got {rate}")
    rate = int(rate)
    start = _check_start(start, SPEECH)
    y = np.asarray(samples, dtype=np.float32)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ConfigError(f"{SPEECH}: samples must be mono audio of shape [samples], got {y.shape}")
    frame = int(round(cfg["frame_seconds"] * rate))
    hop = int(round(cfg["hop_seconds"] * rate))
    if rate <= 2 * cfg["fmax_hz"]:
        raise ConfigError(f"{SPEECH}: sample rate {rate} Hz is too low for pitch up to {cfg['fmax_hz']} Hz")
    if len(y) < frame or len(starts) == 0:  # too short for one analysis frame, or nothing asked
        return nan_out, names

    nan = np.isnan(y)
    if nan.any():
        y = np.where(nan, np.float32(0.0), y)
    f0, energy, aper = _frame_tracks(y, rate, frame, hop)
    n_frames = len(f0)
    bad_frame = _frames_touching(nan, n_frames, frame, hop)  # analysis span touches a gap

    good = ~bad_frame
    reference = np.percentile(energy[good], cfg["energy_ref_percentile"]) if np.any(good) else -np.inf
    loud = good & (energy > max(reference - cfg["energy_range_db"], cfg["energy_floor_db"]))
    margin = 1.0 + cfg["f0_boundary_margin"]
    voiced = (loud & (f0 > cfg["fmin_hz"] * margin) & (f0 < cfg["fmax_hz"] / margin)
              & (aper <= cfg["max_aperiodicity"]))
    semitones = 12.0 * np.log2(f0 / cfg["semitone_ref_hz"])

    # Syllable-rate proxy: peaks of the smoothed dB envelope that are loud.
    frame_rate = rate / hop
    smooth = max(1, int(round(cfg["rate_smooth_seconds"] * frame_rate)))
    envelope = scipy.ndimage.uniform_filter1d(np.where(good, energy, energy.min()), smooth, mode="nearest")
    wlen = 2 * int(round(cfg["rate_prominence_window_seconds"] * frame_rate / 2)) + 1
    distance = max(1, int(round(cfg["rate_min_distance_seconds"] * frame_rate)))
    peaks, _ = scipy.signal.find_peaks(envelope, distance=distance, prominence=cfg["rate_min_prominence_db"],
                                       wlen=wlen)
    peaks = peaks[loud[peaks]]

    # Frames whose centre k * hop / rate lies in the window.
    tol = PHYSIO_SETTINGS["window_tolerance_samples"]
    rel0 = (starts - start) * frame_rate
    rel1 = (starts + span - start) * frame_rate
    k0 = np.clip(np.ceil(rel0 - tol), 0, n_frames).astype(np.int64)
    k1 = np.clip(np.ceil(rel1 - tol), 0, n_frames).astype(np.int64)
    edge = PHYSIO_SETTINGS["coverage_tolerance_samples"]
    covered = (rel0 >= -edge) & (rel1 <= len(y) / hop + edge) & (k1 > k0)
    bad = ~covered | (_count_in(np.concatenate([[0], np.cumsum(bad_frame, dtype=np.int64)]), k0, k1) > 0)

    def window_sums(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        centre = float(np.mean(values[mask])) if np.any(mask) else 0.0
        d = np.where(mask, values - centre, 0.0)
        n = _count_in(np.concatenate([[0], np.cumsum(mask, dtype=np.int64)]), k0, k1).astype(np.float64)
        s1 = _count_in(np.concatenate([[0.0], np.cumsum(d)]), k0, k1)
        s2 = _count_in(np.concatenate([[0.0], np.cumsum(d ** 2)]), k0, k1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = s1 / n
            std = np.sqrt(np.maximum(s2 / n - mean ** 2, 0.0))
        return n, mean + centre, std

    n_voiced, f0_mean, f0_std = window_sums(np.where(voiced, semitones, 0.0), voiced)
    n_loud, e_mean, e_std = window_sums(energy, loud)
    few_voiced = n_voiced < cfg["min_voiced_frames"]
    f0_mean[few_voiced] = np.nan
    f0_std[few_voiced] = np.nan
    few_loud = n_loud < cfg["min_nonsilent_frames"]
    e_mean[few_loud] = np.nan
    e_std[few_loud] = np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        voiced_frac = n_voiced / (k1 - k0)
    n_peaks = np.searchsorted(peaks, k1, side="left") - np.searchsorted(peaks, k0, side="left")
    out = np.stack([f0_mean, f0_std, e_mean, e_std, voiced_frac, n_peaks / span], axis=1)
    out[bad] = np.nan
    return out.astype(np.float32), names
