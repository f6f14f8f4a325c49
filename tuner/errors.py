"""The project's one error base class: the CLI turns it into one line and exit code 2."""

from __future__ import annotations


class TunerError(Exception):
    """A user-facing error: bad study file, bad data, bad storage URL, unknown study."""


class ConfigError(TunerError):
    """A study file breaks a rule."""


class DataError(TunerError):
    """The data named by a study file cannot be used."""


class StorageError(TunerError):
    """The storage URL is bad, unreachable, or lacks the study."""
