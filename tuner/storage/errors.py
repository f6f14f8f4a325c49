"""What a database error says: its first line for people, and whether it is worth trying again
(the server could not be reached) or not (the request itself was wrong)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import sqlalchemy


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


def is_transient(e: BaseException) -> bool:
    """Whether `e`, or an error it wraps, says that the database could not be reached or dropped
    the connection (or broke a deadlock), rather than that the request itself was wrong."""
    return any(
        isinstance(link, sqlalchemy.exc.DBAPIError)
        and (
            link.connection_invalidated
            or isinstance(link, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError)
        )
        for link in chain(e)
    )


def is_corrupt(e: BaseException) -> bool:
    """Whether `e`, or an error it wraps, is SQLite saying that its file is corrupt ("database
    disk image is malformed")."""
    for link in chain(e):
        said = link.orig if isinstance(link, sqlalchemy.exc.DBAPIError) else link
        if isinstance(said, sqlite3.DatabaseError):
            code = getattr(said, "sqlite_errorcode", None)
            if code is not None and code & 0xFF == sqlite3.SQLITE_CORRUPT:
                return True
            if "malformed" in str(said):
                return True
    return False


def lost_creation_race(e: BaseException) -> bool:
    """Whether `e` says that another process created the same tables a moment earlier."""
    return isinstance(e, sqlalchemy.exc.IntegrityError) or "already exists" in str(e)


def chain(e: BaseException | None) -> Iterator[BaseException]:
    """`e` and the errors it wraps, outermost first."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__
