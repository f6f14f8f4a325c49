"""Storage URLs: choosing one, and hiding its password in everything printed or logged.

A storage URL is a SQLAlchemy URL (`sqlite:///tuner.db`, `postgresql://user@host/db`), or
`grpc://host:port`: a `tuner storage-proxy` serving one (`tuner.storage.proxy_server`);
`grpcs://host:port` reaches it over TLS, and `grpc(s)://:TOKEN@host:port` (or $TUNER_PROXY_TOKEN)
gives the token a proxy that asks for one wants.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sqlalchemy.engine import URL, make_url

from tuner.errors import StorageError

DEFAULT_URL = "sqlite:///tuner.db"
ENV_VAR = "TUNER_STORAGE"
GRPC_SCHEME = "grpc://"
GRPCS_SCHEME = "grpcs://"  # the proxy over TLS
# The token a proxy asks of its clients (`tuner storage-proxy` reads it from here), and the one a
# client gives when its URL has none.
TOKEN_ENV = "TUNER_PROXY_TOKEN"
# A PEM file of the certificates a grpcs:// client trusts (default: the system's).
CA_ENV = "TUNER_PROXY_CA"
DEFAULT_PROXY_PORT = 13000  # Optuna's default for its gRPC proxy


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


def parse(url: str) -> URL:
    """`url` parsed, naming a database SQLAlchemy knows; else one line saying what is wrong."""
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
            "(use sqlite or postgresql, or grpc:// for a tuner storage-proxy)"
        ) from None
    return parsed


def is_grpc(url: str) -> bool:
    """Whether `url` names a gRPC storage proxy rather than a database."""
    return url.strip().lower().startswith((GRPC_SCHEME, GRPCS_SCHEME))


@dataclass(frozen=True)
class ProxyAddress:
    """Where a storage proxy is, whether over TLS, and the token to give it (never shown)."""

    host: str
    port: int
    tls: bool = False
    token: str | None = field(default=None, repr=False)


def parse_grpc(url: str) -> tuple[str, int]:
    """The host and port of a `grpc://host:port` URL (see `proxy_address`)."""
    address = proxy_address(url)
    return address.host, address.port


def proxy_address(url: str) -> ProxyAddress:
    """What a `grpc://host:port` or `grpcs://host:port` URL names (port 13000 if left out), with
    the token from its password (`grpc://:TOKEN@host`) or else from $TUNER_PROXY_TOKEN; else one
    line saying what is wrong."""
    form = "it should look like grpc://host:13000, grpcs:// over TLS"
    try:
        split = urlsplit(url.strip())
        port = split.port
    except ValueError:
        raise StorageError(
            f"storage URL {mask(url)}: the port is not a number 0-65535 ({form})"
        ) from None
    if not split.hostname:
        raise StorageError(f"storage URL {mask(url)}: no host ({form})")
    extra = split.username or split.path.strip("/") or split.query
    if extra or split.fragment:
        raise StorageError(
            f"storage URL {mask(url)}: a gRPC proxy URL holds a host and a port, and a token as "
            f"its password (grpc://:TOKEN@host), nothing more (no user, database or options: "
            f"the proxy has them); {form}"
        )
    if port == 0:
        raise StorageError(f"storage URL {mask(url)}: port 0 is no port to reach ({form})")
    return ProxyAddress(
        split.hostname,
        DEFAULT_PROXY_PORT if port is None else port,
        tls=split.scheme.lower() == "grpcs",
        token=split.password or os.environ.get(TOKEN_ENV) or None,
    )


class _HidePasswords(logging.Filter):
    """The passwords to hide in a handler's lines, one filter a handler, the longest hidden
    first: a log record is shared by every handler, and a password that holds another (s3cret,
    s3cret-pw) hidden by the shorter one's filter first would leave the rest of it showing."""

    def __init__(self) -> None:
        super().__init__()
        self.passwords: list[str] = []

    def add(self, password: str) -> None:
        if password not in self.passwords:
            self.passwords = sorted([*self.passwords, password], key=len, reverse=True)

    def hide(self, text: str) -> str:
        for password in self.passwords:
            text = text.replace(password, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.hide(message) != message:
            record.msg, record.args = self.hide(message), None
        if record.exc_info and not record.exc_text:
            # Formatted here, once: handlers reuse `exc_text` rather than format it again.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.hide(record.exc_text)
        return True


def hide_password_in_logs(url: str) -> None:
    """Hide `url`'s password in every log line from now on, whoever logs it (the root logger's
    handlers and Optuna's own)."""
    try:
        password = make_url(url).password
    except Exception:
        return
    if not password:
        return
    for handler in logging.getLogger().handlers + logging.getLogger("optuna").handlers:
        hiding = next((f for f in handler.filters if isinstance(f, _HidePasswords)), None)
        if hiding is None:
            hiding = _HidePasswords()
            handler.addFilter(hiding)
        hiding.add(str(password))
