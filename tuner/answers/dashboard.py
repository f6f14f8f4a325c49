"""optuna-dashboard on a study storage, with the storage's artifact store so that retrained
models and their metrics show beside the study.

Opening and reading write nothing beside the storage: no artifact folder until an artifact is
uploaded, and no `-wal` or `-shm` file once the server is closed. Its `--host` is checked
before anything else; only a host it could listen on is warned about as open to other
machines."""

from __future__ import annotations

import errno
import signal
import socket
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna

from tuner.errors import TunerError
from tuner.storage import mask, open_storage
from tuner.storage.artifacts import Location, open_store
from tuner.storage.closing import close


class DashboardError(TunerError):
    """The dashboard cannot start."""


class _QuietHandler(WSGIRequestHandler):
    """No line per request: the dashboard polls the storage every few seconds."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(WSGIServer):
    """Closes its storage's connections when it closes: the last connection to a SQLite file in
    WAL mode takes its `-wal` and `-shm` files away with it."""

    storage: optuna.storages.BaseStorage | None = None

    def server_close(self) -> None:
        super().server_close()
        if self.storage is not None:
            close(self.storage)


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


def make_dashboard(url: str, host: str, port: int, artifacts: Location) -> WSGIServer:
    """optuna-dashboard's WSGI app on `url`, bound to `host:port`, not yet serving."""
    import optuna_dashboard

    ipv6 = address_family(host) == socket.AF_INET6
    storage = open_storage(url, must_exist=True)
    try:
        server = make_server(
            host.strip("[]"),
            port,
            _unset,
            server_class=_IPv6Server if ipv6 else _Server,
            handler_class=_QuietHandler,
        )
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise DashboardError(
                f"port {port} on {host} is in use; choose another with --port"
            ) from None
        raise DashboardError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    server.storage = storage
    server.set_app(optuna_dashboard.wsgi(storage, artifact_store=open_store(artifacts)))
    return server


def address_family(host: str) -> socket.AddressFamily:
    """The address family to listen on `host` with; one line if it names no address."""
    if not host.strip():
        raise DashboardError(
            "--host is empty: give an address to listen on, such as 127.0.0.1 (this machine "
            "only) or 0.0.0.0 (every network)"
        )
    try:
        found = socket.getaddrinfo(
            host.strip("[]"), None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (socket.gaierror, UnicodeError) as e:
        said = e.strerror if isinstance(e, socket.gaierror) else str(e)
        raise DashboardError(
            f"--host {host}: not an address of this machine, nor a name that resolves to one "
            f"({said})"
        ) from None
    return found[0][0]


def _unset(environ: Any, start_response: Any) -> list[bytes]:
    raise RuntimeError("the dashboard's app is set once its port is bound")


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def serve(
    url: str,
    host: str,
    port: int,
    artifacts: Location,
    say: Callable[[str], None] = lambda message: None,
    warn: Callable[[str], None] = lambda message: None,
) -> None:
    """Serve the dashboard until Ctrl-C or SIGTERM."""
    server = make_dashboard(url, host, port, artifacts)
    if not is_loopback(host):
        warn(
            f"Warning: --host {host} lets other machines open the dashboard, which has no "
            "login: anyone who can reach this port can read and delete your studies"
        )
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    say(
        f"optuna-dashboard for {mask(url)} on http://{shown}:{server.server_port}/dashboard/ "
        f"(artifacts in {artifacts}); Ctrl-C stops it"
    )

    def stop(signum: int, frame: FrameType | None) -> None:
        # Not KeyboardInterrupt: wsgiref would swallow it in the middle of a request.
        threading.Thread(target=server.shutdown, daemon=True).start()

    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not signal.SIG_IGN:  # as a background job, Ctrl-C is off
            signal.signal(sig, stop)
    try:
        server.serve_forever()
    finally:
        server.server_close()
