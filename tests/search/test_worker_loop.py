"""The worker loop with stand-in objectives: what it counts, and how it is stopped (no model
is trained)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from tuner.config import StudyConfig, load_study_config
from tuner.errors import TrialFailed
from tuner.search.study import open_study
from tuner.search.worker import StopRequest, run_worker
from tuner.storage import open_storage


@pytest.fixture
def config(write_study) -> StudyConfig:
    return load_study_config(
        write_study(
            "loop",
            study='name = "loop"\nmetric = "val_mae"\nn_trials = 10\nseed_configs = false',
            workers="heartbeat_interval = 2\ngrace_period = 6\nmax_consecutive_failures = 5",
        )
    )


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
