"""One error family for kfusion.

Every problem a user can cause raises a subclass of :class:`KfusionError` whose message names
what was wrong and what was expected; data errors always name the file and the field.
"""

from __future__ import annotations

import os


class KfusionError(Exception):
    """Base class of every error kfusion raises on purpose."""


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
        message = f"{where}: {field}: expected {expected}"
        if found is not None:
            message += f", found {found}"
        super().__init__(message)

    def __reduce__(self):  # keep the fields when pickled (multiprocessing, caches)
        return (type(self), (self.file, self.field, self.expected, self.found, self.participant))


class BadParticipantsError(KfusionError):
    """Several participants of a data set failed to load; ``problems`` maps id -> error."""

    def __init__(self, problems: dict[str, Exception]):
        self.problems = dict(problems)
        lines = [f"  participant {pid}: {err}" for pid, err in self.problems.items()]
        super().__init__(
            f"{len(self.problems)} participant(s) could not be read:\n" + "\n".join(lines)
            + "\nFix the files, or pass skip_bad=True (CLI: --skip-bad) to report them and go on."
        )
