"""A storage reached through `tuner storage-proxy` (`grpc://host:port`): Optuna's
`GrpcStorageProxy`, plus what tuner needs beyond Optuna's storage API, from tuner's own small
gRPC service that the proxy serves beside Optuna's (`tuner.storage.proxy_server`).

A worker on the proxy has no database connection, so:

- **Locks** (`exclusive`) are leases the proxy keeps in memory: taken by polling (a waiting
  client holds none of the proxy's threads), renewed every `RENEW_S` while held, and expired
  `LEASE_S` after the last renewal, so that a client that dies frees its locks. A restarted proxy
  knows no leases, so it grants none for its first `LEASE_S` seconds; by then a holder from
  before has found its lease gone, and every storage call it makes under the lock fails as a
  lost connection would (`LeaseLost`), so the block is made again from its start under a fresh
  lock, as on PostgreSQL (`tuner.storage.locks.locked`). Locks are the proxy's: every process
  of a study must use the same proxy, not the database directly beside it.
- **Heartbeats** are recorded, and stale trials found, by the proxy on its database, with the
  grace period the client sends (the proxy serves studies with settings of their own); the
  client declares Optuna's `BaseHeartbeat`, so `optuna.storages.fail_stale_trials` works, and
  keeps the retry callback (`RetryOnce`) itself.
- **Claims**: a worker takes a queued trial in one call, which the proxy answers in one
  transaction that sets it RUNNING and records its heartbeat, skipping the trials other claims
  hold (`claim_queued`). Read-then-claim, with hundreds of workers racing for the same trial,
  cost a heartbeat and a state call per lost race. The proxy refills the queue itself as
  claims run it short (`tuner.search.queue.ProxyRefill`), so workers neither count the study
  nor wait for the queue's lock.
- **Retries**: every call is made again while the proxy is unreachable (restarted, its host
  down), with the same backoff and deadline (`reconnect_timeout`) as a database
  (`tuner.storage.reconnect`). A call whose answer was lost is found rather than repeated, as
  `ReconnectingStorage` does behind the proxy: a new trial carries a token the client looks
  for, and a `tell` finds its state already recorded.

A proxy that is Optuna's own (`run_grpc_proxy_server`) serves no locks, heartbeats or claims:
refused with one line at the first of them.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import random
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.config import WorkersConfig
from tuner.errors import StorageError
from tuner.storage.errors import chain
from tuner.storage.locks import Busy
from tuner.storage.optuna_internals import CREATE_TOKEN, ProxyClient, set_state_again, trial_id
from tuner.storage.reconnect import Reconnect
from tuner.storage.retry import heartbeat_settings
from tuner.storage.urls import CA_ENV, TOKEN_ENV, mask, proxy_address

logger = logging.getLogger("tuner.storage")

T = TypeVar("T")

# tuner's service beside Optuna's on the proxy: JSON objects as bytes, no compiled protobuf.
SERVICE = "tuner.StorageProxy"
METHODS = ("Acquire", "Renew", "Release", "RecordHeartbeat", "StaleTrials", "Claim")


class Refilled(NamedTuple):
    """What a refill of a study's queue did: the trials it `queued`, and whether the study's
    budget is `spent` (nothing left to queue)."""

    queued: int
    spent: bool


LEASE_S = 6.0
RENEW_S = 1.5


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


def decode(data: bytes) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(data)
    return decoded


class ProxyUnavailable(Exception):
    """The proxy could not be reached, or dropped the call: worth another attempt."""


class LeaseLost(ProxyUnavailable):
    """A lock held through the proxy was lost (the proxy restarted, or went silent for longer
    than a lease): the block run under it must be made again from its start."""


def is_unavailable(e: BaseException) -> bool:
    return any(isinstance(link, ProxyUnavailable) for link in chain(e))


def open_proxy(url: str, workers: WorkersConfig | None = None) -> ProxyStorage:
    """The storage served by the proxy at `url` (`grpc://host:port`); `workers`: heartbeat
    settings, for storages that workers run trials on."""
    try:
        import grpc  # noqa: F401
    except ImportError:
        raise StorageError(
            f"storage {mask(url)}: the gRPC proxy needs grpcio and protobuf "
            "(pip install 'tuner[grpc]')"
        ) from None
    address = proxy_address(url)
    host, port = address.host, address.port
    roots = None
    if address.tls and os.environ.get(CA_ENV):
        try:
            roots = Path(os.environ[CA_ENV]).read_bytes()
        except OSError as e:
            raise StorageError(
                f"{CA_ENV}={os.environ[CA_ENV]}: cannot read the certificates to trust "
                f"({e.strerror})"
            ) from None
    settings = workers or WorkersConfig()
    heartbeat = heartbeat_settings(workers)
    storage = ProxyStorage(
        url,
        host,
        port,
        reconnect_timeout=settings.reconnect_timeout,
        tls=address.tls,
        root_certificates=roots,
        token=address.token,
        **heartbeat,
    )
    # As PostgreSQL's first connection: a proxy that never answered is a wrong URL or a proxy
    # not started, one line now; outages later are ridden out (`reconnect_timeout`).
    try:
        storage.wait_server_ready(timeout=FIRST_CONTACT_S)
        storage.check_token()
    except ConnectionError:
        storage.close()
        other = (
            "one started without --tls-cert is reached on grpc://"
            if address.tls
            else "one started with --tls-cert is reached on grpcs://"
        )
        raise StorageError(
            f"storage {mask(url)}: no storage proxy answers at {host}:{port} within "
            f"{FIRST_CONTACT_S} s (start one there with `tuner storage-proxy`; {other})"
        ) from None
    except BaseException:
        storage.close()
        raise
    return storage


# How long a storage proxy has to answer when a command first opens it.
FIRST_CONTACT_S = 10


class ProxyStorage(ProxyClient):
    """Optuna's `GrpcStorageProxy` with tuner's locks, heartbeats and retries (see the module's
    docstring)."""

    def __init__(
        self,
        url: str,
        host: str,
        port: int,
        *,
        reconnect_timeout: float,
        tls: bool = False,
        root_certificates: bytes | None = None,
        token: str | None = None,
        heartbeat_interval: int | None = None,
        grace_period: int | None = None,
        heartbeat_stale_trial_callback: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    ) -> None:
        import grpc

        self.url = url
        self.reconnect = Reconnect(url, reconnect_timeout, transient=is_unavailable)
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.heartbeat_stale_trial_callback = heartbeat_stale_trial_callback
        self._leases = threading.local()  # the leases this thread holds, innermost last
        self.tls, self.root_certificates, self.token = tls, root_certificates, token
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(host=host, port=port)
        self._grpc = grpc
        self._methods = {
            name: self.channel.unary_unary(
                f"/{SERVICE}/{name}", request_serializer=encode, response_deserializer=decode
            )
            for name in METHODS
        }

    # --- calls made again while the proxy is away ----------------------------------------------

    def made(self, call: Callable[[], T], again: Callable[[], T] | None = None) -> T:
        """`call()`, made again (as `again()` if given) while the proxy is unreachable."""
        if again is None:
            return self.reconnect(lambda: self._once(call))
        return self.reconnect(lambda: self._once(call), lambda: self._once(again))

    def _once(self, call: Callable[[], T]) -> T:
        try:
            result = call()
        except self._grpc.RpcError as e:
            code = e.code() if isinstance(e, self._grpc.Call) else None
            # CANCELLED: the proxy stopped with the call in flight (tuner cancels none).
            if code in (self._grpc.StatusCode.UNAVAILABLE, self._grpc.StatusCode.CANCELLED):
                raise ProxyUnavailable(f"proxy {self.address}: {e.details()}") from e
            if code == self._grpc.StatusCode.UNAUTHENTICATED:
                raise self._refused() from None
            if code == self._grpc.StatusCode.UNIMPLEMENTED:
                raise StorageError(
                    f"storage {mask(self.url)}: the proxy at {self.address} serves no locks or "
                    "heartbeats: start it with `tuner storage-proxy`, not Optuna's "
                    "run_grpc_proxy_server"
                ) from None
            raise
        for lease in getattr(self._leases, "held", []):
            if lease.lost:
                raise LeaseLost(f"proxy {self.address}: the lock {lease.name!r} was lost")
        return result

    def check_token(self) -> None:
        """Raise `StorageError` if the proxy refuses this client's token (or its lack of one),
        with one cheap call of tuner's service; a proxy without it (Optuna's own) is refused
        only at the first lock or heartbeat."""
        try:
            self._methods["Renew"]({"name": "", "token": ""}, timeout=FIRST_CONTACT_S)
        except self._grpc.RpcError as e:
            code = e.code() if isinstance(e, self._grpc.Call) else None
            if code == self._grpc.StatusCode.UNAUTHENTICATED:
                raise self._refused() from None

    def _refused(self) -> StorageError:
        given = "a token it refused" if self.token else "no token"
        return StorageError(
            f"storage {mask(self.url)}: the proxy at {self.address} asks for a token and was "
            f"given {given} (give its {TOKEN_ENV} as the URL's password, grpc://:TOKEN@host:port,"
            f" or in ${TOKEN_ENV})"
        )

    def _call(self, method: str, **request: Any) -> dict[str, Any]:
        """One call of tuner's own service, made once."""
        return self._once(lambda: self._methods[method](request))

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        base = optuna.storages.GrpcStorageProxy
        if template_trial is None:  # `Study.ask`, which tuner does not use: nothing to find
            return self.made(lambda: base.create_new_trial(self, study_id))
        template = copy.deepcopy(template_trial)
        token = template.system_attrs.get(CREATE_TOKEN) or uuid.uuid4().hex
        template.system_attrs = {**template.system_attrs, CREATE_TOKEN: token}

        def again() -> int:
            # The call that seemed to fail may have landed: its trial carries the token.
            for t in base.get_all_trials(self, study_id, deepcopy=False):
                if t.system_attrs.get(CREATE_TOKEN) == token:
                    return trial_id(t)
            return base.create_new_trial(self, study_id, template)

        return self.made(lambda: base.create_new_trial(self, study_id, template), again)

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        base = optuna.storages.GrpcStorageProxy

        def again() -> bool:
            return set_state_again(
                lambda: base.set_trial_state_values(self, trial_id, state, values),
                lambda: base.get_trial(self, trial_id),
                state,
                values,
            )

        return self.made(lambda: base.set_trial_state_values(self, trial_id, state, values), again)

    # --- heartbeats ----------------------------------------------------------------------------

    def record_heartbeat(self, trial_id: int) -> None:
        self.made(lambda: self._call("RecordHeartbeat", trial_id=trial_id))

    def stale_trial_ids(self, study_id: int) -> list[int]:
        interval = self.heartbeat_interval or 0
        grace = self.grace_period if self.grace_period is not None else 2 * interval
        found = self.made(lambda: self._call("StaleTrials", study_id=study_id, grace_period=grace))
        return [int(i) for i in found["trial_ids"]]

    # --- the queue -----------------------------------------------------------------------------

    def claim_queued(self, study_id: int, heartbeat: bool) -> tuple[int | None, int, int, bool]:
        """Claim one of the study's WAITING trials in one call, which the proxy answers in one
        transaction (`optuna_internals.claimed_in`): its id (None if none was left), how many
        were left WAITING and were RUNNING, and whether the study's budget is spent (as the
        refill a claim that found nothing waited for found it). The proxy refills the queue as
        claims run it short (`tuner.search.queue.ProxyRefill`)."""
        found = self.made(lambda: self._call("Claim", study_id=study_id, heartbeat=heartbeat))
        chosen = found["trial_id"]
        return (
            None if chosen is None else int(chosen),
            int(found["waiting"]),
            int(found["running"]),
            bool(found["spent"]),
        )

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(
        self,
    ) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self.heartbeat_stale_trial_callback

    # --- locks ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def exclusive(self, name: str, wait: bool = True) -> Iterator[None]:
        """Hold the lock called `name` for every process that uses this proxy; with
        `wait=False`, raise `Busy` at once while another holds it. Made once: an unreachable
        proxy raises `ProxyUnavailable`, for the caller to make its block again."""
        token = uuid.uuid4().hex
        delay = 0.02
        while not self._call("Acquire", name=name, token=token)["held"]:
            if not wait:
                raise Busy(name)
            time.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(0.5, delay * 2)
        lease = _Lease(self, name, token)
        held: list[_Lease] = getattr(self._leases, "held", [])
        self._leases.held = [*held, lease]
        try:
            yield
        finally:
            self._leases.held = held
            lease.end()


