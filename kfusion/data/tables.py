"""Reading CSV tables with errors that name the file, the field and what was expected.

Readers never let a pandas traceback through: every failure becomes a
:class:`~kfusion.errors.DataError`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from kfusion.errors import DataError


def require_file(path: str | os.PathLike, what: str) -> Path:
    """Return ``path`` as a Path, or raise naming it and ``what`` it should hold."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file", f"an existing file ({what})",
                        "a folder" if path.is_dir() else "nothing")
    if path.stat().st_size == 0:
        raise DataError(path, "file", f"a non-empty file ({what})", "0 bytes")
    return path


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
        raise DataError(path, "contents", f"{what} in CSV format", f"unreadable ({err})") from None
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in required if c not in table.columns]
    if missing:
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
                        f"a {kind} timestamp ({times[i]!r} after {times[i - 1]!r})")
