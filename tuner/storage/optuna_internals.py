"""Everything that leans on Optuna's internals, fenced here and nowhere else: the overrides of
`RDBStorage`'s private methods, the private attributes read to unwrap a storage, a study's own
storage and a trial's id, the live `optuna.Trial` made for a claimed trial, the system
attribute Optuna's retry callback writes, and the pieces of Optuna's gRPC proxy that
`tuner storage-proxy` builds on: its server's service, its client's channel and cache, the
`GetTrials` call that reads a study's trials (answered and cached so that a read costs what
changed, not the whole study), the stale-trial query run with a grace period of the client's
(`tuner.storage.proxy_client` says why), and the claim of a queued trial in one transaction.

`tests/storage/test_optuna_contract.py` fails loudly when Optuna changes under them;
`pyproject.toml` pins Optuna to the minor series they were written for (5.0).

Each storage call is one transaction. A call that failed before its COMMIT reached the server
changed nothing and is simply made again. A call whose COMMIT reached the server but whose answer
was lost did change something, so the calls for which running twice differs from running once
are made so that the second run finds the first:

- creating a trial (`enqueue_trial`, the retry of a failed trial): each new trial carries a
  unique token, and an attempt after a failed one looks for it before creating anything;
- finishing a trial (`tell`): finding the trial already in the state and with the values asked
  for means the first attempt landed;
- claiming a waiting trial: a claim that may have landed is reported as lost (or, made in one
  call through the proxy, `claimed_in`, another trial is claimed). The trial then runs
  nowhere, but the claimant recorded its heartbeat first (`tuner.search.queue.claim`) or with
  the claim, so it goes stale and is failed and queued again, like the trial of a worker that
  died.

Everything else reads, or writes a value that is the same however often it is written.
"""

from __future__ import annotations

import copy
import datetime
import functools
import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import optuna
import sqlalchemy
from optuna.storages._cached_storage import _CachedStorage, _StudyInfo
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import FrozenTrial, TrialState

from tuner.storage.reconnect import Reconnect

CREATE_TOKEN = "tuner_create_token"
# The Optuna series the overrides below were written for (and pyproject.toml pins).
OPTUNA_SERIES = "5.0"

T = TypeVar("T")
_RDB = optuna.storages.RDBStorage


# The system attribute Optuna's `RetryHeartbeatStaleTrialCallback` writes on a retry: the
# numbers of the trials it repeats.
RETRY_HISTORY = "retry_history"


def study_storage(study: optuna.Study) -> Any:
    """The storage a study reads and writes through: its own caching view, which must see the
    trials tuner adds, and whose locks and heartbeats are the study's."""
    return study._storage


def trial_id(trial: FrozenTrial | optuna.Trial) -> int:
    """A trial's id in its storage (not its number in the study)."""
    return int(trial._trial_id)


def live_trial(study: optuna.Study, trial_id: int) -> optuna.Trial:
    """The `optuna.Trial` of a trial tuner claimed itself (set to RUNNING), as `study.ask`
    would have made it."""
    return optuna.Trial(study, trial_id)


def is_retry(trial: FrozenTrial) -> bool:
    """Whether Optuna's retry callback made this trial to repeat a failed one."""
    return bool(repeats(trial))


def repeats(trial: FrozenTrial) -> list[int]:
    """The numbers of the failed trials this one repeats, the first first, as Optuna's retry
    callback records them (empty for a trial that repeats none)."""
    return list(trial.system_attrs.get(RETRY_HISTORY) or [])


def backend_of(storage: optuna.storages.BaseStorage) -> Any:
    """The storage under Optuna's caching wrapper (which `Study` puts around an RDB storage)."""
    return getattr(storage, "_backend", storage)


def journal_file(backend: Any) -> str:
    """The file of Optuna's `JournalFileBackend`."""
    return str(backend._file_path)


def optuna_tables() -> set[str]:
    """The names of the tables Optuna's RDB storage keeps."""
    return set(models.BaseModel.metadata.tables)


def retrying(storage: optuna.storages.BaseStorage, call: Callable[[], T]) -> T:
    """`call()`, made again while `storage`'s database (or proxy) is unreachable, if `storage`
    (or the storage under Optuna's caching wrapper) makes calls again: a `ReconnectingStorage`,
    or a `tuner.storage.proxy_client.ProxyStorage`."""
    reconnect = getattr(backend_of(storage), "reconnect", None)
    if isinstance(reconnect, Reconnect):
        return reconnect(call)
    return call()


