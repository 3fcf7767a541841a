"""Clip corpora (emodb:, ravdess:, cremad:, clips:): file names, labels, one segment per
utterance, zero padding with its real length, bad input, and the CLI on each fixture."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

from kfusion.config import DataConfig
from kfusion.data.dataset import build_dataset
from kfusion.data.features import mfcc, zscore
from kfusion.data.readers.clips import CLIP_CLOCK_START, CLIP_GAP_SECONDS
from kfusion.data.readers.speech_corpora import AROUSAL_VALENCE, RavdessReader
from kfusion.data.recording import Segments
from kfusion.data.sources import get_reader, load_recordings, source_modalities
from kfusion.data.windows import cut_windows, resample, segment_window_starts
from kfusion.errors import BadParticipantsError, DataError
from fixture_scripts import fixture_script

SPEECH = DataConfig(modalities=("speech",))
SCHEMES = ("emodb", "ravdess", "cremad", "clips")


FIXTURE = fixture_script("clips")


@pytest.fixture(scope="session")
def corpora(tmp_path_factory) -> dict[str, Path]:
    """The four tiny corpora (read-only: copy before changing files)."""
    return FIXTURE.write_all(tmp_path_factory.mktemp("clip_corpora"))


def _copy(corpora, scheme, tmp_path) -> Path:
    return Path(shutil.copytree(corpora[scheme], tmp_path / scheme))


def _recording(corpora, scheme, pid, config=SPEECH):
    return load_recordings(f"{scheme}:{corpora[scheme]}", config, participants=[pid]).recordings[0]


def _utterance_labels(recording) -> dict[str, dict[str, str]]:
    """file name -> target -> class name ('' = unlabelled)."""
    labels, out = recording.labels, {}
    for i, name in enumerate(recording.segments.names):
        out[name] = {t: (labels.classes[t][int(v[i])] if np.isfinite(v[i]) else "")
                     for t, v in labels.columns.items()}
    return out


# --------------------------------------------------------------------------- layouts and labels

def test_fixture_files_are_in_the_release_layouts_and_rates(corpora):
    assert (corpora["emodb"] / "wav" / "03a01Fa.wav").is_file()
    assert soundfile.info(str(corpora["emodb"] / "wav" / "03a01Fa.wav")).samplerate == 16000
    info = soundfile.info(str(corpora["ravdess"] / "Actor_01" / "03-01-06-02-02-02-01.wav"))
    assert (info.samplerate, info.subtype, info.channels) == (48000, "PCM_16", 1)
    assert soundfile.info(str(corpora["cremad"] / "AudioWAV" / "1001_DFA_ANG_XX.wav")).samplerate == 16000
    assert not list((corpora["ravdess"] / "Actor_18").glob("03-02-*"))  # no song files for actor 18


def test_fixture_script_is_deterministic(corpora, tmp_path):
    again = FIXTURE.write_emodb(tmp_path / "emodb")
    for path in (corpora["emodb"] / "wav").iterdir():
        assert (again / "wav" / path.name).read_bytes() == path.read_bytes()


@pytest.mark.parametrize("scheme, ids", [("emodb", ["03", "08", "10"]), ("ravdess", ["01", "02", "18"]),
                                         ("cremad", ["1001", "1002", "1003"]), ("clips", ["spk1", "spk2", "spk3"])])
def test_speakers_are_participants_and_sources_are_speech_only(corpora, scheme, ids):
    reader = get_reader(scheme)
    assert reader.participants(corpora[scheme]) == ids
    assert source_modalities(f"{scheme}:{corpora[scheme]}") == ("speech",)
    files = reader.source_files(corpora[scheme])
    assert files and all(Path(f).is_file() for f in files)
    assert not any(Path(f).suffix in (".txt", ".lablaut") for f in files)  # release extras not read


def test_emodb_names_give_emotion_arousal_valence_and_keep_versions(corpora):
    recording = _recording(corpora, "emodb", "03")
    labels = _utterance_labels(recording)
    assert len(labels) == len(FIXTURE.EMODB_FILES)
    assert labels["03a01Fa.wav"] == {"emotion": "happiness", "arousal": "high", "valence": "high"}
    assert labels["03a01Fb.wav"]["emotion"] == "happiness"  # version b: another take, kept
    assert labels["03a04La.wav"] == {"emotion": "boredom", "arousal": "low", "valence": "low"}
    assert labels["03a02Wa.wav"] == {"emotion": "anger", "arousal": "high", "valence": "low"}
    assert labels["03b01Na.wav"] == {"emotion": "neutral", "arousal": "neutral", "valence": "neutral"}
    assert labels["03b02Ea.wav"]["emotion"] == "disgust" and labels["03b03Aa.wav"]["emotion"] == "fear"
    assert labels["03a05Ta.wav"]["emotion"] == "sadness"
    assert recording.labels.classes["emotion"] == ("anger", "boredom", "disgust", "fear", "happiness",
                                                   "sadness", "neutral")


def test_ravdess_codes_and_song_files(corpora):
    recording = _recording(corpora, "ravdess", "01")
    labels = _utterance_labels(recording)
    assert len(labels) == 8 and not any(name.startswith("03-02-") for name in labels)
    assert any("2 song file(s)" in n for n in recording.notes)
    assert labels["03-01-06-02-02-02-01.wav"] == {"emotion": "fearful", "arousal": "high", "valence": "low",
                                                  "intensity": "strong"}
    assert labels["03-01-01-01-01-01-01.wav"] == {"emotion": "neutral", "arousal": "neutral",
                                                  "valence": "neutral", "intensity": "normal"}
    assert labels["03-01-02-02-01-01-01.wav"][("arousal")] == "low"  # calm
    assert labels["03-01-08-02-01-01-01.wav"]["emotion"] == "surprised"
    with_song = RavdessReader(song=True).read(corpora["ravdess"], "01", SPEECH)
    assert len(with_song.segments) == 10
    assert len(RavdessReader(song=True).read(corpora["ravdess"], "18", SPEECH).segments) == 8
    assert not any("song" in n for n in _recording(corpora, "ravdess", "18").notes)


def test_cremad_levels_xx_unlabelled_and_the_one_letter_quirk(corpora):
    labels = _utterance_labels(_recording(corpora, "cremad", "1001"))
    assert labels["1001_IEO_ANG_HI.wav"] == {"emotion": "anger", "arousal": "high", "valence": "low",
                                             "intensity": "high"}
    assert labels["1001_IEO_SAD_LO.wav"]["intensity"] == "low"
    assert labels["1001_IEO_HAP_MD.wav"]["intensity"] == "medium"
    assert labels["1001_DFA_ANG_XX.wav"]["intensity"] == ""  # XX: unspecified
    assert labels["1001_IWW_DIS_XX.wav"]["valence"] == "low"
    quirk = _recording(corpora, "cremad", "1003")
    assert _utterance_labels(quirk)["1003_ITH_SAD_X.wav"] == {"emotion": "sad", "arousal": "low",
                                                              "valence": "low", "intensity": ""}
    assert any("1003_ITH_SAD_X.wav: level 'X' read as XX" in n for n in quirk.notes)


def test_clips_manifest_classes_empty_cells_stereo_and_rates(corpora):
    recording = _recording(corpora, "clips", "spk1")
    assert recording.labels.classes == {"emotion": ("angry", "happy", "neutral", "sad"),
                                        "arousal": ("high", "low", "neutral")}
    labels = _utterance_labels(recording)
    assert labels["u3.flac"] == {"emotion": "happy", "arousal": ""}
    assert any("several channels" in n for n in recording.notes)
    # the stereo 44.1 kHz FLAC: channel mean, resampled on its own to 16 kHz, in its segment
    stereo, rate = soundfile.read(str(corpora["clips"] / "audio/spk1/u3.flac"), dtype="float32")
    expected = resample(stereo.mean(axis=1), rate, 16000, padtype="constant")
    i = recording.segments.names.index("u3.flac")
    i0 = int(round((recording.segments.start[i] - recording.audio.start) * 16000))
    np.testing.assert_array_equal(recording.audio.samples[i0:i0 + expected.size], expected)


def test_mapping_covers_every_emotion_class():
    from kfusion.data.readers.speech_corpora import CREMAD, EMODB, RAVDESS

    for reader in (EMODB, RAVDESS, CREMAD):
        assert all(e in AROUSAL_VALENCE for e in reader.classes["emotion"])


# --------------------------------------------------------------------------- segments and padding

def test_utterances_are_segments_on_one_clock_with_silence_between(corpora):
    recording = _recording(corpora, "emodb", "08")
    segments = recording.segments
    assert segments.start[0] == CLIP_CLOCK_START == recording.audio.start
    np.testing.assert_allclose(segments.start[1:] - segments.end[:-1], CLIP_GAP_SECONDS, atol=1e-9)
    audio = recording.audio.samples
    for s0, s1 in zip(segments.end[:-1], segments.start[1:]):
        i0, i1 = (int(round((t - CLIP_CLOCK_START) * 16000)) for t in (s0, s1))
        assert not audio[i0:i1].any()  # exact zeros between utterances
    seconds = {name: s1 - s0 for name, s0, s1 in zip(segments.names, segments.start, segments.end)}
    assert seconds["08b02Ea.wav"] == pytest.approx(1.4)  # 1.3 s + 0.1 s for the second speaker


@pytest.mark.parametrize("scheme", SCHEMES)
def test_no_window_straddles_two_utterances_and_padding_is_zero(corpora, scheme):
    config = DataConfig(modalities=("speech",))
    for pid in get_reader(scheme).participants(corpora[scheme]):
        recording = _recording(corpora, scheme, pid)
        windows = cut_windows(recording, config)
        seg = recording.segments
        assert windows.kept == windows.total > 0 and windows.lengths is not None
        for start, length, raw in zip(windows.starts, windows.lengths, windows.raw["speech"]):
            inside = np.flatnonzero((seg.start <= start + 1e-9) & (start + length <= seg.end + 1e-9))
            assert inside.size == 1  # the window's real part lies in exactly one utterance
            k = inside[0]
            assert length == pytest.approx(min(4.0, seg.end[k] - seg.start[k])) or length == 4.0
            real = int(round(length * 16000))
            assert not raw[real:].any()
            assert raw[:real].any()
        # every utterance gives at least one window; long ones several, from their own start
        firsts = set(np.round(windows.starts, 6))
        assert all(round(s, 6) in firsts for s in seg.start)


def test_segment_window_starts():
    segments = Segments([0.0, 10.0, 30.0], [2.5, 19.0, 34.0])
    starts, lengths = segment_window_starts(segments, 4.0, 3.0)
    np.testing.assert_allclose(starts, [0.0, 10.0, 13.0, 30.0])
    np.testing.assert_allclose(lengths, [2.5, 4.0, 4.0, 4.0])
    starts, lengths = segment_window_starts(segments, 4.0, 3.0, span=(11.0, 40.0))
    np.testing.assert_allclose(starts, [11.0, 14.0, 30.0])
    with pytest.raises(ValueError):
        Segments([0.0, 1.0], [2.0, 3.0])  # overlapping


def test_padded_windows_record_their_length_and_features_ignore_the_padding(corpora, tmp_path):
    dataset = build_dataset(f"emodb:{corpora['emodb']}", SPEECH, cache_dir=False)
    assert dataset.lengths is not None and dataset.lengths.dtype == np.float32
    short = np.flatnonzero((dataset.participants == "03") & np.isclose(dataset.lengths, 1.3))
    assert short.size == 1
    w = short[0]
    # labelled although 1.3 s < min_label_coverage x 4 s: coverage is judged on the real part
    assert dataset.classes["emotion"][dataset.labels["emotion"][w]] == "disgust"
    assert (dataset.labels["emotion"] >= 0).all() and (dataset.labels["arousal"] >= 0).all()
    frames = int(np.ceil(1.3 * 16000 / 160))
    x = dataset.inputs["speech"][w]
    assert not x[frames:].any()  # padding frames are zeros
    np.testing.assert_allclose(x[:frames].mean(axis=0), 0.0, atol=1e-4)  # CMVN over real frames only
    np.testing.assert_allclose(x[:frames].std(axis=0)[1:], 1.0, atol=1e-3)
    # the same as CMVN of the utterance's own MFCCs, computed in a full zero-padded window
    samples, _ = soundfile.read(str(corpora["emodb"] / "wav" / "03b02Ea.wav"), dtype="float32")
    window = np.zeros(64000, np.float32)
    window[:samples.size] = samples
    np.testing.assert_allclose(x[:frames], zscore(mfcc(window[None])[:, :frames], axis=1)[0], atol=1e-4)
    report = dataset.report
    assert report["windows"]["padded"] == int(np.sum(dataset.lengths < 4.0)) > 0
    assert report["participants"]["03"]["segments"] == len(FIXTURE.EMODB_FILES)
    assert report["participants"]["03"]["durations"]["speech"] == pytest.approx(
        sum(f[3] for f in FIXTURE.EMODB_FILES), abs=0.01)  # utterances only, not the silence
    # speech calibration: from non-silent frames only, so neither gaps nor padding count
    seconds = dataset.calibration["03"]["speech"]["seconds"]
    assert seconds <= sum(f[3] for f in FIXTURE.EMODB_FILES) + 0.1
    # lengths survive select, save and load
    again = type(dataset).load(dataset.save(tmp_path / "saved"))
    np.testing.assert_array_equal(again.lengths, dataset.lengths)
    np.testing.assert_array_equal(dataset.subset("08").lengths, dataset.lengths[dataset.participants == "08"])


def test_sources_without_segments_record_no_lengths(tmp_path):
    from kfusion.data.recording import Audio, Recording

    audio = Audio(np.random.default_rng(0).normal(0, 0.1, 16000 * 9).astype(np.float32), 16000, CLIP_CLOCK_START)
    windows = cut_windows(Recording("p", audio=audio), SPEECH)
    assert windows.lengths is None and windows.kept == 2


# --------------------------------------------------------------------------- bad input

def test_a_file_name_that_does_not_parse_names_the_file_and_the_pattern(corpora, tmp_path):
    root = _copy(corpora, "emodb", tmp_path)
    shutil.copy(root / "wav" / "03a01Fa.wav", root / "wav" / "03a01Xa.wav")
    with pytest.raises(BadParticipantsError) as err:
        load_recordings(f"emodb:{root}", SPEECH)
    problem = err.value.problems["03"]
    assert isinstance(problem, DataError) and problem.file.endswith("03a01Xa.wav")
    assert "emotion letter" in problem.field and "W (anger)" in problem.expected
    (root / "wav" / "03a01Xa.wav").unlink()
    shutil.copy(root / "wav" / "03a01Fa.wav", root / "wav" / "take1.wav")  # no speaker at all
    with pytest.raises(DataError) as err:
        get_reader("emodb").participants(root)
    assert err.value.file.endswith("take1.wav") and "SSTTTEV.wav" in err.value.expected


def test_ravdess_bad_names_and_layouts(corpora, tmp_path):
    root = _copy(corpora, "ravdess", tmp_path)
    folder = root / "Actor_02"
    shutil.copy(folder / "03-01-05-01-01-01-02.wav", folder / "01-01-05-01-01-01-02.wav")
    with pytest.raises(DataError) as err:
        get_reader("ravdess").read(root, "02", SPEECH)
    assert err.value.file.endswith("01-01-05-01-01-01-02.wav") and "modality" in err.value.field
    assert "03 (audio-only" in err.value.expected
    (folder / "01-01-05-01-01-01-02.wav").rename(folder / "03-01-05-01-01-01-07.wav")
    with pytest.raises(DataError, match="the actor of its folder Actor_02"):
        get_reader("ravdess").read(root, "02", SPEECH)
    (folder / "03-01-05-01-01-01-07.wav").rename(folder / "03-01-09-01-01-01-02.wav")
    with pytest.raises(DataError, match=r"emotion \(3rd part\): expected 01 \(neutral\) \.\. 08"):
        get_reader("ravdess").read(root, "02", SPEECH)
    (folder / "03-01-09-01-01-01-02.wav").rename(folder / "angry.wav")
    with pytest.raises(DataError, match="MM-VV-EE-II-SS-RR-AA.wav"):
        get_reader("ravdess").read(root, "02", SPEECH)
    wrapped = tmp_path / "wrapped"
    shutil.copytree(corpora["ravdess"], wrapped / "Audio_Speech_Actors_01-24")
    with pytest.raises(DataError, match="one level down: use ravdess:.*Audio_Speech_Actors_01-24"):
        get_reader("ravdess").participants(wrapped)
    with pytest.raises(DataError, match="one actor's folder"):
        get_reader("ravdess").participants(corpora["ravdess"] / "Actor_01")


def test_cremad_bad_level_and_missing_folder(corpora, tmp_path):
    root = _copy(corpora, "cremad", tmp_path)
    shutil.copy(root / "AudioWAV" / "1002_DFA_ANG_XX.wav", root / "AudioWAV" / "1002_DFA_ANG_ZZ.wav")
    with pytest.raises(DataError) as err:
        get_reader("cremad").read(root, "1002", SPEECH)
    assert err.value.file.endswith("1002_DFA_ANG_ZZ.wav") and "level" in err.value.field
    assert "LO, MD, HI or XX" in err.value.expected
    with pytest.raises(DataError, match="AudioWAV/ folder"):
        get_reader("cremad").participants(tmp_path / "cremad" / "..")
    # PATH may also be the AudioWAV folder itself
    assert get_reader("cremad").participants(corpora["cremad"] / "AudioWAV") == ["1001", "1002", "1003"]


def test_unreadable_empty_and_lfs_pointer_files(corpora, tmp_path):
    root = _copy(corpora, "cremad", tmp_path)
    (root / "AudioWAV" / "1001_TSI_NEU_XX.wav").write_bytes(b"not audio at all")
    (root / "AudioWAV" / "1002_TSI_NEU_XX.wav").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 71022\n")
    soundfile.write(str(root / "AudioWAV" / "1003_TSI_NEU_XX.wav"), np.zeros(0, np.float32), 16000,
                    subtype="PCM_16")
    with pytest.raises(DataError) as err:
        get_reader("cremad").read(root, "1001", SPEECH)
    assert err.value.file.endswith("1001_TSI_NEU_XX.wav") and "libsndfile" in err.value.expected
    with pytest.raises(DataError, match="Git LFS pointer"):
        get_reader("cremad").read(root, "1002", SPEECH)
    recording = get_reader("cremad").read(root, "1003", SPEECH)  # an empty file is skipped, noted
    assert "1003_TSI_NEU_XX.wav" not in recording.segments.names
    assert any("without audio samples skipped: 1003_TSI_NEU_XX.wav" in n for n in recording.notes)


def test_clips_manifest_errors(corpora, tmp_path):
    root = _copy(corpora, "clips", tmp_path)
    manifest = root / "manifest.csv"
    text = manifest.read_text()
    manifest.unlink()
    with pytest.raises(DataError) as err:
        get_reader("clips").participants(root)
    assert err.value.file.endswith("manifest.csv") and "file, participant" in err.value.expected
    manifest.write_text(text.replace("participant", "speaker"))
    with pytest.raises(DataError) as err:
        get_reader("clips").participants(root)
    assert err.value.field == "header" and "missing participant" in str(err.value.found)
    manifest.write_text(text + "audio/spk1/nothing.wav,spk1,sad,low\n")
    with pytest.raises(DataError) as err:
        get_reader("clips").read(root, "spk1", SPEECH)
    assert err.value.file.endswith("nothing.wav") and "listed in" in err.value.expected
    manifest.write_text(text + "audio/spk1/u1.wav,spk2,sad,low\n")
    with pytest.raises(DataError, match="each file once"):
        get_reader("clips").participants(root)
    manifest.write_text(text + "audio/spk1/u1.wav,,sad,low\n")
    with pytest.raises(DataError, match="column 'participant', line 14"):
        get_reader("clips").participants(root)
    manifest.write_text("file,participant,emotion\n" + "\n".join(
        f"{line.split(',')[0]},{line.split(',')[1]},same" for line in text.splitlines()[1:]) + "\n")
    with pytest.raises(DataError, match="at least two different classes"):
        get_reader("clips").participants(root)
    manifest.write_text("file,participant\n" + "\n".join(
        ",".join(line.split(",")[:2]) for line in text.splitlines()[1:]) + "\n")
    recording = get_reader("clips").read(root, "spk2", SPEECH)  # no label columns: unlabelled
    assert recording.labels is None and any("no label columns" in n for n in recording.notes)


# --------------------------------------------------------------------------- CLI

@pytest.mark.parametrize("scheme", SCHEMES)
def test_inspect_cli_on_each_fixture(corpora, scheme, capsys):
    from kfusion.cli import main

    assert main(["data", "inspect", f"{scheme}:{corpora[scheme]}", "--no-cache"]) == 0
    out = capsys.readouterr().out
    assert "Modalities: speech" in out and "zero-padded" in out and "Labels: arousal" in out
    assert main(["data", "inspect", f"{scheme}:{corpora[scheme]}", "--no-cache", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["modalities"] == ["speech"] and len(info["participants"]) == 3
    assert all(p["status"] == "ok" for p in info["participants"])
    assert info["windows"]["padded"] > 0


@pytest.mark.parametrize("scheme, target", [("emodb", "emotion"), ("ravdess", "arousal"),
                                            ("cremad", "valence"), ("clips", "arousal")])
def test_evaluate_cli_on_each_fixture(corpora, scheme, target, tmp_path, capsys):
    from kfusion.cli import main
    from kfusion.evaluation import EvaluationConfig

    EvaluationConfig(epochs=2, patience=1, batch_size=16).save(tmp_path / "evaluation.json")
    code = main(["evaluate", "--data", f"{scheme}:{corpora[scheme]}", "--rows", "speech_only,handcrafted",
                 "--targets", target, "--out", str(tmp_path / "ev"), "--config", str(tmp_path / "evaluation.json"),
                 "--no-cache"])
    assert code == 0
    out = capsys.readouterr().out
    assert "Speech only" in out and "Hand-crafted" in out
    folds = (tmp_path / "ev" / "folds.jsonl").read_text().splitlines()
    assert len(folds) == 2 * 3  # two rows x three held-out speakers


def test_data_sources_lists_the_clip_corpora(capsys):
    from kfusion.cli import main

    assert main(["data", "sources"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert "wav/03a01Fa.wav" in lines["emodb:PATH"]
    assert "Actor_01/03-01-06-01-02-01-01.wav" in lines["ravdess:PATH"]
    assert "AudioWAV/1001_DFA_ANG_XX.wav" in lines["cremad:PATH"]
    assert "manifest.csv" in lines["clips:PATH"]
