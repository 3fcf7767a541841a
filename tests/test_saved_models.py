"""The saved-models registry: listing, loading, the env override, and the shipped encoders."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kfusion import saved_models
from kfusion.errors import ConfigError, DataError


@pytest.fixture
def tiny_registry(tmp_path, monkeypatch):
    from kfusion.models import sigrep_encoder

    folder = tmp_path / "sigrep-eda-test"
    folder.mkdir()
    sigrep_encoder("eda").save(folder / "encoder.keras")
    (folder / "card.json").write_text(json.dumps({"kind": "sigrep-encoder", "modality": "eda",
                                                  "file": "encoder.keras", "data": "test"}))
    (folder / "MODEL_CARD.md").write_text("# test\n")
    monkeypatch.setenv(saved_models.ENV_VAR, str(tmp_path))
    return tmp_path


def test_env_var_registry_lists_and_loads(tiny_registry):
    rows = saved_models.list_models()
    assert [r["name"] for r in rows] == ["sigrep-eda-test"]
    assert rows[0]["size"] > 0 and rows[0]["card"].endswith("MODEL_CARD.md")
    model = saved_models.load("sigrep-eda-test")
    assert model.output_shape == (None, 40)
    assert saved_models.path("sigrep-eda-test").name == "encoder.keras"


def test_unknown_name_and_broken_cards(tiny_registry):
    with pytest.raises(ConfigError, match="sigrep-eda-test"):
        saved_models.load("sigrep-ecg")
    (tiny_registry / "broken").mkdir()
    (tiny_registry / "broken" / "card.json").write_text(json.dumps({"kind": "x", "data": "y"}))
    with pytest.raises(DataError, match="file"):
        saved_models.list_models()


def test_models_list_command(tiny_registry, capsys):
    from kfusion.cli import main

    assert main(["models", "list"]) == 0
    assert "sigrep-eda-test" in capsys.readouterr().out


@pytest.mark.parametrize("modality, shape", [("acc", (128, 3)), ("bvp", (256, 1)), ("eda", (16, 1)),
                                             ("temp", (16, 1))])
def test_shipped_stress_predict_encoders_load_and_embed(modality, shape, monkeypatch):
    monkeypatch.delenv(saved_models.ENV_VAR, raising=False)
    names = {r["name"] for r in saved_models.list_models()}
    assert f"sigrep-{modality}" in names
    card = saved_models.card(f"sigrep-{modality}")
    assert card["modality"] == modality and "stress-predict" in card["data"].lower()
    encoder = saved_models.load(f"sigrep-{modality}")
    windows = np.random.default_rng(0).normal(size=(3, *shape)).astype("float32")
    embedding = encoder.predict(windows, verbose=0)
    assert embedding.shape == (3, 40) and np.isfinite(embedding).all()
    assert np.abs(embedding[0] - embedding[1]).max() > 0   # not a constant map


def test_shipped_speech_encoder_has_a_live_code(monkeypatch):
    # The first shipped speech autoencoder had collapsed (constant code): guard against a repeat.
    monkeypatch.delenv("KFUSION_SAVED_MODELS", raising=False)
    card = saved_models.card("speech-autoencoder-synthetic")
    assert card["final_metrics"]["loss"] < 0.95          # reconstructs better than the mean window
    encoder = saved_models.load("speech-autoencoder-synthetic")
    windows = np.random.default_rng(0).normal(size=(16, 400, 40)).astype("float32")
    code = np.asarray(encoder(windows))
    assert code.shape == (16, 40) and code.std(axis=0).mean() > 1e-2
