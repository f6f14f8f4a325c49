"""The storage through `tuner storage-proxy` (grpc://host:port): its URLs, its leases, locks and
heartbeats through a real gRPC server, and real workers through a real proxy process, restarted
under them."""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from click.testing import CliRunner
from conftest import FAST_SPACE
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from tuner.cli import cli
from tuner.config import WorkersConfig
from tuner.errors import StorageError
from tuner.search.queue import ProxyRefill
from tuner.storage import CREATE_TOKEN, locked, open_storage, study_storage, trial_id
from tuner.storage.optuna_internals import proxy_server
from tuner.storage.proxy_client import LEASE_S, RENEW_S, ProxyStorage, ProxyUnavailable
from tuner.storage.proxy_server import Leases, tuner_service
from tuner.storage.proxy_stats import CallStats
from tuner.storage.urls import parse_grpc

# --- URLs --------------------------------------------------------------------------------------


def test_a_grpc_url_names_a_host_and_a_port() -> None:
    assert parse_grpc("grpc://proxy-host:14000") == ("proxy-host", 14000)
    assert parse_grpc("grpc://10.0.0.5") == ("10.0.0.5", 13000)  # Optuna's default port
    assert parse_grpc("grpc://[::1]:14000") == ("::1", 14000)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("grpc://:14000", r"storage URL grpc://:14000: no host \(it should look like grpc://"),
        ("grpc://host:port", r": the port is not a number 0-65535 \(it should look like"),
        ("grpc://host:70000", r": the port is not a number 0-65535"),
        ("grpc://host:0", r"grpc://host:0: port 0 is no port to reach"),
        ("grpc://host:14000/tuner", r"a gRPC proxy URL holds a host and a port, and a token"),
        ("grpc://tuner:secret@host:14000", r"grpc://tuner:\*\*\*@host:14000: a gRPC proxy URL"),
    ],
)
def test_a_bad_grpc_url_gets_one_line_and_exit_2(url: str, message: str) -> None:
    result = CliRunner().invoke(cli, ["studies", "--storage", url])
    assert result.exit_code == 2
    [line] = result.output.splitlines()
    assert line.startswith("Error: storage URL ")
    assert "secret" not in line
    with pytest.raises(StorageError, match=message):
        open_storage(url)


def test_the_proxy_serves_a_database_not_another_proxy() -> None:
    result = CliRunner().invoke(cli, ["storage-proxy", "--storage", "grpc://host:14000"])
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        "Error: storage grpc://host:14000: a proxy serves a database (sqlite:// or "
        "postgresql://), not another proxy"
    ]


def test_a_proxy_that_does_not_answer_gets_one_line_not_minutes_of_retries() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free, and nothing listens on it
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["studies", "--storage", f"grpc://127.0.0.1:{port}"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"Error: storage grpc://127.0.0.1:{port}: no storage proxy answers at 127.0.0.1:{port} "
        "within 10 s (start one there with `tuner storage-proxy`; one started with --tls-cert "
        "is reached on grpcs://)"
    ]
    assert time.monotonic() - started < 60  # not the 300 s of reconnect_timeout


def test_a_taken_port_gets_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            cli,
            ["storage-proxy", "--storage", f"sqlite:///{tmp_path / 't.db'}"]
            + ["--host", "127.0.0.1", "--port", str(port)],
        )
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        f"Error: cannot listen on 127.0.0.1:{port}: the port is taken (another proxy?) or the "
        "host is not an address of this machine"
    ]
    assert not (tmp_path / "t.db").exists()  # refused before anything was written


