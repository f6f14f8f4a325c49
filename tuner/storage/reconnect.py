"""Riding out a lost database connection: a call made again, with backoff, while the database
server cannot be reached (restarted, failed over, network down), so that workers carry on once
it is back; one warning when calls start failing and one when they work again, however many
threads notice, both with the URL's password hidden.

Which storage calls may be made again, and how a call whose COMMIT landed but whose answer was
lost is found rather than repeated, is `tuner.storage.optuna_internals`' business.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TypeVar

from tuner.errors import StorageError
from tuner.storage.errors import is_transient, reason
from tuner.storage.urls import mask, scrub

logger = logging.getLogger("tuner.storage")

FIRST_DELAY_S = 0.25
MAX_DELAY_S = 5.0

T = TypeVar("T")

# The backoff's own generator, seeded by the operating system: every trial reseeds Python's
# `random` (keras.utils.set_random_seed), and workers training the same seed would otherwise
# wait alike and come back to a restarted server in step.
_JITTER = random.Random(os.urandom(16))


class Reconnect:
    """Makes calls again while the database is unreachable, for up to `timeout` seconds, then
    raises `StorageError`; `transient` tells an error worth another attempt (the database's
    by default; a gRPC proxy's for `tuner.storage.proxy_client`)."""

    def __init__(
        self,
        url: str,
        timeout: float,
        transient: Callable[[BaseException], bool] = is_transient,
    ) -> None:
        self.timeout = timeout
        self.transient = transient
        self._outage = _Outage(url, timeout)
        self._making = threading.local()

    def __call__(self, call: Callable[[], T], again: Callable[[], T] | None = None) -> T:
        """`call()`, made again (as `again()` if given) while the database is unreachable.

        A call made inside another (a block of calls run under a lock) is made once: should the
        connection go, the lock its transaction held went with it, so the whole block is made
        again from its start, rather than carrying on unlocked from where it failed."""
        if getattr(self._making, "call", False):
            return call()
        self._making.call = True
        try:
            return self._made_again(call, again)
        finally:
            self._making.call = False

    def _made_again(self, call: Callable[[], T], again: Callable[[], T] | None) -> T:
        deadline = None
        attempt = 0
        while True:
            try:
                result = call() if deadline is None or again is None else again()
            except Exception as e:
                if not self.transient(e):
                    raise
                now = time.monotonic()
                deadline = deadline or now + self.timeout
                if now >= deadline:
                    raise self._outage.gave_up(e) from None
                self._outage.began(e)
                delay = min(MAX_DELAY_S, FIRST_DELAY_S * 2**attempt, deadline - now)
                time.sleep(delay * _JITTER.uniform(0.5, 1.0))  # workers must not return in step
                attempt += 1
                continue
            self._outage.ended()
            return result


# The modules whose code runs inside a storage call: between its first statement and its COMMIT,
# or holding a lock (`tuner.storage.exclusive`) over a few calls.
_STORAGE_CODE = ("sqlalchemy", "optuna", "psycopg", "psycopg2", "alembic", "tuner.storage")


def in_storage_call(frame: FrameType | None) -> bool:
    """Whether the code at `frame` (a signal handler's) runs inside a storage call; not while
    it waits between two attempts to reach the database, when no transaction is open."""
    if frame is not None and frame.f_code is Reconnect._made_again.__code__:
        return False
    while frame is not None:
        name = str(frame.f_globals.get("__name__", ""))
        if any(name == m or name.startswith(m + ".") for m in _STORAGE_CODE):
            return True
        frame = frame.f_back
    return False


class _Outage:
    """When the storage stopped answering, shared by the threads that use it."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url, self.timeout = url, timeout
        self._lock = threading.Lock()
        self._since: float | None = None

    def began(self, e: BaseException) -> None:
        with self._lock:
            if self._since is not None:
                return
            self._since = time.monotonic()
        logger.warning(
            "storage %s unreachable (%s); retrying for up to %d s",
            mask(self.url),
            scrub(reason(e), self.url),
            self.timeout,
        )

    def ended(self) -> None:
        if self._since is None:
            return
        with self._lock:
            since, self._since = self._since, None
        if since is not None:
            logger.warning(
                "storage %s reachable again after %.0f s", mask(self.url), time.monotonic() - since
            )

    def gave_up(self, e: BaseException) -> StorageError:
        return StorageError(
            f"storage {mask(self.url)} unreachable for {self.timeout:.0f} s: "
            f"{scrub(reason(e), self.url)}"
        )
