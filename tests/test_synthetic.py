"""Synthetic K-EmoCon-layout generator: layout, quirks, reproducibility, and the latent state
reaching the signals."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from kfusion.config import DataConfig
from kfusion.data.readers.kemocon import READER
from kfusion.data.sources import load_recordings
from kfusion.data.synthetic import CATEGORIES, synthetic_states, write_kemocon_like
from kfusion.errors import ConfigError

E4_HEADER = "timestamp,pid,value,device_serial,device_number,entry_time"
ACC_HEADER = "timestamp,pid,x,y,z,device_serial,device_number,entry_time"


def digest(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(tmp_path):
    first = digest(write_kemocon_like(tmp_path / "a", participants=3, minutes=0.5, seed=7))
    second = digest(write_kemocon_like(tmp_path / "b", participants=3, minutes=0.5, seed=7))
    other = digest(write_kemocon_like(tmp_path / "c", participants=3, minutes=0.5, seed=8))
    assert first == second and len(first) > 30
    assert first.keys() == other.keys()
    assert first["e4_data/1/E4_BVP.csv"] != other["e4_data/1/E4_BVP.csv"]
    assert first["debate_audios/p1.p2.wav"] != other["debate_audios/p1.p2.wav"]


def test_complete_k_emocon_layout(kemocon_synth):
    subjects = pd.read_csv(kemocon_synth / "metadata" / "subjects.csv")
    assert list(subjects.columns) == ["pid", "initTime", "startTime", "endTime"]
    assert subjects["pid"].tolist() == [1, 2, 3, 4]
    assert (subjects.initTime < subjects.startTime).all() and (subjects.startTime < subjects.endTime).all()
    assert subjects.startTime.between(1.54e12, 1.58e12).all()  # UNIX ms in 2019
    for pid in range(1, 5):
        folder = kemocon_synth / "e4_data" / str(pid)
        for name in ("BVP", "EDA", "HR", "IBI", "TEMP"):
            assert (folder / f"E4_{name}.csv").read_text().splitlines()[0] == E4_HEADER
        assert (folder / "E4_ACC.csv").read_text().splitlines()[0] == ACC_HEADER
        base = kemocon_synth / "emotion_annotations"
        for path in [base / "self_annotations" / f"P{pid}.self.csv",
                     base / "partner_annotations" / f"P{pid}.partner.csv",
                     base / "aggregated_external_annotations" / f"P{pid}.external.csv",
                     *[base / "external_annotations" / f"P{pid}.R{r}.csv" for r in range(1, 6)]]:
            header = path.read_text().splitlines()[0].split(",")
            assert header[:8] == ["seconds", "arousal", "valence", "cheerful", "happy", "angry",
                                  "nervous", "sad"] and len(header) == 23
    for name in ("p1.p2.wav", "p3.p4.wav"):
        info = sf.info(kemocon_synth / "debate_audios" / name)
        assert (info.channels, info.samplerate, info.subtype) == (2, 16_000, "PCM_16")


def test_quirks_of_the_real_release(kemocon_synth):
    eda = (kemocon_synth / "e4_data" / "1" / "E4_EDA.csv").read_text().splitlines()
    assert any(",0E-10," in line for line in eda[1:])
    stamps = [line.split(",")[0] for line in eda[1:50]]
    assert all(re.fullmatch(r"15\d{11}\.\d{3}", s) for s in stamps) and len(set(s[-3:] for s in stamps)) > 5
    first = eda[1].split(",")
    assert re.fullmatch(r"A0[0-9A-F]{4}", first[3]) and first[4] == "1"
    assert re.fullmatch(r"2019-01-\d\d \d\d:\d\d:\d\d\.\d{3}", first[5])
    acc = pd.read_csv(kemocon_synth / "e4_data" / "1" / "E4_ACC.csv")
    assert all(acc[c].dtype.kind == "i" for c in "xyz")
    ibi = pd.read_csv(kemocon_synth / "e4_data" / "1" / "E4_IBI.csv")
    assert ibi["value"].between(0.35, 1.5).all()
    hr = pd.read_csv(kemocon_synth / "e4_data" / "1" / "E4_HR.csv")
    assert np.median(np.diff(hr["timestamp"])) == pytest.approx(1000, abs=1)


def test_odd_count_debates_a_guest(tmp_path):
    root = write_kemocon_like(tmp_path, participants=3, minutes=0.2, seed=1)
    assert READER.participants(root) == ["1", "2", "3"]
    assert sorted(p.name for p in (root / "debate_audios").iterdir()) == ["p1.p2.wav", "p3.p4.wav"]
    assert not (root / "e4_data" / "4").exists()
    stereo, _ = sf.read(root / "debate_audios" / "p3.p4.wav", dtype="float32")
    rec = READER.read(root, "3", DataConfig(modalities=("speech",)))
    np.testing.assert_array_equal(rec.audio.samples, stereo[:, 0])
    assert set(synthetic_states(3, 0.2, 1)) == {"1", "2", "3"}


def test_switchable_quirks(tmp_path):
    root = write_kemocon_like(tmp_path, participants=2, minutes=0.5, seed=2, audio=False,
                              no_e4=(2,), flat_eda=(1,), dropouts=(1,))
    recs = {r.participant: r for r in load_recordings(f"kemocon:{root}").recordings}
    assert recs["2"].signals == {} and any(n.startswith("no E4 data") for n in recs["2"].notes)
    assert any(n.startswith("warning: EDA is") for n in recs["1"].notes)
    bvp = recs["1"].signals["bvp"]
    t = bvp.start + np.arange(bvp.n) / bvp.rate
    lost = np.isnan(bvp.values[:, 0])
    assert 4 * 64 - 3 <= lost.sum() <= 8 * 64 + 3
    assert recs["1"].span[0] < t[lost].min() and t[lost].max() < recs["1"].span[1]


def test_multi_device_rows_for_31_and_32(tmp_path):
    root = write_kemocon_like(tmp_path, participants=32, minutes=0.1, seed=0, audio=False,
                              lead_seconds=1.0)
    assert "A01A3A" in (root / "e4_data" / "31" / "E4_BVP.csv").read_text()
    result = load_recordings(f"kemocon:{root}", DataConfig(modalities=("bvp", "eda")),
                             participants=["31", "32"])
    for rec, kept in zip(result.recordings, ("A013E1", "A01A3A")):
        assert any(f"kept device_serial {kept}" in n for n in rec.notes)
        assert not np.isnan(rec.signals["bvp"].values).any()


def test_existing_folder_needs_overwrite(tmp_path):
    root = write_kemocon_like(tmp_path / "k", participants=4, minutes=0.2, seed=0, audio=False)
    (tmp_path / "k" / "mine.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="new or empty folder.*overwrite=True"):
        write_kemocon_like(root, participants=2, minutes=0.2, seed=0, audio=False)
    write_kemocon_like(root, participants=2, minutes=0.2, seed=0, audio=False, overwrite=True)
    assert sorted(p.name for p in (root / "e4_data").iterdir()) == ["1", "2"]
    assert READER.participants(root) == ["1", "2"] and (root / "mine.txt").read_text() == "keep me"


@pytest.mark.parametrize("kwargs, field", [
    ({"participants": 1}, "participants"),
    ({"participants": 2.5}, "participants"),
    ({"participants": True}, "participants"),
    ({"minutes": 0}, "minutes"),
    ({"minutes": -1.0}, "minutes"),
    ({"minutes": float("nan")}, "minutes"),
    ({"seed": -1}, "seed"),
    ({"lead_seconds": -2}, "lead_seconds"),
    ({"audio_rate": 1000}, "audio_rate"),
    ({"no_e4": (9,)}, "no_e4"),
])
def test_bad_arguments(tmp_path, kwargs, field):
    with pytest.raises(ConfigError, match=field):
        write_kemocon_like(tmp_path, **{"participants": 2, "minutes": 0.2, **kwargs})
    assert not (tmp_path / "e4_data").exists()


def test_latent_categories_are_balanced_and_rated():
    states = synthetic_states(participants=8, minutes=3.0, seed=0)
    category = np.concatenate([s.category for s in states.values()])
    shares = np.bincount(category, minlength=len(CATEGORIES)) / category.size
    assert shares.min() > 0.05 and shares.max() < 0.4
    agree = []
    for s in states.values():
        ratings = np.stack([s.ratings["self"][e] for e in CATEGORIES[:5]], 1)
        rated = np.where(ratings.max(1) == 1, 5, ratings.argmax(1))
        agree.append(rated == s.category)
    assert 0.6 < np.mean(np.concatenate(agree)) < 0.95  # self-reports follow the state, noisily
    assert synthetic_states(8, 3.0, 0)["3"].arousal.tolist() == states["3"].arousal.tolist()


# --------------------------------------------------------------------------- state -> signals

def heart_rate(bvp: np.ndarray, rate: float) -> float:
    """Beats per minute from the BVP peaks (local maxima above the 70th percentile, >= 0.33 s
    apart): unchanged by z-scoring the stretch."""
    threshold = np.percentile(bvp, 70)
    candidates = np.flatnonzero((bvp[1:-1] > bvp[:-2]) & (bvp[1:-1] >= bvp[2:]) & (bvp[1:-1] > threshold)) + 1
    peaks = []
    for p in candidates:
        if not peaks or p - peaks[-1] > 0.33 * rate:
            peaks.append(p)
    return 60 * (len(peaks) - 1) / ((peaks[-1] - peaks[0]) / rate) if len(peaks) > 2 else np.nan


def pitch_slope(audio: np.ndarray, rate: int) -> float:
    """Mean frame-to-frame change of log f0 (autocorrelation pitch) over consecutive loud
    frames (40 ms, 10 ms hop)."""
    hop, win = rate // 100, rate // 25
    frames = np.lib.stride_tricks.sliding_window_view(audio.astype(np.float64), win)[::hop]
    energy = np.sqrt((frames ** 2).mean(1))
    loud = np.flatnonzero(energy > 0.5 * np.percentile(energy, 95))
    spectrum = np.fft.rfft(frames[loud] * np.hanning(win), n=1024, axis=1)
    autocorr = np.fft.irfft(np.abs(spectrum) ** 2, axis=1)
    low, high = rate // 400, rate // 70
    log_f0 = np.log(rate / (low + np.argmax(autocorr[:, low:high], axis=1)))
    step = np.diff(log_f0)
    ok = (np.diff(loud) == 1) & (np.abs(step) < 0.1)
    return float(step[ok].mean()) if ok.sum() > 3 else np.nan


def within_participant_correlation(table: pd.DataFrame, feature: str, target: str) -> float:
    x = table[feature] - table.groupby("pid")[feature].transform("mean")
    ok = np.isfinite(x)
    return float(np.corrcoef(x[ok], table.loc[ok, target])[0, 1])


def test_latent_state_reaches_the_signals(tmp_path):
    args = {"participants": 6, "minutes": 2.0, "seed": 3}
    root = write_kemocon_like(tmp_path, **args)
    truth = synthetic_states(**args)
    rows = []
    for rec in load_recordings(f"kemocon:{root}").recordings:
        state = truth[rec.participant]
        for k, start in enumerate(rec.labels.start):
            def window(signal, seconds=5.0, start=start):
                i = int(round((start - signal.start) * signal.rate))
                return signal.values[i:i + int(seconds * signal.rate)]
            eda = window(rec.signals["eda"])[:, 0]
            acc = np.linalg.norm(window(rec.signals["acc"]), axis=1)
            i = int(round((start - rec.audio.start) * rec.audio.rate))
            rows.append({
                "pid": rec.participant, "arousal": state.arousal[k], "valence": state.valence[k],
                "heart_rate": heart_rate(window(rec.signals["bvp"])[:, 0], 64),
                "eda_rise": np.maximum(np.diff(eda), 0).sum(), "eda_level": eda.mean(),
                "temp": window(rec.signals["temp"])[:, 0].mean(),
                "movement": np.std(np.diff(acc)),
                "pitch_slope": pitch_slope(rec.audio.samples[i:i + 5 * rec.audio.rate], rec.audio.rate),
            })
    table = pd.DataFrame(rows)
    assert len(table) == 6 * 24
    r = {(f, t): within_participant_correlation(table, f, t)
         for f in ("heart_rate", "eda_rise", "eda_level", "temp", "movement", "pitch_slope")
         for t in ("arousal", "valence")}
    assert r["eda_rise", "arousal"] > 0.15 and r["eda_level", "arousal"] > 0.15
    assert r["movement", "arousal"] > 0.15
    # the wrist carries valence too: negative states raise skin conductance and cool the skin
    assert r["eda_level", "valence"] < -0.1 and r["temp", "valence"] > 0.15
    # heart rate moves with arousal by a realistic few bpm, not enough to read it from 5 s alone
    # (the first generator's +12 bpm per unit gave r = 0.45 here)
    assert abs(r["heart_rate", "arousal"]) < 0.35
    assert r["pitch_slope", "valence"] > 0.3 and abs(r["pitch_slope", "arousal"]) < 0.15
