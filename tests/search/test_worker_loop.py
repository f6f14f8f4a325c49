"""The worker loop with stand-in objectives: what it counts, and how it is stopped (no model
is trained)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from tuner.config import StudyConfig, load_study_config
from tuner.errors import Interrupted, TrialFailed
from tuner.search.queue import claim, count
from tuner.search.study import open_study
from tuner.search.worker import StopRequest, run_worker
from tuner.storage import open_storage


def _config(write_study, n_trials: int = 10) -> StudyConfig:
    return load_study_config(
        write_study(
            "loop",
            study=f'name = "loop"\nmetric = "val_mae"\nn_trials = {n_trials}\n'
            "seed_configs = false",
            workers="heartbeat_interval = 2\ngrace_period = 6\nmax_consecutive_failures = 5",
        )
    )


@pytest.fixture
def config(write_study) -> StudyConfig:
    return _config(write_study)


def _open(config: StudyConfig, study_dir: Path) -> tuple[optuna.Study, optuna.storages.RDBStorage]:
    storage = open_storage(f"sqlite:///{study_dir / 'loop.db'}", config.workers)
    return open_study(config, storage, lambda: {}), storage


def test_max_trials_counts_every_trial_the_worker_ran_failed_ones_too(
    config: StudyConfig, study_dir: Path
) -> None:
    study, storage = _open(config, study_dir)

    def every_other_fails(trial: optuna.Trial) -> float:
        if trial.number % 2 == 0:
            raise TrialFailed("a stand-in failure")
        return 1.0

    result = run_worker(config, study, storage, every_other_fails, StopRequest(), max_trials=3)
    assert (result.complete, result.failed) == (1, 2)
    assert len([t for t in study.trials if t.state.is_finished()]) == 3


def test_interruptions_do_not_use_up_a_trials_retries(write_study, study_dir: Path) -> None:
    # Three rolling restarts in a row stop the same trial ([workers] max_retry is 2): it is
    # queued again each time, with its parameters and training seed, and its budget holds.
    config = _config(write_study, n_trials=1)
    study, storage = _open(config, study_dir)
    seen: list[tuple[int, float, object]] = []

    for _ in range(3):
        stop = StopRequest()

        def stopped_by_a_restart(trial: optuna.Trial, stop: StopRequest = stop) -> float:
            x = trial.suggest_float("x", 0.0, 1.0)
            seen.append((trial.number, x, trial.user_attrs.get("training_seed")))
            trial.set_user_attr("training_seed", trial.user_attrs.get("training_seed", 12345))
            stop.signal = "SIGTERM"
            raise Interrupted("stopped by a signal")

        result = run_worker(config, study, storage, stopped_by_a_restart, stop)
        assert result.interrupted
    assert count(study).finished == 0  # none counts against the budget
    assert len({x for _, x, _ in seen}) == 1  # the same parameters, run after run
    assert [seed for _, _, seed in seen] == [None, 12345, 12345]
    result = run_worker(config, study, storage, lambda trial: 1.0, StopRequest(), max_trials=1)
    resumed = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(resumed) == 1 and resumed[0].params == {"x": seen[0][1]}
    assert resumed[0].user_attrs["interrupted_runs"] == [n for n, _, _ in seen]
    assert count(study).finished == 1


@pytest.fixture
def stop():
    """A StopRequest installed in this process, its signal handlers restored afterwards."""
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM)
    previous = {s: signal.getsignal(s) for s in signals}
    request = StopRequest()
    request.install()
    yield request
    signal.setitimer(signal.ITIMER_REAL, 0)
    for s, handler in previous.items():
        signal.signal(s, handler)


def _signal_during(
    storage: optuna.storages.RDBStorage, statement: str, stop: StopRequest
) -> list[str]:
    """Send this process a second SIGTERM from within the first storage statement, after the
    first signal, that starts with `statement`, before it reaches the database; returns the
    statements it was sent from."""
    sent: list[str] = []

    @sqlalchemy.event.listens_for(storage.engine, "before_cursor_execute")
    def second(connection, cursor, text, parameters, context, executemany) -> None:
        if stop and not sent and text.startswith(statement):
            sent.append(text)
            os.kill(os.getpid(), signal.SIGTERM)

    return sent


def test_a_second_signal_waits_for_the_storage_call_in_progress(
    config: StudyConfig, study_dir: Path, stop: StopRequest
) -> None:
    study, storage = _open(config, study_dir)
    trial = claim(study)
    assert trial is not None
    os.kill(os.getpid(), signal.SIGTERM)  # the first: a flag
    assert stop.signal == "SIGTERM"
    sent = _signal_during(storage, "UPDATE trials SET state", stop)
    told = False
    with pytest.raises(KeyboardInterrupt):
        study.tell(trial, 1.0)
        told = True
        time.sleep(5)  # a safe point: the forced stop comes here
    assert sent and told
    assert study.trials[trial.number].state == TrialState.COMPLETE  # the tell landed whole


def test_a_second_signal_lets_an_interrupted_trial_be_queued_again(
    config: StudyConfig, study_dir: Path, stop: StopRequest
) -> None:
    study, storage = _open(config, study_dir)

    def stopped(trial: optuna.Trial) -> float:
        trial.suggest_float("x", 0.0, 1.0)
        os.kill(os.getpid(), signal.SIGTERM)  # the first: the next batch stops the trial
        raise Interrupted("stopped by a signal")

    sent = _signal_during(storage, "UPDATE trials SET state", stop)  # recording it as failed
    with pytest.raises(KeyboardInterrupt):
        run_worker(config, study, storage, stopped, stop)
    assert sent
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert len(failed) == 1 and failed[0].user_attrs["fail_reason"] == "interrupted by SIGTERM"
    [retry] = [t for t in study.trials if t.user_attrs.get("retry_of") == failed[0].number]
    assert retry.state == TrialState.WAITING and retry.params == failed[0].params


def test_an_idle_worker_looks_again_less_often_up_to_a_quarter_of_the_grace_period() -> None:
    from tuner.config import WorkersConfig
    from tuner.search.worker import IDLE_POLL_S, idle_wait

    workers = WorkersConfig(heartbeat_interval=20, grace_period=60)
    waits = [[idle_wait(workers, looks) for looks in range(8)] for _ in range(200)]
    first = [w[0] for w in waits]
    # The first look after IDLE_POLL_S at most, jittered down to half of it.
    assert IDLE_POLL_S / 2 <= min(first) and max(first) <= IDLE_POLL_S
    assert max(first) - min(first) > IDLE_POLL_S / 4
    # Doubling (on average), then held at a quarter of the grace period.
    means = [sum(w[i] for w in waits) / len(waits) for i in range(8)]
    assert means[1] > 1.6 * means[0] and means[2] > 1.6 * means[1]
    assert max(max(w) for w in waits) <= 60 / 4
    assert means[7] > 0.6 * 60 / 4
    # A heartbeat shorter than IDLE_POLL_S sets the first wait; a short grace period, the last.
    quick = WorkersConfig(heartbeat_interval=1, grace_period=2)
    assert all(0.5 <= idle_wait(quick, looks) <= 1.0 for looks in range(6))
