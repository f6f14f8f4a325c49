"""Riding out a lost connection to the real PostgreSQL server: cut by a proxy in front of it,
answers lost after the server did the work, connections killed by the server, and the server
itself restarted under running workers."""

from __future__ import annotations

import collections
import logging
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from conftest import FAST_SPACE
from netfaults import Proxy, lose_commit_answer
from optuna.trial import TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from tuner.config import WorkersConfig
from tuner.errors import StorageError
from tuner.search.queue import claim
from tuner.storage import ReconnectingStorage, locked, open_storage

# The test server trusts local connections, so any password gets in: one that must never show.
PASSWORD = "Pa55-never-shown"


@pytest.fixture
def proxy(postgres_url: str):
    url = make_url(postgres_url)
    proxy = Proxy(url.host or "127.0.0.1", url.port or 5432)
    yield proxy
    proxy.down()


def through(proxy: Proxy, url: str) -> str:
    """`url` by way of `proxy`, with a password."""
    parsed = make_url(url).set(host="127.0.0.1", port=proxy.port, password=PASSWORD)
    return parsed.render_as_string(hide_password=False)


def storage_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tuner.storage"]


def test_calls_wait_for_the_server_and_carry_on_when_it_is_back(
    postgres_url: str, proxy: Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    url = through(proxy, postgres_url)
    study = optuna.create_study(
        study_name="s", storage=open_storage(url, WorkersConfig(reconnect_timeout=60))
    )
    proxy.down()
    back = threading.Timer(2.0, proxy.up)
    back.start()
    with caplog.at_level(logging.WARNING, logger="tuner.storage"):
        study.set_user_attr("written", "during the outage")
    back.join()
    assert optuna.load_study(study_name="s", storage=postgres_url).user_attrs == {
        "written": "during the outage"
    }
    lines = storage_lines(caplog)
    assert len(lines) == 2, lines  # one line when it went, one when it came back
    masked = f"storage postgresql://postgres:***@127.0.0.1:{proxy.port}/"
    assert lines[0].startswith(masked)
    assert " unreachable (" in lines[0] and "Connection refused" in lines[0]
    assert lines[0].endswith("retrying for up to 60 s")
    assert lines[1].startswith(masked) and " reachable again after " in lines[1]
    assert PASSWORD not in caplog.text


def test_a_server_gone_longer_than_reconnect_timeout_is_one_error(
    postgres_url: str, proxy: Proxy
) -> None:
    url = through(proxy, postgres_url)
    study = optuna.create_study(
        study_name="s", storage=open_storage(url, WorkersConfig(reconnect_timeout=2))
    )
    proxy.down()
    started = time.monotonic()
    with pytest.raises(
        StorageError,
        match=rf"^storage postgresql://postgres:\*\*\*@127\.0\.0\.1:{proxy.port}/\w+ "
        r"unreachable for 2 s: .*Connection refused$",
    ) as info:
        study.set_user_attr("written", "never")
    assert time.monotonic() - started >= 2
    assert PASSWORD not in str(info.value)


def test_a_wrong_request_is_not_retried(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    storage = open_storage(postgres_url)
    assert isinstance(storage, ReconnectingStorage)
    with pytest.raises(KeyError, match="Record does not exist"):
        storage.get_study_id_from_name("no-such-study")
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    study.tell(trial, 1.0)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_user_attr(trial._trial_id, "late", 1)
    assert storage_lines(caplog) == []


def test_connections_the_server_killed_are_replaced_unnoticed(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    storage = open_storage(postgres_url, WorkersConfig())
    study = optuna.create_study(study_name="s", storage=storage)
    database = make_url(postgres_url).database
    admin = sqlalchemy.create_engine(postgres_url, poolclass=NullPool)
    with admin.connect() as connection:
        killed = connection.exec_driver_sql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            f"WHERE datname = '{database}' AND pid <> pg_backend_pid()"
        ).scalar()
    assert killed == 1  # the storage's pooled connection
    study.set_user_attr("after", "kill")
    assert study.user_attrs == {"after": "kill"}
    assert storage_lines(caplog) == []  # checked before use, so no call failed


def test_a_worker_holds_at_most_two_connections_with_keepalives(postgres_url: str) -> None:
    storage = open_storage(postgres_url, WorkersConfig())
    pool = storage.engine.pool
    assert (pool.size(), pool._max_overflow, pool._pre_ping) == (1, 1, True)  # type: ignore[attr-defined]
    with storage.engine.connect() as connection:
        libpq = connection.connection.driver_connection.info.get_parameters()  # type: ignore[union-attr]
    assert {k: libpq[k] for k in ("keepalives", "keepalives_idle", "connect_timeout")} == {
        "keepalives": "1",
        "keepalives_idle": "60",
        "connect_timeout": "10",
    }


def test_the_server_ends_a_transaction_left_idle_for_the_grace_period(postgres_url: str) -> None:
    # The URL's own libpq options are kept beside tuner's.
    url = make_url(postgres_url).update_query_dict({"options": "-c application_name=mine"})
    storage = open_storage(url.render_as_string(hide_password=False), WorkersConfig())
    with storage.engine.connect() as connection:
        shown = connection.exec_driver_sql("SHOW idle_in_transaction_session_timeout").scalar()
        named = connection.exec_driver_sql("SHOW application_name").scalar()
    assert (shown, named) == ("1min", "mine")  # grace_period's default, 60 s


@pytest.mark.parametrize("storage_class", ["ours", "stock"])
def test_a_lock_held_by_a_host_cut_off_is_freed_after_the_grace_period(
    postgres_url: str, proxy: Proxy, storage_class: str
) -> None:
    workers = WorkersConfig(heartbeat_interval=1, grace_period=2)
    url = through(proxy, postgres_url)
    lost = (
        open_storage(url, workers)
        if storage_class == "ours"
        else optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    )
    other = open_storage(postgres_url, workers)
    key = {"key": zlib.crc32(b"queue:s")}
    held = lost.engine.connect()
    held.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"), key)  # `exclusive`
    proxy.cut()  # the server never hears that this host has gone
    try:
        started = time.monotonic()
        with other.engine.connect() as connection:
            connection.exec_driver_sql("SET lock_timeout = '8s'")
            try:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"), key)
                waited: float | None = time.monotonic() - started
            except sqlalchemy.exc.OperationalError as e:
                assert "lock timeout" in str(e)
                waited = None
    finally:
        held.invalidate()
    if storage_class == "ours":
        assert waited is not None and waited < 8
    else:  # stock Optuna's transaction holds the lock for as long as the server keeps it
        assert waited is None


def test_a_block_run_under_a_lock_is_run_again_whole_when_the_connection_goes(
    postgres_url: str, proxy: Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    storage = open_storage(through(proxy, postgres_url), WorkersConfig(reconnect_timeout=60))
    study = optuna.create_study(study_name="s", storage=storage)
    observer = sqlalchemy.create_engine(postgres_url, poolclass=NullPool)
    runs: list[str] = []

    def locks_held() -> int:
        with observer.connect() as connection:
            return int(
                connection.exec_driver_sql(
                    # This test's database only: other tests on the server hold locks too.
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND database = (SELECT oid FROM pg_database "
                    "WHERE datname = current_database())"
                ).scalar()
                or 0
            )

    def body() -> None:
        runs.append(f"started holding {locks_held()}")
        if len(runs) == 1:
            proxy.down()  # the lock's connection goes, and the lock with it
            threading.Timer(1.5, proxy.up).start()
        study.set_user_attr("written", len(runs))
        runs.append(f"wrote holding {locks_held()}")

    with caplog.at_level(logging.WARNING, logger="tuner.storage"):
        locked(study._storage, "queue:s", body)
    # Made again from its start, under the lock taken afresh: not carried on unlocked.
    assert runs == ["started holding 1", "started holding 1", "wrote holding 1"]
    assert optuna.load_study(study_name="s", storage=postgres_url).user_attrs == {"written": 2}
    lines = storage_lines(caplog)
    assert len(lines) == 2 and " reachable again after " in lines[1], lines


@pytest.mark.parametrize("storage_class", ["ours", "stock"])
def test_a_trial_whose_creation_was_not_acknowledged_is_created_once(
    postgres_url: str, proxy: Proxy, storage_class: str
) -> None:
    url = through(proxy, postgres_url)
    storage = (
        open_storage(url, WorkersConfig())
        if storage_class == "ours"
        else optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    )
    study = optuna.create_study(study_name="s", storage=storage)
    lose_commit_answer(storage.engine, proxy, "INSERT INTO trials ")
    study.enqueue_trial({"x": 1.0})
    trials = optuna.load_study(study_name="s", storage=postgres_url).trials
    # Stock Optuna tries again and makes a second trial: the fault is real.
    assert len(trials) == (1 if storage_class == "ours" else 2)


@pytest.mark.parametrize("storage_class", ["ours", "stock"])
def test_a_tell_that_was_not_acknowledged_is_recorded_once(
    postgres_url: str, proxy: Proxy, storage_class: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = through(proxy, postgres_url)
    storage = (
        open_storage(url)
        if storage_class == "ours"
        else optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    )
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    lose_commit_answer(storage.engine, proxy, "UPDATE trials SET state")
    if storage_class == "ours":
        study.tell(trial, 0.5)
        assert " reachable again after " in storage_lines(caplog)[-1]
    else:  # a worker on stock Optuna would stop here
        with pytest.raises(optuna.exceptions.StorageInternalError):
            study.tell(trial, 0.5)
    [stored] = optuna.load_study(study_name="s", storage=postgres_url).trials
    assert (stored.state, stored.value) == (TrialState.COMPLETE, 0.5)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_claim_that_was_not_acknowledged_goes_stale_and_is_queued_again(
    postgres_url: str, proxy: Proxy
) -> None:
    workers = WorkersConfig(heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(
        study_name="s", storage=open_storage(through(proxy, postgres_url), workers)
    )
    study.enqueue_trial({"x": 1.0})
    lose_commit_answer(study._storage._backend.engine, proxy, "UPDATE trials SET state")  # type: ignore[attr-defined]
    # The claim landed, but the worker cannot tell it from a claim another worker won.
    assert claim(study) is None
    observer = optuna.load_study(study_name="s", storage=postgres_url)
    assert [t.state for t in observer.trials] == [TrialState.RUNNING]
    # It runs nowhere; the heartbeat recorded before the claim goes stale and it is retried.
    deadline = time.monotonic() + 60
    while len(study.trials) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
        optuna.storages.fail_stale_trials(study)
    failed, retry = optuna.load_study(study_name="s", storage=postgres_url).trials
    assert (failed.state, retry.state) == (TrialState.FAIL, TrialState.WAITING)
    assert retry.system_attrs["failed_trial"] == failed.number
    assert retry.system_attrs["fixed_params"] == {"x": 1.0}


# --- the server restarted under running workers ------------------------------------------------


def _cluster() -> list[str]:
    """The local cluster, for pg_ctlcluster."""
    if shutil.which("pg_ctlcluster") is None or not Path("/etc/postgresql").is_dir():
        pytest.skip("needs pg_ctlcluster to stop and start the local PostgreSQL server")
    [version] = os.listdir("/etc/postgresql")
    return [version, "main"]


def _pg_ctl(action: str, cluster: list[str]) -> None:
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", *cluster, action], check=True, timeout=120
    )


def _server_is_up(cluster: list[str]) -> bool:
    status = subprocess.run(["pg_ctlcluster", *cluster, "status"], capture_output=True)
    return status.returncode == 0


def _wait_for(condition, timeout: float = 300) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.3)


@pytest.mark.slow
def test_workers_ride_out_a_server_restart_and_never_show_the_password(
    write_study, study_dir: Path, postgres_url: str
) -> None:
    cluster = _cluster()
    url = make_url(postgres_url).set(password=PASSWORD).render_as_string(hide_password=False)
    path = write_study(
        "restart",
        study='name = "restart"\nmetric = "val_mae"\nn_trials = 6\nseed_configs = false',
        pruner='name = "none"',
        # Epochs enough that a trial is part-way through them for seconds, not a blink (one
        # compile a trial makes tiny epochs fast).
        training="epochs = 40\nbatch_size = 16\nsteps_per_epoch = 10\npatience = 40",
        # A long grace period: no trial goes stale while the server is away.
        workers="heartbeat_interval = 1\ngrace_period = 60\nreconnect_timeout = 120",
        space=FAST_SPACE,
    )
    observer = optuna.storages.RDBStorage(postgres_url)
    run = subprocess.Popen(
        [sys.executable, "-m", "tuner", "run", str(path), "--workers", "2", "--storage", url],
        cwd=study_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def training() -> bool:
        """A trial has finished, and another is part-way through its epochs."""
        if not observer.get_all_studies():
            return False
        trials = observer.get_all_trials(observer.get_all_studies()[0]._study_id)
        return any(t.state == TrialState.COMPLETE for t in trials) and any(
            t.state == TrialState.RUNNING and t.intermediate_values for t in trials
        )

    try:
        _wait_for(lambda: run.poll() is not None or training())
        assert run.poll() is None, "the study finished before the server was stopped"
        observer.engine.dispose()
        _pg_ctl("stop", cluster)
        time.sleep(4)  # several heartbeats and epoch reports fail meanwhile
        _pg_ctl("start", cluster)
        out, err = run.communicate(timeout=600)
    finally:
        if run.poll() is None:
            run.kill()
        if not _server_is_up(cluster):
            _pg_ctl("start", cluster)
    assert run.returncode == 0, err
    study = optuna.load_study(study_name="restart", storage=postgres_url)
    states = collections.Counter(t.state for t in study.trials)
    assert states == {TrialState.COMPLETE: 6}, states
    # Each process (the launcher and both workers) says once that the storage went, and once
    # that it came back, with the password hidden.
    went = [line for line in err.splitlines() if " unreachable (" in line]
    back = [line for line in err.splitlines() if " reachable again after " in line]
    assert 1 <= len(went) == len(back) <= 3, err
    assert all("storage postgresql://postgres:***@127.0.0.1:" in line for line in went + back)
    assert PASSWORD not in out + err


def test_sqlite_has_no_connection_to_lose(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'x.db'}", WorkersConfig())
    assert type(storage) is optuna.storages.RDBStorage


# --- Two hosts: network namespaces made by the test --------------------------------------------


class Hosts:
    """Network namespaces joined to this one by veth pairs: separate hosts, each with its own
    link to the database server's machine, which the test can take down."""

    def __init__(self, names: list[str]) -> None:
        tag = f"{os.getpid() % 100_000}"
        self.namespaces: dict[str, str] = {}
        self.links: dict[str, str] = {}
        self.addresses: dict[str, str] = {}  # the address of the server's side of each link
        try:
            for i, name in enumerate(names):
                ns, link = f"tuner{tag}{name}", f"tn{tag}{name}"
                self.namespaces[name], self.links[name] = ns, link
                subnet = f"10.{200 + i}.{int(tag) % 250}"
                _ip("netns", "add", ns)
                _ip("link", "add", link, "type", "veth", "peer", "name", f"{link}p")
                _ip("link", "set", f"{link}p", "netns", ns)
                _ip("addr", "add", f"{subnet}.1/24", "dev", link)
                _ip("link", "set", link, "up")
                for command in (
                    ("addr", "add", f"{subnet}.2/24", "dev", f"{link}p"),
                    ("link", "set", f"{link}p", "up"),
                    ("link", "set", "lo", "up"),
                ):
                    _ip("-n", ns, *command)
                self.addresses[name] = f"{subnet}.1"
        except BaseException:
            self.remove()
            raise

    def run(self, name: str, command: list[str], **kwargs) -> subprocess.Popen[str]:
        """`command` run on host `name`."""
        return subprocess.Popen(["ip", "netns", "exec", self.namespaces[name], *command], **kwargs)

    def cut(self, name: str) -> None:
        """Take host `name`'s link down: its packets go nowhere, as with a pulled cable."""
        _ip("link", "set", self.links[name], "down")

    def remove(self) -> None:
        for ns in self.namespaces.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)  # its veths go too
        for link in self.links.values():
            subprocess.run(["ip", "link", "del", link], capture_output=True)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def hosts():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and `ip` (iproute2) to make network namespaces")
    made = Hosts(["a", "b"])
    yield made
    made.remove()


@pytest.mark.slow
def test_a_host_cut_off_mid_trial_loses_it_to_the_other_and_gives_up_in_one_line(
    write_study, study_dir: Path, postgres_url: str, hosts: Hosts
) -> None:
    grace, reconnect = 4, 10
    path = write_study(
        "hosts",
        study='name = "hosts"\nmetric = "val_mae"\nn_trials = 5\nseed_configs = false',
        pruner='name = "none"',
        # Long enough for worker A to be seen part-way through a trial.
        training="epochs = 40\nbatch_size = 16\nsteps_per_epoch = 10\npatience = 40",
        workers=f"heartbeat_interval = 1\ngrace_period = {grace}\nreconnect_timeout = {reconnect}",
        space=FAST_SPACE,
    )
    server = make_url(postgres_url)
    # The server listens on 127.0.0.1 only: a forwarder on each link's address reaches it.
    proxies = {
        name: Proxy(server.host or "127.0.0.1", server.port or 5432, listen=address)
        for name, address in hosts.addresses.items()
    }
    # A lost link must break a call in flight within seconds, not TCP's quarter of an hour.
    query = {"tcp_user_timeout": "3000", "connect_timeout": "3"}
    urls = {
        name: server.set(host=address, port=proxies[name].port)
        .update_query_dict(query)
        .render_as_string(hide_password=False)
        for name, address in hosts.addresses.items()
    }
    workers = {
        name: hosts.run(
            name,
            [sys.executable, "-m", "tuner", "worker", str(path), "--worker-index", str(i)],
            cwd=study_dir,
            env=os.environ | {"TUNER_STORAGE": urls[name]},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, name in enumerate(("a", "b"))
    }
    a_name = f"{socket.gethostname()}:{workers['a'].pid}"  # `ip netns exec` execs the worker
    observer = optuna.storages.RDBStorage(postgres_url, engine_kwargs={"poolclass": NullPool})
    try:

        def a_mid_trial() -> optuna.trial.FrozenTrial | None:
            for study in observer.get_all_studies():
                for t in observer.get_all_trials(study._study_id):
                    running = t.state == TrialState.RUNNING and t.intermediate_values
                    if running and t.user_attrs.get("worker") == a_name:
                        return t
            return None

        _wait_for(lambda: workers["a"].poll() is not None or a_mid_trial() is not None)
        assert workers["a"].poll() is None, workers["a"].communicate()[1]
        victim = a_mid_trial()
        assert victim is not None
        hosts.cut("a")
        cut_at = time.monotonic()
        b_out, b_err = workers["b"].communicate(timeout=600)
        a_out, a_err = workers["a"].communicate(timeout=120)
        a_gave_up_after = time.monotonic() - cut_at
    finally:
        for worker in workers.values():
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
        for proxy in proxies.values():
            proxy.down()
    assert workers["b"].returncode == 0, b_err
    # The cut-off worker gives up with one line once `reconnect_timeout` has passed.
    assert workers["a"].returncode == 2, a_err
    errors = [line for line in a_err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in a_err, a_err
    assert errors[0].startswith(f"Error: storage postgresql://postgres@{hosts.addresses['a']}:")
    assert reconnect <= a_gave_up_after < 120
    trials = observer.get_all_trials(observer.get_all_studies()[0]._study_id)
    observer.engine.dispose()
    # Its trial was failed by heartbeat and ran again on the other host, once; nothing is lost,
    # nothing ran twice, nothing is left running: the budget of five, exactly.
    by_number = {t.number: t for t in trials}
    assert by_number[victim.number].state == TrialState.FAIL
    [retry] = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert retry.state == TrialState.COMPLETE and retry.params == victim.params
    assert retry.user_attrs["worker"] != a_name
    assert collections.Counter(t.state for t in trials) == {
        TrialState.COMPLETE: 5,
        TrialState.FAIL: 1,
    }


def test_the_backoff_jitter_does_not_follow_pythons_reseeded_random(monkeypatch) -> None:
    # Every trial reseeds Python's `random`: workers training the same seed must not come back
    # to a restarted server in step.
    from tuner.storage import reconnect

    slept: list[float] = []
    monkeypatch.setattr(reconnect.time, "sleep", slept.append)

    def delays() -> list[float]:
        random.seed(0)
        failures = iter(range(5))

        def call() -> None:
            if next(failures, None) is not None:
                raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server gone"))

        slept.clear()
        reconnect.Reconnect("postgresql://db/tuner", timeout=3600)(call)
        return list(slept)

    assert delays() != delays()
