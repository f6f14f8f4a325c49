"""optuna-dashboard on a study storage, with the storage's artifact store so that retrained
models and their metrics show beside the study."""

from __future__ import annotations

import errno
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from tuner.errors import TunerError
from tuner.storage import mask, open_storage
from tuner.storage.artifacts import Location, open_store


class DashboardError(TunerError):
    """The dashboard cannot start."""


class _QuietHandler(WSGIRequestHandler):
    """No line per request: the dashboard polls the storage every few seconds."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def make_dashboard(url: str, host: str, port: int, artifacts: Location) -> WSGIServer:
    """optuna-dashboard's WSGI app on `url`, bound to `host:port`, not yet serving."""
    import optuna_dashboard

    storage = open_storage(url, must_exist=True)
    try:
        # Bound before the artifact store is made: a refused port leaves no folder behind.
        server = make_server(host, port, _unset, handler_class=_QuietHandler)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise DashboardError(
                f"port {port} on {host} is in use; choose another with --port"
            ) from None
        raise DashboardError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    server.set_app(optuna_dashboard.wsgi(storage, artifact_store=open_store(artifacts)))
    return server


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
) -> None:
    """Serve the dashboard until Ctrl-C or SIGTERM."""
    server = make_dashboard(url, host, port, artifacts)
    shown = f"[{host}]" if ":" in host else host
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
