"""The CLI is a thin layer: check its wiring, its JSON and its error path end to end."""

import json
import subprocess
import sys
from pathlib import Path

from kfusion.cli import main

FIXTURE = Path(__file__).parent / "fixtures" / "stress-predict"


def test_inspect_json_on_synthetic_kemocon(kemocon_synth, tmp_path, capsys):
    assert main(["data", "inspect", f"kemocon:{kemocon_synth}", "--json",
                 "--cache-dir", str(tmp_path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["windows"]["kept"] > 0
    assert set(info["labels"]) == {"arousal", "valence", "emotion"}
    assert sum(v for k, v in info["labels"]["arousal"].items()) == info["windows"]["kept"]


def test_inspect_text_on_real_e4_slice(tmp_path, capsys):
    assert main(["data", "inspect", f"stresspredict:{FIXTURE}", "--no-cache"]) == 0
    out = capsys.readouterr().out
    assert "Modalities: acc, bvp, eda, temp" in out and "S02" in out and "stress" in out


def test_bad_source_gives_a_clear_error_and_exit_code(tmp_path, capsys):
    (tmp_path / "metadata").mkdir()
    assert main(["data", "inspect", f"kemocon:{tmp_path}", "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kfusion: error: ") and "subjects.csv" in err and "Traceback" not in err
    assert main(["data", "inspect", "nosuch:/x"]) == 2
    assert "unknown data source scheme" in capsys.readouterr().err


def test_synth_refuses_to_overwrite_without_flag(tmp_path, capsys):
    out = tmp_path / "set"
    args = ["data", "synth", str(out), "--participants", "2", "--minutes", "0.5", "--seed", "3"]
    assert main(args) == 0
    assert (out / "metadata" / "subjects.csv").is_file()
    assert main(args) == 2
    assert main(args + ["--overwrite"]) == 0


def test_console_script_is_installed():
    result = subprocess.run([str(Path(sys.executable).parent / "kfusion"), "--version"],
                            capture_output=True, text=True, check=True)
    assert result.stdout.startswith("kfusion ")


def test_tensorflow_start_up_noise_stays_off_stderr():
    """TensorFlow's C++ start-up lines (oneDNN, CUDA probing) ignore TF_CPP_MIN_LOG_LEVEL; the
    CLI starts TensorFlow with stderr set aside, so a user sees only kfusion's own output."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "kfusion.cli", "models", "list"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "sigrep-eda" in done.stdout
    for noise in ("oneDNN", "cuda", "absl::InitializeLog", "I0000", "E0000"):
        assert noise not in done.stderr, done.stderr


def test_export_of_a_corrupt_keras_file_says_what_is_wrong(tmp_path, capsys):
    corrupt = tmp_path / "model.keras"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    assert main(["export", "--model", str(corrupt), "--out", str(tmp_path / "m.tflite")]) == 2
    err = capsys.readouterr().err
    assert "not a zip archive" in err and "File not found" not in err and str(corrupt) in err
