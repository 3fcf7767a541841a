"""One vocabulary for checking arguments and configuration values.

Every function takes ``name`` (what the value is, as the user wrote it: ``"window.seconds"``,
``"projection_head.units"``), checks ``value`` and returns it normalised (a plain ``int``,
``float`` or ``tuple``), or raises :class:`~kfusion.errors.ConfigError` with one message shape::

    name: expected <what is allowed>, found <what was given>

The rules are the same everywhere: ``True``/``False`` are never numbers, whole numbers may be
numpy integers or floats without a fraction (``2.0``, as JSON may give them), real numbers are
finite unless a bound says otherwise, NaN is always refused. Data files are checked where they
are read and fail with :class:`~kfusion.errors.DataError`, which names the file and the field.
"""

from __future__ import annotations

import math
import numbers
import re

from kfusion.errors import ConfigError

__all__ = [
    "whole", "optional_whole", "number", "positive", "non_negative", "fraction", "pair",
    "units", "choice", "flag", "layer_name", "time_channels",
]

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _fail(name: str, expected: str, value) -> ConfigError:
    return ConfigError(f"{name}: expected {expected}, found {value!r}")


def _is_whole(value) -> bool:
    if isinstance(value, bool) or (type(value).__name__ == "bool_"):
        return False
    return isinstance(value, numbers.Integral) or (
        isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer())


def whole(name: str, value, low: int = 1, high: int | None = None) -> int:
    """``value`` as an ``int`` with ``low <= value`` (and ``value <= high`` when given)."""
    bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
    if not _is_whole(value) or int(value) < low or (high is not None and int(value) > high):
        raise _fail(name, f"a whole number {bounds}", value)
    return int(value)


def optional_whole(name: str, value, low: int = 0) -> int | None:
    """``None``, or a whole number ``>= low`` (a seed that may be left unset)."""
    if value is None:
        return None
    if not _is_whole(value) or int(value) < low:
        raise _fail(name, f"a whole number >= {low} or None", value)
    return int(value)


def _real(value) -> float | None:
    if isinstance(value, bool) or type(value).__name__ == "bool_" or isinstance(value, (str, bytes)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def number(name: str, value, low: float = -math.inf, high: float = math.inf, *,
           low_open: bool = False, high_open: bool = False, what: str = "a number") -> float:
    """``value`` as a ``float`` in the interval from ``low`` to ``high`` (closed unless
    ``low_open``/``high_open``); infinite bounds are always open, so the result is finite.
    ``what`` names the kind of number in the message (``"a number of seconds"``)."""
    x = _real(value)
    low_ok = x is not None and (x > low if (low_open or low == -math.inf) else x >= low)
    high_ok = x is not None and (x < high if (high_open or high == math.inf) else x <= high)
    if not (low_ok and high_ok):
        raise _fail(name, f"{what} {_interval(low, high, low_open, high_open)}".rstrip(), value)
    return x


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    if low == -math.inf and high == math.inf:
        return ""
    if high == math.inf:
        return f"{'>' if low_open else '>='} {low:g}"
    if low == -math.inf:
        return f"{'<' if high_open else '<='} {high:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def positive(name: str, value, what: str = "a positive number") -> float:
    """A finite number ``> 0``."""
    x = _real(value)
    if x is None or not 0 < x < math.inf:
        raise _fail(name, what, value)
    return x


def non_negative(name: str, value, what: str = "a non-negative number") -> float:
    """A finite number ``>= 0``."""
    x = _real(value)
    if x is None or not 0 <= x < math.inf:
        raise _fail(name, what, value)
    return x


def fraction(name: str, value, low: float = 0.0, high: float = 1.0, *,
             low_open: bool = False, high_open: bool = False) -> float:
    """A number between ``low`` and ``high`` (``[0, 1]`` by default; ``low_open=True`` for
    ``(0, 1]``)."""
    return number(name, value, low, high, low_open=low_open, high_open=high_open, what="a fraction")


def pair(name: str, value, low: float, high: float, *, low_open: bool = False) -> tuple[float, float]:
    """A range ``(a, b)`` with ``low <= a <= b <= high`` (``low < a`` when ``low_open``)."""
    try:
        a, b = (_real(v) for v in value)
    except (TypeError, ValueError):
        raise _fail(name, "a pair (low, high)", value) from None
    if a is None or b is None or not (low < a if low_open else low <= a) or not a <= b <= high:
        raise _fail(name, f"a pair (low, high) with {low:g} {'<' if low_open else '<='} low <= high "
                          f"<= {high:g}", value)
    return (a, b)


def units(name: str, value, min_length: int = 1, low: int = 1) -> tuple[int, ...]:
    """Layer sizes: a list of whole numbers ``>= low`` with at least ``min_length`` entries, as a
    tuple (a single whole number counts as a list of one)."""
    if _is_whole(value):
        value = (value,)
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
        raise _fail(name, f"a list of whole numbers >= {low}", value)
    items = tuple(value)
    for i, u in enumerate(items):
        whole(f"{name}[{i}]", u, low)
    if len(items) < min_length:
        raise _fail(name, f"at least {min_length} layer size(s)", value)
    return tuple(int(u) for u in items)


def choice(name: str, value, options):
    """``value`` if it is one of ``options``."""
    options = tuple(options)
    if isinstance(value, (list, dict, set)) or value not in options:
        raise _fail(name, "one of " + ", ".join(str(o) for o in options), value)
    return value


def flag(name: str, value) -> bool:
    """``True`` or ``False`` (no 0/1, no strings)."""
    if not isinstance(value, bool):
        raise _fail(name, "True or False", value)
    return value


def layer_name(name: str, value) -> str:
    """A name usable for a Keras layer and an output key: a letter, then letters, digits, ``_``."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise _fail(name, "a name of letters, digits and '_' starting with a letter", value)
    return value


def time_channels(name: str, value) -> tuple[int, int]:
    """A ``(time, channels)`` input shape with known positive sizes."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise _fail(name, "(time, channels)", value)
    shape = tuple(value)
    if len(shape) != 2:
        raise _fail(name, "(time, channels)", value)
    return (whole(f"{name}[0] (time steps)", shape[0]), whole(f"{name}[1] (channels)", shape[1]))
