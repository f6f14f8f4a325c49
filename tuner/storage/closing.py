"""Closing a storage when a command is done with it: its database connections closed there and
then, not left open until the process ends (a `tuner run` that also ablates opens several, and
each holds up to two PostgreSQL connections)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import optuna

from tuner.config import WorkersConfig
from tuner.storage.engine import open_storage
from tuner.storage.optuna_internals import backend_of
from tuner.storage.proxy_client import ProxyStorage


@contextlib.contextmanager
def opened(
    url: str, workers: WorkersConfig | None = None, *, must_exist: bool = False
) -> Iterator[optuna.storages.BaseStorage]:
    """`open_storage(url, workers, must_exist=must_exist)`, closed (`close`) on leaving."""
    storage = open_storage(url, workers, must_exist=must_exist)
    try:
        yield storage
    finally:
        close(storage)


def close(storage: optuna.storages.BaseStorage) -> None:
    """Close `storage`'s connections (those of the storage under Optuna's caching wrapper);
    it opens new ones if used again."""
    backend = backend_of(storage)
    if isinstance(backend, optuna.storages.RDBStorage):
        backend.remove_session()
        backend.engine.dispose()
    elif isinstance(backend, ProxyStorage):
        backend.close()  # its gRPC channel
