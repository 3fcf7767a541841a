"""A synthetic data set in the K-EmoCon layout, with a known latent emotional state.

:func:`write_kemocon_like` writes everything the K-EmoCon reader reads (``subjects.csv``, the
six ``E4_*.csv`` files per participant, the four annotation perspectives, one stereo WAV per
debate) so that ``kemocon:PATH`` works on it exactly as on the real release. The latent truth
behind the files is returned by :func:`synthetic_states`.

The encoders see every 4 s window z-scored on its own (wearables) and speech MFCCs normalised
per coefficient over the window, so the state changes *rates, shapes and frequency content*, not
only levels (the heads see those through each person's calibrated window levels):

* arousal: more and larger skin-conductance responses, a higher skin-conductance level and heart
  rate, more and faster movement bursts in ACC; in speech a higher f0, more energy, a faster
  syllable rate and shorter pauses between phrases;
* valence: the pitch contour within syllables (rising when positive, falling when negative),
  the spectral tilt (brighter when positive) and crisper, shorter syllables when positive; on the
  wrist, negative states raise skin conductance (level and responses) and heart rate and cool
  the skin a little.

The wrist effects are :data:`WEARABLE_EFFECTS`, nearer the size real wrists show: the first set
made heart rate alone separate the arousal states by 1.45 within-person standard deviations (now
0.8; Stress-Predict's stress effect on heart rate is 0.17).

The speech effects are :data:`SPEECH_EFFECTS`. They were strengthened (and the pauses and
syllable lengths added) when per-window CMVN was found to erase most of the weaker first set:
loudness, f0 level and tilt are static within a window, so only their contrast with pauses and
the partner's cross-talk survives it.

Every participant has own baselines (resting heart rate, skin conductance level, f0, noise
levels), and the speech channel of each debater also holds the other one's speech (cross-talk),
so no single modality tells the state on its own.

Participants ``1..N`` debate in pairs (1, 2), (3, 4), ...; with an odd ``N`` the last one debates
a guest ``N+1`` who is not part of the data set (the audio file ``p<N>.p<N+1>.wav`` holds the
guest's speech in channel 1; no subjects row, E4 data or annotations exist for the guest).
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kfusion import checks
from kfusion.errors import ConfigError

#: Emotion categories of the latent truth (index = class), as the labels use them.
CATEGORIES: tuple[str, ...] = ("cheerful", "happy", "angry", "nervous", "sad", "neutral")
EMOTIONS: tuple[str, ...] = CATEGORIES[:5]
PERSPECTIVES: tuple[str, ...] = ("self", "partner", "external", "aggregated_external")
#: Checkmark columns of the real annotation files (written empty or "x"; the reader ignores them).
CHECKMARK_COLUMNS: tuple[str, ...] = (
    "boredom", "confusion", "delight", "concentration", "frustration", "surprise", "none_1",
    "confrustion", "contempt", "dejection", "disgust", "eureka", "pride", "sorrow", "none_2")
EXTERNAL_RATERS = 5
_LAYOUT_FOLDERS = ("metadata", "e4_data", "emotion_annotations", "debate_audios")
SLOT_SECONDS = 5.0
#: Device serials the real release uses for participants 31 and 32 (kept by the reader).
_FIXED_SERIALS = {31: ("A013E1", "A01525"), 32: ("A01A3A", "A01A3A")}
_BASE_MS = 1_547_085_600_000          # 2019-01-10 02:00 UTC
_DEBATE_EVERY_MS = 50 * 60 * 1000     # one debate session every 50 minutes
_RATES = {"ACC": 32.0, "BVP": 64.0, "EDA": 4.0, "TEMP": 4.0}
_STREAMS = {"plan": 1, "state": 2, "ratings": 3, "base": 4, "bvp": 5, "eda": 6, "acc": 7,
            "temp": 8, "turns": 9, "speech": 10, "audio": 11, "files": 12,
            "marks": 13, "pre": 14}


def _rng(seed: int, key: int, stream: str) -> np.random.Generator:
    """An independent generator per (seed, participant or debate, purpose)."""
    return np.random.default_rng([int(seed), int(key), _STREAMS[stream]])


# --------------------------------------------------------------------------- the latent truth

@dataclass
class SyntheticParticipant:
    """The latent truth of one synthetic participant.

    Times are UNIX seconds; ``arousal``/``valence`` are the latent state per 5-s slot (about
    N(0, 1)); ``category`` the index into :data:`CATEGORIES` the state maps to; ``ratings``
    maps each perspective to the raw rating columns exactly as the reader returns them (after
    dropping ``extra_rows[perspective]`` rows written before the debate); ``external_raters``
    the five external raters' columns. ``baseline`` holds the participant's physiological and
    vocal constants.
    """

    pid: int
    partner: int
    channel: int
    debate: int
    init: float
    start: float
    end: float
    arousal: np.ndarray
    valence: np.ndarray
    category: np.ndarray
    ratings: dict = field(default_factory=dict)
    extra_rows: dict = field(default_factory=dict)
    external_raters: list = field(default_factory=list)
    baseline: dict = field(default_factory=dict)
    in_dataset: bool = True

    @property
    def slot_start(self) -> np.ndarray:
        return self.start + SLOT_SECONDS * np.arange(self.arousal.size)

    @property
    def n_slots(self) -> int:
        return int(self.arousal.size)


def _check_args(participants, minutes, seed, lead_seconds):
    checks.whole("participants (they debate in pairs)", participants, 2, 999)
    checks.number("minutes", minutes, SLOT_SECONDS / 60, 120,
                  what="a debate length in minutes (one 5-s annotation slot to 2 hours)")
    checks.whole("seed", seed, 0)
    checks.number("lead_seconds (E4 data before the debate)", lead_seconds, 0, 3600, what="seconds")


def _ar1(rng, n: int, rho: float) -> np.ndarray:
    """A stationary AR(1) series with unit variance."""
    out = np.empty(n)
    out[0] = rng.normal()
    shocks = rng.normal(size=n) * math.sqrt(1 - rho ** 2)
    for i in range(1, n):
        out[i] = rho * out[i - 1] + shocks[i]
    return out


def _emotion_scores(arousal, valence) -> np.ndarray:
    """[k, 5] scores of cheerful, happy, angry, nervous, sad from the quadrant."""
    a, v = np.asarray(arousal), np.asarray(valence)
    return np.stack([0.75 * a + 0.85 * v, 0.95 * v - 0.35 * a, 0.65 * a - 1.0 * v,
                     1.2 * a - 0.15 * v, -0.8 * a - 0.8 * v], axis=-1)


_NEUTRAL_BELOW = 0.65  # every score below this: neutral (about one slot in six)
#: Slot-to-slot (5 s) autocorrelation of the latent arousal and valence: low enough that one
#: participant's debate passes through several states, so leave-one-subject-out measures
#: emotion, not only the shift between participants (why this value: bench/RESULTS.md).
STATE_AUTOCORRELATION = 0.6


def _category(arousal, valence) -> np.ndarray:
    scores = _emotion_scores(arousal, valence)
    best = scores.argmax(axis=-1)
    return np.where(scores.max(axis=-1) < _NEUTRAL_BELOW, CATEGORIES.index("neutral"), best)


def _ratings(rng, arousal, valence, noise: float) -> dict[str, np.ndarray]:
    """Ratings a rater with perception noise ``noise`` gives: arousal/valence 1-5, the five
    emotions 1-4 (the dominant one strictly highest; all 1 = neutral)."""
    k = arousal.size
    seen_a = arousal + rng.normal(0, noise, k)
    seen_v = valence + rng.normal(0, noise, k)
    out = {"arousal": np.clip(np.rint(3 + 1.5 * seen_a + rng.normal(0, 0.3, k)), 1, 5),
           "valence": np.clip(np.rint(3 + 1.5 * seen_v + rng.normal(0, 0.3, k)), 1, 5)}
    scores = _emotion_scores(seen_a, seen_v) + rng.normal(0, 0.2, (k, 5))
    levels = np.clip(1 + np.floor(np.maximum(scores, 0) / 0.6), 1, 4)
    best = scores.argmax(axis=1)
    top = np.maximum(levels[np.arange(k), best], 2)
    levels = np.minimum(levels, (top - 1)[:, None])
    levels[np.arange(k), best] = top
    levels[scores.max(axis=1) < _NEUTRAL_BELOW] = 1
    for j, name in enumerate(EMOTIONS):
        out[name] = levels[:, j]
    return out


def _median_half_up(stack: np.ndarray) -> np.ndarray:
    return np.floor(np.median(stack, axis=0) + 0.5)


def synthetic_states(participants: int = 8, minutes: float = 3.0, seed: int = 0,
                     lead_seconds: float = 20.0) -> dict[str, SyntheticParticipant]:
    """The latent truth :func:`write_kemocon_like` writes with the same arguments,
    ``{pid string: SyntheticParticipant}`` (the guest of an odd count is not included)."""
    return {str(p.pid): p for p in _plan(participants, minutes, seed, lead_seconds) if p.in_dataset}


def _plan(participants, minutes, seed, lead_seconds) -> list[SyntheticParticipant]:
    _check_args(participants, minutes, seed, lead_seconds)
    n_debates = (participants + 1) // 2
    people = []
    for d in range(n_debates):
        rng = _rng(seed, 10_000 + d, "plan")
        start_ms = _BASE_MS + d * _DEBATE_EVERY_MS + int(rng.integers(0, 600_000))
        end_ms = start_ms + int(round(minutes * 60_000)) + int(rng.integers(0, 4_900))
        for channel in (0, 1):
            pid = 2 * d + 1 + channel
            init_ms = start_ms - int(round(lead_seconds * 1000)) - int(rng.integers(0, 2_000))
            people.append((pid, 2 * d + 2 - channel, channel, d, init_ms, start_ms, end_ms))
    plan = []
    for pid, partner, channel, d, init_ms, start_ms, end_ms in people:
        n = int((end_ms - start_ms) // int(SLOT_SECONDS * 1000))
        srng = _rng(seed, pid, "state")
        offset_a, offset_v = srng.normal(0, 0.3, 2)
        arousal = _ar1(srng, n, STATE_AUTOCORRELATION) + offset_a
        valence = _ar1(srng, n, STATE_AUTOCORRELATION) + offset_v
        rrng = _rng(seed, pid, "ratings")
        ratings = {"self": _ratings(rrng, arousal, valence, 0.25),
                   "partner": _ratings(rrng, arousal, valence, 0.6)}
        raters = [_ratings(rrng, arousal, valence, 0.7) for _ in range(EXTERNAL_RATERS)]
        ratings["external"] = {c: _median_half_up(np.stack([r[c] for r in raters])) for c in raters[0]}
        ratings["aggregated_external"] = ratings["external"]
        extra = {p: int(rrng.integers(0, 3)) for p in ("self", "partner", "external")}
        plan.append(SyntheticParticipant(
            pid=pid, partner=partner, channel=channel, debate=d, init=init_ms / 1000,
            start=start_ms / 1000, end=end_ms / 1000, arousal=arousal, valence=valence,
            category=_category(arousal, valence), ratings=ratings, extra_rows=extra,
            external_raters=raters, baseline=_baseline(_rng(seed, pid, "base")),
            in_dataset=pid <= participants))
    return plan


def _baseline(rng) -> dict:
    female = bool(rng.random() < 0.5)
    return {
        "hr": rng.uniform(60, 85), "bvp_amp": rng.uniform(40, 120), "bvp_noise": rng.uniform(0.03, 0.1),
        "resp": rng.uniform(0.2, 0.3), "scl": float(np.exp(rng.uniform(np.log(0.4), np.log(6.0)))),
        "scr_gain": rng.uniform(0.6, 1.4), "eda_noise": rng.uniform(0.001, 0.004),
        "temp": rng.uniform(31.5, 34.5), "acc_gain": rng.uniform(0.6, 1.5),
        "acc_noise": rng.uniform(0.4, 1.0),
        "orientation": rng.normal([0.15, -0.35, 0.9], 0.25),
        "f0": rng.uniform(170, 235) if female else rng.uniform(95, 140),
        "speech_amp": rng.uniform(0.12, 0.25), "tilt": rng.uniform(0.9, 1.4),
        "syllable_rate": rng.uniform(3.6, 4.8), "crosstalk": rng.uniform(0.08, 0.2),
        "noise_floor": rng.uniform(0.001, 0.005),
    }


# --------------------------------------------------------------------------- signals

#: How the latent state shapes the wrist signals, per unit of arousal ``a`` / valence ``v``:
#: heart rate (bpm) and the damping of its respiratory swing, pulse amplitude (fraction, through
#: ``tanh``), skin-conductance response rate (logistic slope) and amplitude (log), tonic skin
#: conductance (fraction), skin temperature (deg C), movement-burst rate (logistic slope),
#: frequency (Hz) and amplitude (log). Sized so that, within a person, no wrist feature separates
#: the states by more than about 0.8 standard deviations (Stress-Predict's stress effect: at most
#: 0.65, on the EDA level), and the wrist and the voice tell arousal, valence and category about
#: as well as each other as the paper's unimodal rows do on K-EmoCon (bench/RESULTS.md, "The
#: synthetic wrist signals, sized like real ones").
WEARABLE_EFFECTS = {"hr_a": 3.0, "hr_v": -2.0, "rsa_a": 0.1, "pulse_a": -0.03,
                    "scr_rate_a": 1.0, "scr_rate_v": -2.0, "scr_amp_a": 0.25, "scl_a": 0.08,
                    "scl_v": -0.1, "temp_a": -0.05, "temp_v": 0.1, "move_rate_a": 1.5,
                    "move_freq_a": 0.7, "move_amp_a": 0.3}
#: Slow within-person heart-rate drift (bpm over two minutes): posture, talking, breathing.
HEART_RATE_DRIFT_BPM = 6.0


def _state_at(person: SyntheticParticipant, t: np.ndarray, smooth_s: float = 1.0):
    """Latent (arousal, valence) at UNIX times ``t`` (slot values, eased over ``smooth_s``);
    before the debate the first slot, after it the last."""
    centres = person.slot_start + SLOT_SECONDS / 2
    # piecewise constant with linear ramps of smooth_s around each slot boundary
    knots_t = np.concatenate([[centres[0] - 1e9],
                              np.repeat(person.slot_start[1:], 2) + np.tile([-smooth_s / 2, smooth_s / 2],
                                                                             person.n_slots - 1),
                              [centres[-1] + 1e9]])
    out = []
    for x in (person.arousal, person.valence):
        knots_v = np.concatenate([[x[0]], np.stack([x[:-1], x[1:]], 1).reshape(-1), [x[-1]]])
        out.append(np.interp(t, knots_t, knots_v))
    return out


def _lowpass(x: np.ndarray, rate: float, seconds: float) -> np.ndarray:
    """Causal exponential smoothing with time constant ``seconds`` (starts settled at x[0])."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return x
    kernel = np.exp(-np.arange(max(1, int(5 * rate * seconds))) / (rate * seconds))
    kernel /= kernel.sum()
    padded = np.concatenate([np.full(kernel.size - 1, x[0]), x])
    return np.convolve(padded, kernel, mode="valid")


