"""Pretraining configs: JSON round trip, config files, bad arguments -> ConfigError, CLI glue."""

from __future__ import annotations

import argparse
import json

import pytest

from kfusion.errors import ConfigError
from kfusion.cli import main
from kfusion.cli.pretrain import add_models_commands, add_pretrain_commands
from kfusion.training.pretrain import (
    EncoderPretrainConfig,
    FusionPretrainConfig,
    SpeechPretrainConfig,
    pretrain_encoders,
    pretrain_fusion,
    split_participants,
)


@pytest.mark.parametrize("config", [
    EncoderPretrainConfig(epochs=3, temperature=0.2, scaling_range=(0.5, 1.5), projection_units=(16, 8)),
    SpeechPretrainConfig(sparsity=0.0, validation_fraction=0.0),
    FusionPretrainConfig(mask_ratio=(0.2, 0.3), statistics=("mean", "peaks"), modalities=("eda", "bvp"),
                         freeze_encoders=False, head_units=()),
])
def test_configs_round_trip_through_json_files(config, tmp_path):
    assert type(config).from_dict(json.loads(json.dumps(config.to_dict()))) == config
    config.save(tmp_path / "c.json")
    assert type(config).load(tmp_path / "c.json") == config


@pytest.mark.parametrize("cls, changes, message", [
    (EncoderPretrainConfig, {"epochs": 0}, "epochs"),
    (EncoderPretrainConfig, {"batch_size": 1}, "batch_size"),
    (EncoderPretrainConfig, {"temperature": 0.0}, "temperature"),
    (EncoderPretrainConfig, {"temperature": "hot"}, "temperature"),
    (EncoderPretrainConfig, {"learning_rate": -1e-3}, "learning_rate"),
    (EncoderPretrainConfig, {"scaling_range": (1.2, 0.8)}, "scaling_range"),
    (EncoderPretrainConfig, {"projection_units": (0,)}, "projection_units"),
    (EncoderPretrainConfig, {"seed": -1}, "seed"),
    (EncoderPretrainConfig, {"window_overlap": 4.0}, "window_overlap"),
    (SpeechPretrainConfig, {"validation_fraction": 1.0}, "validation_fraction"),
    (SpeechPretrainConfig, {"sparsity": -1}, "sparsity"),
    (FusionPretrainConfig, {"mask_ratio": (0.6, 0.4)}, "mask_ratio"),
    (FusionPretrainConfig, {"mask_ratio": (0.0, 0.5)}, "mask_ratio"),
    (FusionPretrainConfig, {"statistics": ("mean", "mode")}, "statistics"),
    (FusionPretrainConfig, {"modalities": ("eda", "ecg")}, "modality"),
    (FusionPretrainConfig, {"freeze_encoders": "yes"}, "freeze_encoders"),
])
def test_bad_config_values_raise_config_error(cls, changes, message):
    with pytest.raises(ConfigError, match=message):
        cls(**changes)


def test_unknown_keys_and_broken_files_raise_config_error(tmp_path):
    with pytest.raises(ConfigError, match="tempreature"):
        EncoderPretrainConfig.from_dict({"tempreature": 0.1})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        FusionPretrainConfig.load(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="not found"):
        FusionPretrainConfig.load(tmp_path / "missing.json")


def test_bad_stage_arguments_raise_config_error(tmp_path):
    with pytest.raises(ConfigError, match="speech"):
        pretrain_encoders(["e4:x"], tmp_path, modalities=("speech",))
    with pytest.raises(ConfigError, match="at least one data source"):
        pretrain_encoders([], tmp_path)
    with pytest.raises(ConfigError, match="EncoderPretrainConfig"):
        pretrain_encoders(["e4:x"], tmp_path, config=FusionPretrainConfig())
    with pytest.raises(ConfigError, match="mechanisms"):
        pretrain_fusion(["e4:x"], tmp_path, mechanisms=["sum"])
    with pytest.raises(ConfigError, match="scheme|SCHEME"):
        pretrain_encoders(["nosuchreader:x"], tmp_path)


def test_participant_split_holds_out_whole_participants():
    participants = __import__("numpy").array(["a"] * 3 + ["b"] * 2 + ["c"] * 4 + ["d"])
    train, held = split_participants(participants, 0.25, seed=1)
    assert len(held) == 1 and not set(participants[train]) & set(held)
    assert train.sum() == (~__import__("numpy").isin(participants, held)).sum()
    assert split_participants(participants, 0.0, 1)[1] == []


def _parser():
    parser = argparse.ArgumentParser(prog="kfusion")
    sub = parser.add_subparsers(dest="command", required=True)
    add_pretrain_commands(sub)
    add_models_commands(sub)
    return parser


def test_cli_flags_override_a_config_file(tmp_path):
    from kfusion.cli.pretrain import _config

    FusionPretrainConfig(epochs=7, batch_size=8).save(tmp_path / "f.json")
    args = _parser().parse_args(["pretrain", "fusion", "--data", "kemocon:x", "--out", "o",
                                 "--config", str(tmp_path / "f.json"), "--mask-ratio", "0.2", "0.4",
                                 "--seed", "5"])
    config = _config(FusionPretrainConfig, args)
    assert (config.epochs, config.batch_size, config.mask_ratio, config.seed) == (7, 8, (0.2, 0.4), 5)


def test_cli_reports_bad_arguments_without_a_traceback(tmp_path, capsys):
    code = main(["pretrain", "encoders", "--data", "e4:x", "--out", str(tmp_path), "--temperature", "0"])
    assert code == 2 and "temperature" in capsys.readouterr().err