# --- leases ------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_lease_is_held_by_one_token_until_released_or_expired() -> None:
    clock = Clock()
    leases = Leases(6, clock)
    assert not leases.acquire("q", "a")  # a proxy just started grants none yet
    clock.now += 6
    assert leases.acquire("q", "a") and leases.acquire("q", "a")  # asking twice is harmless
    assert not leases.acquire("q", "b") and leases.acquire("other", "b")
    clock.now += 5
    assert leases.renew("q", "a") and not leases.renew("q", "b")
    clock.now += 5
    assert not leases.acquire("q", "b")  # renewed 5 s ago: still a's
    leases.release("q", "b")  # not b's to release
    assert not leases.acquire("q", "b")
    leases.release("q", "a")
    assert leases.acquire("q", "b")
    clock.now += 6.1  # b died: its lease expires, and b cannot renew it any more
    assert not leases.renew("q", "b") and leases.acquire("q", "c")


def test_the_proxys_own_lock_excludes_clients_and_does_not_expire() -> None:
    from tuner.storage import Busy

    clock = Clock()
    leases = Leases(6, clock)
    with pytest.raises(Busy):  # a proxy just started grants none yet, to itself neither
        with leases.exclusive("q", wait=False):
            pass
    clock.now += 6
    assert leases.acquire("q", "a")
    with pytest.raises(Busy):  # a client holds it
        with leases.exclusive("q", wait=False):
            pass
    leases.release("q", "a")
    with leases.exclusive("q", wait=False):
        assert not leases.acquire("q", "b")
        clock.now += 600  # held by the proxy's own process: no renewal to miss
        assert not leases.acquire("q", "b")
    assert leases.acquire("q", "b")  # released with the block


# --- a real gRPC server in this process --------------------------------------------------------


@contextlib.contextmanager
def served(
    tmp_path: Path,
    tuners: bool = True,
    storage_url: str | None = None,
    stats: CallStats | None = None,
) -> Iterator[str]:
    """The grpc:// URL of a server in this process, on a storage (`storage_url`, or a SQLite
    one): Optuna's proxy service and (`tuners`) tuner's, which grants leases at once (no restart
    to wait for); `stats`: what counts the calls it serves."""
    storage = open_storage(storage_url or f"sqlite:///{tmp_path / 'served.db'}")
    cached = optuna.storages.get_storage(storage)
    server = proxy_server(cached, 4, [stats.interceptor()] if stats else [])
    if tuners:
        leases = Leases(LEASE_S, opens_after=0)
        server.add_generic_rpc_handlers(
            (tuner_service(storage, leases, ProxyRefill(cached, leases)),)
        )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"grpc://127.0.0.1:{port}"
    finally:
        server.stop(grace=None).wait()


