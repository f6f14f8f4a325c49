"""The statistics behind `tuner report`: what each technique did to a study's objective, with
confidence intervals, and how important each hyperparameter was.

A technique splits a study's complete trials into groups by one parameter: recurrent dropout on
or off, depth (1, 2, 3 layers), bidirectional or not, GRU or LSTM. Each group is described by
its size, best and median value, and an exact confidence interval of its median (from 6 trials:
5 cannot give 95%). Each group is compared with the technique's reference group (off, 1 layer,
not bidirectional, GRU) by the difference of their medians, with a bootstrap confidence interval
of that difference (the two groups resampled independently). A group did better (or worse)
among searched trials when that interval excludes zero; otherwise the data cannot tell the
groups apart (with no difference, 2% to 4% of such comparisons of independent draws excluded
zero in simulation, `tests/answers/test_analysis.py`). Each comparison's
interval stands alone: no correction is made for the number of comparisons in a report.
Parameters other than those above (a task's own,
say) are left out of the grouping, but not out of the importances.

These groups hold trials that the sampler chose and the pruner let finish: a difference between
them is an association, not the effect of switching the technique on (for that, `tuner ablate`).
Pruned trials count too, compared at the same epoch: every finished trial that reached the
pruner's first rung (the earliest epoch at which a trial was pruned) has a value there, so
groups at that rung fill sooner than groups of complete trials.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.answers.results import summary
from tuner.answers.verdict import BETTER_AMONG, TOO_FEW, UNCLEAR, WORSE_AMONG
from tuner.search.trials import finished_models, latest_per_model, reached

if TYPE_CHECKING:
    from tuner.answers.ablation import Ablation

BOOTSTRAP_RESAMPLES = 4000
CONFIDENCE = 0.95
MIN_GROUP = 5  # a smaller group gets no confidence interval and no verdict
RECURRENT_DROPOUT_ON = 0.05  # a lower rate counts as recurrent dropout off
SEED = 0


@dataclass(frozen=True)
class TechniqueSpec:
    """How one technique groups trials: by `level(params[param])`."""

    name: str
    param: str
    level: Callable[[Any], str]
    reference: str


TECHNIQUES = (
    TechniqueSpec(
        "recurrent dropout",
        "recurrent_dropout",
        lambda v: "on" if float(v) >= RECURRENT_DROPOUT_ON else "off",
        "off",
    ),
    TechniqueSpec(
        "depth", "layers", lambda v: f"{int(v)} layer{'s' if int(v) > 1 else ''}", "1 layer"
    ),
    TechniqueSpec("bidirectional", "bidirectional", lambda v: "yes" if v else "no", "no"),
    TechniqueSpec("cell", "cell", lambda v: str(v).upper(), "GRU"),
)


@dataclass(frozen=True)
class Group:
    """The complete trials of one level of a technique."""

    label: str
    numbers: tuple[int, ...]
    values: tuple[float, ...]
    best: float
    median: float
    median_ci: tuple[float, float] | None

    @property
    def n(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class Effect:
    """One group against its technique's reference group.

    `difference` is the treatment's median minus the reference's, in the metric's units;
    `gain` is the same difference as a fraction of the reference median, signed so that a
    positive gain is an improvement whatever the study's direction.
    """

    technique: str
    treatment: str
    reference: str
    difference: float
    difference_ci: tuple[float, float] | None
    gain: float | None
    gain_ci: tuple[float, float] | None
    verdict: str
    needs: int = 0  # more trials the smaller group needs for an interval and a verdict

    @property
    def label(self) -> str:
        return f"{self.technique}: {self.treatment} vs {self.reference}"


@dataclass(frozen=True)
class Technique:
    """A technique's groups of complete trials, and at `rung` its groups of every finished
    trial that reached that epoch, pruned ones included; `pruned_levels` are the levels whose
    trials were all pruned."""

    spec: TechniqueSpec
    groups: tuple[Group, ...]
    effects: tuple[Effect, ...]
    rung: int | None = None
    rung_groups: tuple[Group, ...] = ()
    rung_effects: tuple[Effect, ...] = ()
    pruned_levels: tuple[str, ...] = ()


@dataclass(frozen=True)
class StudyAnalysis:
    """Everything the report says about one study."""

    name: str
    metric: str
    direction: str
    summary: dict[str, Any]  # `tuner.answers.results.summary`: best trial, baselines, seed configs
    values: dict[int, float]  # complete trials' values by number
    importances: dict[str, dict[str, float]]  # evaluator name -> parameter -> importance
    importance_note: str | None  # why importances are missing, if they are
    techniques: tuple[Technique, ...]
    ablation: Ablation | None = (
        None  # tuner.search.ablation's latest verdicts, when there are some
    )
    diagnoses: tuple[str, ...] = ()  # tuner.answers.diagnoses

    @property
    def minimize(self) -> bool:
        return self.direction == "minimize"


def analyse(study: optuna.Study) -> StudyAnalysis:
    """The statistics of one study (it must have a complete trial). Its models are counted
    once each: with the pruner `pause`, a paused model is one (by the best value it reached) and
    a model resumed over several trials is its latest (`tuner.search.trials.finished_models`)."""
    s = summary(study)
    complete = finished_models(study)
    pruned = study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
    # At the first rung, every model that got there once: its latest trial holds its curve.
    reached_rung = latest_per_model(complete + pruned)
    minimize = s["direction"] == "minimize"
    rng = np.random.default_rng(SEED)
    rung = min((max(t.intermediate_values) for t in pruned if t.intermediate_values), default=None)
    techniques = []
    for spec in TECHNIQUES:
        found = technique(spec, complete, minimize, rng)
        at_rung = None if rung is None else technique(spec, reached_rung, minimize, rng, rung)
        levels = {spec.level(t.params[spec.param]) for t in pruned if spec.param in t.params}
        if found is None and at_rung is None and not levels:
            continue
        base = found or Technique(spec, (), ())
        techniques.append(
            replace(
                base,
                rung=rung if at_rung is not None else None,
                rung_groups=at_rung.groups if at_rung is not None else (),
                rung_effects=at_rung.effects if at_rung is not None else (),
                pruned_levels=tuple(sorted(levels - {g.label for g in base.groups})),
            )
        )
    importances, note = param_importances(study, len(complete))
    return StudyAnalysis(
        name=study.study_name,
        metric=s["metric"],
        direction=s["direction"],
        summary=s,
        values={t.number: float(v) for t in complete if (v := reached(t, minimize)) is not None},
        importances=importances,
        importance_note=note,
        techniques=tuple(techniques),
    )


def technique(
    spec: TechniqueSpec,
    trials: list[FrozenTrial],
    minimize: bool,
    rng: np.random.Generator,
    rung: int | None = None,
) -> Technique | None:
    """The groups and effects of one technique, or None when no trial has its parameter; at
    `rung`, of the trials' values at that epoch."""
    members: dict[str, list[tuple[Any, int, float]]] = {}
    for t in trials:
        value = reached(t, minimize) if rung is None else t.intermediate_values.get(rung)
        if spec.param in t.params and value is not None:
            members.setdefault(spec.level(t.params[spec.param]), []).append(
                (t.params[spec.param], t.number, float(value))
            )
    if not members:
        return None
    # Levels in the order of their parameter values: off before on, 1 layer before 2.
    ordered = sorted(members.items(), key=lambda item: min(raw for raw, _, _ in item[1]))
    samples: dict[str, np.ndarray | None] = {}
    groups = []
    for label, rows in ordered:
        values = np.array([v for _, _, v in rows])
        medians = bootstrap_medians(values, rng)
        samples[label] = medians
        groups.append(
            Group(
                label=label,
                numbers=tuple(n for _, n, _ in rows),
                values=tuple(float(v) for v in values),
                best=float(values.min() if minimize else values.max()),
                median=float(np.median(values)),
                median_ci=None if medians is None else median_interval(values),
            )
        )
    labels = [g.label for g in groups]
    reference = spec.reference if spec.reference in labels else labels[0]
    ref = groups[labels.index(reference)]
    effects = tuple(
        effect(spec.name, g, ref, samples[g.label], samples[ref.label], minimize)
        for g in groups
        if g is not ref
    )
    return Technique(spec, tuple(groups), effects)


