"""The pretraining stages build their data inputs-only (issue 15) and train exactly as before.

Each stage reads only inputs, presence and participants; the fusion stage on an inputs-only
set ends with the losses and weights (bit for bit) of the same run on a full build."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from kfusion.data import dataset as dataset_module
from kfusion.training.pretrain import (
    EncoderPretrainConfig,
    FusionPretrainConfig,
    SpeechPretrainConfig,
    pretrain_encoders,
    pretrain_fusion,
    pretrain_speech,
    read_progress,
)

TINY_FUSION = FusionPretrainConfig(epochs=2, batch_size=16, modalities=("eda", "temp", "speech"),
                                   statistics=("mean", "std"), scaler_draws=1, validation_fraction=0.25,
                                   projection_units=(8,), head_units=(4,), seed=5)


REAL_BUILD = dataset_module.build_dataset


class Stop(Exception):
    pass


def _spy(monkeypatch, calls: list, force=None, stop=False):
    """Replace build_dataset (looked up by the stages when they run): record each call's
    ``contents`` (and what was built); ``force``: build with that instead; ``stop``: raise."""

    def build(*args, contents="all", **kwargs):
        calls.append(contents)
        if stop:
            raise Stop
        data = REAL_BUILD(*args, contents=force or contents, **kwargs)
        calls.append(f"built {data.contents}")
        return data

    monkeypatch.setattr(dataset_module, "build_dataset", build)


def test_every_stage_asks_for_inputs_only(kemocon_synth, tmp_path, monkeypatch):
    source, calls = f"kemocon:{kemocon_synth}", []
    _spy(monkeypatch, calls, stop=True)
    for run in (lambda: pretrain_encoders(source, tmp_path / "e", EncoderPretrainConfig(), modalities=("eda",),
                                          cache_dir=False, verbose=0, progress=False),
                lambda: pretrain_speech(source, tmp_path / "s", SpeechPretrainConfig(), cache_dir=False, verbose=0),
                lambda: pretrain_fusion(source, tmp_path / "f", TINY_FUSION, cache_dir=False, verbose=0,
                                        progress=False)):
        with pytest.raises(Stop):
            run()
    assert calls == ["inputs", "inputs", "inputs"]


def _fusion(source, out, monkeypatch, force=None):
    calls = []
    _spy(monkeypatch, calls, force=force)
    paths = pretrain_fusion(source, out, TINY_FUSION, mechanisms="weighted", cache_dir=False, verbose=0,
                            progress=False)["weighted"]
    model = keras.saving.load_model(paths["model"], compile=False)
    return calls, read_progress(out / "weighted")["history"], model.get_weights(), paths["scaler"].read_text()


def test_fusion_pretraining_is_bit_identical_on_an_inputs_only_set(kemocon_synth, tmp_path, monkeypatch):
    source = f"kemocon:{kemocon_synth}"
    calls, history, weights, scaler = _fusion(source, tmp_path / "inputs", monkeypatch)
    full_calls, full_history, full_weights, full_scaler = _fusion(source, tmp_path / "all", monkeypatch,
                                                                  force="all")
    assert calls == ["inputs", "built inputs"]
    assert full_calls == ["inputs", "built all"]  # the stage asked for inputs; the spy built everything
    assert len(history) == TINY_FUSION.epochs
    assert history == full_history  # every loss and val_loss, exactly
    assert json.loads(scaler) == json.loads(full_scaler)
    assert len(weights) == len(full_weights)
    for a, b in zip(weights, full_weights):
        np.testing.assert_array_equal(a, b)
    records = [json.loads((tmp_path / name / "results.jsonl").read_text()) for name in ("inputs", "all")]
    assert records[0]["train_windows"] == records[1]["train_windows"]
    assert records[0]["validation_participants"] == records[1]["validation_participants"]
