"""The one error a damaged or foreign input file raises: :class:`CorruptFile`, whose message names the file."""

from __future__ import annotations

import zipfile
from pathlib import Path


class CorruptFile(ValueError):
    """``path`` cannot be read as what it should be; the message names the file, the problem and the fix."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = Path(path)
        super().__init__(message if str(path) in message else f"{path}: {message}")


def kind_of(value: object) -> str:
    """What a parsed file holds instead of the object it should: ``null``, ``a list``, ``a str``..."""
    return "null" if value is None else f"a {type(value).__name__}"


def zip_damage(path: str | Path) -> str | None:
    """What is wrong with a ``torch.save`` zip: a member failing its CRC-32 (torch.load never checks them), or a
    broken archive; None when it is intact, or not a zip (torch's legacy format: torch.load judges it)."""
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
        return f"a broken zip archive ({type(e).__name__}: {e})"
    return None if damaged is None else f"checksum mismatch in {damaged}"