def _random_walk(rng, n: int, rate: float, scale: float, seconds: float) -> np.ndarray:
    """A slow drift: low-passed random walk of about ``scale`` over ``seconds``."""
    steps = rng.normal(0, scale / math.sqrt(max(rate * seconds, 1.0)), n)
    return _lowpass(np.cumsum(steps), rate, 5.0)


def _speaking_mask(turns, t: np.ndarray, channel: int) -> np.ndarray:
    mask = np.zeros(t.size, dtype=bool)
    for start, end, who in turns:
        if who == channel:
            mask |= (t >= start) & (t < end)
    return mask


def _acc(rng, person, base, t, speaking) -> np.ndarray:
    """ACC [n, 3] in 1/64 g: gravity on a slowly shifting wrist posture plus movement bursts."""
    n = t.size
    rate = _RATES["ACC"]
    keys_t = np.arange(t[0], t[-1] + 30.0, 25.0)
    keys = base["orientation"] + rng.normal(0, 0.12, (keys_t.size, 3))
    posture = np.stack([np.interp(t, keys_t, keys[:, j]) for j in range(3)], 1)
    posture /= np.linalg.norm(posture, axis=1, keepdims=True)
    acc = 64.0 * posture
    e = WEARABLE_EFFECTS
    arousal, _ = _state_at(person, t)
    per_minute = (3 + 15 / (1 + np.exp(-e["move_rate_a"] * arousal))) * np.where(speaking, 1.5, 1.0)
    onsets = np.flatnonzero(rng.random(n) < per_minute / 60 / rate)
    for i in onsets:
        a = arousal[i]
        length = int(rate * rng.uniform(0.6, 2.0))
        freq = float(np.clip(1.6 + e["move_freq_a"] * a + rng.normal(0, 0.3), 0.6, 4.5))
        amp = base["acc_gain"] * 8 * math.exp(e["move_amp_a"] * a + rng.normal(0, 0.4))
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        k = np.arange(min(length, n - i))
        envelope = np.sin(np.pi * k / length) ** 2
        wave = amp * envelope * np.sin(2 * np.pi * freq * k / rate + rng.uniform(0, 6.3))
        acc[i:i + k.size] += wave[:, None] * direction
    acc += rng.normal(0, base["acc_noise"], acc.shape)
    return np.rint(acc) + 0.0  # + 0.0 turns -0 into 0