def effect(
    name: str,
    treatment: Group,
    reference: Group,
    treatment_medians: np.ndarray | None,
    reference_medians: np.ndarray | None,
    minimize: bool,
) -> Effect:
    sign = -1.0 if minimize else 1.0
    difference = treatment.median - reference.median
    scale = abs(reference.median) or None
    gain = None if scale is None else sign * difference / scale
    if treatment_medians is None or reference_medians is None:
        needs = MIN_GROUP - min(treatment.n, reference.n)
        return Effect(
            name, treatment.label, reference.label, difference, None, gain, None, TOO_FEW, needs
        )
    low, high = interval(treatment_medians - reference_medians)
    gain_ci = None
    if scale is not None:
        ends = sorted((sign * low / scale, sign * high / scale))
        gain_ci = (ends[0], ends[1])
    if low > 0 or high < 0:
        verdict = BETTER_AMONG if sign * difference > 0 else WORSE_AMONG
    else:
        verdict = UNCLEAR
    return Effect(
        name, treatment.label, reference.label, difference, (low, high), gain, gain_ci, verdict
    )


def bootstrap_medians(values: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """Medians of `BOOTSTRAP_RESAMPLES` resamples of `values`, or None for too small a group."""
    if len(values) < MIN_GROUP:
        return None
    picks = rng.integers(0, len(values), size=(BOOTSTRAP_RESAMPLES, len(values)))
    medians: np.ndarray = np.median(values[picks], axis=1)
    return medians


def median_interval(values: np.ndarray) -> tuple[float, float] | None:
    """The exact, distribution-free interval of the median of `values` at `CONFIDENCE` or more:
    the k-th smallest and k-th largest values, k the largest for which the median lies between
    them with that probability (each value falls below it with probability 1/2, a binomial
    count). None when no pair of values is that sure: below 6 values (5 give 93.75% at most).
    A percentile bootstrap of the median covered it only 92% to 94% of the time with 5 to 20
    values (`tests/answers/test_analysis.py`)."""
    from math import comb

    n = len(values)
    ordered = np.sort(values)
    below, k = 0.0, 0
    while k < n // 2:
        below_next = below + comb(n, k) / 2**n  # P(fewer than k + 1 values below the median)
        if 1 - 2 * below_next < CONFIDENCE:
            break
        below, k = below_next, k + 1
    if k == 0:
        return None
    return float(ordered[k - 1]), float(ordered[n - k])


def interval(samples: np.ndarray) -> tuple[float, float]:
    """The percentile bootstrap interval at `CONFIDENCE`."""
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def param_importances(
    study: optuna.Study, n_complete: int
) -> tuple[dict[str, dict[str, float]], str | None]:
    """Importances by Optuna's fANOVA and PED-ANOVA evaluators; parameters fixed by the study
    file (a single choice) are left out."""
    if n_complete < 2:
        return {}, f"importances need 2 complete trials or more; the study has {n_complete}"
    evaluators: dict[str, optuna.importance.BaseImportanceEvaluator] = {
        "fANOVA": optuna.importance.FanovaImportanceEvaluator(seed=SEED),
        "PED-ANOVA": optuna.importance.PedAnovaImportanceEvaluator(),
    }
    fixed = {
        p
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        for p, d in t.distributions.items()
        if d.single()
    }
    # With a cost objective, the importances are those of the metric.
    target = (lambda t: float(t.values[0])) if len(study.directions) > 1 else None
    result: dict[str, dict[str, float]] = {}
    reasons = []
    for name, evaluator in evaluators.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                found = optuna.importance.get_param_importances(
                    study, evaluator=evaluator, target=target
                )
            except (ValueError, RuntimeError) as e:
                reasons.append(f"{name}: {e}")
                continue
        result[name] = {p: float(v) for p, v in found.items() if p not in fixed}
    return result, "; ".join(reasons) or None


def compare(analyses: list[StudyAnalysis]) -> list[tuple[str, dict[str, Effect]]]:
    """Across studies: each effect's label, and the effect in each study that has it."""
    table: dict[str, dict[str, Effect]] = {}
    for a in analyses:
        for t in a.techniques:
            for e in t.effects:
                table.setdefault(e.label, {})[a.name] = e
    order = {spec.name: i for i, spec in enumerate(TECHNIQUES)}
    return sorted(table.items(), key=lambda item: order[next(iter(item[1].values())).technique])
