"""Fusion backbone: shapes per mechanism and modality subset, attention tokens, weighted
scalars, missing-modality invariance, argument validation."""

from __future__ import annotations

import numpy as np
import pytest

import keras

from kfusion.modalities import MODALITIES, WEARABLES  # noqa: E402
from kfusion.errors import ConfigError  # noqa: E402
from model_helpers import tiny_encoders  # noqa: E402
from kfusion.models import (  # noqa: E402
    MECHANISMS,
    ModalityWeights,
    backbone_modalities,
    build_fusion_model,
    fusion_backbone,
    fusion_weights,
    sigrep_encoder,
)

SUBSETS = {
    "speech_only": ("speech",),
    "one_wearable": ("eda",),
    "four_wearables": WEARABLES,
    "all_five": MODALITIES,
}




def random_inputs(model, batch=3, seed=0, presence=None):
    rng = np.random.default_rng(seed)
    data = {name: rng.normal(size=(batch, *tensor.shape[1:])).astype("float32")
            for name, tensor in model.input.items() if name != "presence"}
    if "presence" in model.input:
        n = model.input["presence"].shape[-1]
        data["presence"] = np.ones((batch, n), "float32") if presence is None else presence
    return data


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("subset", list(SUBSETS))
def test_output_shape_for_every_mechanism_and_subset(mechanism, subset):
    modalities = SUBSETS[subset]
    model = build_fusion_model(modalities, mechanism, projection_units=(16, 8))
    assert backbone_modalities(model) == modalities
    assert set(model.input) == set(modalities) | {"presence"}
    assert model.input["presence"].shape == (None, len(modalities))
    if subset == "all_five":
        assert model(random_inputs(model, batch=2)).shape == (2, 8)
    assert model.get_layer("fusion").output.shape == (None, 40 * len(modalities))
    for m in modalities:
        assert model.get_layer(f"{m}_encoder").output.shape == (None, 40)
    assert model.get_layer("projection_1").units == 16
    assert model.get_layer("projection_2").units == 8
    assert model.output_shape == (None, 8)


def test_attention_sees_several_tokens_per_modality():
    model = fusion_backbone(tiny_encoders(), "attention", projection_units=(8, 4), attention_tokens=4)
    for m in MODALITIES:
        layer = model.get_layer(f"attention_{m}")
        assert isinstance(layer, keras.layers.MultiHeadAttention)
        query, value = layer.input
        assert tuple(query.shape) == (None, 4, 2)  # 8-d embedding -> 4 tokens of 2
        assert query.shape[1] > 1 and value.shape[1] > 1
    default = build_fusion_model(("bvp",), "attention")
    assert tuple(default.get_layer("attention_bvp").input[0].shape) == (None, 5, 8)


def test_attention_token_count_must_divide_the_embedding():
    with pytest.raises(ConfigError, match="do not split into 3 equal tokens"):
        fusion_backbone(tiny_encoders(("bvp",)), "attention", attention_tokens=3)
    with pytest.raises(ConfigError, match="attention_tokens"):
        fusion_backbone(tiny_encoders(("bvp",)), "attention", attention_tokens=1)


def test_weighted_scalars_start_at_one_and_change_with_training():
    keras.utils.set_random_seed(0)
    backbone = fusion_backbone(tiny_encoders(("speech", "bvp")), "weighted", projection_units=(8, 4))
    assert isinstance(backbone.get_layer("fusion"), ModalityWeights)
    assert fusion_weights(backbone) == {"speech": 1.0, "bvp": 1.0}
    head = keras.layers.Dense(1)(backbone.output)
    model = keras.Model(backbone.input, head)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse", run_eagerly=True)
    x = random_inputs(backbone, batch=16, seed=1)
    y = np.random.default_rng(2).normal(size=(16, 1)).astype("float32")
    for _ in range(3):
        model.train_on_batch(x, y)
    learned = fusion_weights(backbone)
    assert set(learned) == {"speech", "bvp"}
    assert all(abs(v - 1.0) > 1e-4 for v in learned.values())
    assert learned == backbone.get_layer("fusion").weights_by_modality()