def _bvp(rng, person, base, t, movement):
    """BVP (pulse-shaped, arbitrary units) and the beat times (UNIX s)."""
    rate = _RATES["BVP"]
    e = WEARABLE_EFFECTS
    arousal, valence = _state_at(person, t, smooth_s=3.0)
    hr = (base["hr"] + e["hr_a"] * arousal + e["hr_v"] * valence
          + 3 * (1 - e["rsa_a"] * np.tanh(arousal)) * np.sin(2 * np.pi * base["resp"] * (t - t[0]))
          + _random_walk(rng, t.size, rate, HEART_RATE_DRIFT_BPM, 120.0))
    hr = np.clip(hr, 45, 150)
    phase = np.cumsum(hr / 60.0 / rate) + rng.random()
    x = phase % 1.0

    def bump(centre, width):
        d = np.abs(x - centre)
        d = np.minimum(d, 1 - d)
        return np.exp(-0.5 * (d / width) ** 2)

    pulse = bump(0.15, 0.07) + 0.35 * bump(0.45, 0.09)
    amp = base["bvp_amp"] * (1 + e["pulse_a"] * np.tanh(arousal))
    bvp = amp * (pulse - 0.3) + 0.25 * base["bvp_amp"] * np.sin(
        2 * np.pi * base["resp"] * (t - t[0]) + 1.0)
    bvp += base["bvp_noise"] * base["bvp_amp"] * rng.normal(size=t.size)
    bvp += 1.5 * movement * rng.choice([-1.0, 1.0])
    whole = np.floor(phase)
    cross = np.flatnonzero(np.diff(whole) > 0) + 1
    frac = (phase[cross] - whole[cross]) / np.maximum(phase[cross] - phase[cross - 1], 1e-9)
    beats = t[cross] - frac / rate
    return np.round(bvp, 2), beats, hr


