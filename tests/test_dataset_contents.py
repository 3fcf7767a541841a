"""build_dataset(contents="inputs"): what the pretraining stages read, nothing else (issue 15).

The inputs-only set must hold the very arrays a full build holds, say what it is, refuse to
hand out levels, labels, calibration or physiology it never computed, and never share a
cache entry with a full set asked for everything."""

from __future__ import annotations

import numpy as np
import pytest

from kfusion.config import DataConfig, FeatureConfig, WindowConfig
from kfusion.data.dataset import CONTENTS, NotBuilt, WindowedDataset, build_dataset, dataset_fingerprint
from kfusion.errors import ConfigError

WEARABLE_PAIR = ("eda", "temp")


def _config(modalities=None, **features) -> DataConfig:
    window = WindowConfig(missing="fill")
    if modalities is None:
        return DataConfig(window=window, features=FeatureConfig(**features))
    return DataConfig(modalities=modalities, window=window, features=FeatureConfig(**features))


def _same_inputs(full: WindowedDataset, part: WindowedDataset) -> None:
    assert full.modalities == part.modalities
    for m in full.modalities:
        assert full.inputs[m].dtype == part.inputs[m].dtype
        np.testing.assert_array_equal(full.inputs[m], part.inputs[m])  # bitwise (NaN never occurs here)
        np.testing.assert_array_equal(full.presence[m], part.presence[m])
    np.testing.assert_array_equal(full.participants, part.participants)
    np.testing.assert_array_equal(full.starts, part.starts)
    assert (full.lengths is None) == (part.lengths is None)


@pytest.mark.parametrize("norm", [{}, {"wearable_norm": "none", "speech_norm": "none"}],
                         ids=["normalised", "calibrated-inputs"])
def test_inputs_only_holds_the_full_builds_inputs_bit_for_bit(kemocon_synth, norm):
    """All five modalities; with per-window normalisation off the inputs are the calibrated
    windows, so the calibration they need is still computed."""
    config = _config(**norm)
    full = build_dataset(f"kemocon:{kemocon_synth}", config, cache_dir=False)
    part = build_dataset(f"kemocon:{kemocon_synth}", config, cache_dir=False, contents="inputs")
    assert len(full) == len(part) > 0
    _same_inputs(full, part)
    assert full.contents == "all" and not full.inputs_only
    assert part.contents == "inputs" and part.inputs_only and part.report["contents"] == "inputs"
    assert part.fingerprint != full.fingerprint


def test_an_inputs_only_set_refuses_what_it_never_computed(kemocon_synth):
    data = build_dataset(f"kemocon:{kemocon_synth}", _config(WEARABLE_PAIR), cache_dir=False, contents="inputs")
    # The hand-made-set fallback (raw levels of the inputs) must not stand in for the real levels.
    assert isinstance(data.levels, NotBuilt) and data.physio is not None
    reads = [lambda: data.levels["eda"], lambda: data.level_matrix(WEARABLE_PAIR), lambda: list(data.levels),
             lambda: "eda" in data.levels, lambda: data.physio.shape, lambda: np.asarray(data.physio),
             lambda: data.physio[0], lambda: len(data.physio_names), lambda: data.labels["arousal"],
             lambda: data.targets, lambda: data.labelled("arousal"), lambda: data.calibration.get("1"),
             lambda: data.classes.items(), lambda: bool(data.levels)]
    for read in reads:
        with pytest.raises(ConfigError, match=r"contents='inputs'.*contents='all'"):
            read()
    picked = data.subset(data.participant_ids()[:1])
    assert picked.inputs_only and 0 < len(picked) < len(data)
    with pytest.raises(ConfigError, match="contents='inputs'"):
        picked.level_matrix(WEARABLE_PAIR)
    repr(data)  # printable


def test_contents_is_checked(kemocon_synth):
    for bad in ("labels", None, ["inputs"]):
        with pytest.raises(ConfigError, match=r"build_dataset: contents.*all, inputs"):
            build_dataset(f"kemocon:{kemocon_synth}", _config(WEARABLE_PAIR), cache_dir=False, contents=bad)
    with pytest.raises(ConfigError, match=r"WindowedDataset: contents.*all, inputs"):
        WindowedDataset({}, {}, {}, {}, np.zeros(0, str), np.zeros(0), _config(WEARABLE_PAIR), contents="some")
    assert CONTENTS == ("all", "inputs")


def test_inputs_only_and_full_sets_never_share_a_cache_entry(kemocon_synth, tmp_path):
    source, config = f"kemocon:{kemocon_synth}", _config(WEARABLE_PAIR)
    cache = tmp_path / "cache"
    part = build_dataset(source, config, cache_dir=cache, contents="inputs")
    assert part.report["cache"]["hit"] is False
    full = build_dataset(source, config, cache_dir=cache)       # asks for everything: not the inputs-only entry
    assert full.report["cache"]["hit"] is False and not full.inputs_only
    assert full.level_matrix(WEARABLE_PAIR).shape == (len(full), 4)
    again = build_dataset(source, config, cache_dir=cache, contents="inputs")
    assert again.report["cache"] == {"path": part.report["cache"]["path"], "hit": True} and again.inputs_only
    assert again.fingerprint == part.fingerprint
    _same_inputs(full, again)
    assert dataset_fingerprint(source, config, contents="inputs") == part.fingerprint
    assert dataset_fingerprint(source, config) == full.fingerprint


def test_a_cached_full_set_serves_an_inputs_only_request(kemocon_synth, tmp_path):
    source, config = f"kemocon:{kemocon_synth}", _config(WEARABLE_PAIR)
    cache = tmp_path / "cache"
    full = build_dataset(source, config, cache_dir=cache)
    served = build_dataset(source, config, cache_dir=cache, contents="inputs")
    assert served.report["cache"] == {"path": full.report["cache"]["path"], "hit": True}
    assert served.inputs_only and served.fingerprint == dataset_fingerprint(source, config, contents="inputs")
    _same_inputs(full, served)
    with pytest.raises(ConfigError, match="contents='inputs'"):
        served.levels["eda"]
    # ... and the full set, read again, is still whole.
    assert not build_dataset(source, config, cache_dir=cache).inputs_only


def test_an_inputs_only_set_saves_and_loads_as_one(kemocon_synth, tmp_path):
    data = build_dataset(f"kemocon:{kemocon_synth}", _config(WEARABLE_PAIR), cache_dir=False, contents="inputs")
    loaded = WindowedDataset.load(data.save(tmp_path / "set"))
    assert loaded.inputs_only and loaded.fingerprint == data.fingerprint
    _same_inputs(data, loaded)
    with pytest.raises(ConfigError, match="contents='inputs'"):
        _ = loaded.physio.shape
