"""An ablation's verdicts: the runs of the trial as it is and of each variant (queued and run
by `tuner.search.ablation`), paired by fresh seed, judged as one family
(`tuner.answers.inference`), and put into words.

What each verdict claims: with no real effect of any technique, the chance that an ablation
says "helped" or "hurt" about any of them is at most 5% (Holm's correction over its contrasts;
with `--until-decided`, anytime-valid intervals, so looking after every seed keeps it). Each
run is scored on the test split, where nothing was chosen. A run that failed (its loss
diverged, say) is never in the winning side's favour: a side that failed on some seed cannot
be said to have helped, or the other side to have hurt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.answers.inference import (
    ALPHA,
    CONFIDENCE,
    FIXED,
    POWER,
    SEQUENTIAL,
    Judged,
    detectable_effect,
    judge,
    prediction_bound,
)
from tuner.answers.verdict import (
    HELPED,
    HURT,
    UNCLEAR,
    directed,
    directed_interval,
    is_accuracy,
    mean_interval,
    metric_bounds,
    significant,
)
from tuner.config import StudyConfig
from tuner.search.ablation import (
    AS_IS,
    READ_AT_ATTR,
    SEQUENTIAL_ATTR,
    failed_for_good,
    is_current,
    outside_space,
    variants,
)
from tuner.search.companion import companion_name, load_companion
from tuner.search.study import load_existing, stored_config
from tuner.search.trials import metric_value, minimizes, reached
from tuner.storage import opened, study_names


@dataclass(frozen=True)
class Contrast:
    """One technique's paired comparison: the trial as it is against one variant, on the
    fresh seeds both completed. `failed_with` and `failed_without` count the seeds on which
    the side with the technique, or without it, failed for good."""

    technique: str
    contrast: str
    variant: str
    with_technique: bool
    outside_space: bool
    judged: Judged
    failed_with: int = 0
    failed_without: int = 0

    @property
    def verdict(self) -> str:
        """The family's verdict, never in favour of a side that failed on some seed."""
        v = self.judged.verdict
        if (v == HELPED and self.failed_with) or (v == HURT and self.failed_without):
            return UNCLEAR
        return v

    @property
    def n(self) -> int:
        return self.judged.n


@dataclass(frozen=True)
class Ablation:
    """An ablation's runs and verdicts. Run values are the metric on the test split; the
    validation values (each run's best epoch, as the search scores a trial) serve only to ask
    whether the search's own seed was lucky."""

    study: str
    trial: int
    metric: str
    direction: str
    epochs: int | None  # the study's epochs: each run may stop early before them
    repeats: int  # fresh seeds on which the trial as it is completed
    as_is: dict[int, float]  # test values by seed
    contrasts: tuple[Contrast, ...]
    missing: int = 0  # runs queued or running
    failed: int = 0  # runs that failed for good
    params: dict[str, Any] = field(default_factory=dict)
    search_value: float | None = None  # the trial's value in the search (validation, own seed)
    as_is_validation: dict[int, float] = field(default_factory=dict)  # by fresh seed
    baselines: dict[str, float] = field(default_factory=dict)  # the study's, on validation
    test_baselines: dict[str, float] = field(default_factory=dict)  # the same, on test
    design: str = FIXED
    epochs_trained: int = 0  # over every run of this ablation
    # Seed counts at which its fixed-K verdicts were printed before more seeds were added.
    read_at: tuple[int, ...] = ()

    @property
    def minimize(self) -> bool:
        return self.direction == "minimize"

    @property
    def false_call_rate(self) -> float:
        """The most that any technique that did nothing is called helped or hurt, over every
        reading of this ablation: 5% at each (Holm), so 5% times the readings when seeds were
        added after its verdicts were printed (no rule corrects looking twice at a fixed K)."""
        return ALPHA * (1 + len(self.read_at))

    def false_call_text(self) -> str:
        """`false_call_rate` in words."""
        if not self.read_at:
            return f"{ALPHA:.0%}"
        at = ", ".join(str(k) for k in self.read_at)
        return (
            f"{self.false_call_rate:.0%} (not {ALPHA:.0%}: its verdicts were also printed "
            f"before, read as a fixed-K ablation of {at} seeds)"
        )

    @property
    def measure(self) -> str:
        """The metric as the runs are scored: `test mae` for `val_mae`."""
        return "test " + self.metric.removeprefix("val_")