def test_fusion_weights_refuses_other_mechanisms():
    with pytest.raises(ConfigError, match="weighted"):
        fusion_weights(fusion_backbone(tiny_encoders(("eda",)), "unweighted"))


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_absent_modality_inputs_do_not_reach_the_output(mechanism):
    keras.utils.set_random_seed(4)
    model = fusion_backbone(tiny_encoders(), mechanism, projection_units=(8, 4), attention_tokens=4)
    # Give the missing vectors non-trivial values, as after training.
    gate = model.get_layer("presence_gate")
    for var in gate.missing.values():
        var.assign(np.random.default_rng(5).normal(size=var.shape).astype("float32"))
    order = backbone_modalities(model)
    rows, batch = [], 3
    for index, absent in enumerate(order):
        presence = np.ones((batch, len(order)), "float32")
        presence[:, index] = 0.0
        first = random_inputs(model, batch=batch, seed=10 + index, presence=presence)
        second = dict(first)
        second[absent] = np.random.default_rng(11).normal(size=first[absent].shape).astype("float32") * 50
        third = dict(first)
        third[absent] = np.full(first[absent].shape, np.nan, "float32")
        # With the modality present, the same change must reach the output.
        present = dict(first, presence=np.ones_like(presence))
        changed = dict(second, presence=np.ones_like(presence))
        rows += [first, second, third, present, changed]
    # One call per variant, each holding every modality's case at the same batch positions,
    # so equal inputs to the dense layers give bitwise equal outputs.
    variants = []
    for variant in range(5):
        cases = rows[variant::5]
        stacked = {k: np.concatenate([c[k] for c in cases]) for k in cases[0]}
        variants.append(np.asarray(model(stacked)).reshape(len(order), batch, -1))
    first, second, third, present, changed = variants
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, third)
    assert np.isfinite(first).all()
    for index in range(len(order)):
        assert not np.allclose(present[index], changed[index])


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_all_present_matches_the_model_without_presence(mechanism):
    encoders = tiny_encoders(("speech", "acc", "temp"))
    gated = fusion_backbone(encoders, mechanism, projection_units=(8, 4), use_presence=True,
                           attention_tokens=4)
    plain = fusion_backbone(encoders, mechanism, projection_units=(8, 4), use_presence=False,
                           attention_tokens=4)
    assert "presence" not in plain.input
    copied = 0
    for layer in plain.layers:
        if layer.weights and not layer.name.endswith("_encoder"):
            layer.set_weights(gated.get_layer(layer.name).get_weights())
            copied += 1
    assert copied >= 2
    x = random_inputs(gated, seed=6)
    x_plain = {k: v for k, v in x.items() if k != "presence"}
    np.testing.assert_allclose(np.asarray(gated(x)), np.asarray(plain(x_plain)), rtol=1e-6, atol=1e-6)


def test_encoders_with_other_names_are_wrapped_and_share_weights():
    encoder = sigrep_encoder(input_shape=(16, 1), blocks=2, embedding_dim=8, name="pretrained")
    model = fusion_backbone({"TEMP": encoder}, "unweighted", projection_units=(4, 2))
    wrapper = model.get_layer("temp_encoder")
    assert wrapper is not encoder and wrapper.get_layer("pretrained") is encoder
    assert backbone_modalities(model) == ("temp",)


def test_modalities_are_in_canonical_order_whatever_the_dict_order():
    encoders = tiny_encoders(("temp", "speech", "acc"))
    model = fusion_backbone(dict(reversed(list(encoders.items()))), "weighted")
    assert backbone_modalities(model) == ("speech", "acc", "temp")
    assert model.get_layer("fusion").modalities == ["speech", "acc", "temp"]
    assert model.get_layer("presence_gate").modalities == ["speech", "acc", "temp"]


@pytest.mark.parametrize("kwargs, words", [
    ({"encoders": {}}, "non-empty dict"),
    ({"encoders": "bvp"}, "non-empty dict"),
    ({"encoders": {"ecg": None}}, "unknown modality"),
    ({"mechanism": "gated"}, "mechanism: expected one of unweighted, weighted, attention"),
    ({"projection_units": ()}, "projection_units"),
    ({"projection_units": (8, -1)}, "projection_units[1]"),
    ({"use_presence": 1}, "use_presence"),
    ({"encoders": {"bvp": keras.layers.Dense(3)}}, "expected a keras.Model"),
])
def test_fusion_backbone_rejects_bad_arguments(kwargs, words):
    arguments = {"encoders": None, "mechanism": "unweighted"}
    arguments.update(kwargs)
    if arguments["encoders"] is None:
        arguments["encoders"] = tiny_encoders(("bvp",))
    with pytest.raises(ConfigError) as err:
        fusion_backbone(**arguments)
    assert words in str(err.value)


def test_encoder_with_wrong_output_rank_is_refused():
    inputs = keras.Input((16, 1))
    sequence_out = keras.Model(inputs, keras.layers.Conv1D(2, 3)(inputs))
    with pytest.raises(ConfigError, match=r"\[batch, features\]"):
        fusion_backbone({"eda": sequence_out})


def test_build_fusion_model_validates_its_own_arguments():
    with pytest.raises(ConfigError, match="window_seconds"):
        build_fusion_model(("eda",), window_seconds=0)
    with pytest.raises(ConfigError, match="embedding_dim"):
        build_fusion_model(("eda",), embedding_dim=0)
    with pytest.raises(ConfigError, match="at least 16 time steps"):
        build_fusion_model(("eda",), window_seconds=2.0)  # EDA 8 samples < 2**4


def test_weights_are_reproducible_from_the_keras_seed():
    def build():
        keras.utils.set_random_seed(7)
        return fusion_backbone(tiny_encoders(("speech", "bvp")), "attention", attention_tokens=4)

    first, second = build(), build()
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_presence_array_stacks_dataset_flags_in_model_order():
    from kfusion.models import presence_array

    flags = {"bvp": np.array([True, False]), "speech": np.array([False, True]), "eda": np.array([1, 1])}
    out = presence_array(flags, ("speech", "bvp"))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[0, 1], [1, 0]])
    with pytest.raises(ConfigError, match="missing temp"):
        presence_array(flags, ("speech", "temp"))
    with pytest.raises(ConfigError, match="one value per window"):
        presence_array({"bvp": np.ones(2), "eda": np.ones(3)}, ("bvp", "eda"))
