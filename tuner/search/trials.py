"""Reading a study's trials: a trial's metric value, the best trial, the study's direction."""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.errors import TunerError


def metric_value(trial: FrozenTrial) -> float | None:
    """A trial's value in the study's metric: its value, or its first value in a study whose
    second objective is a cost."""
    return trial.values[0] if trial.values else None


def reached(trial: FrozenTrial, minimize: bool) -> float | None:
    """The best metric value a trial reached: its value when complete, and its best epoch when
    pruned (Optuna gives a pruned trial its last epoch's value)."""
    if trial.state == TrialState.PRUNED and trial.intermediate_values:
        values = trial.intermediate_values.values()
        return min(values) if minimize else max(values)
    return metric_value(trial)


def seed_trials(study: optuna.Study) -> dict[str, FrozenTrial]:
    """The seed configurations' trials that finished, complete or pruned, by name."""
    return {
        t.user_attrs["seed_config"]: t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        if "seed_config" in t.user_attrs
    }


def minimizes(study: optuna.Study) -> bool:
    return study.directions[0] == optuna.study.StudyDirection.MINIMIZE


def best_trial(study: optuna.Study) -> FrozenTrial:
    """The complete trial with the best metric (the earliest of equals), cost aside."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise TunerError(f"study {study.study_name!r} has no complete trial yet")
    sign = 1.0 if minimizes(study) else -1.0
    return min(complete, key=lambda t: (sign * (metric_value(t) or 0.0), t.number))