def verdicts(
    companion: optuna.Study,
    config: StudyConfig | None,
    number: int,
    search: FrozenTrial | None = None,
    baselines: dict[str, float] | None = None,
) -> Ablation:
    """The verdicts of trial `number`'s ablation from the companion study's runs; `search` is
    the trial as the search ran it, `baselines` the study's naive baselines."""
    runs = [
        t
        for t in companion.get_trials(deepcopy=False)
        if t.user_attrs.get("ablation_of") == number and is_current(t)
    ]
    minimize = minimizes(companion)
    values: dict[str, dict[int, float]] = {}
    validation: dict[int, float] = {}
    failed: dict[str, set[int]] = {}
    repeat_order: dict[int, int] = {}
    for t in runs:
        variant, seed = t.user_attrs["variant"], int(t.user_attrs["seed"])
        repeat_order[seed] = int(t.user_attrs["repeat"])
        value = metric_value(t)
        if t.state == TrialState.COMPLETE and value is not None:
            values.setdefault(variant, {})[seed] = value
            if variant == AS_IS and "validation_value" in t.user_attrs:
                validation[seed] = float(t.user_attrs["validation_value"])
        elif failed_for_good(t):
            failed.setdefault(variant, set()).add(seed)
    as_is = values.get(AS_IS, {})
    params = next((dict(t.params) for t in runs if t.user_attrs.get("variant") == AS_IS), {})
    design = SEQUENTIAL if companion.user_attrs.get(f"{SEQUENTIAL_ATTR}{number}") else FIXED
    family, found = [], variants(params) if params else []
    for v in found:
        other = values.get(v.name, {})
        # In the order the seeds were run: the sequential test reads them as they came.
        seeds = sorted(set(as_is) & set(other), key=lambda s: repeat_order[s])
        sign = 1.0 if v.with_technique else -1.0
        family.append([sign * (other[s] - as_is[s]) for s in seeds])
    judged = judge(family, minimize, design)
    contrasts = []
    for v, j in zip(found, judged, strict=True):
        lost_variant = len(failed.get(v.name, set()))
        lost_as_is = len(failed.get(AS_IS, set()))
        contrasts.append(
            Contrast(
                technique=v.technique,
                contrast=v.contrast,
                variant=v.name,
                with_technique=v.with_technique,
                outside_space=config is not None and outside_space(v.params, config),
                judged=j,
                failed_with=lost_variant if v.with_technique else lost_as_is,
                failed_without=lost_as_is if v.with_technique else lost_variant,
            )
        )
    keys = {(t.user_attrs.get("variant"), t.user_attrs.get("repeat")) for t in runs}
    done = sum(len(v) for v in values.values()) + sum(len(v) for v in failed.values())
    return Ablation(
        study=str(companion.user_attrs.get("ablation_for", companion.study_name)),
        trial=number,
        metric=str(companion.user_attrs.get("metric", "value")),
        direction="minimize" if minimize else "maximize",
        epochs=config.training.epochs if config is not None else None,
        repeats=len(as_is),
        as_is=as_is,
        contrasts=tuple(contrasts),
        missing=len(keys) - done,
        failed=sum(len(v) for v in failed.values()),
        params=params,
        search_value=reached(search, minimize) if search is not None else None,
        as_is_validation=validation,
        baselines=dict(baselines or {}),
        design=design,
        epochs_trained=sum(int(t.user_attrs.get("epochs", 0)) for t in runs),
        read_at=tuple(companion.user_attrs.get(f"{READ_AT_ATTR}{number}", [])),
    )


