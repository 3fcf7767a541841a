"""The fusion builder's arguments travel with the backbone (issue 14): recorded in its
``projection`` layer, read by ``backbone_settings`` after saving, loading, ``backbone_of``,
``clone_model`` and heads on top; the tuner reads them instead of parsing layer names."""

from __future__ import annotations

from pathlib import Path

import keras

from kfusion.models import backbone_of, fusion_backbone, fusion_pretraining_model
from kfusion.models.fusion import Projection, backbone_settings
from model_helpers import tiny_encoders


def test_settings_survive_save_load_clone_and_heads(tmp_path):
    encoders = tiny_encoders(("eda", "temp"))
    backbone = fusion_backbone(encoders, "attention", projection_units=(12, 6, 4), attention_tokens=4,
                               attention_heads=1)
    expected = {"mechanism": "attention", "modalities": ("eda", "temp"), "projection_units": (12, 6, 4),
                "use_presence": True, "attention_tokens": 4, "attention_heads": 1, "attention_key_dim": None,
                "recorded": True}
    assert backbone_settings(backbone) == expected
    model = fusion_pretraining_model(backbone, ["eda_mean", "temp_max"], (3,))
    model.save(tmp_path / "pretraining.keras")
    loaded = keras.saving.load_model(tmp_path / "pretraining.keras", compile=False)
    assert isinstance(loaded.get_layer("projection"), Projection)
    for copy in (loaded, backbone_of(loaded), keras.models.clone_model(backbone)):
        assert backbone_settings(copy) == expected
    plain = fusion_backbone(encoders, "weighted", projection_units=(5,), use_presence=False)
    assert backbone_settings(plain)["projection_units"] == (5,)
    assert backbone_settings(plain)["use_presence"] is False


def test_files_saved_before_the_record_read_their_projection_from_the_layers(tmp_path):
    # A backbone as saved before the projection layer recorded its settings: a plain identity.
    backbone = fusion_backbone(tiny_encoders(("eda", "temp")), "weighted", projection_units=(6, 4))
    plain = keras.layers.Identity(name="projection")(backbone.get_layer("projection_2").output)
    keras.Model(backbone.input, plain, name="fusion_backbone").save(tmp_path / "old.keras")
    old = keras.saving.load_model(tmp_path / "old.keras", compile=False)
    assert not isinstance(old.get_layer("projection"), Projection)
    expected = {"projection_units": (6, 4), "recorded": False}
    assert backbone_settings(old) == expected
    assert backbone_settings(fusion_pretraining_model(backbone_of(old), ["eda_mean"], (3,))) == expected


def test_no_layer_name_parsing_in_the_tuner():
    source = (Path(__file__).resolve().parents[1] / "kfusion" / "evaluation" / "tuning.py").read_text()
    assert 'rsplit("_"' not in source and "re.fullmatch" not in source
