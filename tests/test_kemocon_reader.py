"""K-EmoCon reader: round trip on the synthetic set, the release's quirks, and bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from kfusion.config import DataConfig
from kfusion.data.readers.kemocon import READER, read_e4_samples
from kfusion.data.sources import load_recordings
from kfusion.errors import BadParticipantsError, DataError

START_MS = 1_547_000_000_000.0  # debate start of the hand-made sets
DEBATE_S = 30.0
RATINGS = ["arousal", "valence", "cheerful", "happy", "angry", "nervous", "sad"]


# --------------------------------------------------------------------------- hand-made sets

def write_subjects(root, pids=(1,), start_ms=START_MS, debate_s=DEBATE_S):
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    rows = [f"{p},{int(start_ms - 5000)},{int(start_ms)},{int(start_ms + debate_s * 1000)}" for p in pids]
    text = "pid,initTime,startTime,endTime\n" + "\n".join(rows) + "\n"
    (root / "metadata" / "subjects.csv").write_text(text)


def e4_frame(rate, pid=1, serial="A00001", columns=("value",), seconds=DEBATE_S + 10, seed=0,
             start_ms=START_MS - 6000):
    """A K-EmoCon E4 table: samples at ``rate`` Hz from 6 s before the debate."""
    n = int(seconds * rate)
    rng = np.random.default_rng(seed)
    frame = {"timestamp": [f"{t:.3f}" for t in start_ms + np.arange(n) * 1000 / rate + rng.normal(0, 0.2, n)],
             "pid": str(pid)}
    for column in columns:
        frame[column] = [f"{v:.4f}" for v in rng.uniform(1, 2, n)]
    frame.update(device_serial=serial, device_number="1", entry_time="2019-01-09 02:13:20.000")
    return pd.DataFrame(frame)


def write_e4(root, pid, name, frame):
    folder = root / "e4_data" / str(pid)
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / name, index=False)
    return folder / name


def write_ratings(root, pid, rows=None, perspective=("self_annotations", "P{pid}.self.csv"), n=6):
    if rows is None:
        rows = [[3, 3, 1, 2, 1, 1, 1]] * n
    folder = root / "emotion_annotations" / perspective[0]
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["seconds," + ",".join(RATINGS) + ",boredom,none_1"]
    lines += [f"{5 * (i + 1)}," + ",".join(str(v) for v in row) + ",," for i, row in enumerate(rows)]
    path = folder / perspective[1].format(pid=pid)
    path.write_text("\n".join(lines) + "\n")
    return path


def minimal_set(root, pid=1, modalities=("eda",)):
    """subjects.csv, the E4 files of ``modalities`` and self annotations for one participant."""
    write_subjects(root, (pid,))
    specs = {"eda": ("E4_EDA.csv", 4, ("value",)), "bvp": ("E4_BVP.csv", 64, ("value",)),
             "temp": ("E4_TEMP.csv", 4, ("value",)), "acc": ("E4_ACC.csv", 32, ("x", "y", "z"))}
    for m in modalities:
        name, rate, columns = specs[m]
        write_e4(root, pid, name, e4_frame(rate, pid, columns=columns))
    write_ratings(root, pid)
    return root


def config(*modalities, annotations="self"):
    return DataConfig(modalities=modalities or ("eda",), annotations=annotations)


def read_error(root, pid="1", cfg=None) -> DataError:
    with pytest.raises(DataError) as caught:
        READER.read(root, pid, cfg or config())
    return caught.value


# --------------------------------------------------------------------------- round trip

def test_round_trip_on_the_synthetic_set(kemocon_synth, kemocon_synth_truth):
    result = load_recordings(f"kemocon:{kemocon_synth}")
    assert [r.participant for r in result.recordings] == ["1", "2", "3", "4"]
    for rec in result.recordings:
        truth = kemocon_synth_truth[rec.participant]
        assert rec.span == pytest.approx((truth.start, truth.end), abs=1e-3)
        assert set(rec.signals) == {"acc", "bvp", "eda", "temp"}
        for modality, (rate, channels) in {"acc": (32, 3), "bvp": (64, 1), "eda": (4, 1),
                                           "temp": (4, 1)}.items():
            signal = rec.signals[modality]
            assert signal.rate == rate and signal.values.shape[1] == channels
            assert signal.values.dtype == np.float32 and not np.isnan(signal.values).any()
            # the E4 covers initTime..endTime, on a grid aligned to the debate start
            assert signal.start <= truth.init and signal.end >= truth.end
            assert (rec.span[0] - signal.start) * rate == pytest.approx(
                round((rec.span[0] - signal.start) * rate), abs=1e-3)
        assert 20 < np.median(rec.signals["temp"].values) < 40          # deg C
        assert 40 < np.median(np.linalg.norm(rec.signals["acc"].values, axis=1)) < 90  # 1/64 g
        labels = rec.labels
        assert labels.scheme == "kemocon" and len(labels) == truth.n_slots == 18
        np.testing.assert_allclose(labels.start, truth.slot_start, atol=1e-3)
        np.testing.assert_allclose(labels.end - labels.start, 5.0)
        for column in RATINGS:
            np.testing.assert_array_equal(labels.columns[column], truth.ratings["self"][column])
        assert rec.audio.rate == 16_000 and rec.audio.start == pytest.approx(truth.start)
        assert rec.audio.duration == pytest.approx(truth.end - truth.start, abs=0.01)


def test_audio_channel_of_each_debater(kemocon_synth):
    stereo, rate = sf.read(kemocon_synth / "debate_audios" / "p3.p4.wav", dtype="float32")
    assert stereo.shape[1] == 2 and rate == 16_000
    recs = {r.participant: r for r in load_recordings(f"kemocon:{kemocon_synth}", config("speech"),
                                                      participants=["3", "4"]).recordings}
    np.testing.assert_array_equal(recs["3"].audio.samples, stereo[:, 0])
    np.testing.assert_array_equal(recs["4"].audio.samples, stereo[:, 1])
    assert not np.array_equal(stereo[:, 0], stereo[:, 1])


def test_timestamps_share_one_clock(kemocon_synth):
    rec = READER.read(kemocon_synth, "2", config("bvp"))
    first_line = (kemocon_synth / "e4_data" / "2" / "E4_BVP.csv").read_text().splitlines()[1]
    first_ms = float(first_line.split(",")[0])
    subjects = pd.read_csv(kemocon_synth / "metadata" / "subjects.csv").set_index("pid")
    assert rec.signals["bvp"].start == pytest.approx(first_ms / 1000, abs=1 / 64)
    assert rec.span[0] == pytest.approx(subjects.loc[2, "startTime"] / 1000)
    assert rec.labels.start[0] == pytest.approx(rec.span[0])


@pytest.mark.parametrize("perspective", ["partner", "external", "aggregated_external"])
def test_other_perspectives(kemocon_synth, kemocon_synth_truth, perspective):
    rec = READER.read(kemocon_synth, "1", config("eda", annotations=perspective))
    truth = kemocon_synth_truth["1"]
    for column in RATINGS:
        np.testing.assert_array_equal(rec.labels.columns[column], truth.ratings[perspective][column])
    if perspective == "external":  # combined from the per-rater files P1.R1..R5.csv
        assert any("median of 5 rater file(s)" in note for note in rec.notes)


def test_nested_archive_folders_are_accepted(kemocon_synth, tmp_path):
    root = tmp_path / "k"
    for name in ("metadata", "e4_data", "emotion_annotations"):
        shutil.copytree(kemocon_synth / name, root / name / name)
    rec = READER.read(root, "1", config("eda"))
    assert rec.signals["eda"].n > 0 and len(rec.labels) == 18


# --------------------------------------------------------------------------- quirks

def test_multi_device_rows_of_31_and_32(tmp_path):
    write_subjects(tmp_path, (31, 32))
    for pid, mine, other in ((31, "A013E1", "A01A3A"), (32, "A01A3A", "A013E1")):
        own = e4_frame(4, pid, mine, seed=pid)
        foreign = e4_frame(4, pid, other, seed=pid + 100).iloc[10:30].copy()
        foreign["timestamp"] = [f"{float(t) + 3.0:.3f}" for t in foreign["timestamp"]]
        mixed = pd.concat([own, foreign]).sort_values("timestamp", key=lambda s: s.astype(float))
        write_e4(tmp_path, pid, "E4_EDA.csv", mixed)
        write_ratings(tmp_path, pid)
        rec = READER.read(tmp_path, str(pid), config("eda"))
        path = tmp_path / "e4_data" / str(pid) / "E4_EDA.csv"
        times, values, _ = read_e4_samples(path, str(pid), ("value",))
        np.testing.assert_allclose(values[:, 0], own["value"].astype(float))
        assert any(f"kept device_serial {mine}" in n and "dropped 20 row(s)" in n for n in rec.notes)
    # participant 31's IBI comes from device A01525
    ibi = pd.concat([e4_frame(1, 31, "A01525", seed=1), e4_frame(1, 31, "A013E1", seed=2).iloc[:5]])
    ibi["timestamp"] = [f"{float(t) + (0.5 if s == 'A013E1' else 0):.3f}"
                        for t, s in zip(ibi["timestamp"], ibi["device_serial"])]
    path = write_e4(tmp_path, 31, "E4_IBI.csv", ibi.sort_values("timestamp", key=lambda s: s.astype(float)))
    times, values, notes = read_e4_samples(path, "31", ("value",))
    assert times.size == int(DEBATE_S + 10) and "kept device_serial A01525" in notes[0]


def test_0E10_values_and_mostly_zero_eda(tmp_path):
    minimal_set(tmp_path)
    frame = e4_frame(4)
    frame["value"] = "0E-10"
    frame.loc[::50, "value"] = "0.001281"
    write_e4(tmp_path, 1, "E4_EDA.csv", frame)
    rec = READER.read(tmp_path, "1", config("eda"))
    assert np.nanmax(rec.signals["eda"].values) == pytest.approx(0.001281, rel=1e-2)
    assert any(n.startswith("warning: EDA is") and "zeros" in n for n in rec.notes)


def test_exact_duplicate_rows_are_dropped(tmp_path):
    minimal_set(tmp_path)
    frame = e4_frame(4)
    frame = pd.concat([frame.iloc[:40], frame.iloc[39:41], frame.iloc[40:]])  # lines 41 and 42 repeat
    write_e4(tmp_path, 1, "E4_EDA.csv", frame)
    rec = READER.read(tmp_path, "1", config("eda"))
    assert "E4_EDA.csv: dropped 2 exact duplicate row(s)" in rec.notes
    assert not np.isnan(rec.signals["eda"].values).any()


def test_gaps_are_nan_and_single_lost_samples_interpolated(tmp_path):
    minimal_set(tmp_path)
    frame = e4_frame(4, seconds=40).drop(index=[50]).drop(index=range(80, 92))  # 1 and 12 samples lost
    write_e4(tmp_path, 1, "E4_EDA.csv", frame)
    signal = READER.read(tmp_path, "1", config("eda")).signals["eda"]
    t = signal.start + np.arange(signal.n) / 4
    grid_ms = START_MS - 6000 + np.arange(160) * 250
    lost = (t > grid_ms[79] / 1000 + 0.01) & (t < grid_ms[92] / 1000 - 0.01)
    assert np.isnan(signal.values[lost, 0]).all() and lost.sum() == 12
    assert np.isnan(signal.values[:, 0]).sum() == 12


def test_extra_annotation_rows_are_dropped_from_the_start(tmp_path):
    minimal_set(tmp_path)
    rows = [[1, 1, 1, 1, 1, 1, 1]] * 3 + [[k % 5 + 1, 3, 2, 1, 1, 1, 1] for k in range(6)]
    write_ratings(tmp_path, 1, rows)
    rec = READER.read(tmp_path, "1", config("eda"))
    assert len(rec.labels) == 6  # a 30 s debate holds six 5-s slots
    np.testing.assert_array_equal(rec.labels.columns["arousal"], [1, 2, 3, 4, 5, 1])
    assert rec.labels.start[0] == pytest.approx(START_MS / 1000)
    assert any("dropped 3 row(s) from the start" in n for n in rec.notes)


def test_empty_ratings_are_nan(tmp_path):
    minimal_set(tmp_path)
    path = write_ratings(tmp_path, 1)
    lines = path.read_text().splitlines()
    lines[2] = "10,,,,,,,,,"
    path.write_text("\n".join(lines) + "\n")
    labels = READER.read(tmp_path, "1", config("eda")).labels
    assert np.isnan(labels.columns["valence"][1]) and labels.columns["valence"][0] == 3


def write_wav(root, name, data, rate=8000):
    (root / "debate_audios").mkdir(parents=True, exist_ok=True)
    sf.write(root / "debate_audios" / name, data, rate, subtype="PCM_16")


def test_stereo_and_mono_debate_audio(tmp_path):
    minimal_set(tmp_path, pid=12)
    write_subjects(tmp_path, (1, 12))
    write_ratings(tmp_path, 1)
    ramp = np.linspace(-0.5, 0.5, 8000 * 30)
    write_wav(tmp_path, "p1.p12.wav", np.stack([ramp, -ramp], 1))
    write_wav(tmp_path, "p11.p13.wav", np.stack([ramp, ramp], 1))  # names 11 and 13, not 1
    first = READER.read(tmp_path, "1", config("speech"))
    second = READER.read(tmp_path, "12", config("speech"))
    assert first.audio.rate == 8000 and first.audio.start == pytest.approx(START_MS / 1000)
    assert first.audio.samples[-1] > 0.49 and second.audio.samples[-1] < -0.49
    (tmp_path / "debate_audios" / "p1.p12.wav").unlink()
    write_wav(tmp_path, "p1.p12.wav", ramp)
    mono = READER.read(tmp_path, "12", config("speech"))
    np.testing.assert_allclose(mono.audio.samples, ramp, atol=1e-4)
    assert any("mono debate audio" in n for n in mono.notes)


def test_missing_audio_and_missing_e4_are_notes(tmp_path):
    write_subjects(tmp_path, (2,))
    write_ratings(tmp_path, 2)
    rec = READER.read(tmp_path, "2", DataConfig())
    assert rec.signals == {} and rec.audio is None and len(rec.labels) == 6
    assert any(n.startswith("no E4 data") for n in rec.notes)
    assert any(n.startswith("no debate audio") for n in rec.notes)


# --------------------------------------------------------------------------- bad input

def test_missing_subjects_csv(tmp_path):
    (tmp_path / "e4_data").mkdir()
    with pytest.raises(DataError) as caught:
        load_recordings(f"kemocon:{tmp_path}")
    assert caught.value.file.endswith("subjects.csv") and caught.value.field == "file"


def test_missing_column_in_e4_file(tmp_path):
    minimal_set(tmp_path)
    write_e4(tmp_path, 1, "E4_EDA.csv", e4_frame(4).rename(columns={"value": "val"}))
    err = read_error(tmp_path)
    assert err.file.endswith("E4_EDA.csv") and err.field == "header" and "value" in str(err)


def test_non_numeric_value(tmp_path):
    minimal_set(tmp_path, modalities=("acc",))
    frame = e4_frame(32, columns=("x", "y", "z"))
    frame.loc[6, "y"] = "12a"
    write_e4(tmp_path, 1, "E4_ACC.csv", frame)
    err = read_error(tmp_path, cfg=config("acc"))
    assert err.file.endswith("E4_ACC.csv") and err.field == "column 'y', line 8" and "'12a'" in str(err)


def test_empty_values_run(tmp_path):
    minimal_set(tmp_path, modalities=("temp",))
    frame = e4_frame(4)
    frame.loc[20:25, "value"] = ""
    frame.loc[26, "value"] = "NaN"
    write_e4(tmp_path, 1, "E4_TEMP.csv", frame)
    err = read_error(tmp_path, cfg=config("temp"))
    assert err.file.endswith("E4_TEMP.csv") and err.field == "column 'value', line 22"
    assert "an empty value" in str(err)


def test_decreasing_timestamps(tmp_path):
    minimal_set(tmp_path)
    frame = e4_frame(4)
    frame.loc[[30, 31], "timestamp"] = frame.loc[[31, 30], "timestamp"].to_numpy()
    write_e4(tmp_path, 1, "E4_EDA.csv", frame)
    err = read_error(tmp_path)
    assert err.file.endswith("E4_EDA.csv") and err.field == "column 'timestamp', line 33"
    assert "decreasing timestamp" in str(err)


def test_conflicting_duplicate_timestamps(tmp_path):
    minimal_set(tmp_path)
    frame = e4_frame(4)
    frame.loc[30, "timestamp"] = frame.loc[29, "timestamp"]
    write_e4(tmp_path, 1, "E4_EDA.csv", frame)
    err = read_error(tmp_path)
    assert err.field == "column 'timestamp', line 32"
    assert "duplicate timestamp with different values" in str(err)


def test_rate_inconsistent_with_timestamps(tmp_path):
    minimal_set(tmp_path, modalities=("bvp",))
    write_e4(tmp_path, 1, "E4_BVP.csv", e4_frame(32))  # 32 Hz samples in the 64 Hz file
    err = read_error(tmp_path, cfg=config("bvp"))
    assert err.file.endswith("E4_BVP.csv") and err.field == "column 'timestamp'"
    assert "rate inconsistent with timestamps" in str(err) and "15.62 ms" in str(err)


def test_arousal_out_of_range(tmp_path):
    minimal_set(tmp_path)
    write_ratings(tmp_path, 1, [[3, 3, 1, 1, 1, 1, 1]] * 3 + [[6, 3, 1, 1, 1, 1, 1]] * 3)
    err = read_error(tmp_path)
    assert err.file.endswith("P1.self.csv") and err.field == "column 'arousal', line 5"
    assert "1..5" in err.expected


def test_emotion_rating_out_of_range(tmp_path):
    minimal_set(tmp_path)
    write_ratings(tmp_path, 1, [[3, 3, 1, 1, 1, 1, 1], [3, 3, 1, 1, 1, 5, 1]] * 3,
                  perspective=("partner_annotations", "P{pid}.partner.csv"))
    err = read_error(tmp_path, cfg=config(annotations="partner"))
    assert err.file.endswith("P1.partner.csv") and err.field == "column 'nervous', line 3"
    assert "1..4" in err.expected


def test_missing_annotation_file(tmp_path):
    minimal_set(tmp_path)
    err = read_error(tmp_path, cfg=config(annotations="aggregated_external"))
    assert err.file.endswith("aggregated_external_annotations/P1.external.csv") and err.field == "file"
    err = read_error(tmp_path, cfg=config(annotations="external"))
    assert err.file.endswith("external_annotations/P1.external.csv") and "P1.R<k>.csv" in str(err)


def test_corrupt_audio(tmp_path):
    minimal_set(tmp_path)
    (tmp_path / "debate_audios").mkdir()
    (tmp_path / "debate_audios" / "p1.p2.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" * 10)
    err = read_error(tmp_path, cfg=config("speech"))
    assert err.file.endswith("p1.p2.wav") and err.field == "contents"


def test_empty_audio(tmp_path):
    minimal_set(tmp_path)
    write_wav(tmp_path, "p1.p2.wav", np.zeros((0, 2)))
    err = read_error(tmp_path, cfg=config("speech"))
    assert err.file.endswith("p1.p2.wav") and err.field == "frames" and "0 audio frames" in str(err)


def test_three_channel_audio(tmp_path):
    minimal_set(tmp_path)
    write_wav(tmp_path, "p1.p2.wav", np.zeros((800, 3)))
    err = read_error(tmp_path, cfg=config("speech"))
    assert err.file.endswith("p1.p2.wav") and err.field == "channels" and err.found == 3


def test_unknown_participant(tmp_path):
    minimal_set(tmp_path)
    with pytest.raises(DataError) as caught:
        load_recordings(f"kemocon:{tmp_path}", config(), participants=["99"])
    assert caught.value.field == "participant" and "99" in str(caught.value)
    err = read_error(tmp_path, pid="99")
    assert err.file.endswith("subjects.csv") and err.field == "pid"


def test_bad_subjects_rows(tmp_path):
    minimal_set(tmp_path)
    (tmp_path / "metadata" / "subjects.csv").write_text("pid,initTime,startTime\n1,1,2\n")
    err = read_error(tmp_path)
    assert err.field == "header" and "endTime" in str(err)
    (tmp_path / "metadata" / "subjects.csv").write_text(
        "pid,initTime,startTime,endTime\n1,1547000000,1547000005,1547000065\n")
    err = read_error(tmp_path)
    assert err.field == "column 'startTime', line 2" and "milliseconds" in err.expected


def test_bad_participant_is_reported_by_load_recordings(tmp_path):
    minimal_set(tmp_path)
    write_subjects(tmp_path, (1, 2))
    write_ratings(tmp_path, 2, [[9, 3, 1, 1, 1, 1, 1]] * 6)
    with pytest.raises(BadParticipantsError, match="participant 2: .*P2.self.csv"):
        load_recordings(f"kemocon:{tmp_path}", config())
    result = load_recordings(f"kemocon:{tmp_path}", DataConfig(modalities=("eda",), skip_bad=True))
    assert [r.participant for r in result.recordings] == ["1"] and list(result.problems) == ["2"]
