"""Reading a study's trials: a trial's metric value, the best trial, the study's direction."""

from __future__ import annotations

from collections.abc import Iterable

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.errors import TunerError

PAUSED_AT = "paused_at"  # the epoch a trial was paused at (`tuner.search.schedule`)
# A model resumed after a pause spans several trials (`tuner.search.schedule`): each records
# its model (the number of its first trial) and the trial it continues.
MODEL = "model"
CONTINUES = "continues"


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


def paused(trial: FrozenTrial) -> bool:
    """Whether `trial` was paused at a rung (the pruner `pause`): its model is trained as far as
    its checkpoint, which a larger budget resumes; unlike a trial the pruner stopped, it counts
    among the study's models."""
    return trial.state == TrialState.PRUNED and PAUSED_AT in trial.user_attrs


def latest_per_model(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """One trial per model, in trial order: the latest of `trials` that trains it. A model
    resumed after a pause spans several trials, and each reports its earlier epochs again, so
    the latest holds its whole curve and the best value it reached."""
    latest: dict[int, FrozenTrial] = {}
    for t in sorted(trials, key=lambda t: t.number):
        latest[int(t.user_attrs.get(MODEL, t.number))] = t
    return sorted(latest.values(), key=lambda t: t.number)


def finished_models(study: optuna.Study) -> list[FrozenTrial]:
    """The models whose training has finished for now, one trial each (`latest_per_model`):
    complete trials, and trials paused at a rung (`paused`)."""
    return latest_per_model(
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        if t.state == TrialState.COMPLETE or paused(t)
    )


def ranked(study: optuna.Study) -> list[FrozenTrial]:
    """`finished_models`, best first by the value each reached (`reached`; the earliest of
    equals), cost aside."""
    minimize = minimizes(study)
    sign = 1.0 if minimize else -1.0
    return sorted(
        finished_models(study), key=lambda t: (sign * (reached(t, minimize) or 0.0), t.number)
    )


def train_seconds(study: optuna.Study, trial: FrozenTrial) -> float | None:
    """The seconds `trial`'s model trained, over every trial its training spans (a resumed
    trial records only its own)."""
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    seconds: float | None = None
    t: FrozenTrial | None = trial
    while t is not None:
        own = t.user_attrs.get("train_seconds")
        if own is not None:
            seconds = (seconds or 0.0) + float(own)
        t = by_number.get(t.user_attrs.get(CONTINUES, -1))
    return None if seconds is None else round(seconds, 3)


def best_trial(study: optuna.Study) -> FrozenTrial:
    """The complete or paused trial (`finished_models`) with the best metric (the earliest of
    equals), cost aside. A paused trial's value is the best its model reached (`reached`): a
    model resumed after the study's epochs were raised may pass every complete trial while it
    waits, paused, for the budget to grow."""
    found = ranked(study)
    if not found:
        raise TunerError(f"study {study.study_name!r} has no complete or paused trial yet")
    return found[0]