def _eda(rng, person, base, t, flat: bool) -> np.ndarray:
    """EDA in microsiemens: tonic level plus skin-conductance responses (more with arousal)."""
    rate = _RATES["EDA"]
    n = t.size
    if flat:
        eda = np.zeros(n)
        blips = rng.random(n) < 0.01
        eda[blips] = 0.001281
        return eda
    e = WEARABLE_EFFECTS
    arousal, valence = _state_at(person, t, smooth_s=2.0)
    per_minute = 1 + 9 / (1 + np.exp(-(e["scr_rate_a"] * arousal + e["scr_rate_v"] * valence - 0.5)))
    impulses = np.where(rng.random(n) < per_minute / 60 / rate,
                        base["scr_gain"] * 0.15 * math.sqrt(base["scl"])
                        * np.exp(e["scr_amp_a"] * arousal + rng.normal(0, 0.5, n)), 0.0)
    k = np.arange(int(40 * rate)) / rate
    kernel = np.exp(-k / 3.0) - np.exp(-k / 0.7)
    kernel /= kernel.max()
    phasic = np.convolve(impulses, kernel)[:n]
    tonic = base["scl"] * (1 + _lowpass(e["scl_a"] * arousal + e["scl_v"] * valence, rate, 20.0)
                           + _random_walk(rng, n, rate, 0.15, 300.0))
    eda = np.maximum(tonic + phasic + rng.normal(0, base["eda_noise"], n), 0.0)
    eda[: int(rate * rng.uniform(1.0, 2.0))] = 0.0  # no skin contact yet: 0E-10 in the file
    return np.round(eda, 6)


