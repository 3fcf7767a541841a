"""The package installs whole: a wheel holds the shipped weights, the licence and ``python -m
kfusion``, and an unpacked wheel lists and loads its models without the checkout."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: What a build reads (setup.py copies saved_models/ into the package).
BUILD_INPUTS = ("kfusion", "saved_models", "setup.cfg", "setup.py", "pyproject.toml", "README.md", "LICENSE",
                "MANIFEST.in")


def _shipped() -> dict[str, list[str]]:
    """``{model: [files a wheel must hold]}`` from the checkout's saved_models/."""
    models = {}
    for folder in sorted(p for p in (ROOT / "saved_models").iterdir() if (p / "card.json").is_file()):
        card = json.loads((folder / "card.json").read_text())
        models[folder.name] = sorted({"card.json", "MODEL_CARD.md", card["file"]}
                                     | {p.name for p in folder.glob("*.keras")})
    return models


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the sources (the checkout gets no build/ folder)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    for name in BUILD_INPUTS:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "shipped_models"))
        else:
            shutil.copy2(path, source / name)
    # The environment's setuptools builds it (no download) when it has one; else pip fetches them.
    local = all(importlib.util.find_spec(name) for name in ("setuptools", "wheel"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *(["--no-build-isolation"] * local),
                           "--quiet", "--wheel-dir", str(tmp / "dist"), str(source)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = (tmp / "dist").glob("kfusion-*.whl")
    return built


def test_the_wheel_holds_the_shipped_models_licence_and_main(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = _shipped()
    assert {"sigrep-eda", "speech-autoencoder-synthetic", "fusion-attention-synthetic"} <= set(shipped)
    missing = [f"{model}/{file}" for model, files in shipped.items() for file in files
               if f"kfusion/shipped_models/{model}/{file}" not in names]
    assert not missing, missing
    assert not any(name.endswith("publish.py") for name in names)  # the publishing script stays in the repo
    assert "kfusion/__main__.py" in names
    dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    assert f"{dist_info}/LICENSE" in names
    assert "MIT" in zipfile.ZipFile(wheel).read(f"{dist_info}/LICENSE").decode()


def test_an_unpacked_wheel_lists_and_loads_its_models_without_the_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {k: v for k, v in os.environ.items() if k not in ("KFUSION_SAVED_MODELS", "PYTHONPATH")}
    env.update(PYTHONPATH=str(site), TF_CPP_MIN_LOG_LEVEL="2")
    # python -m kfusion runs the command line, from the unpacked wheel (not the editable checkout).
    listed = subprocess.run([sys.executable, "-m", "kfusion", "models", "list", "--json"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr
    models = {m["name"]: m for m in json.loads(listed.stdout)}
    assert set(models) == set(_shipped())
    assert all(Path(m["path"]).is_relative_to(site / "kfusion" / "shipped_models") for m in models.values())
    loaded = subprocess.run([sys.executable, "-c", (
        "import kfusion, kfusion.saved_models as s; "
        "print(kfusion.__file__); print(s.load('sigrep-eda').output_shape)")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr
    module, shape = loaded.stdout.split("\n")[-3:-1]
    assert Path(module).is_relative_to(site) and shape == "(None, 40)"


def test_python_dash_m_kfusion_is_the_command_line():
    done = subprocess.run([sys.executable, "-m", "kfusion", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "evaluate" in done.stdout and "models" in done.stdout
