from __future__ import annotations

import collections
import datetime
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from conftest import FAST_SPACE, stopped_while_running, tuner, worker_processes
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.pool import NullPool

from tuner.search.launcher import Placement, plan

pytestmark = pytest.mark.slow


def test_plan_gives_each_worker_its_own_cores() -> None:
    assert plan(2, cores=[0, 1]) == [Placement((0,), 1), Placement((1,), 1)]
    assert plan(2, cores=[0, 1, 2, 3]) == [Placement((0, 1), 2), Placement((2, 3), 2)]
    assert plan(3, cores=[0, 1]) == [Placement((0,), 1), Placement((1,), 1), Placement((0,), 1)]
    assert plan(2, pin=False, cores=[0, 1, 2, 3]) == [Placement(None, 2)] * 2


def test_several_processes_share_one_sqlite_file(finished_study) -> None:
    study = optuna.load_study(study_name="finished", storage=finished_study["url"])
    states = collections.Counter(t.state for t in study.trials)
    assert len(study.trials) == 6  # the budget, exactly
    assert set(states) <= {TrialState.COMPLETE, TrialState.PRUNED}
    seeds = [t.user_attrs["seed_config"] for t in study.trials if "seed_config" in t.user_attrs]
    assert sorted(seeds) == sorted(["gru", "gru-dropout", "bidirectional-lstm"])  # each once
    workers = {t.user_attrs["worker"] for t in study.trials}
    assert len(workers) == 2  # both worker processes ran trials
    assert "database is locked" not in finished_study["stderr"]


def test_workers_that_start_together_create_the_study_once(
    write_study, study_dir, storage_url
) -> None:
    # On a fresh database: they also race to create its tables.
    path = write_study(
        "race", study='name = "race"\nmetric = "val_mae"\nn_trials = 5', space=FAST_SPACE
    )
    env = os.environ | {"TUNER_STORAGE": storage_url}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tuner", "worker", str(path), "-q", "--worker-index", str(i)],
            env=env,
            cwd=study_dir,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    errors = [p.communicate(timeout=600)[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], errors
    study = optuna.load_study(study_name="race", storage=env["TUNER_STORAGE"])
    assert len(study.trials) == 5
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    assert len(optuna.get_all_study_names(env["TUNER_STORAGE"])) == 1
    assert not any("locked" in e for e in errors)


def _observer(url: str) -> optuna.storages.RDBStorage:
    """One storage for a polling loop, holding no connection between polls: a new storage per
    poll would leave a pooled connection behind each time, and a slow start on a busy machine
    ran PostgreSQL out of connections. A worker may be creating the database's tables at the
    same moment; whichever of the two loses that race finds them made a moment later."""
    for _ in range(20):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs={"poolclass": NullPool})
        except sqlalchemy.exc.SQLAlchemyError:
            time.sleep(0.2)
    return optuna.storages.RDBStorage(url, engine_kwargs={"poolclass": NullPool})


