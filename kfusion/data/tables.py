"""Reading CSV tables with errors that name the file, the field and what was expected.

Readers never let a pandas traceback through: every failure becomes a
:class:`~kfusion.errors.DataError`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from kfusion.errors import DataError


def require_file(path: str | os.PathLike, what: str) -> Path:
    """Return ``path`` as a Path, or raise naming it and ``what`` it should hold."""
    path = Path(path)
    if not path.is_file():
        if path.is_dir():
            found = "a folder"
        elif path.is_symlink():
            found = "a broken or looping symlink"
        elif os.path.lexists(path):
            found = "not a regular file (a named pipe, socket or device)"
        else:
            found = "nothing"
        raise DataError(path, "file", f"an existing file ({what})", found)
    if path.stat().st_size == 0:
        raise DataError(path, "file", f"a non-empty file ({what})", "0 bytes")
    return path


def read_json_file(path: str | os.PathLike, what: str):
    """The JSON document in ``path``, or a DataError naming the file and ``what`` it should be."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file", what, "nothing")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(path, "contents", f"JSON ({what})", f"unreadable ({err})") from None


#: A number written with a decimal comma (``0,123456``, ``-1644228016,5``), quotes allowed.
_DECIMAL_COMMA = re.compile(r'"?\s*[-+]?\d+,\d+(?:[eE][-+]?\d+)?\s*"?')


def excel_export_kind(line: str, columns: int | None = None) -> str | None:
    """How ``line`` of a CSV file shows a European Excel export: ``"semicolon-separated"``,
    ``"decimal-comma"``, both (``"semicolon-separated, decimal-comma"``) or None.

    ``columns``: the number of values the line should hold, when known; a line that is one
    decimal-comma number where one value was expected (``0,123456``) is a decimal-comma export.
    Call it on a line that failed to parse: a ``;`` is then always the separator.
    """
    text = line.lstrip("\ufeff").strip()
    if ";" in text:
        cells = [c.strip() for c in text.split(";")]
        if any(_DECIMAL_COMMA.fullmatch(c) for c in cells):
            return "semicolon-separated, decimal-comma"
        return "semicolon-separated"
    if re.search(r'"\s*[-+]?\d+,\d+\s*"', text):  # a quoted "0,123" among ','-separated cells
        return "decimal-comma"
    if columns == 1 and _DECIMAL_COMMA.fullmatch(text):
        return "decimal-comma"
    return None


def check_excel_export(path, line: str, number: int, columns: int | None = None,
                       field: str | None = None) -> None:
    """Raise a :class:`DataError` naming ``path`` and line ``number`` (or ``field``) when ``line``
    looks like a European Excel export (``;`` between values and/or ``,`` as the decimal mark;
    see :func:`excel_export_kind`); return otherwise."""
    kind = excel_export_kind(line, columns)
    if kind is None:
        return
    text = line.lstrip("\ufeff").strip()
    shown = text if len(text) <= 60 else text[:57] + "..."
    raise DataError(path, field or f"line {number}", "values separated by ',' with '.' as the decimal mark",
                    f"{shown!r}, a {kind} export (as Excel writes CSV in European locales): save "
                    "it as CSV with ',' between values and '.' as the decimal mark")


