"""An ablation's verdicts: the runs of the trial as it is and of each variant (queued and run
by `tuner.search.ablation`), paired by seed, judged, and put into words."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from tuner.answers.verdict import (
    CONFIDENCE,
    Paired,
    difference,
    interval,
    is_accuracy,
    mean_interval,
    paired,
)
from tuner.config import StudyConfig
from tuner.search.ablation import AS_IS, outside_space, variants
from tuner.search.companion import ABLATION_ATTR, companion_name, load_companion
from tuner.search.study import load_existing, stored_config
from tuner.search.trials import metric_value, minimizes
from tuner.storage import open_storage, study_names


@dataclass(frozen=True)
class Contrast:
    """One technique's paired comparison: the trial as it is against one variant."""

    technique: str
    contrast: str
    variant: str
    with_technique: bool
    outside_space: bool
    paired: Paired


@dataclass(frozen=True)
class Ablation:
    """An ablation's runs and verdicts."""

    study: str
    trial: int
    metric: str
    direction: str
    epochs: int | None
    repeats: int  # runs of the trial as it is that completed
    as_is: dict[int, float]  # by seed
    contrasts: tuple[Contrast, ...]
    missing: int = 0  # runs not complete (queued, running or failed)
    params: dict[str, Any] = field(default_factory=dict)
    own_seed: int | None = None  # the trial's own training seed (its run retraces the search's)
    baselines: dict[str, float] = field(default_factory=dict)  # the study's naive baselines

    @property
    def minimize(self) -> bool:
        return self.direction == "minimize"


def verdicts(
    companion: optuna.Study,
    config: StudyConfig | None,
    number: int,
    baselines: dict[str, float] | None = None,
) -> Ablation:
    """The verdicts of trial `number`'s ablation from the companion study's complete runs;
    `baselines` are the study's naive baselines, which the trial is compared with over seeds."""
    trials = [
        t
        for t in companion.get_trials(deepcopy=False)
        if t.user_attrs.get("ablation_of") == number
    ]
    minimize = minimizes(companion)
    values: dict[str, dict[int, float]] = {}
    for t in trials:
        value = metric_value(t)
        if t.state == TrialState.COMPLETE and value is not None:
            values.setdefault(t.user_attrs["variant"], {})[int(t.user_attrs["seed"])] = value
    as_is = values.get(AS_IS, {})
    params = next((t.params for t in trials if t.user_attrs.get("variant") == AS_IS), {})
    own_seed = next(
        (
            int(t.user_attrs["seed"])
            for t in trials
            if t.user_attrs.get("variant") == AS_IS and int(t.user_attrs.get("repeat", -1)) == 0
        ),
        None,
    )
    contrasts = []
    for v in variants(params) if params else []:
        runs = values.get(v.name, {})
        seeds = sorted(set(as_is) & set(runs))
        sign = 1.0 if v.with_technique else -1.0
        contrasts.append(
            Contrast(
                technique=v.technique,
                contrast=v.contrast,
                variant=v.name,
                with_technique=v.with_technique,
                outside_space=config is not None and outside_space(v.params, config),
                paired=paired([sign * (runs[s] - as_is[s]) for s in seeds], minimize),
            )
        )
    done = sum(len(v) for v in values.values())
    epochs = next((t.user_attrs[ABLATION_ATTR]["epochs"] for t in trials), None)
    # A failed run retried under a new number counts once: by its key.
    keys = {(t.user_attrs.get("variant"), t.user_attrs.get("repeat")) for t in trials}
    return Ablation(
        study=str(companion.user_attrs.get("ablation_for", companion.study_name)),
        trial=number,
        metric=str(companion.user_attrs.get("metric", "value")),
        direction="minimize" if minimize else "maximize",
        epochs=epochs,
        repeats=len(as_is),
        as_is=as_is,
        contrasts=tuple(contrasts),
        missing=len(keys) - done,
        params=dict(params),
        own_seed=own_seed,
        baselines=dict(baselines or {}),
    )


