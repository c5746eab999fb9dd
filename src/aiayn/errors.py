"""Errors that the command line turns into one clear message and exit code 2.

Library code raises these for bad *input* (a malformed corpus line, a missing or corrupt model directory,
an out-of-range argument). Anything else is a bug and surfaces as exit code 1.
"""

from __future__ import annotations

from pathlib import Path


class AiaynError(Exception):
    """Base class for user-facing errors (bad input, bad usage). The CLI prints ``str(e)`` and exits 2."""


class DataError(AiaynError):
    """A data file is malformed. The message names the file and, where there is one, the line.

    Args:
        path: the file that is wrong.
        message: what is wrong, in words a user can act on.
        line: 1-based line number, when the problem is on one line.
    """

    def __init__(self, path: str | Path, message: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class CheckpointError(AiaynError):
    """A model directory or checkpoint is missing, of the wrong kind, truncated or corrupt."""


class ConfigError(AiaynError):
    """A configuration value is out of range or inconsistent."""


class ModelDivergedError(AiaynError):
    """A model's outputs are NaN: its weights diverged in training. Nothing sensible can be decoded."""
