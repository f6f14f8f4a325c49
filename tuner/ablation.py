"""Ablation around the winner: the best trial (or a chosen one) trained as it is and with one
technique changed at a time, each with the same K training seeds, to say what each technique did
on this data with an interval, rather than what the search happened to try.

The variants: recurrent dropout off (or on at 0.2 when it was off), dropout likewise,
bidirectional layers toggled, one layer more (the new top layer repeats the top layer's units)
and one fewer, and GRU <-> LSTM. A variant may lie outside the study's search space (LSTM where
the space allows GRU only, a third layer where it stops at two): ablation asks what a technique
does to this model, not which model the search should find, so such variants run too and are
marked as outside the space.

Each run trains the trial's best epoch count, with no pruning and no early stopping, and scores
the metric after its last epoch. The runs are trials of a companion Optuna study,
`<study name>/ablation`, in the same storage: enqueued with fixed parameters and the user
attributes `ablation_of` (the trial), `variant`, `repeat` and `seed`, so that `tuner worker
--ablation` on any machine takes them from the same queue as search trials, a killed worker's
trial is retried the same way, and optuna-dashboard shows them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.config import AblationConfig, StudyConfig
from tuner.errors import StorageError, TunerError
from tuner.queue import budget, count
from tuner.results import best_trial, metric_value, minimizes
from tuner.space import MAX_LAYERS
from tuner.storage import locked, open_storage, queue_lock, study_names
from tuner.study import load_existing, stored_config
from tuner.verdict import (
    CONFIDENCE,
    Paired,
    difference,
    interval,
    is_accuracy,
    mean_interval,
    paired,
)

SUFFIX = "/ablation"
# The user attribute that makes a trial an ablation trial for tuner.objective: its training
# seed and epochs, {"seed": int, "epochs": int}.
ABLATION_ATTR = "ablation"
DEFAULT_REPEATS = AblationConfig.repeats  # README, "Reading the verdicts"
ON = 0.05  # a lower (recurrent) dropout rate counts as off, as in tuner.analysis
ON_RATE = 0.2  # the rate a variant turns (recurrent) dropout on at: the seed configuration's
AS_IS = "as is"
TECHNIQUES = ("recurrent dropout", "dropout", "bidirectional", "depth", "cell")


@dataclass(frozen=True)
class Variant:
    """The trial with one thing changed.

    `with_technique` says which side of the contrast the variant is: True when the variant has
    the technique and the trial as it is lacks it (recurrent dropout turned on, one layer
    more, LSTM for GRU); a verdict is always about the side with it.
    """

    name: str
    technique: str
    contrast: str  # the row of the cross-study table
    params: dict[str, Any]
    with_technique: bool


def companion_name(study_name: str) -> str:
    return study_name + SUFFIX


def variants(params: dict[str, Any]) -> list[Variant]:
    """The variants of a trial with `params`, one technique changed in each."""
    found: list[Variant] = []
    for name, technique in (("recurrent_dropout", "recurrent dropout"), ("dropout", "dropout")):
        on = float(params[name]) >= ON
        found.append(
            Variant(
                f"{technique} {'off' if on else f'on at {ON_RATE}'}",
                technique,
                technique,
                params | {name: 0.0 if on else ON_RATE},
                with_technique=not on,
            )
        )
    bidirectional = bool(params["bidirectional"])
    found.append(
        Variant(
            "one direction" if bidirectional else "bidirectional",
            "bidirectional",
            "bidirectional",
            params | {"bidirectional": not bidirectional},
            with_technique=not bidirectional,
        )
    )
    layers = int(params["layers"])
    if layers < MAX_LAYERS:
        top = params[f"units_{layers}"]
        found.append(
            Variant(
                "one layer more",
                "depth",
                "depth: one layer more",
                params | {"layers": layers + 1, f"units_{layers + 1}": top},
                with_technique=True,
            )
        )
    if layers > 1:
        fewer = {k: v for k, v in params.items() if k != f"units_{layers}"}
        found.append(
            Variant(
                "one layer fewer",
                "depth",
                "depth: one layer fewer",
                fewer | {"layers": layers - 1},
                with_technique=False,
            )
        )
    other = "lstm" if params["cell"] == "gru" else "gru"
    found.append(
        Variant(
            other.upper(),
            "cell",
            "cell: LSTM instead of GRU",
            params | {"cell": other},
            with_technique=other == "lstm",
        )
    )
    return found


def outside_space(params: dict[str, Any], config: StudyConfig) -> bool:
    """Whether the study's search space could not have sampled `params`."""
    space = config.space
    for name, value in params.items():
        param = space.units if name.startswith("units_") else getattr(space, name, None)
        if param is not None and not param.contains(value):
            return True
    return False


def repeat_seeds(config: StudyConfig, trial: FrozenTrial, repeats: int) -> list[int]:
    """K training seeds: the trial's own first (so that repeat 0 of the trial as it is
    retraces the search's run), then seeds drawn from the study's seed and the trial's number."""
    from tuner.seeds import training_seed

    first = trial.user_attrs.get("training_seed", training_seed(config.sampler.seed, trial.number))
    more = [
        int(np.random.SeedSequence([config.sampler.seed, trial.number, r]).generate_state(1)[0])
        >> 1
        for r in range(1, repeats)
    ]
    return [int(first), *more]