class ReconnectingStorage(_RDB):
    """`optuna.storages.RDBStorage` that makes a call again while the database is unreachable,
    for up to `reconnect_timeout` seconds, then raises `StorageError`."""

    def __init__(
        self, url: str, *, reconnect_timeout: float, shown_as: str | None = None, **kwargs: Any
    ) -> None:
        """`shown_as`: the URL as the user gave it, for messages (its password is hidden)."""
        self.reconnect_timeout = reconnect_timeout
        self.reconnect = Reconnect(shown_as or url, reconnect_timeout)
        self._tried_tokens: set[str] = set()
        super().__init__(url, **kwargs)

    def _retry(self, call: Callable[[], T], again: Callable[[], T] | None = None) -> T:
        return self.reconnect(call, again)

    def _create_new_trial(
        self, study_id: int, template_trial: FrozenTrial | None = None
    ) -> FrozenTrial:
        if template_trial is None:  # `Study.ask`, which tuner does not use: nothing to find
            return self._retry(lambda: _RDB._create_new_trial(self, study_id))
        template = copy.deepcopy(template_trial)
        # A trial created through the proxy carries its client's token already: the client
        # looks for it after a call whose answer was lost (`tuner.storage.proxy_client`).
        token = template.system_attrs.get(CREATE_TOKEN) or uuid.uuid4().hex
        template.system_attrs = {**template.system_attrs, CREATE_TOKEN: token}
        try:
            # Optuna makes its own attempts too (for deadlocks); each lands in
            # `_get_prepared_new_trial`, which finds an earlier one that succeeded.
            return self._retry(lambda: _RDB._create_new_trial(self, study_id, template))
        finally:
            self._tried_tokens.discard(token)

    def _get_prepared_new_trial(
        self, study_id: int, template_trial: FrozenTrial | None, session: Any
    ) -> Any:
        token = template_trial.system_attrs.get(CREATE_TOKEN) if template_trial else None
        if token is not None:
            if token in self._tried_tokens:
                made = (
                    session.query(models.TrialSystemAttributeModel)
                    .join(models.TrialModel)
                    .filter(models.TrialModel.study_id == study_id)
                    .filter(models.TrialSystemAttributeModel.key == CREATE_TOKEN)
                    .filter(models.TrialSystemAttributeModel.value_json == json.dumps(token))
                    .one_or_none()
                )
                if made is not None:
                    return made.trial
            self._tried_tokens.add(token)
        return super()._get_prepared_new_trial(study_id, template_trial, session)

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        def again() -> bool:
            return set_state_again(
                lambda: _RDB.set_trial_state_values(self, trial_id, state, values),
                lambda: _RDB.get_trial(self, trial_id),
                state,
                values,
            )

        return self._retry(
            lambda: _RDB.set_trial_state_values(self, trial_id, state, values), again
        )


# Calls that read, or write a value that is the same however often it is written. (Writing a
# parameter twice is refused by the database, and Optuna ignores the refusal.) Only the calls
# that open a transaction themselves are listed: the others are made of these. The private ones
# are held to their signatures by tests/storage/test_optuna_contract.py.
SAME_TWICE = (
    "create_new_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_all_studies",
    "_set_trial_param",
    "get_trial_param",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "get_trial_id_from_study_id_trial_number",
    "get_trial",
    "_get_trials",
    "_get_best_trial_id",
    "record_heartbeat",
    "_get_stale_trial_ids",
)


def _retried(name: str) -> Callable[..., Any]:
    method = getattr(_RDB, name)

    @functools.wraps(method)
    def retried(self: ReconnectingStorage, *args: Any, **kwargs: Any) -> Any:
        return self.reconnect(lambda: method(self, *args, **kwargs))

    return retried


for _name in SAME_TWICE:
    setattr(ReconnectingStorage, _name, _retried(_name))


# --- Optuna's gRPC storage proxy -----------------------------------------------------------------

