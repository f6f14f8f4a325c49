"""The contract with Optuna's internals that `tuner/storage/optuna_internals.py` relies on.

These tests fail loudly when Optuna changes under the overrides: the methods exist with the
signatures they were written for, the storage calls them on the paths tuner uses (spies around
the real methods), and a COMMIT whose answer is lost (injected with SQLAlchemy events on SQLite,
without a server) is neither repeated nor lost.
"""

from __future__ import annotations

import inspect
import sqlite3
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState
from sqlalchemy import event

from tuner.search.queue import claim
from tuner.storage import CREATE_TOKEN, RETRY_OF, ReconnectingStorage, open_storage
from tuner.storage.optuna_internals import OPTUNA_SERIES, SAME_TWICE

RDB = optuna.storages.RDBStorage

# What the overrides were written against: method -> its parameters.
OVERRIDDEN = {
    "_create_new_trial": ["self", "study_id", "template_trial"],
    "_get_prepared_new_trial": ["self", "study_id", "template_trial", "session"],
    "set_trial_state_values": ["self", "trial_id", "state", "values"],
}


def test_optuna_is_the_series_the_overrides_were_written_for() -> None:
    found = ".".join(optuna.__version__.split(".")[:2])
    assert found == OPTUNA_SERIES, (
        f"tuner/storage/optuna_internals.py overrides private methods of Optuna "
        f"{OPTUNA_SERIES}'s RDBStorage, but Optuna {optuna.__version__} is installed: check "
        "each override against the new RDBStorage, then raise OPTUNA_SERIES and the pin in "
        "pyproject.toml"
    )


@pytest.mark.parametrize("name", list(OVERRIDDEN))
def test_the_overridden_methods_keep_their_signatures(name: str) -> None:
    assert list(inspect.signature(getattr(RDB, name)).parameters) == OVERRIDDEN[name]


@pytest.mark.parametrize("name", SAME_TWICE)
def test_the_methods_made_again_exist_and_open_their_own_transaction(name: str) -> None:
    method = getattr(RDB, name)
    assert callable(method)
    assert "_create_scoped_session" in inspect.getsource(method), (
        f"RDBStorage.{name} no longer opens a transaction of its own"
    )


def test_the_internals_read_are_where_they_were(tmp_path: Path) -> None:
    from optuna.storages._rdb import models

    assert "skip_table_creation" in inspect.signature(RDB.__init__).parameters
    for column in ("key", "value_json", "trial"):
        assert hasattr(models.TrialSystemAttributeModel, column)
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(storage=storage)
    assert study._storage._backend is storage  # type: ignore[attr-defined]
    call = optuna.storages.RetryHeartbeatStaleTrialCallback.__call__
    assert list(inspect.signature(call).parameters) == ["self", "study", "trial"]


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_the_study_storage_trial_id_live_trial_and_retry_history_read_as_tuner_reads_them(
    tmp_path: Path,
) -> None:
    from tuner.storage import is_retry, live_trial, study_storage, trial_id
    from tuner.storage.optuna_internals import repeats

    storage = open_storage(f"sqlite:///{tmp_path / 'f.db'}")
    study = optuna.create_study(storage=storage)
    # The study's own view: a trial added through it is one the study sees at once.
    view = study_storage(study)
    assert isinstance(view, optuna.storages.BaseStorage)
    made = view.create_new_trial(study._study_id)  # type: ignore[attr-defined]
    [frozen] = study.get_trials(deepcopy=False)
    assert trial_id(frozen) == made and view.get_trial(made).number == frozen.number
    # A trial claimed by hand becomes a live trial the study can tell, as `ask` makes one.
    view.set_trial_state_values(made, state=TrialState.RUNNING)
    live = live_trial(study, made)
    assert trial_id(live) == made and live.number == frozen.number
    live.set_user_attr("k", 1)
    study.tell(live, state=TrialState.FAIL)
    # Optuna's retry callback marks its retry with the history tuner counts.
    failed = study.get_trials(deepcopy=False)[0]
    optuna.storages.RetryHeartbeatStaleTrialCallback()(study, failed)
    first, retry = study.get_trials(deepcopy=False)
    assert not is_retry(first) and is_retry(retry)
    assert repeats(first) == [] and repeats(retry) == [first.number]
    assert retry.system_attrs["retry_history"] == [first.number]


def test_no_private_optuna_name_is_used_outside_the_fence() -> None:
    import re

    import tuner

    root = Path(tuner.__file__).parent
    private = re.compile(
        r"\._storage\b|\._trial_id\b|\._study_id\b|\._backend\b|optuna\.Trial\(|"
        r"retry_history|optuna\.[a-z_.]*\._[a-z]"
    )
    found = [
        f"{path.relative_to(root)}:{n}: {line.strip()}"
        for path in sorted(root.rglob("*.py"))
        if path.name != "optuna_internals.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if private.search(line)
    ]
    assert found == []


