"""The one exception type for bad input data."""

from __future__ import annotations

from pathlib import Path


class DataError(RuntimeError):
    """A dataset, split list or prediction folder is missing, incomplete or corrupt.

    The message always names the offending file or folder and the problem, so a wrong number
    can never come out of bad input silently.

    Attributes:
        path: the offending file or folder, when there is a single one.
    """

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        super().__init__(message)
        self.path: Path | None = Path(path) if path is not None else None