# The client's channel: after the proxy restarts, it tries to connect again within 2 s rather
# than gRPC's default backoff of up to 2 minutes; and while a call is in flight it pings the
# proxy, so that a call to a proxy whose host vanished fails (and is made again) rather than
# hanging for ever: after 30 s without an answer to a ping, not 10, as a proxy loaded by
# hundreds of clients answered later than that, and every call in flight on the connection
# was cancelled (and made again, adding to the load). Replies of any size, as Optuna's own
# channel.
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 30_000),
]
# The server: one proxy a port (gRPC binds with SO_REUSEPORT otherwise, and a second proxy on
# the same port would take half the calls), and the client's pings allowed.
SERVER_OPTIONS = [
    ("grpc.so_reuseport", 0),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
]


def proxy_server(
    storage: optuna.storages.BaseStorage, threads: int, interceptors: Sequence[Any] = ()
) -> Any:
    """A `grpc.Server` (not yet bound or started) serving `storage` through Optuna's proxy
    service, as `optuna.storages.run_grpc_proxy_server` makes one, with `SERVER_OPTIONS` (and
    `interceptors`, `grpc.ServerInterceptor`s)."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc
    from optuna.storages._grpc.auto_generated import api_pb2, api_pb2_grpc
    from optuna.storages._grpc.servicer import OptunaStorageProxyService, _to_proto_trial

    class ProxyService(OptunaStorageProxyService):
        """Optuna's service, but `GetTrials` reads only the trials asked for (`asked_trials`),
        where Optuna's sorts and scans the whole study on every call; and `SetTrialParameter`
        goes to the database without the caching storage's lock."""

        # Optuna's service on the database itself, past the caching storage.
        direct = OptunaStorageProxyService(
            storage._backend if isinstance(storage, _CachedStorage) else storage
        )

        def GetTrials(self, request: Any, context: Any) -> Any:
            try:
                trials = asked_trials(
                    storage,
                    request.study_id,
                    set(request.included_trial_ids),
                    request.trial_id_greater_than,
                )
            except KeyError as e:
                context.abort(code=grpc.StatusCode.NOT_FOUND, details=str(e))
            return api_pb2.GetTrialsReply(trials=[_to_proto_trial(t) for t in trials])

        def SetTrialParameter(self, request: Any, context: Any) -> Any:
            # On the database itself, past the caching storage, which holds its lock for the
            # whole database call (`_CachedStorage.set_trial_param`): the proxy's threads set
            # parameters one at a time, 8 a trial, the costliest call of the load test (60 to
            # 120 ms). It also fails for a trial it has not read (KeyError): one that a client
            # read through a proxy before a restart. The database checks the distribution
            # against the study's earlier trials itself, with one query more.
            return self.direct.SetTrialParameter(request, context)

    server = grpc.server(
        ThreadPoolExecutor(max_workers=threads),
        options=SERVER_OPTIONS,
        interceptors=list(interceptors),
    )
    servicer = ProxyService(storage)
    api_pb2_grpc.add_StorageServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    return server


def asked_trials(
    storage: optuna.storages.BaseStorage,
    study_id: int,
    included_trial_ids: set[int],
    trial_id_greater_than: int,
) -> list[FrozenTrial]:
    """The trials a proxy client asks for in a `GetTrials` call: the study's trials whose id is
    greater than `trial_id_greater_than` (those it has not seen finished) or in
    `included_trial_ids` (those it last saw unfinished), by number, as Optuna's servicer answers.

    Optuna's servicer reads every trial of the study (`get_all_trials`, sorted), then keeps
    these: a cost that grows with the study on every read. The RDB storage's own query for them,
    the one Optuna's caching storage syncs with, reads only these rows (issue 24). Its trials are
    as fresh as the caching storage's: finished trials never change, and it re-reads the rest."""
    rdb = backend_of(storage)
    if not isinstance(rdb, _RDB):  # not a database: Optuna's way
        return [
            t
            for t in storage.get_all_trials(study_id, deepcopy=False)
            if t._trial_id > trial_id_greater_than or t._trial_id in included_trial_ids
        ]
    trials = rdb._get_trials(study_id, None, included_trial_ids, trial_id_greater_than)
    trials.sort(key=lambda t: t.number)
    if isinstance(storage, _CachedStorage):
        # Optuna's caching storage learns of trials made elsewhere (by a proxy before a restart,
        # say) from these reads: it answers `GetTrial` for finished ones from what it learnt.
        # (Parameters go past it, `proxy_server`, so its `set_trial_param` needs none of it.)
        with storage._lock:
            storage._studies.setdefault(study_id, _StudyInfo())
            storage._add_trials_to_cache(study_id, trials)
    return trials


