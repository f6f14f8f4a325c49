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


@runtime_checkable
class HoldsLocks(Protocol):
    """A storage that holds tuner's locks itself: the gRPC proxy's client, whose process has
    no database connection (`tuner.storage.proxy_client`)."""

    def exclusive(self, name: str) -> contextlib.AbstractContextManager[None]: ...


def locked(storage: optuna.storages.BaseStorage, name: str, body: Callable[[], T]) -> T:
    """`body()`, run holding the lock called `name` (`exclusive`). Should the database go away
    meanwhile, the lock goes with the connection that held it, so `body` is run again from its
    start, under the lock taken afresh, once the database is back: it must look before it
    writes."""

    def once() -> T:
        with exclusive(storage, name):
            return body()

    return retrying(storage, once)


@contextlib.contextmanager
def exclusive(storage: optuna.storages.BaseStorage, name: str) -> Iterator[None]:
    """Hold the lock called `name` for every process that uses this storage: a file lock beside
    a SQLite (or journal) file, a transaction-level advisory lock on PostgreSQL, a lease from
    the proxy through `tuner storage-proxy`. Use it through `locked`, which makes the block
    again should the lock go with the connection."""
    backend = backend_of(storage)
    if isinstance(backend, HoldsLocks):
        with backend.exclusive(name):
            yield
        return
    engine = getattr(backend, "engine", None)
    if engine is not None and engine.url.get_backend_name() == "postgresql":
        # Held by a transaction of its own: released when it ends, or the connection drops.
        with engine.begin() as connection:
            connection.execute(
                sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"),
                {"key": zlib.crc32(name.encode())},
            )
            yield
        return
    if engine is not None:
        path = Path(f"{engine.url.database}-tuner-lock")
    else:
        path = Path(f"{journal_file(backend)}-tuner-lock")
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
