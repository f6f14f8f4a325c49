"""Opening Optuna's RDB storage on a URL, set up for the database behind it.

SQLite (the default, a file beside you) is tuned for several processes on one machine: WAL
journal, a busy timeout, and `BEGIN IMMEDIATE` transactions, so that a read never has to be
upgraded to a write under another process's feet (the usual source of "database is locked").
PostgreSQL gets small per-worker pools, liveness checks on pooled connections, TCP keepalives,
and calls that are made again while the server cannot be reached (`tuner.storage.reconnect`).

Commands that only read (`must_exist=True`) never write: they look for Optuna's tables first,
without creating or migrating anything, and refuse a storage that lacks them (another
application's database, an empty one); a SQLite file without write permission is opened
read-only.

A SQLite file that SQLite finds corrupt is refused in one line naming it, when it is opened
(before anything is written to it) or, damaged later, on the read that finds it so.

A `grpc://host:port` URL opens instead the storage a `tuner storage-proxy` serves
(`tuner.storage.proxy_client`).
"""

from __future__ import annotations

import functools
import os
import shlex
import sqlite3
import stat
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from tuner.config import WorkersConfig
from tuner.errors import StorageError
from tuner.storage.errors import is_corrupt, lost_creation_race, reason
from tuner.storage.optuna_internals import ReconnectingStorage, optuna_tables
from tuner.storage.proxy_client import open_proxy
from tuner.storage.retry import heartbeat_settings
from tuner.storage.urls import is_grpc, mask, parse, scrub

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
# Enough of Optuna's tables to tell its storage from another application's database.
_REQUIRED_TABLES = {"studies", "trials", "version_info"}


def open_storage(
    url: str,
    workers: WorkersConfig | None = None,
    *,
    must_exist: bool = False,
    pool_size: int = 1,
) -> optuna.storages.BaseStorage:
    """Optuna's RDB storage on `url`, or the storage a `tuner storage-proxy` serves.

    Args:
        url: Any SQLAlchemy URL Optuna accepts, or `grpc://host:port`
            (`tuner.storage.proxy_client`).
        workers: Heartbeat settings, for storages that workers run trials on.
        must_exist: For commands that only read (or delete): the storage must already hold
            Optuna's tables; nothing is created, migrated or written to open it.
        pool_size: PostgreSQL connections kept open (one more when all are busy); the proxy,
            which makes calls for many workers at once, keeps more.
    """
    if is_grpc(url):
        return open_proxy(url, workers)  # the proxy opened the database: nothing to check
    parsed = parse(url)
    if parsed.drivername == "postgresql":
        # The driver the `postgresql` extra installs, whichever SQLAlchemy 2 defaults to.
        parsed = parsed.set(drivername="postgresql+psycopg")
    engine_kwargs: dict[str, Any] = {}
    read_only = False
    if parsed.get_backend_name() == "sqlite":
        read_only = _prepare_sqlite(parsed, url, must_exist)
        engine_kwargs["connect_args"] = {
            "timeout": SQLITE_BUSY_TIMEOUT_S,
            "isolation_level": None,  # transactions are begun explicitly, below
        }
        if read_only:
            engine_kwargs = {"creator": _read_only_sqlite(Path(str(parsed.database)))}
    elif parsed.get_backend_name() == "postgresql":
        # A worker makes one call at a time and its heartbeat thread another: two connections
        # each, however many workers, checked before each use (an idle hour during a long
        # trial must not break the next write) and kept open through firewalls by keepalives.
        engine_kwargs |= {"pool_size": pool_size, "max_overflow": 1, "pool_pre_ping": True}
        if parsed.get_driver_name() in ("psycopg2", "psycopg"):
            connect_args: dict[str, Any] = {
                k: v for k, v in LIBPQ_OPTIONS.items() if k not in parsed.query
            }
            grace = (workers or WorkersConfig()).grace_period
            connect_args["options"] = _abandoned_transactions_end(parsed, grace)
            engine_kwargs["connect_args"] = connect_args
    heartbeat = heartbeat_settings(workers)
    full = parsed.render_as_string(hide_password=False)
    for attempt in range(INIT_ATTEMPTS):
        try:
            if must_exist:
                _require_optuna_tables(full, engine_kwargs, url)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = _storage_class(url, workers)(
                    full, engine_kwargs=engine_kwargs, skip_table_creation=must_exist, **heartbeat
                )
            break
        except (sqlalchemy.exc.SQLAlchemyError, ImportError, RuntimeError, ValueError) as e:
            # Workers that start together on a new database race to create its tables; the
            # losers find them made a moment later.
            if lost_creation_race(e) and attempt + 1 < INIT_ATTEMPTS:
                time.sleep(0.2 * 2**attempt)
                continue
            if parsed.get_backend_name() == "sqlite" and is_corrupt(e):
                raise StorageError(_corrupt(url, Path(str(parsed.database)))) from None
            raise StorageError(f"storage {mask(url)}: {scrub(reason(e), url)}") from None
    if parsed.get_backend_name() == "sqlite":
        _name_corruption(storage.engine, url, Path(str(parsed.database)))
        if not read_only:
            _begin_immediate(storage.engine)
    return storage