def request_trials(
    stub: Any, study_id: int, included_trial_ids: list[int], trial_id_greater_than: int
) -> list[tuple[int, FrozenTrial]]:
    """The trials of Optuna's `GetTrials` call to the proxy at `stub` (see `asked_trials`), as
    Optuna's client cache makes it, each with its id. Raises `grpc.RpcError` as the call
    does."""
    from optuna.storages._grpc.auto_generated import api_pb2
    from optuna.storages._grpc.servicer import _from_proto_trial

    request = api_pb2.GetTrialsRequest(
        study_id=study_id,
        included_trial_ids=included_trial_ids,
        trial_id_greater_than=trial_id_greater_than,
    )
    trials = [_from_proto_trial(t) for t in stub.GetTrials(request).trials]
    return [(trial_id(t), t) for t in trials]


def claimed_in(
    storage: optuna.storages.BaseStorage, study_id: int, heartbeat: bool
) -> tuple[int | None, int, int]:
    """Claim the first queued (WAITING) trial of the study `study_id` in the database of
    `storage` that no other claim holds: set it RUNNING, as `set_trial_state_values` does, and
    (`heartbeat`) record its heartbeat, in one transaction. Returns its id (None if there was
    none to claim), and how many trials were left WAITING and were RUNNING after it.

    On PostgreSQL (and MySQL) a claim skips the rows that other claims hold (`FOR UPDATE SKIP
    LOCKED`), so that claims made at once take different trials. Claims that each read the
    queue and then raced for the same trial lost most races with hundreds of workers, and each
    lost race cost a heartbeat and a state call: about 45 calls per claimed trial at the start
    of a 256-client study (BENCHMARKS.md). On SQLite a transaction holds the whole database
    (`BEGIN IMMEDIATE`, `tuner.storage.engine`): claims take turns.

    A claim whose answer was lost is not found again (nothing marks whose it was): made again,
    it claims another trial, and the first, RUNNING nowhere with the heartbeat it was given,
    goes stale and is queued again like the trial of a worker that died."""
    backend = _rdb_of(storage, "trials are claimed")

    def claim() -> tuple[int | None, int, int]:
        chosen = None
        with _create_scoped_session(backend.scoped_session) as session:
            trial = (
                session.query(models.TrialModel)
                .filter(
                    models.TrialModel.study_id == study_id,
                    models.TrialModel.state == TrialState.WAITING,
                )
                .order_by(models.TrialModel.number)
                .with_for_update(skip_locked=True)
                .first()
            )
            if trial is not None:
                chosen = int(trial.trial_id)
                trial.state = TrialState.RUNNING
                trial.datetime_start = datetime.datetime.now()
                if heartbeat:
                    beat = models.TrialHeartbeatModel.where_trial_id(chosen, session, True)
                    if beat is None:
                        session.add(models.TrialHeartbeatModel(trial_id=chosen))
                    else:
                        beat.heartbeat = session.execute(sqlalchemy.func.now()).scalar()
                session.flush()
            counts = dict(
                session.query(models.TrialModel.state, sqlalchemy.func.count())
                .filter(
                    models.TrialModel.study_id == study_id,
                    models.TrialModel.state.in_([TrialState.WAITING, TrialState.RUNNING]),
                )
                .group_by(models.TrialModel.state)
                .all()
            )
        return chosen, counts.get(TrialState.WAITING, 0), counts.get(TrialState.RUNNING, 0)

    return retrying(backend, claim)


def claimed_trial(
    study: optuna.Study, heartbeat: bool
) -> tuple[int | None, int, int, bool] | None:
    """A queued trial of the study claimed in one call (`claimed_in`), where the storage
    answers that: through the proxy (`claim_queued` of the client, the proxy refilling the
    queue). None elsewhere: claim it
    as `tuner.search.queue.claim` does, reading the queue first (a worker on the database
    itself must read the trials anyway: its caching storage writes only to trials it has read,
    as `set_trial_param` looks the trial up; the proxy's own caching storage learns of a trial
    when a client first writes to it, `proxy_server`)."""
    ask = getattr(backend_of(study_storage(study)), "claim_queued", None)
    if not callable(ask):
        return None
    found: tuple[int | None, int, int, bool] = ask(study._study_id, heartbeat)
    return found


