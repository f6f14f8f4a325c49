"""What a patch does when the library it changes is not as it assumes: refuse with one line
(`PatchError`), or run without it, warn once and say so on every trial (`fall_back`,
`patches_off`). Each patch module's docstring says which it does and why."""

from __future__ import annotations

import logging
import re
import threading

from tuner.errors import TunerError

logger = logging.getLogger("tuner.patches")

# Patch -> why it is off in this process; read by the objective for every trial.
_OFF: dict[str, str] = {}
_LOCK = threading.Lock()


class PatchError(TunerError):
    """A library breaks an assumption of a patch that refuses to run without it."""


def fall_back(patch: str, why: str) -> None:
    """Record that `patch` runs without its change in this process from now on, and warn the
    first time only."""
    with _LOCK:
        if patch in _OFF:
            return
        _OFF[patch] = why
    logger.warning(
        "tuner.patches.%s is off in this process: %s; trials record it (user attribute "
        "patches_off)",
        patch,
        why,
    )


def patches_off() -> list[str]:
    """The patches this process runs without, by name (`["dropout"]`), sorted."""
    with _LOCK:
        return sorted(_OFF)


def version_tuple(version: str) -> tuple[int, ...]:
    """The leading numbers of a version string: "0.10.2rc1" -> (0, 10, 2)."""
    match = re.match(r"\d+(?:\.\d+)*", version)
    return tuple(int(part) for part in match.group().split(".")) if match else ()


def within(version: str, low: tuple[int, ...], below: tuple[int, ...]) -> bool:
    """Whether `version` is at least `low` and below `below`."""
    number = version_tuple(version)
    return bool(number) and low <= number < below
