"""The one error a damaged or foreign input file raises: :class:`CorruptFile`, whose message names the file."""

from __future__ import annotations

from pathlib import Path


class CorruptFile(ValueError):
    """``path`` cannot be read as what it should be; the message names the file, the problem and the fix."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = Path(path)
        super().__init__(message if str(path) in message else f"{path}: {message}")