def _rdb_of(storage: optuna.storages.BaseStorage, what: str) -> _RDB:
    backend = backend_of(storage)
    if not isinstance(backend, _RDB):
        raise TypeError(f"{what} in an RDB storage, not {type(backend).__name__}")
    return backend


def stale_trial_ids(
    storage: optuna.storages.BaseStorage, study_id: int, grace_period: float
) -> list[int]:
    """The ids of the study's running trials whose last heartbeat is older than
    `grace_period` seconds, by the database's clock, as `RDBStorage` finds them for
    `fail_stale_trials`, whatever heartbeat settings `storage` was opened with (the proxy
    serves studies with settings of their own)."""
    rdb = _rdb_of(storage, "heartbeats are kept")
    # Optuna's query reads only these three attributes of the storage.
    settings = _HeartbeatSettings(rdb.scoped_session, grace_period)
    return retrying(rdb, lambda: list(_RDB._get_stale_trial_ids(settings, study_id)))  # type: ignore[arg-type]


class _HeartbeatSettings:
    def __init__(self, scoped_session: Any, grace_period: float) -> None:
        self.scoped_session = scoped_session
        self.heartbeat_interval = 1  # read only when grace_period is None
        self.grace_period = grace_period


class ProxyClient(optuna.storages.GrpcStorageProxy, BaseHeartbeat):
    """Optuna's `GrpcStorageProxy` on a channel made with `CHANNEL_OPTIONS`, with tuner's cache
    of the study's trials (`tuner.storage.proxy_cache`), declaring heartbeats (`BaseHeartbeat`),
    so that Optuna's `fail_stale_trials` asks it for stale trials.
    `tuner.storage.proxy_client.ProxyStorage` implements them.

    Optuna's `__init__` calls `_setup`, which makes the channel: set `tls`, `root_certificates`
    (PEM, None for the system's) and `token` before it."""

    tls: bool = False
    root_certificates: bytes | None = None
    token: str | None = None

    def _setup(self) -> None:
        import grpc
        from optuna.storages._grpc.auto_generated import api_pb2_grpc

        from tuner.storage.proxy_cache import TrialCache

        target = f"{self._host}:{self._port}"
        if self.tls:
            credentials = grpc.ssl_channel_credentials(self.root_certificates)
            self._channel = grpc.secure_channel(target, credentials, CHANNEL_OPTIONS)
        else:
            self._channel = grpc.insecure_channel(target, CHANNEL_OPTIONS)
        self._connection = self._channel  # below any interceptor: its state can be watched
        if self.token:
            from tuner.storage.proxy_auth import bearer

            self._channel = grpc.intercept_channel(self._channel, bearer(self.token))
        self._stub = api_pb2_grpc.StorageServiceStub(self._channel)  # type: ignore[no-untyped-call]
        # In place of Optuna's `GrpcClientCache`, which sorts every trial on every read; the
        # two calls the client makes of it are held to their signatures by the contract tests.
        self._cache = TrialCache(functools.partial(request_trials, self._stub))  # type: ignore[assignment]

    def wait_server_ready(self, timeout: float | None = None) -> None:
        """As Optuna's, on this client's own channel (TLS where it has it), not a plain one."""
        import grpc

        try:
            grpc.channel_ready_future(self._connection).result(timeout=timeout)
        except grpc.FutureTimeoutError as e:
            raise ConnectionError("GRPC connection timeout") from e

    @property
    def channel(self) -> Any:
        """The `grpc.Channel` to the proxy, for tuner's own service beside Optuna's."""
        return self._channel

    @property
    def address(self) -> str:
        return f"{self._host}:{self._port}"

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return self.stale_trial_ids(study_id)

    def stale_trial_ids(self, study_id: int) -> list[int]:
        raise NotImplementedError


def set_state_again(
    set_state: Callable[[], bool],
    get_trial: Callable[[], FrozenTrial],
    state: TrialState,
    values: Sequence[float] | None,
) -> bool:
    """`set_state()` once more, after an attempt whose answer was lost: where the trial is
    already finished as asked, that attempt had landed, and this is not an error."""
    try:
        return set_state()
    except optuna.exceptions.UpdateFinishedTrialError:
        stored = get_trial()
        if stored.state == state and (values is None or stored.values == list(values)):
            return True
        raise