def detectable(a: Ablation, c: Contrast) -> float | None:
    """The smallest effect this fixed-K ablation would have found for an undecided contrast;
    None when decided or sequential, where the interval itself bounds the effect."""
    j = c.judged
    if c.verdict != UNCLEAR or a.design != FIXED or j.sd is None:
        return None
    return detectable_effect(j.sd, j.n, j.family_size)


def seed_luck(a: Ablation) -> str | None:
    """A note when the search's value of the trial beat the one-sided 95% prediction bound of
    one more run of the same model from the fresh seeds' validation values: the search picked
    a lucky seed, and its value overstates the model. With no luck the note fires at most 5% of
    the time (normal runs)."""
    runs = list(a.as_is_validation.values())
    own = a.search_value
    bound = prediction_bound(runs, a.minimize)
    if own is None or bound is None or ((own >= bound) if a.minimize else (own <= bound)):
        return None
    mean = sum(runs) / len(runs)
    note = (
        f"the search's value of trial {a.trial} ({a.metric} = {own:.4g}, its own seed) is "
        f"better than {CONFIDENCE:.0%} of new runs of the same model would be (bound "
        f"{bound:.4g}; mean {mean:.4g} over {len(runs)} fresh seeds): its search value is "
        "optimistic, its own seed was lucky"
    )
    # A naive baseline inside (or beyond) the interval of the mean: not clearly better than it.
    low, high = mean_interval(runs)
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


def read_ablation(
    config: StudyConfig, storage_url: str, number: int, baselines: bool = True
) -> Ablation:
    """The verdicts of trial `number`'s ablation in the study of `config`; with `baselines`,
    beside the naive baselines on the test split (which reads the study's data)."""
    with opened(storage_url, config.workers, must_exist=True) as storage:
        study = load_existing(config.name, storage)
        config = stored_config(study, config)
        companion = load_companion(config, storage)
        found = verdicts(
            companion,
            config,
            number,
            study.get_trials(deepcopy=False)[number],
            study.user_attrs.get("baselines", {}),
        )
    return replace(found, test_baselines=test_baselines(config)) if baselines else found


def test_baselines(config: StudyConfig) -> dict[str, float]:
    """The study's naive baselines scored on the test split, where the ablation's runs are."""
    from tuner.data import prepare

    return {
        name: scores[config.measure]
        for name, scores in prepare(config.data).baselines_on("test").items()
        if config.measure in scores
    }