# --- the paths tuner relies on, watched by spies around the real methods -----------------------


@pytest.fixture
def spies(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[tuple[Any, ...]]]:
    calls: dict[str, list[tuple[Any, ...]]] = {}
    # The overridden methods, on Optuna's class; the ones made again, on ours.
    for cls, name in [
        *((RDB, name) for name in OVERRIDDEN),
        (ReconnectingStorage, "_get_trials"),
        (ReconnectingStorage, "_get_stale_trial_ids"),
    ]:
        real = getattr(cls, name)

        def spy(self: Any, *args: Any, _real: Callable[..., Any] = real, _name: str = name,
                **kwargs: Any) -> Any:  # fmt: skip
            calls.setdefault(_name, []).append(args)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, spy)
    return calls


def _reconnecting(tmp_path: Path, **kwargs: Any) -> ReconnectingStorage:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ReconnectingStorage(
            f"sqlite:///{tmp_path / 'r.db'}", reconnect_timeout=10, **kwargs
        )


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_the_storage_calls_the_overridden_methods_where_tuner_relies_on_them(
    tmp_path: Path, spies: dict[str, list[tuple[Any, ...]]]
) -> None:
    from tuner.storage import RetryOnce

    storage = _reconnecting(
        tmp_path, heartbeat_interval=1, grace_period=1, heartbeat_stale_trial_callback=RetryOnce()
    )
    study = optuna.create_study(study_name="s", storage=storage)
    study.enqueue_trial({"x": 1.0})  # a queued trial: created from a template, with our token
    [(_, template)] = spies["_create_new_trial"]
    [(_, prepared, _)] = spies["_get_prepared_new_trial"]
    assert CREATE_TOKEN in template.system_attrs and CREATE_TOKEN in prepared.system_attrs
    trial = claim(study)  # claiming and finishing go through set_trial_state_values
    assert trial is not None
    assert spies["set_trial_state_values"][-1][1] == TrialState.RUNNING
    assert spies["_get_trials"], "Study.get_trials no longer reads through _get_trials"
    study.tell(trial, 1.0)
    assert spies["set_trial_state_values"][-1][1:] == (TrialState.COMPLETE, [1.0])

    study.enqueue_trial({"x": 2.0})
    stale = claim(study)
    assert stale is not None
    time.sleep(2.5)
    optuna.storages.fail_stale_trials(study)  # the retry is queued from a template too
    assert spies["_get_stale_trial_ids"]
    assert spies["set_trial_state_values"][-1][1] == TrialState.FAIL
    retry = study.trials[-1]
    assert (retry.state, retry.user_attrs[RETRY_OF]) == (TrialState.WAITING, stale.number)
    assert CREATE_TOKEN in spies["_get_prepared_new_trial"][-1][1].system_attrs


# --- a COMMIT whose answer is lost, on SQLite --------------------------------------------------


def lose_commit_answer(engine: sqlalchemy.engine.Engine, statement: str) -> None:
    """Commit the next transaction of `engine` that runs a statement starting with `statement`,
    then say the connection failed, as when the server's answer to a COMMIT is lost."""
    state = {"seen": False, "done": False}

    def watch(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        state["seen"] = state["seen"] or sql.startswith(statement)

    def commit(conn: Any) -> None:
        if state["seen"] and not state["done"]:
            state["done"] = True
            conn.connection.dbapi_connection.commit()  # the work is done...
            raise sqlalchemy.exc.OperationalError(  # ... and its answer lost
                "COMMIT", {}, sqlite3.OperationalError("the answer to COMMIT was lost")
            )

    event.listen(engine, "before_cursor_execute", watch)
    event.listen(engine, "commit", commit)


def _storage(kind: str, tmp_path: Path) -> RDB:
    if kind == "ours":
        return _reconnecting(tmp_path)
    return RDB(f"sqlite:///{tmp_path / 'r.db'}")


@pytest.mark.parametrize("kind", ["ours", "stock"])
def test_a_trial_creation_whose_commit_answer_was_lost_is_not_repeated(
    tmp_path: Path, kind: str
) -> None:
    storage = _storage(kind, tmp_path)
    study = optuna.create_study(study_name="s", storage=storage)
    lose_commit_answer(storage.engine, "INSERT INTO trials ")
    study.enqueue_trial({"x": 1.0})
    trials = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'r.db'}").trials
    # Stock Optuna makes the creation again, and a second trial: the fault is real.
    assert len(trials) == (1 if kind == "ours" else 2)