# Calls that read, or write a value that is the same however often it is written (deleting a
# study or creating one twice says so: KeyError, DuplicatedStudyError).
SAME_TWICE = (
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_all_studies",
    "set_trial_param",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number",
    "get_trial",
    "get_all_trials",
)


def _made_again(name: str) -> Callable[..., Any]:
    method = getattr(optuna.storages.GrpcStorageProxy, name)

    def made_again(self: ProxyStorage, *args: Any, **kwargs: Any) -> Any:
        return self.made(lambda: method(self, *args, **kwargs))

    made_again.__name__ = made_again.__qualname__ = name
    made_again.__doc__ = method.__doc__
    return made_again


for _name in SAME_TWICE:
    setattr(ProxyStorage, _name, _made_again(_name))


class _Lease:
    """A lock held through the proxy, renewed by a thread of its own until `end`."""

    def __init__(self, storage: ProxyStorage, name: str, token: str) -> None:
        self.storage, self.name, self.token = storage, name, token
        self.lost = False
        self._renewed = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, daemon=True, name="lease")
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_S):
            try:
                held = self.storage._call("Renew", name=self.name, token=self.token)["held"]
            except Exception:
                held = time.monotonic() - self._renewed < LEASE_S - RENEW_S
            else:
                self._renewed = time.monotonic()
            if not held:
                self.lost = True
                return

    def end(self) -> None:
        self._stop.set()
        self._thread.join()
        if self.lost:
            return
        try:
            self.storage._call("Release", name=self.name, token=self.token)
        except Exception as e:  # the lease expires by itself
            logger.debug("lock %r not released: %s", self.name, e)
