"""`tuner storage-proxy`: a storage served to workers over gRPC, so that hundreds of them share
the database connections of one process (`THREADS`) rather than holding two each.

It serves Optuna's proxy service (what `optuna.storages.GrpcStorageProxy` calls, so stock
Optuna reaches the study through it too) and, on the same server, tuner's own small service
(`tuner.storage.proxy_client.SERVICE`): the leases that stand for locks, and heartbeats. The
protocol and its reasons are in `tuner.storage.proxy_client`'s docstring.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from types import FrameType
from typing import Any

import optuna

from tuner.errors import StorageError
from tuner.storage.engine import open_storage
from tuner.storage.locks import Busy, HoldsLocks
from tuner.storage.optuna_internals import (
    claimed_in,
    proxy_server,
    stale_trial_ids,
)
from tuner.storage.proxy_auth import token_check
from tuner.storage.proxy_client import LEASE_S, SERVICE, Refilled, decode, encode
from tuner.storage.proxy_stats import CallStats
from tuner.storage.urls import DEFAULT_PROXY_PORT, TOKEN_ENV, is_grpc, mask

# What refills a study's queue as claims run it short, made for the proxy's caching storage
# (`tuner.search.queue.ProxyRefill`): called after each claim with the study's id, the trial
# claimed (None: none), and the trials left WAITING and RUNNING; returns the refill the claim
# waits for, if any.
Refill = Callable[[int, int | None, int, int], "Future[Refilled] | None"]

# Calls served at once, and the database connections they share.
THREADS = 16
DEFAULT_HOST = "localhost"


class Leases:
    """Locks by name, each held by one token until released or `lease_s` after its last
    renewal. None is granted for `lease_s` after the proxy starts: a client that held one from a
    proxy that was restarted finds out first (`tuner.storage.proxy_client`)."""

    def __init__(
        self,
        lease_s: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        opens_after: float | None = None,
    ) -> None:
        """`opens_after`: seconds before the first lease is granted (`lease_s` unless given)."""
        self.lease_s, self.clock = lease_s, clock
        self._opens = clock() + (lease_s if opens_after is None else opens_after)
        self._held: dict[str, tuple[str, float]] = {}  # name -> (token, expires)
        self._lock = threading.Lock()

    def acquire(self, name: str, token: str) -> bool:
        return self._take(name, token, self.lease_s)

    def _take(self, name: str, token: str, lease_s: float) -> bool:
        """Grants `name` to `token` for `lease_s` (math.inf: until released) unless another
        token holds it or the proxy grants none yet."""
        with self._lock:
            now = self.clock()
            token_held, expires = self._held.get(name, (token, now))
            if now < self._opens or (token_held != token and expires > now):
                return False
            self._held[name] = (token, now + lease_s)
            return True

    def renew(self, name: str, token: str) -> bool:
        with self._lock:
            now = self.clock()
            holder = self._held.get(name)
            if holder is None or holder[0] != token or holder[1] <= now:
                return False
            self._held[name] = (token, now + self.lease_s)
            return True

    def release(self, name: str, token: str) -> None:
        with self._lock:
            if self._held.get(name, ("",))[0] == token:
                del self._held[name]

    @contextlib.contextmanager
    def exclusive(self, name: str, wait: bool = True) -> Iterator[None]:
        """Hold the lock called `name` in the proxy's own process (its refill of a queue,
        `tuner.search.queue.ProxyRefill`), as a lease that does not expire until released;
        with `wait=False`, raise `Busy` at once while a client holds it."""
        token = f"proxy-{uuid.uuid4()}"
        while not self._take(name, token, math.inf):
            if not wait:
                raise Busy(name)
            time.sleep(0.05)
        try:
            yield
        finally:
            self.release(name, token)


def tuner_service(storage: optuna.storages.BaseStorage, leases: Leases, refill: Refill) -> Any:
    """tuner's service, as a `grpc.GenericRpcHandler` to add to the proxy's server; `refill`:
    what refills the queue as claims run it short."""
    import grpc

    def acquire(request: dict[str, Any], context: Any) -> dict[str, Any]:
        return {"held": leases.acquire(request["name"], request["token"])}

    def renew(request: dict[str, Any], context: Any) -> dict[str, Any]:
        return {"held": leases.renew(request["name"], request["token"])}

    def release(request: dict[str, Any], context: Any) -> dict[str, Any]:
        leases.release(request["name"], request["token"])
        return {}

    def record_heartbeat(request: dict[str, Any], context: Any) -> dict[str, Any]:
        storage.record_heartbeat(int(request["trial_id"]))  # type: ignore[attr-defined]
        return {}

    def stale_trials(request: dict[str, Any], context: Any) -> dict[str, Any]:
        study_id, grace = int(request["study_id"]), float(request["grace_period"])
        return {"trial_ids": stale_trial_ids(storage, study_id, grace)}

    def claim(request: dict[str, Any], context: Any) -> dict[str, Any]:
        study_id, heartbeat = int(request["study_id"]), bool(request["heartbeat"])
        chosen, waiting, running = claimed_in(storage, study_id, heartbeat)
        started = refill(study_id, chosen, waiting, running)
        # A claim that got a trial is answered at once: its heartbeats start only then.
        refilled = started.result() if chosen is None and started is not None else None
        if refilled is not None and refilled.queued > 0:
            chosen, waiting, running = claimed_in(storage, study_id, heartbeat)
        spent = refilled is not None and refilled.spent
        return {"trial_id": chosen, "waiting": waiting, "running": running, "spent": spent}

    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            handler, request_deserializer=decode, response_serializer=encode
        )
        for name, handler in [
            ("Acquire", acquire),
            ("Renew", renew),
            ("Release", release),
            ("RecordHeartbeat", record_heartbeat),
            ("StaleTrials", stale_trials),
            ("Claim", claim),
        ]
    }
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


def serve(
    url: str,
    refills: Callable[[optuna.storages.BaseStorage, HoldsLocks], Refill],
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PROXY_PORT,
    say: Callable[[str], None] = print,
    stats_every: float = 0.0,
    tls: tuple[Path, Path] | None = None,
) -> None:
    """Serve the storage at `url` on `host:port` until SIGINT or SIGTERM; every `stats_every`
    seconds (if not 0), say what calls it served (`tuner.storage.proxy_stats`). `tls`: the
    server's certificate chain and private key (PEM files), for clients on grpcs://. With
    $TUNER_PROXY_TOKEN set, every call must give that token (`tuner.storage.proxy_auth`).
    `refills`: makes, for the proxy's caching storage and its locks, what refills the queues as
    claims run them short (`tuner.search.queue.ProxyRefill`)."""
    if is_grpc(url):
        raise StorageError(
            f"storage {mask(url)}: a proxy serves a database (sqlite:// or postgresql://), "
            "not another proxy"
        )
    try:
        import grpc
    except ImportError:
        raise StorageError(
            "tuner storage-proxy needs grpcio and protobuf (pip install 'tuner[grpc]')"
        ) from None
    credentials = None
    if tls is not None:
        try:
            chain, key = (path.read_bytes() for path in tls)
        except OSError as e:
            raise StorageError(f"{e.filename}: cannot read it ({e.strerror})") from None
        for name, pem, marker in ((tls[0], chain, b"CERTIFICATE"), (tls[1], key, b"PRIVATE KEY")):
            if b"-----BEGIN " not in pem or marker not in pem:
                raise StorageError(f"{name}: not a PEM file holding a {marker.decode().lower()}")
        credentials = grpc.ssl_server_credentials([(key, chain)])
    token = os.environ.get(TOKEN_ENV) or None
    interceptors = [token_check(token)] if token else []
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    cannot_listen = StorageError(
        f"cannot listen on {address}: the port is taken (another proxy?) or the host is "
        "not an address of this machine"
    )
    # Tried before the storage is opened, which makes a SQLite file that is not there yet.
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            raise cannot_listen from None
    storage = open_storage(url, pool_size=THREADS)
    # Optuna's caching view, as `run_grpc_proxy_server` asks: finished trials read once.
    cached = optuna.storages.get_storage(storage)
    stats = CallStats() if stats_every > 0 else None
    interceptors += [stats.interceptor()] if stats else []
    server = proxy_server(cached, THREADS, interceptors)
    leases = Leases(LEASE_S)
    server.add_generic_rpc_handlers((tuner_service(storage, leases, refills(cached, leases)),))
    try:
        if credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, credentials)
    except RuntimeError:
        bound = 0
    if not bound:
        raise cannot_listen
    stop = threading.Event()
    signalled: list[str] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        signalled.append(signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    server.start()
    try:
        scheme = "grpc" if credentials is None else "grpcs"
        shown = f"{scheme}://{host if ':' not in host else f'[{host}]'}:{bound}"
        asks = f", giving ${TOKEN_ENV}" if token else ""
        say(f"serving storage {mask(url)} at {shown} (workers: --storage {shown}{asks})")
        reported = time.monotonic()
        while not stop.wait(0.5):
            if stats is not None and time.monotonic() - reported >= stats_every:
                say(f"calls: {stats.line()}")
                reported = time.monotonic()
    finally:
        server.stop(grace=2).wait()
        for s, handler in previous.items():
            signal.signal(s, handler)
    say(f"stopped ({signalled[0]})")