def seed_luck(a: Ablation) -> str | None:
    """A note when the trial's own seed did better than the trial does over all its seeds (the
    whole interval of their mean lies on the worse side): the search picked a lucky seed, and
    its value overstates the model."""
    if a.own_seed not in a.as_is or len(a.as_is) < 3:
        return None
    runs = list(a.as_is.values())
    low, high = mean_interval(runs)
    own = a.as_is[a.own_seed]
    if (own >= low) if a.minimize else (own <= high):
        return None
    mean = sum(runs) / len(runs)
    note = (
        f"the search's value of trial {a.trial} ({a.metric} = {own:.4g}, its own seed) is "
        f"better than the same model over {len(runs)} seeds ({mean:.4g}, {CONFIDENCE:.0%} CI "
        f"{low:.4g} to {high:.4g}): part of why it won was its seed"
    )
    # A naive baseline inside (or beyond) the interval: over seeds, not clearly better than it.
    level = [
        f"{name} ({value:.4g})"
        for name, value in a.baselines.items()
        if ((value <= high) if a.minimize else (value >= low))
    ]
    if level:
        note += (
            f", and over seeds it is not clearly better than the naive baseline "
            f"{' or '.join(level)}"
        )
    return note + "; compare models over seeds (or raise the epochs) before trusting the ranking"


def read_ablation(config: StudyConfig, storage_url: str, number: int) -> Ablation:
    """The verdicts of trial `number`'s ablation in the study of `config`."""
    storage = open_storage(storage_url, config.workers, must_exist=True)
    study = load_existing(config.name, storage)
    config = stored_config(study, config)
    companion = load_companion(config, storage)
    return verdicts(companion, config, number, study.user_attrs.get("baselines", {}))


def latest(
    storage: optuna.storages.BaseStorage, study_name: str, config: StudyConfig | None = None
) -> Ablation | None:
    """The latest ablation of a study in `storage`, or None when it has none."""
    name = companion_name(study_name)
    if name not in study_names(storage):
        return None
    companion = optuna.load_study(study_name=name, storage=storage)
    number = companion.user_attrs.get("ablation_of")
    if number is None:
        return None
    baselines = optuna.load_study(study_name=study_name, storage=storage).user_attrs.get(
        "baselines", {}
    )
    return verdicts(companion, config, int(number), baselines)


def effect_text(c: Contrast, metric: str, reference: float | None, seeds: bool = True) -> str:
    """The effect of a contrast's technique in words: the change the technique made (with it
    minus without it) and its interval; errors and losses also relative to `reference`."""
    p = c.paired
    if p.n == 0:
        return "no complete pair of runs"
    text = difference(p.mean, metric)
    if not is_accuracy(metric) and reference:
        text += f" ({p.mean / abs(reference):+.1%})"
    if p.interval is not None:
        text += f", {CONFIDENCE:.0%} CI {interval(p.interval, metric)}"
    return text + (f", {p.n} seed{'s' if p.n != 1 else ''}" if seeds else "")


def side(c: Contrast, params: dict[str, Any]) -> str:
    """What the contrast compares, the side with the technique first."""
    variant, as_is = c.variant, "as is"
    if c.technique == "depth":
        layers = int(params.get("layers", 0))
        n = layers + 1 if c.with_technique else layers - 1
        return f"{max(n, layers)} vs {min(n, layers)} layers"
    pair = (variant, as_is) if c.with_technique else (as_is, variant)
    return f"{pair[0]} vs {pair[1]}"


def format_ablation(a: Ablation) -> str:
    """The verdicts for a terminal."""
    reference = sum(a.as_is.values()) / len(a.as_is) if a.as_is else None
    lines = [
        f"ablation of trial {a.trial} of study {a.study!r}: {a.repeats} seeds, "
        f"{a.epochs} epochs each, {a.metric} ({a.direction}), no pruning or early stopping",
        f"  as is: {a.metric} = {reference:.4g} (mean of {len(a.as_is)} seeds)"
        if reference is not None
        else "  as is: no complete run",
    ]
    for c in a.contrasts:
        outside = " [outside the search space]" if c.outside_space else ""
        lines.append(
            f"  {c.contrast} ({side(c, a.params)}): {c.paired.verdict}; "
            f"{effect_text(c, a.metric, reference)}{outside}"
        )
    if a.missing:
        lines.append(f"  {a.missing} runs not complete (failed, queued or running)")
    if (luck := seed_luck(a)) is not None:
        lines.append(f"  note: {luck}")
    lines.append(
        f"  effect = with the technique minus without it, paired by seed; {CONFIDENCE:.0%} "
        "t-interval; helped or hurt only when it excludes zero"
    )
    return "\n".join(lines)