def _client(url: str, **workers: int) -> ProxyStorage:
    storage = open_storage(url, WorkersConfig(**workers) if workers else None)
    assert isinstance(storage, ProxyStorage)
    return storage


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_reads_through_the_proxy_are_the_databases(tmp_path: Path, storage_url: str) -> None:
    """The proxy reads only the trials a client asks for, and the client keeps the rest: what
    it reads is still the study as the database holds it, and as Optuna's client reads it."""
    with served(tmp_path, storage_url=storage_url) as url:
        ours, writer = _client(url), _client(url)
        stock = optuna.storages.GrpcStorageProxy(host="127.0.0.1", port=parse_grpc(url)[1])
        study = optuna.create_study(storage=writer, study_name="s")
        study_id = study._study_id
        database = optuna.storages.RDBStorage(storage_url)  # no cache, no proxy
        unfinished = (TrialState.WAITING, TrialState.RUNNING)
        asked = [None, unfinished, (TrialState.COMPLETE,), [TrialState.FAIL, TrialState.RUNNING]]

        def read_alike() -> None:
            # One by one first: what the last read left on the proxy must not be stale.
            for trial in database.get_all_trials(study_id):
                assert ours.get_trial(trial_id(trial)) == trial
            for states in asked:
                expected = database.get_all_trials(study_id, states=states)
                assert ours.get_all_trials(study_id, states=states) == expected, states
                assert stock.get_all_trials(study_id, states=states) == expected, states

        read_alike()  # no trials yet
        for x in range(6):
            study.enqueue_trial({"x": x})
        read_alike()
        ids = [trial_id(t) for t in database.get_all_trials(study_id)]
        for i in ids[:4]:  # claimed, then finished in an order of their own
            writer.set_trial_state_values(i, TrialState.RUNNING)
        read_alike()
        writer.set_trial_state_values(ids[2], TrialState.COMPLETE, [0.5])
        writer.set_trial_user_attr(ids[0], "epochs", 3)  # an unfinished trial changes
        writer.set_trial_intermediate_value(ids[1], 0, 0.9)
        read_alike()
        writer.set_trial_state_values(ids[1], TrialState.PRUNED, [0.9])
        writer.set_trial_state_values(ids[0], TrialState.FAIL)
        study.enqueue_trial({"x": 6})  # a new trial after the newest finished one
        read_alike()
        ids = [trial_id(t) for t in database.get_all_trials(study_id)]
        for i in ids[3:]:
            writer.set_trial_state_values(i, TrialState.RUNNING)
            writer.set_trial_state_values(i, TrialState.COMPLETE, [float(i)])
            read_alike()
        stock.close()


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_locks_through_the_proxy_exclude_other_clients(tmp_path: Path) -> None:
    with served(tmp_path) as url:
        a, b = _client(url), _client(url)
        study = optuna.create_study(storage=a, study_name="s")
        inside: list[str] = []

        def hold(storage: ProxyStorage, who: str) -> None:
            def body() -> None:
                inside.append(f"{who} in")
                study.set_user_attr(who, 1)  # a storage call under the lock
                time.sleep(0.5)
                inside.append(f"{who} out")

            locked(storage, "queue:s", body)

        threads = [threading.Thread(target=hold, args=(s, w)) for s, w in ((a, "a"), (b, "b"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert inside in (["a in", "a out", "b in", "b out"], ["b in", "b out", "a in", "a out"])


def test_a_lock_held_through_the_proxy_is_not_waited_for_when_asked(tmp_path: Path) -> None:
    from test_storage import assert_lock_skipped_while_held

    with served(tmp_path) as url:
        assert_lock_skipped_while_held(_client(url), _client(url))


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_claims_through_the_proxy_at_once_take_different_trials(
    tmp_path: Path, storage_url: str
) -> None:
    # Each claim is one call, answered in one transaction that skips the trials other claims
    # hold: 8 clients claiming at once from a queue of 8 each get one, none twice, and the
    # proxy refills the queue as it runs down; once the budget is spent, a claim gets None.
    from tuner.search.queue import claim, count, set_budget

    with served(tmp_path, storage_url=storage_url) as url:
        clients = [_client(url, heartbeat_interval=5, grace_period=30) for _ in range(8)]
        study = optuna.create_study(storage=clients[0], study_name="s")
        studies = [study] + [optuna.load_study(study_name="s", storage=c) for c in clients[1:]]
        set_budget(study, 12)
        assert count(study).waiting == 8
        start = threading.Barrier(8)
        got: list[optuna.Trial | None] = [None] * 8

        def take(i: int) -> None:
            start.wait()
            got[i] = claim(studies[i])

        threads = [threading.Thread(target=take, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        taken = [t.number for t in got if t is not None]
        assert sorted(taken) == list(range(8))
        database = optuna.load_study(study_name="s", storage=storage_url)
        assert [t.number for t in database.get_trials(states=(TrialState.RUNNING,))] == list(
            range(8)
        )
        # Refilled by the proxy, after the claims were answered, to the rest of the budget.
        assert _soon(lambda: count(study).waiting == 4)
        rest = [claim(study) for _ in range(4)]
        assert [t.number for t in rest if t is not None] == [8, 9, 10, 11]
        assert claim(study) is None
        for trial in got + rest:
            assert trial is not None
            study.tell(trial, 0.0)
        assert len(database.get_trials(states=(TrialState.COMPLETE,))) == 12
        assert claim(study) is None


def _soon(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Whether `check()` holds within `timeout` seconds (what the proxy does after answering)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_claims_through_the_proxy_never_wait_for_the_queues_lock(tmp_path: Path) -> None:
    # The proxy refills the queue itself, under the lock workers take (a worker refills too
    # when it sets the budget): while a worker holds it, claims are answered at once, those
    # that find nothing queued with None, and the queue refills once the lock is free.
    from tuner.search.queue import claim, count, set_budget

    with served(tmp_path) as url:
        study = optuna.create_study(storage=_client(url, heartbeat_interval=5), study_name="s")
        set_budget(study, 20)
        assert count(study).waiting == 8
        other = _client(url)
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            with other.exclusive("queue:s"):
                held.set()
                release.wait(30)

        holder = threading.Thread(target=hold)
        holder.start()
        held.wait(10)
        started = time.monotonic()
        claimed = [claim(study) for _ in range(8)]  # under half queued from the 5th on
        assert all(t is not None for t in claimed)
        assert claim(study) is None  # nothing queued, and the refill held off
        assert time.monotonic() - started < 5  # not the 30 s the lock is held
        assert count(study).waiting == 0
        release.set()
        holder.join(10)
        again = claim(study)  # found nothing: started a refill, waited for it, claimed
        assert again is not None and again.number == 8
        assert count(study).waiting > 0


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_worker_that_found_nothing_learns_from_its_claim_whether_trials_run(
    tmp_path: Path,
) -> None:
    # Idle workers asked the study for its running trials, and each such read brought every
    # trial finished since their last: hundreds each for 256 idle workers, which stalled the
    # proxy. The claim's answer says how many run.
    from tuner.search.queue import claim, running_elsewhere, set_budget

    stats = CallStats()
    with served(tmp_path, stats=stats) as url:
        study = optuna.create_study(storage=_client(url, heartbeat_interval=5), study_name="s")
        set_budget(study, 3)
        trials = [claim(study) for _ in range(3)]
        assert claim(study) is None
        stats.line()  # counted afresh from here
        assert running_elsewhere(study)
        assert "GetTrials" not in stats.line()
        for trial in trials:
            assert trial is not None
            study.tell(trial, 1.0)
        stats.line()
        assert claim(study) is None
        assert not running_elsewhere(study)
        assert "GetTrials" not in stats.line()  # the budget spent: nothing counted
        assert not running_elsewhere(study)  # asked again: read from the study


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_heartbeats_through_the_proxy_fail_a_stale_trial_and_queue_its_retry(
    tmp_path: Path,
) -> None:
    with served(tmp_path) as url:
        storage = _client(url, heartbeat_interval=1, grace_period=2)
        study = optuna.create_study(storage=storage, study_name="s")
        study.enqueue_trial({"x": 1})
        [waiting] = study.get_trials()
        view = study_storage(study)
        view.record_heartbeat(trial_id(waiting))
        assert view.set_trial_state_values(trial_id(waiting), TrialState.RUNNING)
        assert optuna.storages.fail_stale_trials(study) is None and [
            t.state for t in study.get_trials()
        ] == [TrialState.RUNNING]
        time.sleep(3)  # past the grace period, by the database's clock
        optuna.storages.fail_stale_trials(study)
        failed, retry = study.get_trials()
    assert failed.state == TrialState.FAIL
    assert retry.state == TrialState.WAITING and retry.user_attrs == {"retry_of": 0}


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_proxy_without_tuners_service_is_refused_in_one_line(tmp_path: Path) -> None:
    with served(tmp_path, tuners=False) as url:
        storage = _client(url, heartbeat_interval=1, grace_period=2)
        study = optuna.create_study(storage=storage, study_name="s")  # Optuna's calls work
        with pytest.raises(StorageError, match=r"serves no locks or heartbeats: start it with"):
            locked(storage, "queue:s", lambda: None)
        with pytest.raises(StorageError, match=r"serves no locks or heartbeats"):
            optuna.storages.fail_stale_trials(study)


@pytest.mark.slow  # waits out a lease period
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_lock_lost_with_a_restarted_proxy_makes_the_block_again_under_a_fresh_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'served.db'}")

    def start(port: int, leases: Leases) -> Any:
        cached = optuna.storages.get_storage(storage)
        server = proxy_server(cached, 4)
        server.add_generic_rpc_handlers(
            (tuner_service(storage, leases, ProxyRefill(cached, leases)),)
        )
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        return server, bound

    server, port = start(0, Leases(LEASE_S, opens_after=0))
    client = _client(f"grpc://127.0.0.1:{port}")
    study = optuna.create_study(storage=client, study_name="s")
    runs: list[str] = []
    restarted: list[float] = []

    def body() -> None:
        runs.append("started")
        if len(runs) == 1:  # the proxy restarts under the lock: it knows no leases
            nonlocal server
            server.stop(grace=None).wait()
            server, _ = start(port, Leases(LEASE_S))
            restarted.append(time.monotonic())
            time.sleep(2 * RENEW_S)  # the lease's renewal is refused meanwhile
        study.set_user_attr("written", len(runs))
        runs.append("wrote")

    try:
        with caplog.at_level(logging.WARNING, logger="tuner.storage"):
            locked(client, "queue:s", body)
    finally:
        server.stop(grace=None).wait()
    # Made again from its start, under a lock the new proxy granted once its first lease
    # period was over: never carried on unlocked.
    assert runs == ["started", "started", "wrote"]
    assert time.monotonic() - restarted[0] >= LEASE_S
    assert "the lock 'queue:s' was lost" in caplog.text


def _answer_lost_once(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """The next call of Optuna's client method `name` lands, and its answer is lost."""
    real = getattr(optuna.storages.GrpcStorageProxy, name)
    lost = []

    def landed_but_lost(self: ProxyStorage, *args: Any, **kwargs: Any) -> Any:
        result = real(self, *args, **kwargs)
        if not lost:
            lost.append(name)
            raise ProxyUnavailable("the answer was lost")
        return result

    monkeypatch.setattr(optuna.storages.GrpcStorageProxy, name, landed_but_lost)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_calls_whose_answer_was_lost_are_found_not_repeated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with served(tmp_path) as url:
        study = optuna.create_study(storage=_client(url), study_name="s")
        _answer_lost_once(monkeypatch, "create_new_trial")
        study.enqueue_trial({"x": 1})
        [trial] = study.get_trials()  # one trial, not two
        assert trial.system_attrs[CREATE_TOKEN]
        view = study_storage(study)
        assert view.set_trial_state_values(trial_id(trial), TrialState.RUNNING)
        _answer_lost_once(monkeypatch, "set_trial_state_values")
        assert view.set_trial_state_values(trial_id(trial), TrialState.COMPLETE, [0.5])
        [told] = study.get_trials()
    assert (told.state, told.values) == (TrialState.COMPLETE, [0.5])


def test_a_trial_this_proxy_has_not_read_gets_its_parameters(tmp_path: Path) -> None:
    """A worker that claimed a trial through a proxy before it restarted samples the trial's
    parameters through the new one, before any read: the parameter is set, not a KeyError
    that fails the trial."""
    with served(tmp_path) as url:
        study = optuna.create_study(storage=_client(url), study_name="s")
        # Made past the proxy, as through the proxy before its restart.
        database = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'served.db'}")
        made = database.create_new_trial(study._study_id)
        client = _client(url)
        client.set_trial_param(made, "x", 0.5, optuna.distributions.FloatDistribution(0, 1))
        # And a second parameter, once the proxy has read the trial.
        [read] = client.get_all_trials(study._study_id)
        client.set_trial_param(made, "y", 2.0, optuna.distributions.FloatDistribution(0, 4))
        assert database.get_trial(made).params == {"x": 0.5, "y": 2.0}
        assert read.number == 0


# --- real workers through a real proxy process -------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_proxy(
    storage_url: str,
    port: int,
    cwd: Path,
    *options: str,
    tls: tuple[Path, Path] | None = None,
    token: str | None = None,
) -> subprocess.Popen[str]:
    """`tuner storage-proxy` on `storage_url` at 127.0.0.1:`port`, once it listens, checking the
    line it starts with; `tls`: its certificate and key; `token`: its $TUNER_PROXY_TOKEN."""
    if tls is not None:
        options += ("--tls-cert", str(tls[0]), "--tls-key", str(tls[1]))
    env = {k: v for k, v in os.environ.items() if k != "TUNER_PROXY_TOKEN"}
    proxy = subprocess.Popen(
        [sys.executable, "-m", "tuner", "storage-proxy", "--storage", storage_url]
        + ["--host", "127.0.0.1", "--port", str(port), *options],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env if token is None else {**env, "TUNER_PROXY_TOKEN": token},
    )
    assert proxy.stdout is not None
    line = proxy.stdout.readline()  # the line at start, once it listens
    assert line.startswith("serving storage "), line + proxy.stderr.read()  # type: ignore[union-attr]
    shown = make_url(storage_url).render_as_string(hide_password=True)
    address = f"{'grpc' if tls is None else 'grpcs'}://127.0.0.1:{port}"
    giving = "" if token is None else ", giving $TUNER_PROXY_TOKEN"
    assert line == f"serving storage {shown} at {address} (workers: --storage {address}{giving})\n"
    return proxy


def test_the_proxy_says_which_calls_it_served_when_asked(tmp_path: Path) -> None:
    port = _free_port()
    proxy = _start_proxy(f"sqlite:///{tmp_path / 't.db'}", port, tmp_path, "--stats", "1")
    try:
        storage = _client(f"grpc://127.0.0.1:{port}")
        study = optuna.create_study(storage=storage, study_name="s")
        for i in range(5):
            study.set_user_attr(f"a{i}", i)
        assert proxy.stdout is not None
        lines = [proxy.stdout.readline() for _ in range(2)]
    finally:
        _stop(proxy)
    said = next(line for line in lines if "SetStudyUserAttribute" in line)
    found = re.fullmatch(
        r"calls: (\d+) calls in 1 s \(\d+/s\), \d+% of the wall time in calls: (.*)\n", said
    )
    assert found, said
    assert int(found.group(1)) >= 6  # the study's creation, its 5 attributes
    assert re.search(r"SetStudyUserAttribute 5 x [\d.]+ ms", found.group(2))


def test_call_stats_count_time_and_reset() -> None:
    from tuner.storage.proxy_stats import CallStats

    now = [0.0]
    stats = CallStats(clock=lambda: now[0])
    stats.add("GetTrials", 0.5)
    stats.add("GetTrials", 1.5)
    stats.add("Renew", 0.1)
    now[0] = 4.0
    assert stats.line() == (
        "3 calls in 4 s (1/s), 52% of the wall time in calls: GetTrials 2 x 1000.0 ms, "
        "Renew 1 x 100.0 ms"
    )
    for _ in range(5):
        stats.add("Acquire", 0.0)
    stats.add("Renew", 0.2)
    now[0] = 5.0
    assert stats.line(top=1) == (
        "6 calls in 1 s (6/s), 20% of the wall time in calls: Renew 1 x 200.0 ms; most "
        "called of the rest: Acquire 5"
    )
    now[0] = 6.0
    assert stats.line() == "0 calls in 1 s (0/s), 0% of the wall time in calls"


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
    process.communicate()


def _assert_budget_spent_exactly(storage_url: str, name: str, budget: int) -> None:
    study = optuna.load_study(study_name=name, storage=storage_url)
    trials = study.trials
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(trials)))  # every trial number once
    states = collections.Counter(t.state for t in trials)
    # Nothing lost, nothing made twice: the budget is exactly the finished trials (a trial
    # failed on its way is repeated by a retry, which counts instead of it).
    finished = states[TrialState.COMPLETE] + states[TrialState.PRUNED]
    assert finished == budget, states
    assert states[TrialState.RUNNING] == states[TrialState.WAITING] == 0, states


def _study(write_study, name: str, budget: int) -> Path:  # type: ignore[no-untyped-def]
    return write_study(  # type: ignore[no-any-return]
        name,
        study=f'name = "{name}"\nmetric = "val_mae"\nn_trials = {budget}\nseed_configs = false',
        pruner='name = "none"',
        # Epochs enough that a trial is part-way through them for seconds, not a blink.
        training="epochs = 40\nbatch_size = 16\nsteps_per_epoch = 10\npatience = 40",
        # A long grace period: no trial goes stale while the proxy is away.
        workers="heartbeat_interval = 1\ngrace_period = 60\nreconnect_timeout = 120",
        space=FAST_SPACE,
    )


@pytest.mark.slow
def test_two_workers_through_the_proxy_spend_the_budget_exactly(
    write_study, study_dir: Path, postgres_url: str, certificate: tuple[Path, Path]
) -> None:
    # Over TLS, with the token: the launcher's worker processes give it and trust the proxy.
    path = _study(write_study, "proxied", 6)
    port = _free_port()
    cert, key = certificate
    token = "tok-83b1c0"
    # The server trusts local connections: any password reaches it, to be hidden.
    with_password = make_url(postgres_url).set(password="secret-pw")
    proxy = _start_proxy(
        with_password.render_as_string(hide_password=False),
        port,
        study_dir,
        tls=(cert, key),
        token=token,
    )
    try:
        run = subprocess.run(
            [sys.executable, "-m", "tuner", "run", str(path), "--workers", "2"]
            + ["--storage", f"grpcs://:{token}@127.0.0.1:{port}"],
            cwd=study_dir,
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "TUNER_PROXY_CA": str(cert)},
        )
        assert run.returncode == 0, run.stderr
        proxy.send_signal(signal.SIGTERM)
        out, err = proxy.communicate(timeout=30)
    finally:
        _stop(proxy)
    assert proxy.returncode == 0, err
    assert out.splitlines()[-1] == "stopped (SIGTERM)"
    for secret in ("secret-pw", token):
        assert secret not in out + err + run.stdout + run.stderr
    _assert_budget_spent_exactly(postgres_url, "proxied", 6)


@pytest.mark.slow
def test_workers_ride_out_a_proxy_restart(write_study, study_dir: Path) -> None:
    path = _study(write_study, "restart", 6)
    storage_url = f"sqlite:///{study_dir / 'tuner.db'}"
    port = _free_port()
    proxy = _start_proxy(storage_url, port, study_dir)
    run = subprocess.Popen(
        [sys.executable, "-m", "tuner", "run", str(path), "--workers", "2"]
        + ["--storage", f"grpc://127.0.0.1:{port}"],
        cwd=study_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    observer = optuna.storages.RDBStorage(storage_url)  # the database, not through the proxy

    def training() -> bool:
        """A trial has finished, and another is part-way through its epochs."""
        studies = observer.get_all_studies()
        if not studies:
            return False
        trials = observer.get_all_trials(studies[0]._study_id)
        return any(t.state == TrialState.COMPLETE for t in trials) and any(
            t.state == TrialState.RUNNING and t.intermediate_values for t in trials
        )

    try:
        deadline = time.monotonic() + 300
        while run.poll() is None and not training():
            assert time.monotonic() < deadline, "no trial got part-way"
            time.sleep(0.3)
        assert run.poll() is None, "the study finished before the proxy was killed"
        proxy.kill()  # no goodbye: calls in flight are cut off
        proxy.communicate()
        time.sleep(3)  # heartbeats, epoch reports and claims fail meanwhile
        proxy = _start_proxy(storage_url, port, study_dir)
        out, err = run.communicate(timeout=600)
    finally:
        _stop(run)
        _stop(proxy)
    assert run.returncode == 0, err
    # Each process (the launcher and both workers) says once that the proxy went, and once
    # that it came back.
    went = [line for line in err.splitlines() if " unreachable (" in line]
    back = [line for line in err.splitlines() if " reachable again after " in line]
    assert 1 <= len(went) == len(back) <= 3, err
    assert all(f"storage grpc://127.0.0.1:{port} " in line for line in went + back), err
    _assert_budget_spent_exactly(storage_url, "restart", 6)


# --- TLS and the token ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key (PEM files)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tuner test proxy")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    (folder / "proxy.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "proxy.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return folder / "proxy.crt", folder / "proxy.key"


def test_a_proxy_on_tls_with_a_token_serves_only_clients_that_give_it(
    tmp_path: Path, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = certificate
    port = _free_port()
    db = tmp_path / "t.db"
    token = "s3cret-token-2f9a"
    proxy = _start_proxy(f"sqlite:///{db}", port, tmp_path, tls=(cert, key), token=token)
    address = f"grpcs://127.0.0.1:{port}"
    try:
        monkeypatch.delenv("TUNER_PROXY_TOKEN", raising=False)
        monkeypatch.setenv("TUNER_PROXY_CA", str(cert))
        # The token in the URL, over TLS: Optuna's service and tuner's (a lock) both answer.
        storage = _client(f"grpcs://:{token}@127.0.0.1:{port}")
        study = optuna.create_study(storage=storage, study_name="s")
        assert locked(storage, "queue:s", lambda: 7) == 7
        study.enqueue_trial({})
        assert len(study.trials) == 1
        # The token from the environment instead.
        monkeypatch.setenv("TUNER_PROXY_TOKEN", token)
        assert len(optuna.load_study(study_name="s", storage=_client(address)).trials) == 1
        monkeypatch.delenv("TUNER_PROXY_TOKEN")

        def studies(url: str) -> list[str]:
            result = CliRunner().invoke(cli, ["studies", "--storage", url])
            assert result.exit_code == 2, result.output
            return result.output.splitlines()

        refused = f"Error: storage {{}}: the proxy at 127.0.0.1:{port} asks for a token and was "
        [wrong] = studies(f"grpcs://:not-{token}@127.0.0.1:{port}")
        assert wrong.startswith(refused.format(f"grpcs://:***@127.0.0.1:{port}") + "given a token")
        [none] = studies(address)
        assert none.startswith(refused.format(address) + "given no token")
        # Optuna's own service refuses a client without the token too, not only tuner's.
        bare = ProxyStorage(
            address, "127.0.0.1", port, reconnect_timeout=5, tls=True,
            root_certificates=cert.read_bytes(),
        )  # fmt: skip
        with pytest.raises(StorageError, match="asks for a token and was given no token"):
            bare.get_all_studies()
        bare.close()
        # Without TLS, a TLS proxy does not answer at all.
        [plain] = studies(f"grpc://:{token}@127.0.0.1:{port}")
        assert plain == (
            f"Error: storage grpc://:***@127.0.0.1:{port}: no storage proxy answers at "
            f"127.0.0.1:{port} within 10 s (start one there with `tuner storage-proxy`; one "
            "started with --tls-cert is reached on grpcs://)"
        )
    finally:
        proxy.send_signal(signal.SIGTERM)
        out, err = proxy.communicate(timeout=30)
    assert token not in out + err


def test_tls_files_that_are_not_a_certificate_and_its_key_get_one_line(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    db = tmp_path / "t.db"

    def proxy(*options: str) -> list[str]:
        result = CliRunner().invoke(
            cli, ["storage-proxy", "--storage", f"sqlite:///{db}", "--port", "0", *options]
        )
        assert result.exit_code == 2
        return result.output.splitlines()

    assert proxy("--tls-cert", str(cert)) == [
        "Error: --tls-cert and --tls-key go together: give both, or neither"
    ]
    assert proxy("--tls-cert", str(key), "--tls-key", str(key)) == [
        f"Error: {key}: not a PEM file holding a certificate"
    ]
    assert proxy("--tls-cert", str(cert), "--tls-key", str(cert)) == [
        f"Error: {cert}: not a PEM file holding a private key"
    ]
    assert proxy("--tls-cert", str(tmp_path / "none.crt"), "--tls-key", str(key)) == [
        f"Error: {tmp_path / 'none.crt'}: cannot read it (No such file or directory)"
    ]
    assert not db.exists()  # refused before the storage was opened
