"""Cost-aware search: training time (or size) as a second objective, a Pareto front of the
metric against it."""

from __future__ import annotations

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from tuner.answers.analysis import analyse
from tuner.answers.results import summary
from tuner.cli import cli
from tuner.config import load_study_config
from tuner.data import prepare
from tuner.errors import ConfigError
from tuner.search.objective import Objective
from tuner.search.study import open_study
from tuner.search.trials import best_trial, metric_value
from tuner.search.worker import StopRequest, run_worker
from tuner.storage import open_storage

COST = 'name = "cost"\nmetric = "val_mae"\nn_trials = 6\ncost_objective = "seconds_per_epoch"'


def test_a_cost_objective_makes_two_minimized_objectives_and_no_pruner(write_study) -> None:
    config = load_study_config(write_study(study=COST, pruner=""))
    assert config.directions == ["minimize", "minimize"]
    assert config.objective_names == ["val_mae", "seconds_per_epoch"]
    assert config.pruner.name == "none"


def test_a_pruner_with_a_cost_objective_is_refused(write_study) -> None:
    with pytest.raises(
        ConfigError,
        match=r"\[pruner\] name: a study with a cost_objective "
        r"cannot be pruned .*, got 'median'",
    ):
        load_study_config(write_study(study=COST))


def test_an_unknown_cost_objective_is_named(write_study) -> None:
    with pytest.raises(
        ConfigError,
        match=r"\[study\] cost_objective: must be one of "
        r"seconds_per_epoch, n_params, got 'watts'",
    ):
        load_study_config(write_study(study='name = "c"\ncost_objective = "watts"'))


@pytest.mark.slow
def test_a_cost_aware_study_records_a_pareto_front(write_study, study_dir) -> None:
    config = load_study_config(write_study(study=COST, pruner=""))
    data = prepare(config.data)
    storage = open_storage(f"sqlite:///{study_dir / 'cost.db'}", config.workers)
    study = open_study(config, storage, lambda: data.baselines)
    result = run_worker(config, study, storage, Objective(config, data), StopRequest())
    assert result.complete == 6
    study = optuna.load_study(study_name="cost", storage=storage)
    assert study.metric_names == ["val_mae", "seconds_per_epoch"]
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    for t in trials:
        assert len(t.values) == 2 and t.values[1] > 0
        assert t.values[1] == pytest.approx(t.user_attrs["seconds_per_epoch"], abs=1e-3)
        assert not t.intermediate_values  # Optuna reports single-objective studies only
        curve = t.user_attrs["epoch_values"]  # so the trial keeps its own
        assert len(curve) == t.user_attrs["epochs"] and min(curve) == t.values[0]
    s = summary(study)
    front = s["pareto_front"]
    assert s["cost_objective"] == "seconds_per_epoch" and front
    assert [f["cost"] for f in front] == sorted(f["cost"] for f in front)
    for f in front:  # no trial beats a front trial on both objectives
        assert not any(t.values[0] < f["value"] and t.values[1] < f["cost"] for t in trials)
    best = best_trial(study)
    assert metric_value(best) == min(t.values[0] for t in trials)
    assert best.number in {f["number"] for f in front}
    text = (
        CliRunner()
        .invoke(
            cli,
            ["best-trial", str(config.path), "--storage", f"sqlite:///{study_dir / 'cost.db'}"],
        )
        .output
    )
    assert "Pareto front of val_mae against seconds_per_epoch, cheapest first:" in text
    assert analyse(study).values == {t.number: t.values[0] for t in trials}