def decided(a: Ablation) -> bool:
    """Whether every contrast has a verdict of helped or hurt (`--until-decided` stops)."""
    return bool(a.contrasts) and all(c.verdict in (HELPED, HURT) for c in a.contrasts)


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
    study = optuna.load_study(study_name=study_name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    search = trials[int(number)] if int(number) < len(trials) else None
    return verdicts(companion, config, int(number), search, study.user_attrs.get("baselines", {}))


def effect_text(c: Contrast, a: Ablation, reference: float | None, seeds: bool = True) -> str:
    """The effect of a contrast's technique in words, read in the metric's direction: what
    turning it on did (with it minus without it), its interval (a confidence sequence when the
    ablation added seeds until decided) and Holm's adjusted p-value; errors and losses also
    relative to `reference`."""
    j, metric, minimize = c.judged, a.metric, a.minimize
    kind = "confidence sequence" if a.design == SEQUENTIAL else "CI"
    if j.n == 0:
        return "no complete pair of runs"
    text = directed(j.mean, metric, minimize)
    if not is_accuracy(metric) and reference:
        text += f" ({significant(100 * abs(j.mean / reference), 2)}%)"
    if j.interval is not None:
        text += f", {CONFIDENCE:.0%} {kind} {directed_interval(j.interval, metric, minimize)}"
    if j.adjusted is not None:
        text += f", adjusted p = {j.adjusted:.2g}"
    return text + (f", {j.n} seed{'s' if j.n != 1 else ''}" if seeds else "")


def failures_text(c: Contrast) -> str:
    """The seeds on which a side failed, or nothing."""
    parts = []
    if c.failed_with:
        parts.append(f"with it failed on {c.failed_with} seed{'s' if c.failed_with > 1 else ''}")
    if c.failed_without:
        n = c.failed_without
        parts.append(f"without it failed on {n} seed{'s' if n > 1 else ''}")
    return "; ".join(parts)


def side(c: Contrast, params: dict[str, Any]) -> str:
    """What the contrast compares, the side with the technique first."""
    variant, as_is = c.variant, "as is"
    if c.technique == "depth":
        layers = int(params.get("layers", 0))
        n = layers + 1 if c.with_technique else layers - 1
        return f"{max(n, layers)} vs {min(n, layers)} layers"
    pair = (variant, as_is) if c.with_technique else (as_is, variant)
    return f"{pair[0]} vs {pair[1]}"


def hiding(a: Ablation, c: Contrast) -> str:
    """For "no clear difference": how large an effect could still hide behind it."""
    if c.verdict != c.judged.verdict:
        return f"{c.judged.verdict} withheld: the side it favours failed on some seed"
    if c.verdict != UNCLEAR or c.judged.interval is None:
        return ""
    low, high = c.judged.interval
    if a.design == SEQUENTIAL:
        if not (math.isfinite(low) and math.isfinite(high)):
            return "too few seeds to bound the effect"
        bound = max(abs(low), abs(high))
        return f"no effect larger than {_size(bound, a.metric)} either way ({CONFIDENCE:.0%})"
    size = detectable(a, c)
    if size is None:
        return ""
    return (
        f"an effect of {_size(size, a.metric)} or more, either way, would have been found "
        f"about {POWER:.0%} of the time (at the spread seen)"
    )


def _size(value: float, metric: str) -> str:
    if is_accuracy(metric):
        return f"{significant(100 * value, 2)} points"
    return significant(value, 2)


def mean_ci_text(a: Ablation) -> str:
    """ ", 95% CI a to b" of the mean as it is over the fresh seeds ("" below 2 seeds)."""
    if len(a.as_is) < 2:
        return ""
    low, high = mean_interval(list(a.as_is.values()), metric_bounds(a.metric))
    return f", {CONFIDENCE:.0%} CI {low:.4g} to {high:.4g}"


def format_ablation(a: Ablation) -> str:
    """The verdicts for a terminal."""
    reference = sum(a.as_is.values()) / len(a.as_is) if a.as_is else None
    rule = (
        "Holm over the contrasts of this ablation, anytime-valid (seeds added until decided)"
        if a.design == SEQUENTIAL
        else "Holm over the contrasts of this ablation"
    )
    lines = [
        f"ablation of trial {a.trial} of study {a.study!r}: {a.repeats} fresh seeds, up to "
        f"{a.epochs} epochs each with early stopping, {a.epochs_trained} epochs in all; "
        f"scored on the test split ({a.measure}, {a.direction})",
        f"  as is: {a.measure} = {reference:.4g} (mean of {len(a.as_is)} seeds{mean_ci_text(a)})"
        + "".join(
            f"; naive baseline {name} on the test split: {value:.4g}"
            for name, value in a.test_baselines.items()
        )
        if reference is not None
        else "  as is: no complete run",
    ]
    for c in a.contrasts:
        notes = [n for n in (failures_text(c), hiding(a, c)) if n]
        if c.outside_space:
            notes.append("outside the search space")
        lines.append(
            f"  {c.contrast} ({side(c, a.params)}): {c.verdict}; "
            f"{effect_text(c, a, reference)}" + "".join(f" [{n}]" for n in notes)
        )
    if a.missing:
        lines.append(f"  {a.missing} runs not finished (queued or running)")
    if (luck := seed_luck(a)) is not None:
        lines.append(f"  note: {luck}")
    lines.append(
        f"  effect = what turning the technique on did, paired by seed; {CONFIDENCE:.0%} "
        f"interval per contrast; helped or hurt only when {rule} keeps the chance of calling "
        f"a technique that did nothing helped or hurt at {a.false_call_text()}; a side that "
        "failed on a "
        "seed never wins"
    )
    return "\n".join(lines)