def _temp(rng, person, base, t) -> np.ndarray:
    rate = _RATES["TEMP"]
    e = WEARABLE_EFFECTS
    arousal, valence = _state_at(person, t, smooth_s=4.0)
    temp = (base["temp"] + _lowpass(e["temp_a"] * arousal + e["temp_v"] * valence, rate, 30.0)
            + _random_walk(rng, t.size, rate, 0.3, 600.0) + rng.normal(0, 0.01, t.size))
    return np.round(temp, 2)


# --------------------------------------------------------------------------- speech

def _turns(rng, start: float, end: float) -> list[tuple[float, float, int]]:
    """Alternating speaking turns (start, end, channel) of a debate, UNIX s."""
    turns, t, who = [], start + rng.uniform(0.3, 1.5), int(rng.integers(0, 2))
    while t < end:
        length = rng.uniform(2.5, 8.0)
        turns.append((t, min(t + length, end), who))
        t += length + rng.uniform(0.15, 0.8)
        who = 1 - who if rng.random() < 0.85 else who
    return turns


#: How the latent state shapes a debater's own speech (log-f0, rate, duty cycle of syllables,
#: pitch contour, loudness, spectral tilt and pauses per unit of arousal ``a`` / valence ``v``).
SPEECH_EFFECTS = {"rate_a": 0.4, "duty_v": 0.2, "f0_a": 0.10, "f0_v": 0.08, "slope_v": 0.9,
                  "amp_a": 0.45, "tilt_v": 0.8, "tilt_a": 0.15, "pause_a": 0.6}


_VOWELS = np.array([[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240],
                    [530, 1840, 2480], [570, 840, 2410]], dtype=np.float64)
_HARMONICS = 14


def _speech_track(rng, person, base, turns, channel, t0: float, n: int, rate: int) -> np.ndarray:
    """One debater's own speech over the debate audio (mono float32, ``n`` samples from t0).

    Syllables are harmonic tones (f0 with a rising or falling contour, spectral tilt and a
    vowel's formants) with short noise onsets, grouped into phrases inside the speaker's turns.
    """
    e = SPEECH_EFFECTS
    starts, lengths, f0a, f0b, amps, tilts, vowels = [], [], [], [], [], [], []
    grid_t = t0 + np.arange(0.0, n / rate + 1.0, 0.1)  # the state on a 10 Hz grid, looked up below
    grid_a, grid_v = _state_at(person, grid_t)
    for turn_start, turn_end, who in turns:
        if who != channel:
            continue
        t = turn_start
        phrase_left = int(rng.integers(4, 10))
        while True:
            g = min(max(int((t - t0) * 10), 0), grid_t.size - 1)
            a, v = float(grid_a[g]), float(grid_v[g])
            period = 1.0 / (base["syllable_rate"] * (1 + e["rate_a"] * np.tanh(a)))
            duty = float(np.clip(rng.uniform(0.55, 0.8) - e["duty_v"] * np.tanh(v), 0.25, 0.95))
            length = period * duty
            if t + length > turn_end:
                break
            centre = base["f0"] * math.exp(e["f0_a"] * a + e["f0_v"] * v + rng.normal(0, 0.04))
            slope = e["slope_v"] * math.tanh(1.3 * v) + rng.normal(0, 0.08)
            starts.append(t)
            lengths.append(length)
            f0a.append(centre * (1 - slope / 2))
            f0b.append(centre * (1 + slope / 2))
            amps.append(base["speech_amp"] * math.exp(e["amp_a"] * a + rng.normal(0, 0.15)))
            tilts.append(max(0.3, base["tilt"] - e["tilt_v"] * v - e["tilt_a"] * a + rng.normal(0, 0.1)))
            vowels.append(int(rng.integers(0, len(_VOWELS))))
            t += period
            phrase_left -= 1
            if phrase_left == 0:
                t += rng.uniform(0.2, 0.6) * math.exp(-e["pause_a"] * a)
                phrase_left = int(rng.integers(4, 10))
    out = np.zeros(n, dtype=np.float64)
    if not starts:
        return out.astype(np.float32)
    first = np.rint((np.array(starts) - t0) * rate).astype(np.int64)
    size = np.maximum(np.rint(np.array(lengths) * rate).astype(np.int64), 1)
    ok = (first >= 0) & (first + size <= n)
    first, size = first[ok], size[ok]
    f0a, f0b, amps = np.array(f0a)[ok], np.array(f0b)[ok], np.array(amps)[ok]
    tilts, vowels = np.array(tilts)[ok], np.array(vowels)[ok]
    syllable = np.repeat(np.arange(first.size), size)
    position = np.arange(syllable.size) - np.repeat(np.cumsum(size) - size, size)
    rel = position / size[syllable]
    index = first[syllable] + position
    f0 = f0a[syllable] + (f0b - f0a)[syllable] * rel
    phase = 2 * np.pi * np.cumsum(f0 / rate)
    # harmonic amplitudes per syllable: tilt times the vowel's formant resonances
    mean_f0 = (f0a + f0b) / 2
    h = np.arange(1, _HARMONICS + 1, dtype=np.float64)
    freqs = mean_f0[:, None] * h[None, :]
    formants = _VOWELS[vowels]
    resonance = sum(1.0 / (1 + ((freqs - formants[:, [j]]) / (80.0 + 40 * j)) ** 2) for j in range(3))
    gains = h[None, :] ** (-tilts[:, None]) * (0.3 + resonance)
    gains *= (freqs < 0.45 * rate)
    gains /= np.sqrt((gains ** 2).sum(axis=1, keepdims=True))
    # sin((j+1) x) by the recurrence sin((j+1)x) = 2 cos(x) sin(jx) - sin((j-1)x)
    twice_cos = 2 * np.cos(phase)
    previous, current = np.zeros_like(phase), np.sin(phase)
    voice = gains[syllable, 0] * current
    for j in range(1, _HARMONICS):
        previous, current = current, twice_cos * current - previous
        voice += gains[syllable, j] * current
    envelope = np.sin(np.pi * rel) ** 0.6 * amps[syllable]
    out[index] = voice * envelope
    # a short noisy onset (consonant) before half of the syllables
    burst = rng.random(first.size) < 0.5
    burst_len = int(0.04 * rate)
    for i in np.flatnonzero(burst & (first >= burst_len)):
        noise = np.diff(rng.normal(0, 1, burst_len + 1)) * 0.25 * amps[i]
        out[first[i] - burst_len:first[i]] += noise * np.hanning(burst_len)
    return out.astype(np.float32)


