"""Storage URLs: choosing one, hiding its password, and opening Optuna's RDB storage on it.

SQLite (the default, a file beside you) is tuned for several processes on one machine: WAL
journal, a busy timeout, and `BEGIN IMMEDIATE` transactions, so that a read never has to be
upgraded to a write under another process's feet (the usual source of "database is locked").
PostgreSQL gets small per-worker pools, liveness checks on pooled connections, TCP keepalives,
and calls that are made again while the server cannot be reached (`tuner.reconnect`).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import sqlite3
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url

from tuner.config import WorkersConfig
from tuner.errors import StorageError

DEFAULT_URL = "sqlite:///tuner.db"
ENV_VAR = "TUNER_STORAGE"
SQLITE_BUSY_TIMEOUT_S = 60
INIT_ATTEMPTS = 6
# libpq: give up a connection attempt after 10 s; probe an idle connection after 60 s, then every
# 10 s, and count it lost after 3 unanswered probes; count a connection lost when what was sent
# on it goes unacknowledged for 30 s (a pulled cable: else TCP waits a quarter of an hour before
# a call in flight fails, and `reconnect_timeout` starts counting only then).
LIBPQ_OPTIONS = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 60,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}


def resolve_url(url: str | None) -> str:
    """The storage URL to use: the one given, else $TUNER_STORAGE, else the default SQLite file."""
    return url or os.environ.get(ENV_VAR) or DEFAULT_URL


def mask(url: str) -> str:
    """`url` with its password hidden, for anything printed or logged."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable storage URL>"


def scrub(text: str, url: str) -> str:
    """`text` with every occurrence of `url`'s password hidden."""
    try:
        password = make_url(url).password
    except Exception:
        return text
    return text.replace(str(password), "***") if password else text


class _HidePassword(logging.Filter):
    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if scrub(message, self.url) != message:
            record.msg, record.args = scrub(message, self.url), None
        if record.exc_info and not record.exc_text:
            # Formatted here, once: handlers reuse `exc_text` rather than format it again.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text, self.url)
        return True


def hide_password_in_logs(url: str) -> None:
    """Hide `url`'s password in every log line from now on, whoever logs it (the root logger's
    handlers and Optuna's own)."""
    try:
        if not make_url(url).password:
            return
    except Exception:
        return
    for handler in logging.getLogger().handlers + logging.getLogger("optuna").handlers:
        handler.addFilter(_HidePassword(url))


