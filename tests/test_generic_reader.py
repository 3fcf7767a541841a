"""Generic "your own data" reader: tiny data sets built in tmp_path, and every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from kfusion.config import DataConfig
from kfusion.data.readers.generic import READER
from kfusion.data.sources import load_recordings
from kfusion.errors import DataError

T0 = 1_700_000_000.0  # UNIX s of every tiny recording


def write_signal(folder: Path, name: str, rate: float, n: int, channels: int = 1) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(name) + n)
    rows = [",".join(f"{v:.3f}" for v in row) for row in rng.normal(size=(n, channels))]
    header = [", ".join([f"{T0:.6f}"] * channels), ", ".join([f"{rate:.6f}"] * channels)]
    (folder / name).write_text("\n".join(header + rows) + "\n")


def write_wearables(folder: Path, seconds: int = 20) -> None:
    write_signal(folder, "ACC.csv", 32, 32 * seconds, 3)
    write_signal(folder, "BVP.csv", 64, 64 * seconds)
    write_signal(folder, "EDA.csv", 4, 4 * seconds)
    write_signal(folder, "TEMP.csv", 4, 4 * seconds)


def write_audio(folder: Path, seconds: float = 2.0, rate: int = 8000, channels: int = 1,
                start=T0, name: str = "audio.wav") -> np.ndarray:
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    data = np.stack([0.5 * np.sin(2 * np.pi * 220 * (c + 1) * t) for c in range(channels)], axis=1)
    subtype = "FLOAT" if name.endswith(".wav") else "PCM_16"
    soundfile.write(folder / name, data, rate, subtype=subtype)
    if start is not None:
        (folder / "audio.json").write_text(json.dumps({"start": start}))
    return data


def write_labels(folder: Path, header: str, rows: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "labels.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def write_dataset(root: Path, spec) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "dataset.json"
    path.write_text(spec if isinstance(spec, str) else json.dumps(spec))
    return path


def read_error(root: Path, participant: str) -> str:
    with pytest.raises(DataError) as err:
        READER.read(root, participant, DataConfig())
    return str(err.value)


# ---------------------------------------------------------------- working layouts

def test_wearable_only_without_dataset_json(tmp_path):
    write_wearables(tmp_path / "p1")
    write_labels(tmp_path / "p1", "start,end,stress",
                 [f"{T0},{T0 + 10},0", f"{T0 + 10},{T0 + 20},1"])
    result = load_recordings(f"generic:{tmp_path}")
    rec, = result.recordings
    assert rec.participant == "p1" and rec.audio is None
    assert {m: s.values.shape for m, s in rec.signals.items()} == {
        "acc": (640, 3), "bvp": (1280, 1), "eda": (80, 1), "temp": (80, 1)}
    assert rec.signals["bvp"].start == T0
    labels = rec.labels
    assert labels.scheme == "classes"
    assert labels.classes == {"stress": ("0", "1")}
    np.testing.assert_array_equal(labels.columns["stress"], [0, 1])
    np.testing.assert_array_equal(labels.end - labels.start, [10, 10])
    assert labels.source == str(tmp_path / "p1" / "labels.csv")


def test_inferred_classes_are_shared_by_all_participants(tmp_path):
    for name, values in [("a", [0, 1]), ("b", [2, 0])]:
        write_signal(tmp_path / name, "EDA.csv", 4, 80)
        write_labels(tmp_path / name, "start,end,level",
                     [f"{T0 + 5 * i},{T0 + 5 * i + 5},{v}" for i, v in enumerate(values)])
    a = READER.read(tmp_path, "a", DataConfig())
    b = READER.read(tmp_path, "b", DataConfig())
    assert a.labels.classes == b.labels.classes == {"level": ("0", "1", "2")}


def test_audio_only_with_class_names(tmp_path):
    write_dataset(tmp_path, {"labels": {"mood": {"classes": ["calm", "stressed"]}},
                             "description": "two people talking"})
    write_audio(tmp_path / "alice", seconds=2.0, rate=8000)
    write_labels(tmp_path / "alice", "start,end,mood",
                 [f"{T0},{T0 + 1},calm", f"{T0 + 1},{T0 + 2},stressed", f"{T0 + 1.5},{T0 + 2},1",
                  f"{T0 + 1.5},{T0 + 2},"])
    rec = READER.read(tmp_path, "alice", DataConfig())
    assert rec.signals == {}
    assert rec.audio.rate == 8000 and rec.audio.start == T0
    assert rec.audio.samples.shape == (16000,)
    assert rec.modalities == ("speech",)
    assert rec.labels.classes == {"mood": ("calm", "stressed")}
    np.testing.assert_array_equal(rec.labels.columns["mood"], [0, 1, 1, np.nan])


def test_touching_rows_with_equal_labels_are_merged(tmp_path):
    write_signal(tmp_path / "p", "EDA.csv", 4, 80)
    rows = [f"{T0 + i},{T0 + i + 1},{v}" for i, v in enumerate([0, 0, 0, 1, 1])]
    rows += [f"{T0 + 6},{T0 + 7},1", f"{T0 + 7},{T0 + 8},", f"{T0 + 8},{T0 + 9},"]  # gap, then empty
    write_labels(tmp_path / "p", "start,end,stress", rows)
    labels = READER.read(tmp_path, "p", DataConfig()).labels
    np.testing.assert_array_equal(labels.start - T0, [0, 3, 6, 7])
    np.testing.assert_array_equal(labels.end - T0, [3, 5, 7, 9])
    np.testing.assert_array_equal(labels.columns["stress"], [0, 1, 1, np.nan])


def test_stereo_audio_is_averaged(tmp_path):
    data = write_audio(tmp_path / "p", seconds=0.5, rate=16000, channels=2)
    rec = READER.read(tmp_path, "p", DataConfig())
    np.testing.assert_allclose(rec.audio.samples, data.mean(axis=1), atol=1e-6)
    assert any("mean of 2 channels" in n for n in rec.notes)
    assert rec.labels is None and any("no labels.csv" in n for n in rec.notes)


def test_audio_channel_can_be_chosen(tmp_path):
    data = write_audio(tmp_path / "p", seconds=0.5, rate=16000, channels=2)
    (tmp_path / "p" / "audio.json").write_text(json.dumps({"start": T0, "channel": 1}))
    rec = READER.read(tmp_path, "p", DataConfig())
    np.testing.assert_allclose(rec.audio.samples, data[:, 1], atol=1e-6)


def test_flac_audio_with_wearables(tmp_path):
    write_wearables(tmp_path / "p", seconds=4)
    write_audio(tmp_path / "p", seconds=1.0, rate=16000, name="audio.flac")
    rec = READER.read(tmp_path, "p", DataConfig())
    assert rec.modalities == ("speech", "acc", "bvp", "eda", "temp")


def test_only_requested_modalities_are_read(tmp_path):
    write_wearables(tmp_path / "p", seconds=4)
    write_audio(tmp_path / "p")
    rec = READER.read(tmp_path, "p", DataConfig(modalities=("bvp",)))
    assert set(rec.signals) == {"bvp"} and rec.audio is None


def test_kemocon_scheme_keeps_raw_ratings(tmp_path):
    write_dataset(tmp_path, {"label_scheme": "kemocon"})
    write_wearables(tmp_path / "p", seconds=10)
    write_labels(tmp_path / "p", "start,end,arousal,valence,cheerful,happy,angry,nervous,sad",
                 [f"{T0},{T0 + 5},5,1,4,1,1,2,", f"{T0 + 5},{T0 + 10},3,2.5,1,1,1,1,1"])
    labels = READER.read(tmp_path, "p", DataConfig()).labels
    assert labels.scheme == "kemocon" and labels.classes == {}
    np.testing.assert_array_equal(labels.columns["arousal"], [5, 3])
    np.testing.assert_array_equal(labels.columns["valence"], [1, 2.5])
    assert np.isnan(labels.columns["sad"][0])


# ---------------------------------------------------------------- bad input

def test_labels_without_start_column(tmp_path):
    write_signal(tmp_path / "p", "EDA.csv", 4, 40)
    path = write_labels(tmp_path / "p", "begin,end,stress", [f"{T0},{T0 + 5},1"])
    message = read_error(tmp_path, "p")
    assert str(path) in message and "header" in message and "missing start" in message


def test_labels_without_end_column(tmp_path):
    write_signal(tmp_path / "p", "EDA.csv", 4, 40)
    path = write_labels(tmp_path / "p", "start,stop,stress", [f"{T0},{T0 + 5},1"])
    message = read_error(tmp_path, "p")
    assert str(path) in message and "missing end" in message


def test_labels_without_a_label_column(tmp_path):
    write_signal(tmp_path / "p", "EDA.csv", 4, 40)
    path = write_labels(tmp_path / "p", "start,end", [f"{T0},{T0 + 5}"])
    message = read_error(tmp_path, "p")
    assert str(path) in message and "header" in message and "label column" in message


def test_labels_end_not_after_start(tmp_path):
    write_signal(tmp_path / "p", "EDA.csv", 4, 40)
    path = write_labels(tmp_path / "p", "start,end,stress", [f"{T0},{T0 + 5},1", f"{T0 + 5},{T0 + 5},0"])
    message = read_error(tmp_path, "p")
    assert str(path) in message and "column 'end', line 3" in message


def test_labels_time_not_a_number(tmp_path):
    write_signal(tmp_path / "p", "EDA.csv", 4, 40)
    path = write_labels(tmp_path / "p", "start,end,stress", [f"{T0},{T0 + 5},1", f"noon,{T0 + 9},0"])
    message = read_error(tmp_path, "p")
    assert str(path) in message and "column 'start', line 3" in message and "'noon'" in message


def test_unknown_class_name_lists_the_known_ones(tmp_path):
    write_dataset(tmp_path, {"labels": {"mood": {"classes": ["calm", "stressed"]}}})
    write_signal(tmp_path / "p", "EDA.csv", 4, 40)
    path = write_labels(tmp_path / "p", "start,end,mood", [f"{T0},{T0 + 5},angry"])
    message = read_error(tmp_path, "p")
    assert str(path) in message and "column 'mood', line 2" in message
    assert "calm, stressed" in message and "'angry'" in message


def test_class_index_out_of_range(tmp_path):
    write_dataset(tmp_path, {"labels": {"mood": {"classes": ["calm", "stressed"]}}})
    write_signal(tmp_path / "p", "EDA.csv", 4, 40)
    path = write_labels(tmp_path / "p", "start,end,mood", [f"{T0},{T0 + 5},0", f"{T0 + 5},{T0 + 9},2"])
    message = read_error(tmp_path, "p")
    assert str(path) in message and "column 'mood', line 3" in message and "0..1" in message


def test_undeclared_label_column_not_integer(tmp_path):
    write_signal(tmp_path / "p", "EDA.csv", 4, 40)
    path = write_labels(tmp_path / "p", "start,end,stress", [f"{T0},{T0 + 5},high"])
    message = read_error(tmp_path, "p")
    assert str(path) in message and "column 'stress', line 2" in message and "dataset.json" in message


def test_dataset_json_invalid(tmp_path):
    path = write_dataset(tmp_path, '{"label_scheme": "classes",}')
    write_signal(tmp_path / "p", "EDA.csv", 4, 40)
    with pytest.raises(DataError) as err:
        READER.participants(tmp_path)
    assert str(path) in str(err.value) and "contents" in str(err.value) and "valid JSON" in str(err.value)


def test_dataset_json_unknown_key(tmp_path):
    path = write_dataset(tmp_path, {"label_schema": "classes"})
    write_signal(tmp_path / "p", "EDA.csv", 4, 40)
    with pytest.raises(DataError) as err:
        load_recordings(f"generic:{tmp_path}")
    assert str(path) in str(err.value) and "'label_schema'" in str(err.value)


def test_dataset_json_unknown_scheme(tmp_path):
    path = write_dataset(tmp_path, {"label_scheme": "ordinal"})
    write_signal(tmp_path / "p", "EDA.csv", 4, 40)
    with pytest.raises(DataError) as err:
        READER.participants(tmp_path)
    assert str(path) in str(err.value) and "label_scheme" in str(err.value)


def test_dataset_json_classes_not_a_list(tmp_path):
    path = write_dataset(tmp_path, {"labels": {"mood": {"classes": "calm,stressed"}}})
    write_signal(tmp_path / "p", "EDA.csv", 4, 40)
    with pytest.raises(DataError) as err:
        READER.participants(tmp_path)
    assert str(path) in str(err.value) and "labels.mood.classes" in str(err.value)


def test_kemocon_rating_out_of_range(tmp_path):
    write_dataset(tmp_path, {"label_scheme": "kemocon"})
    write_signal(tmp_path / "p", "EDA.csv", 4, 40)
    path = write_labels(tmp_path / "p", "start,end,arousal,happy", [f"{T0},{T0 + 5},3,5"])
    message = read_error(tmp_path, "p")
    assert str(path) in message and "column 'happy', line 2" in message and "1 to 4" in message


def test_kemocon_unknown_column(tmp_path):
    write_dataset(tmp_path, {"label_scheme": "kemocon"})
    write_signal(tmp_path / "p", "EDA.csv", 4, 40)
    path = write_labels(tmp_path / "p", "start,end,arousal,stress", [f"{T0},{T0 + 5},3,1"])
    message = read_error(tmp_path, "p")
    assert str(path) in message and "column 'stress'" in message and "arousal" in message


def test_audio_without_audio_json(tmp_path):
    write_audio(tmp_path / "p", start=None)
    message = read_error(tmp_path, "p")
    assert str(tmp_path / "p" / "audio.json") in message and "file" in message and "start" in message


def test_audio_json_without_start(tmp_path):
    write_audio(tmp_path / "p")
    path = tmp_path / "p" / "audio.json"
    path.write_text(json.dumps({}))
    message = read_error(tmp_path, "p")
    assert str(path) in message and "start:" in message and "no 'start' key" in message


def test_audio_json_start_not_a_number(tmp_path):
    write_audio(tmp_path / "p", start="2023-11-14 22:13")
    message = read_error(tmp_path, "p")
    assert str(tmp_path / "p" / "audio.json") in message and "start:" in message and "2023-11-14" in message


def test_audio_json_unknown_key(tmp_path):
    write_audio(tmp_path / "p")
    path = tmp_path / "p" / "audio.json"
    path.write_text(json.dumps({"start": T0, "offset": 2}))
    message = read_error(tmp_path, "p")
    assert str(path) in message and "'offset'" in message


def test_audio_json_without_audio(tmp_path):
    write_signal(tmp_path / "p", "EDA.csv", 4, 40)
    (tmp_path / "p" / "audio.json").write_text(json.dumps({"start": T0}))
    message = read_error(tmp_path, "p")
    assert str(tmp_path / "p" / "audio.json") in message and "audio file" in message


def test_empty_audio(tmp_path):
    write_audio(tmp_path / "p", seconds=0)
    message = read_error(tmp_path, "p")
    assert str(tmp_path / "p" / "audio.wav") in message and "samples" in message


def test_corrupt_audio(tmp_path):
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "audio.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    (folder / "audio.json").write_text(json.dumps({"start": T0}))
    message = read_error(tmp_path, "p")
    assert str(folder / "audio.wav") in message and "contents" in message and "unreadable" in message


def test_two_audio_files(tmp_path):
    write_audio(tmp_path / "p")
    write_audio(tmp_path / "p", name="audio.flac")
    message = read_error(tmp_path, "p")
    assert str(tmp_path / "p") in message and "audio.flac, audio.wav" in message


def test_participant_folder_without_data_files(tmp_path):
    write_signal(tmp_path / "good", "EDA.csv", 4, 40)
    write_labels(tmp_path / "empty", "start,end,stress", [f"{T0},{T0 + 5},1"])
    message = read_error(tmp_path, "empty")
    assert str(tmp_path / "empty") in message and "files" in message and "EDA.csv" in message


def test_labels_entirely_outside_the_recording(tmp_path):
    write_signal(tmp_path / "p", "EDA.csv", 4, 40)  # T0 .. T0 + 10
    write_audio(tmp_path / "p", seconds=1.0)
    path = write_labels(tmp_path / "p", "start,end,stress", [f"{T0 + 3600},{T0 + 3605},1"])
    message = read_error(tmp_path, "p")
    assert str(path) in message and "start/end" in message and "overlapping the recording" in message


def test_root_without_participant_folders(tmp_path):
    write_signal(tmp_path, "EDA.csv", 4, 40)
    with pytest.raises(DataError) as err:
        READER.participants(tmp_path)
    assert str(tmp_path) in str(err.value) and "use e4:PATH" in str(err.value)
