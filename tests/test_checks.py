"""kfusion.checks: one set of rules and one message shape for every argument check."""

import math

import numpy as np
import pytest

from kfusion import checks
from kfusion.errors import ConfigError


def test_whole_numbers():
    assert checks.whole("n", 3) == 3 and type(checks.whole("n", np.int64(3))) is int
    assert checks.whole("n", 2.0) == 2  # JSON may give whole numbers as floats
    assert checks.whole("n", 0, 0) == 0
    for bad in (True, 1.5, "3", None, 0, math.nan, math.inf):
        with pytest.raises(ConfigError, match=r"^n: expected a whole number >= 1, found "):
            checks.whole("n", bad)
    with pytest.raises(ConfigError, match=r"n: expected a whole number in \[2, 5\], found 6"):
        checks.whole("n", 6, 2, 5)
    assert checks.optional_whole("seed", None) is None
    with pytest.raises(ConfigError, match="seed: expected a whole number >= 0 or None, found -1"):
        checks.optional_whole("seed", -1)


def test_real_numbers():
    assert checks.positive("lr", 1e-3) == 1e-3 and checks.non_negative("l1", 0) == 0.0
    for bad in (0, -1, True, "x", math.nan, math.inf, None):
        with pytest.raises(ConfigError, match="^lr: expected a positive number, found "):
            checks.positive("lr", bad)
    with pytest.raises(ConfigError, match="l1: expected a non-negative number, found -0.5"):
        checks.non_negative("l1", -0.5)
    assert checks.fraction("p", 1) == 1.0
    with pytest.raises(ConfigError, match=r"p: expected a fraction in \(0, 1\], found 0"):
        checks.fraction("p", 0, low_open=True)
    with pytest.raises(ConfigError, match=r"overlap: expected a number in \[0, 4\), found 4"):
        checks.number("overlap", 4, 0, 4, high_open=True)
    assert checks.number("start", -3.5, what="finite UNIX seconds") == -3.5
    with pytest.raises(ConfigError, match="start: expected finite UNIX seconds, found nan"):
        checks.number("start", math.nan, what="finite UNIX seconds")


def test_pairs_units_choices_flags_names():
    assert checks.pair("r", [0.8, 1.2], 0, math.inf) == (0.8, 1.2)
    for bad in ((1.2, 0.8), (0, 1), 3, ("a", "b")):
        with pytest.raises(ConfigError, match="^r: expected a pair"):
            checks.pair("r", bad, 0, 1, low_open=True)
    assert checks.units("u", [64, np.int64(32)]) == (64, 32) and checks.units("u", 16) == (16,)
    assert checks.units("u", (), min_length=0) == ()
    with pytest.raises(ConfigError, match=r"u\[1\]: expected a whole number >= 1, found 0"):
        checks.units("u", (4, 0))
    with pytest.raises(ConfigError, match=r"u: expected at least 1 layer size\(s\), found \(\)"):
        checks.units("u", ())
    with pytest.raises(ConfigError, match="u: expected a list of whole numbers >= 1"):
        checks.units("u", "64")
    assert checks.choice("m", "fill", ("drop", "fill")) == "fill"
    with pytest.raises(ConfigError, match="m: expected one of drop, fill, found 'keep'"):
        checks.choice("m", "keep", ("drop", "fill"))
    assert checks.flag("f", False) is False
    with pytest.raises(ConfigError, match="f: expected True or False, found 1"):
        checks.flag("f", 1)
    assert checks.layer_name("name", "fusion_1") == "fusion_1"
    with pytest.raises(ConfigError, match="name: expected a name of letters"):
        checks.layer_name("name", "1x")
    assert checks.time_channels("shape", [128, 3]) == (128, 3)
    with pytest.raises(ConfigError, match=r"shape\[1\] \(channels\): expected a whole number >= 1"):
        checks.time_channels("shape", (128, 0))
