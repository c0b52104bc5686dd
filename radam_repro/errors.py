"""Expected user errors: bad config values, missing data, a refused resume.

They subclass Hydra's ``CompactHydraException``, so the CLI prints the message alone, without a Python
traceback (``HYDRA_FULL_ERROR=1`` still shows it), and exits non-zero.
"""

from __future__ import annotations

from hydra.errors import CompactHydraException


class UserError(CompactHydraException):
    """Something the user can fix; the message names the problem and the fix."""


class ConfigError(UserError, ValueError):
    """A config value that cannot work."""


class MissingData(UserError, FileNotFoundError):
    """A data set is absent or incomplete where the task reads it."""
