"""Diagnoses a person would otherwise make by hand from a study's results, each one sentence
saying what was seen and what to change: a naive baseline that beats the best trial, a best
trial still improving at its last epoch, and a winner that trailed at the pruner's first rung,
where the pruner stopped others of its family.

Each diagnosis speaks only when its evidence is there; a study that shows none gets none.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.answers.verdict import TIE, versus
from tuner.config import StudyConfig
from tuner.search.trials import best_trial, finished_models, minimizes, paused, reached

# Pruned at the first rung: at least this many of the winning family.
MANY_PRUNED = 3


def diagnose(study: optuna.Study, config: StudyConfig | None = None) -> list[str]:
    """What the study's results say should change, one sentence each (empty when nothing)."""
    finished = finished_models(study)
    if not finished:
        return []
    best = best_trial(study)
    return [
        *_baseline_wins(study, best, config),
        *_still_improving(best, finished, config),
        *_pruned_too_soon(study, best, config),
    ]


def _baseline_wins(
    study: optuna.Study, best: FrozenTrial, config: StudyConfig | None
) -> list[str]:
    metric = str(study.user_attrs.get("metric", "value"))
    minimize = minimizes(study)
    value = reached(best, minimize)
    found = []
    for name, baseline in study.user_attrs.get("baselines", {}).items():
        words = versus(value, baseline, metric, minimize)
        if not words.endswith("worse") or words == TIE:
            continue
        text = (
            f"the naive baseline {name} ({metric} = {baseline:.4g}) beats the best trial "
            f"{best.number} ({metric} = {value:.4g}): no model the search trained learned "
            "more than that rule"
        )
        data = config.data if config is not None else None
        if data is not None and data.task == "forecast" and data.period:
            if data.period > data.lookback:
                text += (
                    f"; the window the model sees (`lookback` = {data.lookback} rows) is shorter "
                    f"than the period (`period` = {data.period} rows), so the model cannot see "
                    "the value one period back that the seasonal baseline uses: make `lookback` "
                    "at least the period"
                )
        found.append(text)
    return found


def _still_improving(
    best: FrozenTrial, finished: list[FrozenTrial], config: StudyConfig | None
) -> list[str]:
    epochs, best_epoch = best.user_attrs.get("epochs"), best.user_attrs.get("best_epoch")
    most = (
        config.training.epochs
        if config is not None
        else max((int(t.user_attrs.get("epochs") or 0) for t in finished), default=0)
    )
    if not epochs or best_epoch != epochs:
        return []
    if paused(best):
        return [
            f"the best trial {best.number} was still improving when it was paused (epoch "
            f"{epochs} of {most}): a larger budget (`[budget] epochs` or `n_trials`) may resume "
            "it from its checkpoint, if it is in the top of its rung"
        ]
    if epochs < most:
        return []
    resume = (
        "; raise it: the best model trains on from its checkpoint"
        if best.user_attrs.get("checkpoint")
        else ""
    )
    return [
        f"the best trial {best.number} was still improving at its last epoch ({epochs} of "
        f"{most}): `[training] epochs` is probably too small{resume}"
    ]


def _family(params: dict[str, Any]) -> tuple[Any, ...]:
    return (params.get("cell"), params.get("layers"), params.get("bidirectional"))


def _describe(family: tuple[Any, ...]) -> str:
    cell, layers, bidirectional = family
    text = f"{str(cell).upper()}, {layers} layer{'s' if layers != 1 else ''}"
    return text + (", bidirectional" if bidirectional else "")


def _pruned_too_soon(
    study: optuna.Study, best: FrozenTrial, config: StudyConfig | None
) -> list[str]:
    """The pruner's first rung is too early when the winner was, there, behind at least half
    of the trials that got that far (where a pruner stops trials), and trials of its family
    were pruned there: models like it need more epochs before they can be judged. A winner that
    already led at the first rung says nothing against it, however many of its family were
    pruned (Hyperband prunes most trials there by design)."""
    pruned = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
        if t.intermediate_values
    ]
    if not pruned:
        return []
    first_rung = min(max(t.intermediate_values) for t in pruned)
    own = best.intermediate_values.get(first_rung)
    if own is None:
        return []
    family = _family(best.params)
    early = [
        t
        for t in pruned
        if _family(t.params) == family and max(t.intermediate_values) == first_rung
    ]
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    there = [
        t.intermediate_values[first_rung] for t in finished if first_rung in t.intermediate_values
    ]
    sign = 1 if minimizes(study) else -1
    ahead = sum(1 for v in there if sign * v < sign * own)
    if len(early) < MANY_PRUNED or ahead < len(there) / 2:
        return []
    resource = f" ({config.pruner.min_resource})" if config is not None else ""
    return [
        f"the best trial {best.number} was behind {ahead} of the {len(there)} trials at epoch "
        f"{first_rung}, the pruner's first rung, where {len(early)} trials of its family "
        f"({_describe(family)}) were pruned: the pruner's `min_resource`{resource} may be too "
        "small for this data"
    ]