def _abandoned_transactions_end(parsed: URL, after_s: int) -> str:
    """libpq's `options` (the URL's own, if it has some) with the server told to end this
    session's transaction once it has sat idle `after_s` seconds (unless the URL says
    otherwise). A worker on a host cut off mid-transaction leaves it open on the server, which
    hears nothing, its locks with it: the trial it was writing could not be failed as stale, nor
    the queue refilled, by the workers still running. Workers count one another lost after
    `grace_period`; its open transaction then ends too. tuner's own transactions sit idle
    between the statements of one storage call, or while a lock (`tuner.storage.exclusive`)
    is held over a few calls: well under a second."""
    given = parsed.query.get("options", "")
    options = " ".join(given) if isinstance(given, tuple) else given
    if "idle_in_transaction_session_timeout" in options:
        return options
    return f"{options} -c idle_in_transaction_session_timeout={after_s * 1000}".strip()


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    return [s.study_name for s in storage.get_all_studies()]


def _storage_class(
    url: str, workers: WorkersConfig | None
) -> Callable[..., optuna.storages.RDBStorage]:
    if make_url(url).get_backend_name() == "sqlite":
        return optuna.storages.RDBStorage  # no connection to lose
    timeout = (workers or WorkersConfig()).reconnect_timeout
    return functools.partial(ReconnectingStorage, reconnect_timeout=timeout, shown_as=url)


def _require_optuna_tables(full_url: str, engine_kwargs: dict[str, Any], url: str) -> None:
    """Refuse a storage without Optuna's tables, having looked on one connection that wrote
    nothing."""
    kwargs = {k: v for k, v in engine_kwargs.items() if k in ("connect_args", "creator")}
    engine = sqlalchemy.create_engine(full_url, poolclass=NullPool, **kwargs)
    try:
        tables = set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    if not _REQUIRED_TABLES <= tables & optuna_tables():
        what = "is empty" if not tables else f"holds {len(tables)} tables, not Optuna's"
        raise StorageError(
            f"storage {mask(url)} {what}: it is not an Optuna storage, and was left as it was"
        )


def _prepare_sqlite(parsed: URL, url: str, must_exist: bool) -> bool:
    """Check a SQLite storage's file; returns whether it must be opened read-only."""
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
    read_only = must_exist and (
        # Write permission as the file's mode says (root may write anyway): a file kept
        # read-only is read as it is, creating nothing beside it.
        not path.stat().st_mode & stat.S_IWUSR or not os.access(path, os.W_OK)
    )
    connect = (
        _read_only_sqlite(path)
        if read_only
        else functools.partial(sqlite3.connect, path, timeout=SQLITE_BUSY_TIMEOUT_S)
    )
    try:
        connection = connect()
        try:
            if not _intact(connection):
                raise sqlite3.DatabaseError("database disk image is malformed")
            if not must_exist:
                # WAL lets readers and one writer work at once; the setting stays with the file.
                connection.execute("PRAGMA journal_mode=WAL")
        finally:
            connection.close()
    except sqlite3.DatabaseError as e:
        if is_corrupt(e):
            raise StorageError(_corrupt(url, path)) from None
        raise StorageError(f"storage {mask(url)}: not a usable SQLite file: {e}") from None
    return read_only


def _intact(connection: sqlite3.Connection) -> bool:
    """Whether SQLite finds every page of the file sound (`quick_check`: each table's pages,
    not whether its indexes agree with it), before anything is written to it: a few tenths
    of a second for a file of a hundred megabytes."""
    return bool(connection.execute("PRAGMA quick_check(1)").fetchone()[0] == "ok")


def _corrupt(url: str, path: Path) -> str:
    """What to say of a SQLite file that SQLite finds corrupt."""
    return (
        f"storage {mask(url)}: the SQLite file {str(path)!r} is corrupt (database disk image "
        "is malformed); it was left as it was: restore it from a backup, or save what is left "
        f"with `sqlite3 {shlex.quote(str(path))} .recover`"
    )


def _read_only_sqlite(path: Path) -> Callable[[], sqlite3.Connection]:
    # `immutable` reads without locks or a -shm file beside it, which a folder we may not
    # write to could not take; only pending WAL content needs the (read-only) WAL reader.
    wal = Path(f"{path}-wal")
    mode = "mode=ro" if wal.exists() and wal.stat().st_size else "immutable=1"
    uri = f"{path.resolve().as_uri()}?{mode}"

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, timeout=SQLITE_BUSY_TIMEOUT_S)

    return connect


def _name_corruption(engine: sqlalchemy.engine.Engine, url: str, path: Path) -> None:
    """A corrupt page found by a later read (the file was checked when opened, but may be
    damaged since) is named in one line, not a traceback from deep inside Optuna."""

    @event.listens_for(engine, "handle_error")
    def _handle_error(context: sqlalchemy.engine.ExceptionContext) -> None:
        if is_corrupt(context.original_exception):
            raise StorageError(_corrupt(url, path))


def _begin_immediate(engine: sqlalchemy.engine.Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened while the storage was set up lack the settings above