def _first_excel_line(path: Path, limit: int = 1000) -> None:
    """:func:`check_excel_export` on the first ``limit`` lines of a CSV table (header = line 1)."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            if number > limit:
                return
            check_excel_export(path, line, number)


def read_table(path: str | os.PathLike, required: list[str], numeric: list[str] | None = None,
               what: str = "a CSV table", optional_numeric: list[str] | None = None) -> pd.DataFrame:
    """Read a CSV with a header row; check columns and that ``numeric`` ones hold finite numbers.

    Columns in ``optional_numeric`` may be empty (NaN) but must be numbers where present.
    Line numbers in errors are the file's own (header = line 1).
    """
    path = require_file(path, what)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        if not isinstance(err, UnicodeDecodeError):
            _first_excel_line(path)
        raise DataError(path, "contents", f"{what} in CSV format", f"unreadable ({err})") from None
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in required if c not in table.columns]
    if missing:
        _first_excel_line(path, limit=1)  # a header like start;end;stress
        raise DataError(path, "header", f"columns {', '.join(required)}",
                        f"columns {', '.join(map(str, table.columns))} (missing {', '.join(missing)})")
    if len(table) == 0:
        raise DataError(path, "rows", f"at least one data row in {what}", "a header only")
    for column in numeric or []:
        table[column] = to_numbers(table[column].to_numpy(), path, column, allow_empty=False)
    for column in optional_numeric or []:
        if column in table.columns:
            table[column] = to_numbers(table[column].to_numpy(), path, column, allow_empty=True)
    return table


def to_numbers(raw: np.ndarray, path, column: str, allow_empty: bool = False,
               first_line: int = 2) -> np.ndarray:
    """Convert strings to float64; raise at the first non-numeric (or empty/NaN) entry.

    ``first_line`` is the file line number of ``raw[0]`` (2 when there is one header line).
    Values like ``0E-10`` are fine.
    """
    text = pd.Series(raw, dtype=str).str.strip()
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, copy=True)
    empty = text.eq("").to_numpy() | text.str.lower().isin(["nan", "na", "null", "none"]).to_numpy()
    bad = ~np.isfinite(values) & ~(empty & allow_empty)
    if bad.any():
        i = int(np.argmax(bad))
        if ";" in text.iloc[i] or _DECIMAL_COMMA.fullmatch(text.iloc[i]):  # "0,5" quoted
            check_excel_export(path, text.iloc[i], i + first_line, columns=1,
                               field=f"column '{column}', line {i + first_line}")
        found = "an empty value" if text.iloc[i] == "" else repr(text.iloc[i])
        raise DataError(path, f"column '{column}', line {i + first_line}",
                        "a finite number", found)
    values[empty] = np.nan
    return values


def check_increasing(times: np.ndarray, path, field: str, first_line: int = 2) -> None:
    """Raise if ``times`` has a duplicate or decreasing entry (naming its line)."""
    times = np.asarray(times, dtype=np.float64)
    if times.size < 2:
        return
    step = np.diff(times)
    bad = step <= 0
    if bad.any():
        i = int(np.argmax(bad)) + 1
        kind = "duplicate" if step[i - 1] == 0 else "decreasing"
        raise DataError(path, f"{field}, line {i + first_line}",
                        "strictly increasing timestamps",
                        f"a {kind} timestamp ({float(times[i])!r} after {float(times[i - 1])!r})")


# --------------------------------------------------------------------------- times from users

#: Plausible UNIX times in seconds: 2000-01-01 .. 2100-01-01 (UTC).
UNIX_MIN, UNIX_MAX = 946_684_800.0, 4_102_444_800.0
#: The longest time one participant's data may span (7 days): a longer span means a time in
#: the wrong unit or a wrong date, and would size arrays by the span instead of the data.
MAX_SPAN_SECONDS = 7 * 86_400.0
#: Values below this (about 3 years) look like seconds from the start of a recording.
_RELATIVE_MAX = 1e8
_UNITS = {"s": ("seconds", 1.0), "ms": ("milliseconds", 1000.0)}
#: Units a time may have been written in by mistake: name -> seconds per unit.
_OTHER_UNITS = (("seconds", 1.0), ("milliseconds", 1e-3), ("microseconds", 1e-6),
                ("nanoseconds", 1e-9))


def unix_time_hint(value: float, unit: str = "s") -> str:
    """Why ``value`` (in ``unit``, ``"s"`` or ``"ms"``) may not be a plausible UNIX time:
    another unit (``" (looks like milliseconds: ...)"``), relative seconds, or ``""``."""
    name, per_second = _UNITS[unit]
    value = float(value)
    if not np.isfinite(value) or UNIX_MIN <= value / per_second < UNIX_MAX:
        return ""
    for other, seconds_per_unit in _OTHER_UNITS:
        seconds = value * seconds_per_unit
        if other != name and UNIX_MIN <= seconds < UNIX_MAX:
            return (f" (looks like {other}: this field takes UNIX {name}, "
                    f"i.e. {seconds * per_second!r})")
    if 0 <= value / per_second < _RELATIVE_MAX:
        return (f" (looks like {name} from the start of the recording: this field takes absolute "
                f"UNIX {name}, e.g. {1644228016 * per_second:.0f} for 2022-02-07 10:00:16 UTC)")
    return ""


def check_unix_times(values, path, field: str, unit: str = "s", first_line=None) -> np.ndarray:
    """Raise unless every value is a UNIX time between 2000 and 2100 in ``unit`` (``"s"`` or
    ``"ms"``), with a hint when it looks like another unit or relative seconds.

    The one plausibility check for every time a user writes (E4 start rows, tag times, audio
    starts, label start/end). ``first_line``: file line number of ``values[0]`` (or an array of
    the line number of each value); the error then names ``"<field>, line <n>"``. Returns the
    values as float64.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    name, per_second = _UNITS[unit]
    with np.errstate(invalid="ignore"):
        bad = ~((values >= UNIX_MIN * per_second) & (values < UNIX_MAX * per_second))
    if bad.any():
        i = int(np.argmax(bad))
        if first_line is None:
            where = field
        elif np.ndim(first_line):
            where = f"{field}, line {int(np.asarray(first_line)[i])}"
        else:
            where = f"{field}, line {i + int(first_line)}"
        value = float(values[i])
        raise DataError(path, where, f"a UNIX time in {name} between 2000 and 2100",
                        f"{value!r}{unix_time_hint(value, unit)}")
    return values


def check_unix_time(value: float, path, field: str, unit: str = "s") -> float:
    """:func:`check_unix_times` for one value; returns it as a float."""
    return float(check_unix_times([value], path, field, unit)[0])