def _wait_for_running(url: str, name: str, timeout: float = 120) -> None:
    storage = _observer(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            study = optuna.load_study(study_name=name, storage=storage)
            running = study.get_trials(states=(TrialState.RUNNING,))
            if any(t.intermediate_values for t in running):
                return
        except KeyError:
            pass
        time.sleep(0.3)
    raise AssertionError("no trial started")


LONG = "epochs = 200\nbatch_size = 16\nsteps_per_epoch = 20\npatience = 200"


@pytest.mark.parametrize(
    ("signum", "backend"),
    [
        (signal.SIGTERM, "sqlite"),
        (signal.SIGINT, "sqlite"),
        (signal.SIGHUP, "sqlite"),  # a closed terminal or ssh session
        (signal.SIGTERM, "postgresql"),
    ],
)
def test_a_signalled_worker_leaves_no_trial_running_and_exits_0(
    write_study, study_dir, signum, backend, request
) -> None:
    path = write_study(
        "stop",
        study='name = "stop"\nn_trials = 3\nseed_configs = false',
        training=LONG,
        pruner='name = "none"',
    )
    url = (
        f"sqlite:///{study_dir / 'stop.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "tuner", "worker", str(path), "--storage", url],
        cwd=study_dir,
        stdout=subprocess.PIPE,
        text=True,
    )
    _wait_for_running(url, "stop")
    worker.send_signal(signum)
    out, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0
    assert "the trial in progress was queued again" in out
    study = optuna.load_study(study_name="stop", storage=url)
    by_state = collections.Counter(t.state for t in study.trials)
    assert by_state[TrialState.RUNNING] == 0
    stopped = study.get_trials(states=(TrialState.FAIL,))
    assert [t.user_attrs["fail_reason"] for t in stopped] == [
        f"interrupted by {signal.Signals(signum).name}"
    ]
    # Its parameters wait for the next worker, and the budget still holds three trials.
    retry = [t for t in study.trials if t.system_attrs.get("failed_trial") == stopped[0].number]
    assert len(retry) == 1 and retry[0].state == TrialState.WAITING
    assert retry[0].params == stopped[0].params
    assert by_state[TrialState.WAITING] == 3


def test_a_worker_stopped_by_sigterm_exits_with_the_code_asked_for(write_study, study_dir) -> None:
    """As a Kubernetes Job's worker does (`--stopped-exit-code 143`), so that the Job replaces
    a deleted or drained pod instead of counting its index as done."""
    path = write_study(
        "code",
        study='name = "code"\nn_trials = 3\nseed_configs = false',
        training=LONG,
        pruner='name = "none"',
    )
    url = f"sqlite:///{study_dir / 'code.db'}"
    command = [sys.executable, "-m", "tuner", "worker", str(path), "--storage", url]
    worker = subprocess.Popen(
        [*command, "--stopped-exit-code", "143"], cwd=study_dir, stdout=subprocess.PIPE, text=True
    )
    _wait_for_running(url, "code")
    worker.send_signal(signal.SIGTERM)
    out, _ = worker.communicate(timeout=60)
    assert worker.returncode == 143
    assert "the trial in progress was queued again" in out
    study = optuna.load_study(study_name="code", storage=url)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 3
    # A worker that finds no work left exits 0 whatever the code asked for.
    for t in study.get_trials(states=(TrialState.WAITING,)):
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    done = subprocess.run(
        [*command, "--stopped-exit-code", "143"], cwd=study_dir, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_ctrl_c_stops_tuner_run_cleanly(write_study, study_dir: Path) -> None:
    path = write_study(
        "ctrlc",
        study='name = "ctrlc"\nn_trials = 4\nseed_configs = false',
        training=LONG,
        pruner='name = "none"',
    )
    url = f"sqlite:///{study_dir / 'ctrlc.db'}"
    run = subprocess.Popen(
        [sys.executable, "-m", "tuner", "run", str(path), "--workers", "2", "--storage", url],
        cwd=study_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_running(url, "ctrlc")
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=90)
    assert run.returncode == 0, err
    study = optuna.load_study(study_name="ctrlc", storage=url)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 4
    # Running it again resumes the same budget rather than adding to it.
    result = tuner("trials", str(path), "--storage", url, "--format", "csv", cwd=study_dir)
    assert result.stdout.count("WAITING") == 4


def test_a_killed_workers_trial_is_failed_and_retried_and_the_study_completes(
    write_study, study_dir: Path, storage_url: str
) -> None:
    grace = 3
    path = write_study(
        "kill",
        study='name = "kill"\nmetric = "val_mae"\nn_trials = 5\nseed_configs = false',
        pruner='name = "none"',
        # Epochs enough that a trial stays in the middle for a few seconds once compiled: JAX
        # runs an epoch of this tiny model in a few milliseconds.
        training="epochs = 40\nbatch_size = 16\nsteps_per_epoch = 10\npatience = 40",
        workers=f"heartbeat_interval = 1\ngrace_period = {grace}",
        space=FAST_SPACE,
    )
    a, b = worker_processes(path, storage_url, study_dir)
    a_name = f"{socket.gethostname()}:{a.pid}"
    try:
        study = _wait_for_study(storage_url, "kill")

        def a_in_the_middle_of_a_trial() -> FrozenTrial | None:
            trials = study.get_trials()
            if not any(t.state == TrialState.COMPLETE for t in trials):
                return None
            for t in trials:
                if t.state == TrialState.RUNNING and t.user_attrs.get("worker") == a_name:
                    if t.intermediate_values:
                        return t
            return None

        deadline = time.monotonic() + 300
        while True:
            assert time.monotonic() < deadline, "worker A never got to the middle of a trial"
            assert a.poll() is None, "worker A ran out of trials before it could be killed"
            victim = a_in_the_middle_of_a_trial()
            if victim is not None:
                # Stopped, so that the trial cannot end before the kill.
                if stopped_while_running(a, storage_url, victim._trial_id):
                    a.kill()
                    killed_at = datetime.datetime.now()
                    break
            time.sleep(0.2)
        done_before = {t.number: t.value for t in study.get_trials(states=(TrialState.COMPLETE,))}
        b_out, b_err = b.communicate(timeout=600)
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
        a.communicate()
    assert b.returncode == 0, b_err

    trials = optuna.load_study(study_name="kill", storage=storage_url).trials
    by_number = {t.number: t for t in trials}
    failed = by_number[victim.number]
    # Failed by the other worker once its heartbeat was `grace` seconds old: not told (no
    # reason recorded), and no later than the other worker's next look, between two trials.
    assert failed.state == TrialState.FAIL and "fail_reason" not in failed.user_attrs
    assert failed.datetime_complete - killed_at < datetime.timedelta(seconds=grace + 60)
    # Its parameters ran again, once, as a new trial.
    [retry] = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert retry.state == TrialState.COMPLETE
    assert retry.params == failed.params
    # Every trial completed before the kill is still there, unchanged, and the budget is exact:
    # five complete trials, each run once (A's finished ones plus B's).
    assert {n: by_number[n].value for n in done_before} == done_before
    assert collections.Counter(t.state for t in trials) == {
        TrialState.COMPLETE: 5,
        TrialState.FAIL: 1,
    }
    ran_by_b = int(re.search(r"done: (\d+) complete", b_out).group(1))  # type: ignore[union-attr]
    ran_by_a = sum(1 for t in trials if t.user_attrs["worker"] == a_name) - 1  # less the victim
    assert ran_by_a + ran_by_b == 5


def _wait_for_study(url: str, name: str, timeout: float = 300) -> optuna.Study:
    storage = _observer(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            time.sleep(0.3)
            continue
        if study.user_attrs.get("ready"):
            return study
        time.sleep(0.3)
    raise AssertionError(f"study {name!r} was not created")


# --- Workers die with their launcher; workers start afresh (issue 15) ---------------------------


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting for its parent to collect it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGHUP])
def test_the_workers_of_a_tuner_run_stop_within_seconds_when_it_ends(
    write_study, study_dir: Path, signum: int
) -> None:
    path = write_study(
        "orphans",
        study='name = "orphans"\nn_trials = 3\nseed_configs = false',
        training=LONG,
        pruner='name = "none"',
        space=FAST_SPACE,
    )
    url = f"sqlite:///{study_dir / 'orphans.db'}"
    log = study_dir / "run.log"  # the launcher's and its workers' stderr
    run = subprocess.Popen(
        [sys.executable, "-m", "tuner", "run", str(path), "--workers", "2", "--storage", url],
        cwd=study_dir,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )
    workers: list[int] = []
    try:
        _wait_for_running(url, "orphans")
        workers = _children(run.pid)
        assert len(workers) == 2
        run.send_signal(signum)
        run.wait(timeout=60)
        deadline = time.monotonic() + 20
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(p) for p in workers), "workers outlived their tuner run"
    finally:
        for p in [run.pid, *workers]:
            if _alive(p):
                os.kill(p, signal.SIGKILL)
    # Their trials were failed and queued again: nothing is left running, the budget holds.
    study = optuna.load_study(study_name="orphans", storage=url)
    assert not study.get_trials(states=(TrialState.RUNNING,)), log.read_text()
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 3


