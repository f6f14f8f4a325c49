"""The worker loop with stand-in objectives: what it counts, and how it is stopped (no model
is trained)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tuner.config import StudyConfig, load_study_config
from tuner.errors import Interrupted, TrialFailed
from tuner.search.queue import count
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