@pytest.mark.parametrize("kind", ["ours", "stock"])
def test_a_tell_whose_commit_answer_was_lost_is_recorded_once(tmp_path: Path, kind: str) -> None:
    storage = _storage(kind, tmp_path)
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    lose_commit_answer(storage.engine, "UPDATE trials SET state")
    if kind == "ours":
        study.tell(trial, 0.5)
    else:  # a worker on stock Optuna would stop here
        with pytest.raises(optuna.exceptions.StorageInternalError):
            study.tell(trial, 0.5)
    [stored] = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'r.db'}").trials
    assert (stored.state, stored.value) == (TrialState.COMPLETE, 0.5)


# --- Optuna's gRPC proxy (tuner storage-proxy, grpc:// URLs) -----------------------------------


def test_the_proxy_server_is_built_as_optunas_own() -> None:
    from optuna.storages._grpc import server

    made = inspect.getsource(server.make_server)
    assert "add_StorageServiceServicer_to_server" in made
    assert "OptunaStorageProxyService(storage)" in made


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_the_proxy_client_is_set_up_as_optunas_own() -> None:
    import re

    from optuna.storages._grpc.client import GrpcClientCache

    from tuner.storage.proxy_client import ProxyStorage

    proxy = optuna.storages.GrpcStorageProxy
    assert list(inspect.signature(proxy.__init__).parameters) == ["self", "host", "port"]
    assert list(inspect.signature(GrpcClientCache.__init__).parameters) == ["self", "grpc_client"]
    # Our `_setup` sets what Optuna's does; the methods read nothing else of the instance.
    # Built directly: `open_storage` would wait for a proxy to answer on port 1.
    stock = proxy(host="localhost", port=1)
    ours = ProxyStorage("grpc://localhost:1", "localhost", 1, reconnect_timeout=1)
    assert set(vars(stock)) == {"_host", "_port", "_channel", "_stub", "_cache"}
    assert {k: type(v) for k, v in vars(stock).items() if k != "_cache"} == {
        k: type(v) for k, v in vars(ours).items() if k in vars(stock) and k != "_cache"
    }
    read = set(re.findall(r"self\.(_[a-z]\w*)", inspect.getsource(proxy)))
    assert read <= {"_host", "_port", "_channel", "_stub", "_cache", "_setup"}
    # Our cache in place of Optuna's: these are all the calls the client makes of it.
    assert isinstance(stock._cache, GrpcClientCache)
    assert set(re.findall(r"self\._cache\.(\w+)\(", inspect.getsource(proxy))) == {
        "get_all_trials",
        "delete_study_cache",
    }
    for name in ("get_all_trials", "delete_study_cache"):
        assert inspect.signature(getattr(GrpcClientCache, name)) == inspect.signature(
            getattr(type(ours._cache), name)
        )
    stock.close()
    ours.close()


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_optunas_client_asks_get_trials_for_its_unfinished_and_newer_trials() -> None:
    """What `tuner.storage.proxy_cache` asks, as Optuna's cache asks it."""
    from optuna.storages._grpc.client import GrpcClientCache

    source = inspect.getsource(GrpcClientCache._read_trials_from_remote_storage)
    assert "included_trial_ids=study.unfinished_trial_ids" in source
    assert "trial_id_greater_than=study.last_finished_trial_id" in source
    source = inspect.getsource(GrpcClientCache._add_trial_to_cache)
    assert "max(study.last_finished_trial_id, trial._trial_id)" in source
    source = inspect.getsource(GrpcClientCache.get_all_trials)
    assert "sorted(trials.values(), key=lambda t: t.number)" in source


