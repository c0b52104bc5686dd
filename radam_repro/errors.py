"""The errors a user can act on.

:class:`UserError` (bad config values, missing data, a refused resume) subclasses Hydra's ``CompactHydraException``,
so the CLI prints the message alone, without a Python traceback (``HYDRA_FULL_ERROR=1`` still shows it), and exits
non-zero. :class:`CorruptFile` (a UserError too) is the one error a damaged or foreign input file raises; its message
names the file.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from hydra.errors import CompactHydraException


class UserError(CompactHydraException):
    """Something the user can fix; the message names the problem and the fix."""


class ConfigError(UserError, ValueError):
    """A config value that cannot work."""


class MissingData(UserError, FileNotFoundError):
    """A data set is absent or incomplete where the task reads it."""


class CorruptFile(UserError, ValueError):
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