def open_companion(config: StudyConfig, storage: optuna.storages.BaseStorage) -> optuna.Study:
    """The companion study of ablation trials, created if needed."""
    study = optuna.create_study(
        study_name=companion_name(config.name),
        storage=storage,
        directions=[optuna.study.StudyDirection[d.upper()] for d in config.directions],
        sampler=optuna.samplers.RandomSampler(seed=config.sampler.seed),
        pruner=optuna.pruners.NopPruner(),
        load_if_exists=True,
    )
    if not study.user_attrs.get("ablation_for"):
        study.set_user_attr("ablation_for", config.name)
        study.set_user_attr("metric", config.metric)
    return study


def load_companion(config: StudyConfig, storage: optuna.storages.BaseStorage) -> optuna.Study:
    """The companion study for a worker to join; it must exist."""
    name = companion_name(config.name)
    if name not in study_names(storage):
        raise StorageError(
            f"no study named {name!r} in this storage; `tuner ablate {config.path}` queues it"
        )
    return optuna.load_study(
        study_name=name,
        storage=storage,
        sampler=optuna.samplers.RandomSampler(),
        pruner=optuna.pruners.NopPruner(),
    )


def chosen_trial(study: optuna.Study, number: int | None) -> FrozenTrial:
    """The best complete trial, or the complete trial `number`."""
    if number is None:
        return best_trial(study)
    trials = study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        raise TunerError(f"study {study.study_name!r} has no trial {number}")
    trial = trials[number]
    if trial.state != TrialState.COMPLETE:
        raise TunerError(
            f"trial {number} of study {study.study_name!r} is {trial.state.name.lower()}; "
            "only a complete trial can be ablated"
        )
    return trial


def enqueue(companion: optuna.Study, config: StudyConfig, trial: FrozenTrial, repeats: int) -> int:
    """Queue the runs of `trial`'s ablation that are not queued, running or done yet; returns
    how many runs the ablation has in all."""
    epochs = int(trial.user_attrs.get("best_epoch") or config.training.epochs)
    seeds = repeat_seeds(config, trial, repeats)
    runs = [(AS_IS, dict(trial.params))] + [(v.name, v.params) for v in variants(trial.params)]

    def queue_missing() -> None:
        alive = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
        have = {
            (t.user_attrs.get("variant"), t.user_attrs.get("repeat"))
            for t in companion.get_trials(deepcopy=False, states=alive)
            if t.user_attrs.get("ablation_of") == trial.number
        }
        for repeat, seed in enumerate(seeds):
            for name, params in runs:
                if (name, repeat) in have:
                    continue
                companion.enqueue_trial(
                    params,
                    user_attrs={
                        "ablation_of": trial.number,
                        "variant": name,
                        "repeat": repeat,
                        "seed": seed,
                        ABLATION_ATTR: {"seed": seed, "epochs": epochs},
                    },
                )
        companion.set_user_attr("ablation_of", trial.number)
        companion.set_user_attr("repeats", repeats)

    locked(companion._storage, queue_lock(companion.study_name), queue_missing)
    return len(seeds) * len(runs)


# verdicts


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


def ablate(
    config: StudyConfig,
    storage_url: str,
    *,
    number: int | None = None,
    repeats: int = DEFAULT_REPEATS,
    n_workers: int = 1,
    pin: bool = True,
    out: TextIO = sys.stdout,
    say: Callable[[str], None] = print,
) -> Ablation:
    """Queue the ablation of the best trial (or trial `number`) in the companion study, run
    `n_workers` worker processes on it until its runs are done, and return the verdicts."""
    from tuner.launcher import gpus, on_gpus, plan, start_workers, supervise, workers_to_start

    storage = open_storage(storage_url, config.workers, must_exist=True)
    study = load_existing(config.name, storage)
    # The study as it was run; a study file that no longer matches it is refused here.
    config = stored_config(study, config)
    trial = chosen_trial(study, number)
    companion = open_companion(config, storage)
    total = enqueue(companion, config, trial, repeats)
    say(
        f"ablation of trial {trial.number}: {total} runs ({repeats} seeds each) in study "
        f"{companion.study_name!r}"
    )
    left = total - count(companion).finished
    n_workers = workers_to_start(n_workers, left, say) if left > 0 else 0
    placements = on_gpus(plan(n_workers, pin), gpus()) if n_workers else []
    processes = start_workers(config.path, storage_url, placements, options=("--ablation",))
    codes = supervise(processes, companion, total, out, best=False) if processes else []
    failed = [f"worker {i} exited with code {c}" for i, c in enumerate(codes) if c]
    if failed:
        raise TunerError("; ".join(failed))
    return verdicts(companion, config, trial.number, study.user_attrs.get("baselines", {}))


def search_finished(config: StudyConfig, storage_url: str) -> bool:
    """Whether the search of the study in `config` has spent its budget (`tuner run` ablates
    only then, not after a search stopped by Ctrl-C)."""
    study = load_existing(config.name, open_storage(storage_url, config.workers, must_exist=True))
    return count(study).finished >= budget(study)


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