def test_get_trials_reads_what_optunas_servicer_reads(tmp_path: Path) -> None:
    """Our `GetTrials` (`asked_trials`) answers as Optuna's servicer, on the RDB storage's own
    query, whose signature is the one it was written for."""
    from optuna.storages._grpc.auto_generated import api_pb2
    from optuna.storages._grpc.servicer import OptunaStorageProxyService, _to_proto_trial

    from tuner.storage.optuna_internals import asked_trials

    params = ["self", "study_id", "states", "included_trial_ids", "trial_id_greater_than"]
    assert list(inspect.signature(RDB._get_trials).parameters) == params
    assert list(inspect.signature(_to_proto_trial).parameters) == ["trial"]
    source = inspect.getsource(OptunaStorageProxyService.GetTrials)
    assert "t._trial_id > trial_id_greater_than or t._trial_id in included_trial_ids" in source
    # What the caching storage is told of the trials read (`asked_trials`), as its own read
    # tells it, and where it needs it.
    from optuna.storages._cached_storage import _CachedStorage

    source = inspect.getsource(_CachedStorage._read_trials_from_remote_storage)
    assert "self._studies[study_id] = _StudyInfo()" in source
    assert "self._add_trials_to_cache(study_id, trials)" in source
    assert "self._trial_id_to_study_id_and_number[trial_id]" in inspect.getsource(
        _CachedStorage.set_trial_param
    )
    # `ProxyService.SetTrialParameter` sets parameters through Optuna's service on the caching
    # storage's backend: the caching storage holds its lock for the whole database call.
    cached = optuna.storages.get_storage(f"sqlite:///{tmp_path / 'c.db'}")
    assert isinstance(cached, _CachedStorage)
    assert isinstance(cached._backend, RDB) and cached._trial_id_to_study_id_and_number == {}
    assert "self._backend.set_trial_param(" in inspect.getsource(
        OptunaStorageProxyService.SetTrialParameter
    )
    held = inspect.getsource(_CachedStorage.set_trial_param)
    assert held.index("with self._lock:") < held.index("self._backend._set_trial_param(")
    assert list(inspect.signature(_CachedStorage._add_trials_to_cache).parameters) == [
        "self",
        "study_id",
        "trials",
    ]
    assert {f.name for f in api_pb2.GetTrialsRequest.DESCRIPTOR.fields} == {
        "study_id",
        "included_trial_ids",
        "trial_id_greater_than",
    }

    storage = optuna.storages.get_storage(open_storage(f"sqlite:///{tmp_path / 'g.db'}"))
    study = optuna.create_study(storage=storage)
    for i in range(6):
        trial = study.ask()
        if i % 2:
            study.tell(trial, i)
    ids = [t._trial_id for t in study.get_trials()]
    stock = OptunaStorageProxyService(storage)
    for included, greater_than in [(set(), -1), ({ids[0], ids[2]}, ids[3]), (set(), ids[5])]:
        request = api_pb2.GetTrialsRequest(
            study_id=study._study_id,
            included_trial_ids=included,
            trial_id_greater_than=greater_than,
        )
        ours = asked_trials(storage, study._study_id, included, greater_than)
        assert [_to_proto_trial(t) for t in ours] == list(stock.GetTrials(request, None).trials)
    with pytest.raises(KeyError):
        asked_trials(storage, study._study_id + 1, set(), -1)


def test_fail_stale_trials_asks_a_heartbeat_storage_for_its_stale_trials() -> None:
    from optuna.storages._heartbeat import BaseHeartbeat

    assert BaseHeartbeat.__abstractmethods__ == {
        "record_heartbeat",
        "_get_stale_trial_ids",
        "get_heartbeat_interval",
        "get_heartbeat_stale_trial_callback",
    }
    source = inspect.getsource(optuna.storages.fail_stale_trials)
    assert "isinstance(storage, BaseHeartbeat)" in source
    assert "storage._get_stale_trial_ids(study._study_id)" in source


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
def test_stale_trials_are_found_with_a_given_grace_period_as_the_rdb_storage_finds_them(
    tmp_path: Path,
) -> None:
    import re

    from tuner.storage.optuna_internals import stale_trial_ids

    read = set(re.findall(r"self\.(\w+)", inspect.getsource(RDB._get_stale_trial_ids)))
    assert read == {"heartbeat_interval", "grace_period", "scoped_session"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        beating = RDB(f"sqlite:///{tmp_path / 'h.db'}", heartbeat_interval=1, grace_period=1)
    plain = open_storage(f"sqlite:///{tmp_path / 'h.db'}")  # opened without heartbeats
    study = optuna.create_study(study_name="s", storage=beating)
    ids = [study.ask()._trial_id for _ in range(2)]
    beating.record_heartbeat(ids[0])
    assert stale_trial_ids(plain, study._study_id, 1) == beating._get_stale_trial_ids(1) == []
    time.sleep(2.2)  # SQLite's clock counts whole seconds
    beating.record_heartbeat(ids[1])
    assert stale_trial_ids(plain, study._study_id, 1) == beating._get_stale_trial_ids(1)
    assert stale_trial_ids(plain, study._study_id, 1) == [ids[0]]
    assert stale_trial_ids(plain, study._study_id, 60) == []


def test_a_trial_template_that_carries_a_token_keeps_it(
    tmp_path: Path, spies: dict[str, list[tuple[Any, ...]]]
) -> None:
    """The proxy's client gives the token itself, to look for it after a lost answer."""
    storage = _reconnecting(tmp_path)
    study = optuna.create_study(study_name="s", storage=storage)
    template = optuna.trial.create_trial(state=TrialState.WAITING, system_attrs={})
    template.system_attrs = {CREATE_TOKEN: "client's"}
    storage.create_new_trial(study._study_id, template)
    assert study.trials[0].system_attrs[CREATE_TOKEN] == "client's"
