"""The project's one error base class, which the CLI turns into one line and exit code 2; and
the two ways a trial ends early, which the objective raises and the worker sorts."""

from __future__ import annotations


class TunerError(Exception):
    """A user-facing error: bad study file, bad data, bad storage URL, unknown study."""


class ConfigError(TunerError):
    """A study file breaks a rule."""


class DataError(TunerError):
    """The data named by a study file cannot be used."""


class StorageError(TunerError):
    """The storage URL is bad, unreachable, or lacks the study."""


class TrialFailed(Exception):
    """The trial cannot give a value (a non-finite loss, say); it is recorded as failed with this
    message, and the worker goes on to the next trial."""


class Interrupted(Exception):
    """The worker was asked to stop in the middle of a trial."""