def _debate_audio(seed, debate: int, pair, turns, rate: int) -> np.ndarray:
    """Stereo [n, 2] float32: each channel its debater plus cross-talk and room noise."""
    a, b = pair
    n = int(round((a.end - a.start) * rate))
    tracks = [_speech_track(_rng(seed, p.pid, "speech"), p, p.baseline, turns, p.channel,
                            a.start, n, rate) for p in (a, b)]
    rng = _rng(seed, 10_000 + debate, "audio")
    delay = int(0.002 * rate)
    stereo = np.empty((n, 2), dtype=np.float32)
    for ch, (own, other) in enumerate(((0, 1), (1, 0))):
        leak = np.zeros(n, dtype=np.float32)
        leak[delay:] = tracks[other][:n - delay] * pair[own].baseline["crosstalk"]
        noise = rng.standard_normal(n, dtype=np.float32) * np.float32(pair[own].baseline["noise_floor"])
        stereo[:, ch] = tracks[own] + leak + noise
    return np.clip(stereo, -1, 1)


# --------------------------------------------------------------------------- files

def _fmt(values: np.ndarray, spec: str) -> np.ndarray:
    return np.char.mod(spec, np.asarray(values, dtype=np.float64))


def _entry_times(times_ms: np.ndarray, rng) -> np.ndarray:
    """Server write times (UTC, ms) a little after each sample."""
    written = (times_ms + rng.uniform(40, 400, times_ms.size)).astype("datetime64[ms]")
    return np.char.replace(np.datetime_as_string(written, unit="ms"), "T", " ")


def _write_csv(path: Path, header: list[str], columns: list) -> None:
    n = max(len(c) for c in columns if not isinstance(c, str))
    cols = [np.full(n, c) if isinstance(c, str) else np.asarray(c, dtype=str) for c in columns]
    with open(path, "w", newline="\n") as f:
        f.write(",".join(header) + "\n")
        f.write("\n".join(map(",".join, zip(*cols))))
        f.write("\n")