def test_a_worker_started_by_hand_outlives_the_shell_that_started_it(
    write_study, study_dir: Path
) -> None:
    path = write_study(
        "alone",
        study='name = "alone"\nn_trials = 2\nseed_configs = false',
        training="epochs = 2\nbatch_size = 16\nsteps_per_epoch = 3\npatience = 2",
        space=FAST_SPACE,
    )
    url = f"sqlite:///{study_dir / 'alone.db'}"
    # The shell starts the worker in the background and exits at once.
    shell = subprocess.run(
        [
            "bash",
            "-c",
            f'{sys.executable} -m tuner worker "{path}" -q --storage {url} >worker.log 2>&1 & '
            "echo $!",
        ],
        cwd=study_dir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    worker = int(shell.stdout.strip())
    deadline = time.monotonic() + 600
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _alive(worker)
    study = optuna.load_study(study_name="alone", storage=url)
    assert [t.state for t in study.trials].count(TrialState.COMPLETE) + [
        t.state for t in study.trials
    ].count(TrialState.PRUNED) == 2


def test_a_worker_starts_afresh_between_trials_and_the_budget_stays_exact(
    write_study, study_dir: Path, storage_url: str
) -> None:
    path = write_study(
        "afresh",
        study='name = "afresh"\nmetric = "val_mae"\nn_trials = 4\nseed_configs = false',
        training="epochs = 2\nbatch_size = 16\nsteps_per_epoch = 3\npatience = 2",
        pruner='name = "none"',
        workers="heartbeat_interval = 2\ngrace_period = 6\nmax_trials_per_process = 1",
        space=FAST_SPACE,
    )
    worker = subprocess.run(
        [sys.executable, "-m", "tuner", "worker", str(path), "--storage", storage_url],
        cwd=study_dir,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert worker.returncode == 0, worker.stderr
    # One line per fresh start, and the final count covers every process it has been.
    # (not after the last: no trial is left to start afresh for)
    assert worker.stdout.count("worker starting afresh: 1 trials in this process") == 3
    assert "done: 4 complete, 0 pruned, 0 failed" in worker.stdout
    trials = optuna.load_study(study_name="afresh", storage=storage_url).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4  # the budget, exactly
    # The same process (execv keeps the id), a fresh interpreter for each trial.
    assert len({t.user_attrs["worker"] for t in trials}) == 1
    assert sorted(t.user_attrs["worker_restarts"] for t in trials) == [0, 1, 2, 3]
    # Each fresh start moves the sampler's seed on: no parameters proposed twice.
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 4
