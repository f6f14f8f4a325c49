"""Locks held for every process that uses a storage: the queue's refill, a study's set-up and
the retry of a failed trial are each done by one process at a time."""

from __future__ import annotations

import contextlib
import fcntl
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

import optuna
import sqlalchemy

from tuner.storage.optuna_internals import backend_of, journal_file, retrying

T = TypeVar("T")


class Busy(Exception):
    """The lock is held by another process now (`exclusive` with `wait=False`)."""


@runtime_checkable
class HoldsLocks(Protocol):
    """A storage that holds tuner's locks itself: the gRPC proxy's client, whose process has
    no database connection (`tuner.storage.proxy_client`)."""

    def exclusive(self, name: str, wait: bool = True) -> contextlib.AbstractContextManager[None]:
        """Hold the lock; with `wait=False`, raise `Busy` at once if another holds it."""
        ...


def locked(storage: optuna.storages.BaseStorage, name: str, body: Callable[[], T]) -> T:
    """`body()`, run holding the lock called `name` (`exclusive`). Should the database go away
    meanwhile, the lock goes with the connection that held it, so `body` is run again from its
    start, under the lock taken afresh, once the database is back: it must look before it
    writes."""

    def once() -> T:
        with exclusive(storage, name):
            return body()

    return retrying(storage, once)


def locked_if_free(
    storage: optuna.storages.BaseStorage, name: str, body: Callable[[], T]
) -> T | None:
    """`body()` as `locked` runs it, if no other process holds the lock now; else None at once,
    without waiting for it."""

    def once() -> T:
        with exclusive(storage, name, wait=False):
            return body()

    try:
        return retrying(storage, once)
    except Busy:
        return None


@contextlib.contextmanager
def exclusive(
    storage: optuna.storages.BaseStorage, name: str, wait: bool = True
) -> Iterator[None]:
    """Hold the lock called `name` for every process that uses this storage: a file lock beside
    a SQLite (or journal) file, a transaction-level advisory lock on PostgreSQL, a lease from
    the proxy through `tuner storage-proxy`. With `wait=False`, raise `Busy` at once while
    another process holds it. Use it through `locked` (or `locked_if_free`), which makes the
    block again should the lock go with the connection."""
    backend = backend_of(storage)
    if isinstance(backend, HoldsLocks):
        with backend.exclusive(name, wait=wait):
            yield
        return
    engine = getattr(backend, "engine", None)
    if engine is not None and engine.url.get_backend_name() == "postgresql":
        # Held by a transaction of its own: released when it ends, or the connection drops.
        take = "pg_advisory_xact_lock" if wait else "pg_try_advisory_xact_lock"
        with engine.begin() as connection:
            taken = connection.execute(
                sqlalchemy.text(f"SELECT {take}(:key)"), {"key": zlib.crc32(name.encode())}
            ).scalar()
            if taken is False:
                raise Busy(name)
            yield
        return
    if engine is not None:
        path = Path(f"{engine.url.database}-tuner-lock")
    else:
        path = Path(f"{journal_file(backend)}-tuner-lock")
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(name) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
