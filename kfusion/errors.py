"""One error family for kfusion.

Every problem a user can cause raises a subclass of :class:`KfusionError` whose message names
what was wrong and what was expected; data errors always name the file and the field.
"""

from __future__ import annotations

import os
import re


class KfusionError(Exception):
    """Base class of every error kfusion raises on purpose (numpy scalar reprs such as
    ``np.float64(1.5)`` in its message read as plain numbers)."""

    def __init__(self, *args):
        super().__init__(*(_unwrap_numpy(a) if isinstance(a, str) else a for a in args))


class ConfigError(KfusionError, ValueError):
    """An argument or configuration value is invalid."""


class DataError(KfusionError, ValueError):
    """A data file is missing or does not hold what was expected.

    ``file`` is the path, ``field`` the column / row / attribute at fault, ``expected`` what
    should have been there and ``found`` (optional) what was there instead.
    """

    def __init__(self, file: str | os.PathLike | None, field: str, expected: str,
                 found: object = None, participant: str | None = None):
        self.file = os.fspath(file) if file is not None else None
        self.field = field
        self.expected = expected
        self.found = found
        self.participant = participant
        where = self.file if self.file is not None else "<data>"
        message = f"{where}: {field}: expected {plain(expected)}"
        if found is not None:
            message += f", found {plain(found)}"
        super().__init__(_unwrap_numpy(message))

    def __reduce__(self):  # keep the fields when pickled (multiprocessing, caches)
        return (type(self), (self.file, self.field, self.expected, self.found, self.participant))


#: numpy's repr of a scalar (``np.float64(1644227874.0)``, ``np.int64(3)``) inside a text.
_NUMPY_REPR = re.compile(r"np\.(float|int|uint|bool|longdouble|longlong|ulonglong)\w*\(([^()]*)\)")


def _plain_float(value: float) -> str:
    """``repr`` of a float (1644227874.0) unless that takes more than 15 significant digits
    (round-off such as 0.30000000000000004): then 15, which keeps UNIX times in ms to the
    µs and drops only binary noise."""
    short = f"{value:.15g}"
    return repr(value) if float(short) == value else short


def plain(value: object) -> str:
    """``value`` as a person reads it: numpy scalars as plain numbers (never ``np.float64(...)``),
    lists, tuples and arrays of them as ``[a, b]``, strings as they are."""
    import numpy as np

    if isinstance(value, str):
        return value
    if isinstance(value, np.ndarray):
        value = value.tolist() if value.ndim else value.item()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(repr(v) if isinstance(v, str) else plain(v) for v in value) + "]"
    if isinstance(value, (np.floating, float)) and not isinstance(value, (np.float32, np.float16)):
        return _plain_float(float(value))
    if isinstance(value, np.generic):
        return str(value)  # np.float32 / np.int64 / np.bool_: shortest digits, no wrapper
    return str(value)


def _unwrap_numpy(text: str) -> str:
    """Replace numpy scalar reprs that reached a message (``np.float64(1.5)`` -> ``1.5``)."""
    def number(match: re.Match) -> str:
        inner = match.group(2).strip()
        if match.group(1) in ("float", "longdouble"):
            try:
                return _plain_float(float(inner))
            except ValueError:
                return inner
        return inner

    return _NUMPY_REPR.sub(number, text).replace("np.True_", "True").replace("np.False_", "False")


class BadParticipantsError(KfusionError):
    """Participants of a data set failed to load; ``problems`` maps id -> error.

    Raised by :func:`~kfusion.data.sources.load_recordings` and
    :func:`~kfusion.data.dataset.build_dataset` unless ``DataConfig.skip_bad``, which the
    ``--skip-bad`` flag of ``kfusion data inspect``, ``train``, ``evaluate``, ``tune`` and
    ``calibrate`` sets.
    """

    def __init__(self, problems: dict[str, Exception]):
        self.problems = dict(problems)
        lines = [f"  participant {pid}: {err}" for pid, err in self.problems.items()]
        super().__init__(
            f"{len(self.problems)} participant(s) could not be read:\n" + "\n".join(lines)
            + "\nFix their files, or use --skip-bad (kfusion data inspect, train, evaluate, tune, "
            "calibrate) to report them and go on with the others; in Python: DataConfig(skip_bad=True)."
        )

    def __reduce__(self):  # keep the problems when pickled (multiprocessing, caches)
        return (type(self), (self.problems,))
