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


def check_zip(path: str | Path) -> None:
    """Refuse a ``torch.save`` zip whose members fail their CRC-32 (torch.load never checks them).

    A file that is not a zip (torch's legacy format, or one cut short) is left to torch.load to judge.
    """
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
        raise CorruptFile(path, f"{path} is a damaged zip archive ({type(e).__name__}: {e})") from None
    if damaged is not None:
        raise CorruptFile(path, f"{path} is damaged: its member {damaged} fails its CRC-32 check")