def _write_e4(path: Path, pid: int, serial: str, number: int, times_ms, values, rng,
              foreign: tuple[str, int] | None = None) -> None:
    """One E4_*.csv: timestamp,pid,<values>,device_serial,device_number,entry_time.

    ``values``: list of (column name, formatted strings). ``foreign`` = (serial, number) adds
    interleaved rows of another device (the multi-device quirk of participants 31 and 32)."""
    times_ms = np.asarray(times_ms, dtype=np.float64)
    names = [name for name, _ in values]
    strings = [np.asarray(col) for _, col in values]
    serials = np.full(times_ms.size, serial, dtype=object)
    numbers = np.full(times_ms.size, str(number), dtype=object)
    if foreign is not None and times_ms.size > 10:
        i0 = times_ms.size // 3
        i1 = min(times_ms.size, i0 + max(5, times_ms.size // 10))
        extra_t = times_ms[i0:i1] + rng.uniform(1, 5)
        order = np.argsort(np.concatenate([times_ms, extra_t]), kind="stable")
        times_ms = np.concatenate([times_ms, extra_t])[order]
        strings = [np.concatenate([s, s[i0:i1][::-1]])[order] for s in strings]
        serials = np.concatenate([serials, np.full(i1 - i0, foreign[0], dtype=object)])[order]
        numbers = np.concatenate([numbers, np.full(i1 - i0, str(foreign[1]), dtype=object)])[order]
    _write_csv(path, ["timestamp", "pid", *names, "device_serial", "device_number", "entry_time"],
               [_fmt(times_ms, "%.3f"), str(pid), *strings, serials, numbers,
                _entry_times(times_ms, rng)])


def _sample_times(rng, start_ms: float, end_ms: float, rate: float) -> np.ndarray:
    """Per-sample streaming timestamps (UNIX ms, float) with sub-millisecond jitter."""
    n = int((end_ms - start_ms) / 1000 * rate)
    return start_ms + np.arange(n) * (1000.0 / rate) + rng.normal(0, 0.3, n)


def _write_participant_e4(folder: Path, seed: int, person: SyntheticParticipant, turns,
                          flat_eda: bool, dropout: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = _rng(seed, person.pid, "files")
    base = person.baseline
    e4_start = person.init * 1000 - rng.uniform(1000, 3000)
    e4_end = person.end * 1000 + rng.uniform(2000, 5000)
    serial, ibi_serial = _FIXED_SERIALS.get(person.pid, (f"A0{int(rng.integers(0x1000, 0xFFFF)):04X}",) * 2)
    foreign = None
    if person.pid in _FIXED_SERIALS:
        foreign = ("A01A3A", 2) if person.pid == 31 else ("A013E1", 1)
    number = person.channel + 1
    lost = None
    if dropout:
        mid = person.start * 1000 + rng.uniform(0.3, 0.6) * (person.end - person.start) * 1000
        lost = (mid, mid + rng.uniform(4000, 8000))

    def keep(times_ms):
        if lost is None:
            return np.ones(times_ms.size, bool)
        return ~((times_ms >= lost[0]) & (times_ms < lost[1]))

    times = {name: _sample_times(rng, e4_start, e4_end, rate) for name, rate in _RATES.items()}
    t_acc = times["ACC"] / 1000
    speaking = _speaking_mask(turns, t_acc, person.channel)
    acc = _acc(_rng(seed, person.pid, "acc"), person, base, t_acc, speaking)
    movement = np.linalg.norm(acc - _lowpass_rows(acc, _RATES["ACC"]), axis=1)
    t_bvp = times["BVP"] / 1000
    movement_bvp = np.interp(t_bvp, t_acc, movement)
    bvp, beats, hr = _bvp(_rng(seed, person.pid, "bvp"), person, base, t_bvp, movement_bvp)
    eda = _eda(_rng(seed, person.pid, "eda"), person, base, times["EDA"] / 1000, flat_eda)
    temp = _temp(_rng(seed, person.pid, "temp"), person, base, times["TEMP"] / 1000)

    def write(name, times_ms, columns, dev_serial=serial):
        mask = keep(times_ms)
        _write_e4(folder / f"E4_{name}.csv", person.pid, dev_serial, number, times_ms[mask],
                  [(c, v[mask]) for c, v in columns], rng, foreign)

    write("ACC", times["ACC"], [(axis, _fmt(acc[:, j], "%.0f")) for j, axis in enumerate("xyz")])
    write("BVP", times["BVP"], [("value", _fmt(bvp, "%.2f"))])
    eda_text = _fmt(eda, "%.6f")
    eda_text[eda == 0] = "0E-10"
    write("EDA", times["EDA"], [("value", eda_text)])
    write("TEMP", times["TEMP"], [("value", _fmt(temp, "%.2f"))])
    # HR: 1 Hz average heart rate, from 10 s after the device starts
    t_hr = np.arange(e4_start + 10_000, e4_end, 1000.0)
    hr_smooth = np.interp(t_hr / 1000, t_bvp, _lowpass(hr, _RATES["BVP"], 3.0))
    write("HR", t_hr, [("value", _fmt(hr_smooth, "%.2f"))])
    # IBI: interval to the previous beat, only where both beats were detected
    detected = rng.random(beats.size) < 0.75
    both = np.flatnonzero(detected[1:] & detected[:-1]) + 1
    write("IBI", beats[both] * 1000, [("value", _fmt(np.diff(beats)[both - 1], "%.6f"))],
          dev_serial=ibi_serial)


def _lowpass_rows(x: np.ndarray, rate: float) -> np.ndarray:
    return np.stack([_lowpass(x[:, j], rate, 0.5) for j in range(x.shape[1])], 1)


def _write_annotations(root: Path, person: SyntheticParticipant, seed: int) -> None:
    rng = _rng(seed, person.pid, "marks")
    rrng = _rng(seed, person.pid, "pre")
    base = root / "emotion_annotations"
    files = [("self", "self_annotations", f"P{person.pid}.self.csv", person.ratings["self"]),
             ("partner", "partner_annotations", f"P{person.pid}.partner.csv", person.ratings["partner"]),
             ("external", "aggregated_external_annotations", f"P{person.pid}.external.csv",
              person.ratings["aggregated_external"])]
    files += [("external", "external_annotations", f"P{person.pid}.R{r + 1}.csv", ratings)
              for r, ratings in enumerate(person.external_raters)]
    for perspective, sub, name, ratings in files:
        extra = person.extra_rows[perspective]
        # rows before the debate (dropped by the reader) rated around neutral
        pre = {c: np.clip(np.rint(3 + rrng.normal(0, 0.7, extra)), 1, 5 if c in ("arousal", "valence") else 4)
               for c in ratings}
        columns = {c: np.concatenate([pre[c], ratings[c]]) for c in ratings}
        k = columns["arousal"].size
        marks = [np.where(rng.random(k) < 0.08, "x", "") for _ in CHECKMARK_COLUMNS]
        (base / sub).mkdir(parents=True, exist_ok=True)
        _write_csv(base / sub / name, ["seconds", "arousal", "valence", *EMOTIONS, *CHECKMARK_COLUMNS],
                   [_fmt(5 * np.arange(1, k + 1), "%d"),
                    *[_fmt(columns[c], "%d") for c in ("arousal", "valence", *EMOTIONS)], *marks])


def write_kemocon_like(out_dir: str | Path, participants: int = 8, minutes: float = 3.0,
                       seed: int = 0, *, lead_seconds: float = 20.0, audio: bool = True,
                       audio_rate: int = 16_000, no_e4: tuple = (), flat_eda: tuple = (),
                       dropouts: tuple = (), overwrite: bool = False) -> Path:
    """Write a complete K-EmoCon-layout data set into ``out_dir`` and return its path.

    ``participants`` (>= 2) pids ``1..N`` debate in pairs for ``minutes`` (+ up to 5 s) each;
    the E4 records from ``lead_seconds`` (+ 1-5 s) before the debate to a few seconds after.
    ``audio``: write ``debate_audios/p<a>.p<b>.wav`` (16-bit stereo at ``audio_rate`` Hz).
    Quirks of the real release that can be switched on per pid: ``no_e4`` (no e4_data folder,
    like pids 2, 3, 6, 7), ``flat_eda`` (EDA almost all zeros, like 17 and 20), ``dropouts``
    (a 4-8 s Bluetooth loss in all E4 streams during the debate). Always present: float ms
    timestamps, ``0E-10`` EDA values, device columns, extra annotation rows at the start,
    multi-device rows for pids 31 and 32. Same arguments -> byte-identical files.

    ``out_dir`` must be new or empty; with ``overwrite`` its ``metadata``, ``e4_data``,
    ``emotion_annotations`` and ``debate_audios`` folders are deleted first (nothing else), so
    no file of an earlier, larger data set is left behind.
    """
    plan = _plan(participants, minutes, seed, lead_seconds)
    checks.whole("audio_rate (Hz)", audio_rate, 8_000, 48_000)
    for name, pids in (("no_e4", no_e4), ("flat_eda", flat_eda), ("dropouts", dropouts)):
        for i, pid in enumerate(pids):
            checks.whole(f"{name}[{i}] (a pid)", pid, 1, participants)
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"out_dir {root}: expected a folder, found a file")
    if root.is_dir() and any(root.iterdir()):
        if not overwrite:
            raise ConfigError(f"out_dir {root}: expected a new or empty folder, found files "
                              "(pass overwrite=True to replace a data set written there before)")
        for name in _LAYOUT_FOLDERS:
            if (root / name).is_dir():
                shutil.rmtree(root / name)
    by_debate: dict[int, list[SyntheticParticipant]] = {}
    for p in plan:
        by_debate.setdefault(p.debate, []).append(p)
    for d, pair in sorted(by_debate.items()):
        turns = _turns(_rng(seed, 10_000 + d, "turns"), pair[0].start, pair[0].end)
        for person in pair:
            if not person.in_dataset:
                continue
            if person.pid not in no_e4:
                _write_participant_e4(root / "e4_data" / str(person.pid), seed, person, turns,
                                      person.pid in flat_eda, person.pid in dropouts)
            _write_annotations(root, person, seed)
        if audio:
            import soundfile as sf

            (root / "debate_audios").mkdir(parents=True, exist_ok=True)
            stereo = _debate_audio(seed, d, pair, turns, int(audio_rate))
            sf.write(root / "debate_audios" / f"p{pair[0].pid}.p{pair[1].pid}.wav", stereo,
                     int(audio_rate), subtype="PCM_16", format="WAV")
    # subjects.csv last: its presence marks a complete data set
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    listed = [p for p in plan if p.in_dataset]
    _write_csv(root / "metadata" / "subjects.csv", ["pid", "initTime", "startTime", "endTime"],
               [[str(p.pid) for p in listed], [str(int(round(p.init * 1000))) for p in listed],
                [str(int(round(p.start * 1000))) for p in listed],
                [str(int(round(p.end * 1000))) for p in listed]])
    return root
