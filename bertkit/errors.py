"""bertkit's own error types.

Every problem a user can cause (bad data, a bad config value, a broken model folder) is raised as a
:class:`BertkitError` subclass whose message is one line naming the problem and the fix. The CLI prints
these messages without a traceback.
"""

from __future__ import annotations


class BertkitError(Exception):
    """Base class of every error bertkit raises on purpose."""


class ConfigError(BertkitError, ValueError):
    """A configuration key or value is invalid (unknown key, bad value, inconsistent sizes)."""


class DataError(BertkitError, ValueError):
    """An input data file or DataFrame cannot be used (missing column, empty text, unseen label...)."""


class ModelFolderError(BertkitError, OSError):
    """A model folder is missing, incomplete, truncated or not a bertkit model."""


class RegistryError(BertkitError, KeyError):
    """A registry name is unknown or registered twice."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it a plain line
        return str(self.args[0]) if self.args else ""
