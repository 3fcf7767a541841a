"""The README's Python example runs as written (at the size it states)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KFUSION_CACHE", str(tmp_path / "cache"))
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    data = namespace["data"]
    assert data.inputs["speech"].shape[1:] == (400, 40) and data.inputs["acc"].shape[1:] == (128, 3)
    assert namespace["model"].optimizer.iterations.numpy() > 0
    pretraining = namespace["pretraining"]
    assert pretraining.output_shape == (None, 40) and pretraining.optimizer.iterations.numpy() > 0
