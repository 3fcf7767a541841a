"""Argument checks shared by the model builders; every failure is a ConfigError."""

from __future__ import annotations

import numbers
import re

from kfusion.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def positive_int(where: str, value, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum`` (bools and floats with a fraction are refused)."""
    integral = isinstance(value, numbers.Integral) or (
        isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not integral:
        raise ConfigError(f"{where}: expected an integer >= {minimum}, found {value!r}")
    if int(value) < minimum:
        raise ConfigError(f"{where}: expected an integer >= {minimum}, found {value!r}")
    return int(value)


def int_tuple(where: str, values, minimum: int = 1, min_length: int = 1) -> tuple[int, ...]:
    """A non-empty sequence of ints >= ``minimum`` as a tuple."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ConfigError(f"{where}: expected a sequence of integers, found {values!r}")
    out = tuple(positive_int(f"{where}[{i}]", v, minimum) for i, v in enumerate(values))
    if len(out) < min_length:
        raise ConfigError(f"{where}: expected at least {min_length} value(s), found {len(out)}")
    return out


def non_negative_float(where: str, value) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a number >= 0, found {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected a number >= 0, found {value!r}") from None
    if not number >= 0 or number == float("inf"):
        raise ConfigError(f"{where}: expected a finite number >= 0, found {value!r}")
    return number


def time_channels(where: str, shape) -> tuple[int, int]:
    """A ``(time, channels)`` input shape with known positive sizes."""
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
        raise ConfigError(f"{where}: expected (time, channels), found {shape!r}")
    shape = tuple(shape)
    if len(shape) != 2:
        raise ConfigError(f"{where}: expected (time, channels), found {shape!r}")
    return (positive_int(f"{where}[0] (time steps)", shape[0]),
            positive_int(f"{where}[1] (channels)", shape[1]))


def layer_name(where: str, name) -> str:
    """A name usable for a layer and an output key: a letter, then letters, digits, ``_``."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{where}: expected a name of letters, digits and '_' starting with a "
                          f"letter, found {name!r}")
    return name
