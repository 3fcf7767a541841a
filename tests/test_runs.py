import json

import pytest

from kfusion.errors import ConfigError
from kfusion.runs import RunFolder, package_versions


def test_versions_name_the_stack():
    versions = package_versions()
    assert versions["kfusion"] and versions["tensorflow"].startswith("2.21")
    assert versions["keras"] and versions["python"].startswith("3.")


def test_run_folder_writes_manifest_and_refuses_other_config(tmp_path):
    run = RunFolder(tmp_path / "run").start({"a": 1, "b": [1, 2]}, "abc123", command="kfusion x")
    for name in ("config.json", "versions.json", "data.json"):
        assert (run.path / name).is_file()
    assert json.loads((run.path / "data.json").read_text())["fingerprint"] == "abc123"
    RunFolder(tmp_path / "run").start({"b": [1, 2], "a": 1}, "abc123")  # same config: resumes
    with pytest.raises(ConfigError, match=r"another configuration \(a: 1 -> 2\)"):
        RunFolder(tmp_path / "run").start({"a": 2, "b": [1, 2]}, "abc123")
    with pytest.raises(ConfigError, match=r"b: \[1, 2\] -> \[1, 3\]; c: not set -> 4"):
        RunFolder(tmp_path / "run").start({"a": 1, "b": [1, 3], "c": 4}, "abc123")


def test_records_survive_a_cut_last_line(tmp_path):
    run = RunFolder(tmp_path).start({})
    run.append_record("folds.jsonl", {"fold": 1, "f1": 0.5})
    run.append_record("folds.jsonl", {"fold": 2, "f1": 0.6})
    with open(tmp_path / "folds.jsonl", "a") as handle:
        handle.write('{"fold": 3, "f1"')  # a crash mid-write
    assert [r["fold"] for r in run.read_records("folds.jsonl")] == [1, 2]


def test_resuming_records_of_other_code_says_so(tmp_path, capsys):
    """versions.json names kfusion's source fingerprint; a resume under other code or packages
    keeps the finished records and says on stderr what changed."""
    run = RunFolder(tmp_path / "run").start({"a": 1})
    versions = json.loads((run.path / "versions.json").read_text())
    assert len(versions["kfusion_source"]) == 16
    RunFolder(tmp_path / "run").start({"a": 1})  # same code: silent
    assert "other code" not in capsys.readouterr().err
    versions.update(kfusion_source="0" * 16, numpy="0.0")
    (run.path / "versions.json").write_text(json.dumps(versions))
    RunFolder(tmp_path / "run").start({"a": 1})
    err = capsys.readouterr().err
    assert "holds results written by other code" in err and f"{'0' * 16} ->" in err and "numpy 0.0 ->" in err
    assert json.loads((run.path / "versions.json").read_text())["numpy"] != "0.0"  # now the current versions