def open_storage(
    url: str,
    workers: WorkersConfig | None = None,
    *,
    must_exist: bool = False,
) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage on `url`.

    Args:
        url: Any SQLAlchemy URL Optuna accepts.
        workers: Heartbeat settings, for storages that workers run trials on.
        must_exist: For commands that only read: a SQLite file that does not exist is an error
            rather than a new empty storage.
    """
    parsed = _parse(url)
    if parsed.drivername == "postgresql":
        # The driver the `postgresql` extra installs, whichever SQLAlchemy 2 defaults to.
        parsed = parsed.set(drivername="postgresql+psycopg")
    engine_kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        _prepare_sqlite(parsed, url, must_exist)
        engine_kwargs["connect_args"] = {
            "timeout": SQLITE_BUSY_TIMEOUT_S,
            "isolation_level": None,  # transactions are begun explicitly, below
        }
    elif parsed.get_backend_name() == "postgresql":
        # A worker makes one call at a time and its heartbeat thread another: two connections
        # each, however many workers, checked before each use (an idle hour during a long
        # trial must not break the next write) and kept open through firewalls by keepalives.
        engine_kwargs |= {"pool_size": 1, "max_overflow": 1, "pool_pre_ping": True}
        if parsed.get_driver_name() in ("psycopg2", "psycopg"):
            engine_kwargs["connect_args"] = {
                k: v for k, v in LIBPQ_OPTIONS.items() if k not in parsed.query
            }
    heartbeat: dict[str, Any] = {}
    if workers is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=workers.max_retry)
        heartbeat = {
            "heartbeat_interval": workers.heartbeat_interval,
            "grace_period": workers.grace_period,
            "heartbeat_stale_trial_callback": retry,
        }
    for attempt in range(INIT_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = _storage_class(url, workers)(
                    parsed.render_as_string(hide_password=False),
                    engine_kwargs=engine_kwargs,
                    **heartbeat,
                )
            break
        except (sqlalchemy.exc.SQLAlchemyError, ImportError, RuntimeError, ValueError) as e:
            # Workers that start together on a new database race to create its tables; the
            # losers find them made a moment later.
            if _lost_creation_race(e) and attempt + 1 < INIT_ATTEMPTS:
                time.sleep(0.2 * 2**attempt)
                continue
            raise StorageError(f"storage {mask(url)}: {scrub(reason(e), url)}") from None
    if parsed.get_backend_name() == "sqlite":
        _begin_immediate(storage.engine)
    return storage


def _storage_class(
    url: str, workers: WorkersConfig | None
) -> Callable[..., optuna.storages.RDBStorage]:
    if make_url(url).get_backend_name() == "sqlite":
        return optuna.storages.RDBStorage  # no connection to lose
    from tuner.reconnect import ReconnectingStorage

    timeout = (workers or WorkersConfig()).reconnect_timeout
    return functools.partial(ReconnectingStorage, reconnect_timeout=timeout, shown_as=url)


@contextlib.contextmanager
def exclusive(storage: optuna.storages.BaseStorage, name: str) -> Iterator[None]:
    """Hold the lock called `name` for every process that uses this storage: a file lock beside
    a SQLite (or journal) file, a session-level advisory lock on PostgreSQL."""
    backend: Any = getattr(storage, "_backend", storage)  # under Optuna's caching wrapper
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
    else:  # Optuna's journal storage: `backend` is its JournalFileBackend
        path = Path(f"{backend._file_path}-tuner-lock")
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    return [s.study_name for s in storage.get_all_studies()]


def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
    except Exception:
        # Not echoed: an unparseable URL could still hold a password.
        raise StorageError(
            "the storage URL is not a SQLAlchemy URL "
            "(it should look like sqlite:///tuner.db or postgresql://user@host/db)"
        ) from None
    try:
        parsed.get_dialect()
    except Exception:
        raise StorageError(
            f"storage URL {mask(url)}: unknown database {parsed.drivername!r} "
            "(use sqlite or postgresql)"
        ) from None
    return parsed


def _prepare_sqlite(parsed: URL, url: str, must_exist: bool) -> None:
    if not parsed.database or parsed.database == ":memory:":
        raise StorageError(
            f"storage {mask(url)}: an in-memory SQLite database cannot be shared by workers; "
            "give a file, such as sqlite:///tuner.db"
        )
    path = Path(parsed.database)
    if must_exist and not path.is_file():
        raise StorageError(f"storage {mask(url)}: no such SQLite file {str(path)!r}")
    if not path.parent.is_dir():
        raise StorageError(f"storage {mask(url)}: folder {str(path.parent)!r} does not exist")
    try:
        with sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S) as connection:
            # WAL lets readers and one writer work at once; the setting stays with the file.
            connection.execute("PRAGMA journal_mode=WAL")
    except sqlite3.DatabaseError as e:
        raise StorageError(f"storage {mask(url)}: not a usable SQLite file: {e}") from None


def _begin_immediate(engine: sqlalchemy.engine.Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened while the storage was set up lack the settings above


def _lost_creation_race(e: BaseException) -> bool:
    return isinstance(e, sqlalchemy.exc.IntegrityError) or "already exists" in str(e)


def reason(e: BaseException) -> str:
    """The first line of what the database driver said about `e` (else of `e` itself)."""
    cause: BaseException | None = e
    for _ in range(10):  # Optuna wraps driver errors once or twice
        if cause is None or isinstance(cause, sqlalchemy.exc.DBAPIError):
            break
        cause = cause.__cause__ or cause.__context__
    said = cause.orig if isinstance(cause, sqlalchemy.exc.DBAPIError) else e
    text = str(said).strip()
    return text.splitlines()[0] if text else type(said).__name__
