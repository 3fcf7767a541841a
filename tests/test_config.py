import json
import re

import pytest

from kfusion.config import DataConfig, FeatureConfig, WindowConfig
from kfusion.modalities import check_modalities, input_shape
from kfusion.errors import ConfigError


def test_defaults_follow_the_paper():
    config = DataConfig()
    assert config.window.seconds == 4.0 and config.window.hop == 3.0
    assert config.modalities == ("speech", "acc", "bvp", "eda", "temp")
    assert [input_shape(m) for m in config.modalities] == [(400, 40), (128, 3), (256, 1), (16, 1), (16, 1)]


def test_json_round_trip(tmp_path):
    config = DataConfig(modalities=("acc", "eda"), window=WindowConfig(seconds=8, overlap=2, missing="fill"),
                        features=FeatureConfig(wearable_norm="none"), annotations="partner", skip_bad=True)
    config.save(tmp_path / "c.json")
    assert DataConfig.load(tmp_path / "c.json") == config
    assert json.loads((tmp_path / "c.json").read_text())["window"]["overlap"] == 2


@pytest.mark.parametrize("bad, match", [
    ({"window": {"seconds": 0}}, "window.seconds"),
    ({"window": {"seconds": 4, "overlap": 4}}, "window.overlap"),
    ({"window": {"missing": "zero"}}, "window.missing"),
    ({"features": {"speech_norm": "pcen"}}, "speech_norm"),
    ({"modalities": ["ecg"]}, "unknown modality 'ecg'"),
    ({"annotations": "friend"}, "annotations"),
    ({"windw": {}}, "unknown key"),
])
def test_invalid_configs_are_named(bad, match):
    with pytest.raises(ConfigError, match=match):
        DataConfig.from_dict(bad)


def test_modalities_validation():
    assert check_modalities(["ACC", "speech"]) == ("acc", "speech")
    with pytest.raises(ConfigError, match="twice"):
        check_modalities(["acc", "acc"])
    with pytest.raises(ConfigError, match="at least one"):
        check_modalities([])


def test_a_bad_value_in_a_config_file_names_the_file_and_the_field(tmp_path):
    path = tmp_path / "data.json"
    path.write_text(json.dumps({"window": {"seconds": -1}}))
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: window\.seconds: expected a positive"):
        DataConfig.load(path)
    path.write_text(json.dumps({"features": {"wearable_norm": "bogus"}}))
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: features\.wearable_norm: expected one of"):
        DataConfig.load(path)
    path.write_text(json.dumps({"window": {"second": 4}}))   # unknown keys name the section
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}\.window: unknown key\(s\) second"):
        DataConfig.load(path)
