from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import tuner
from optuna.trial import TrialState

from tuner.launcher import Placement, plan

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


def test_workers_that_start_together_create_the_study_once(write_study, study_dir) -> None:
    path = write_study("race", study='name = "race"\nmetric = "val_mae"\nn_trials = 5')
    env = os.environ | {"TUNER_STORAGE": f"sqlite:///{study_dir / 'race.db'}"}
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


def _wait_for_running(url: str, name: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            study = optuna.load_study(study_name=name, storage=url)
            running = study.get_trials(states=(TrialState.RUNNING,))
            if running and running[0].intermediate_values:
                return
        except KeyError:
            pass
        time.sleep(0.3)
    raise AssertionError("no trial started")


LONG = "epochs = 200\nbatch_size = 16\nsteps_per_epoch = 20\npatience = 200"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signalled_worker_leaves_no_trial_running_and_exits_0(
    write_study, study_dir, signum
) -> None:
    path = write_study(
        "stop",
        study='name = "stop"\nn_trials = 3\nseed_configs = false',
        training=LONG,
        pruner='name = "none"',
    )
    url = f"sqlite:///{study_dir / 'stop.db'}"
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
