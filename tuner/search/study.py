"""A study's life in the storage: created once with its baselines, seed configurations and
trial budget, loaded by every worker, listed and deleted."""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from tuner import __version__
from tuner.config import StudyConfig
from tuner.errors import StorageError, TunerError
from tuner.search import trials
from tuner.search.companion import ABLATION_FOR
from tuner.search.definition import DEFINITION_ATTR, check, definition, grown, study_config
from tuner.search.queue import BUDGET_ATTR, Counts, count, refill
from tuner.search.schedule import EPOCH_BUDGET_ATTR, scheduled
from tuner.search.space import SEED_CONFIGS, seed_fits
from tuner.storage import locked, queue_lock, study_names, study_storage
from tuner.storage.artifacts import Location, remove_all


def make_sampler(
    config: StudyConfig, worker_index: int = 0, proposed: int = 0
) -> optuna.samplers.BaseSampler:
    """The study's sampler. Each worker of a study gets its own seed, or they would all propose
    the same parameters; and so does each run of a study that already holds `proposed` trials,
    or a resumed study would propose its first run's parameters again."""
    s = config.sampler
    # Within the seeds numpy accepts, however large the worker index (seeds wrap around).
    seed = (s.seed + worker_index) % 2**32
    if proposed:
        seed = zlib.crc32(f"{s.seed}:{worker_index}:{proposed}".encode())
    if s.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=s.n_startup_trials,
            multivariate=s.multivariate,
            group=s.multivariate,  # `units_2` exists only in trials with two layers or more
            constant_liar=True,
        )


def make_pruner(config: StudyConfig) -> optuna.pruners.BasePruner:
    p = config.pruner
    if p.name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps
        )
    if p.name in ("none", "pause"):
        # `pause` stops trials at rungs itself, to resume them (tuner.search.schedule).
        return optuna.pruners.NopPruner()
    if p.name == "successive-halving":
        # One bracket: the sampler learns from every trial, where Hyperband's TPE sees only the
        # trials of the current trial's bracket.
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=p.min_resource, reduction_factor=p.reduction_factor
        )
    return optuna.pruners.HyperbandPruner(
        min_resource=p.min_resource,
        max_resource=config.training.epochs,
        reduction_factor=p.reduction_factor,
    )


def open_study(
    config: StudyConfig,
    storage: optuna.storages.BaseStorage,
    baselines: Callable[[], dict[str, dict[str, float]]],
    *,
    n_trials: int | None = None,
    worker_index: int = 0,
    on_skip: Callable[[str], None] = lambda message: None,
    attrs: Callable[[], dict[str, Any]] = dict,
) -> optuna.Study:
    """The study named in `config`: loaded, or created with its definition, baselines, seed
    configurations and a queue of `n_trials` trials (default: the study file's) when it does
    not exist yet, by whichever worker gets there first (who alone writes the budget, under the
    set-up lock). A set-up left unfinished (its creator
    died, or lost a COMMIT's answer) is finished by whoever comes next. `attrs` gives more user
    attributes to record at creation (a classification study's class names).

    A study file that differs from the study's stored definition is refused before anything
    is written."""
    defined = definition(config)  # before anything is written: the data file must be there
    kwargs: dict[str, Any] = {
        "study_name": config.name,
        "storage": storage,
        "sampler": make_sampler(config, worker_index),
        "pruner": make_pruner(config),
    }
    plan: _Plan | None = None
    if config.name not in study_names(storage):
        # Before anything is written: bad data must leave no study behind.
        plan = _Plan(config, defined, baselines(), attrs(), n_trials or config.n_trials, on_skip)
        try:
            directions = [optuna.study.StudyDirection[d.upper()] for d in config.directions]
            optuna.create_study(directions=directions, **kwargs)
        except optuna.exceptions.DuplicatedStudyError:
            pass  # another worker created it a moment ago (or this one, answer lost)
    study = optuna.load_study(**kwargs)
    stored = study.user_attrs.get(DEFINITION_ATTR)
    if stored is not None:
        check(stored, config, defined)
    found = [d.name.lower() for d in study.directions]
    if found != config.directions:
        raise StorageError(
            f"study {config.name!r} exists with directions {found}, "
            f"but {config.path} asks for {config.directions}"
        )
    if not study.user_attrs.get("ready"):
        if plan is None:
            plan = _Plan(
                config, defined, baselines(), attrs(), n_trials or config.n_trials, on_skip
            )
        _set_up(study, plan)
    elif stored is None:
        study.set_user_attr(DEFINITION_ATTR, defined)
        on_skip(
            f"study {config.name!r} was created before tuner stored study definitions: "
            f"{config.path} is stored as its definition now, and later runs must match it"
        )
    check(study.user_attrs[DEFINITION_ATTR], config, defined)  # as whoever set it up stored it
    raised = grown(study.user_attrs[DEFINITION_ATTR], defined)
    if raised is not None:  # more epochs: the study goes on, its paused trials resume
        study.set_user_attr(DEFINITION_ATTR, raised)
    _raise_epoch_budget(study, config)
    proposed = len(study.get_trials(deepcopy=False, states=_PROPOSED))
    study.sampler = make_sampler(config, worker_index, proposed)
    return study


def _raise_epoch_budget(study: optuna.Study, config: StudyConfig) -> None:
    """A study file with a larger `[budget] epochs` than the study's raises its budget: the
    study goes on (its best paused trials resume first). A smaller one leaves it as it is."""
    stored = study.user_attrs.get(EPOCH_BUDGET_ATTR)
    if config.budget_epochs is None or (stored is not None and stored >= config.budget_epochs):
        return

    def raise_it() -> None:
        now = study.user_attrs.get(EPOCH_BUDGET_ATTR)
        if now is None or now < (config.budget_epochs or 0):
            study.set_user_attr(EPOCH_BUDGET_ATTR, config.budget_epochs)

    locked(study_storage(study), queue_lock(study.study_name), raise_it)


def load_existing(name: str, storage: optuna.storages.BaseStorage) -> optuna.Study:
    """A study that must already exist, for commands that only read."""
    if name not in study_names(storage):
        raise StorageError(f"no study named {name!r} in this storage")
    return optuna.load_study(study_name=name, storage=storage)


def stored_config(study: optuna.Study, config: StudyConfig) -> StudyConfig:
    """The configuration to build `study`'s models from: its stored definition, with the
    execution settings of the study file `config`, which must match the definition."""
    return study_config(study.user_attrs.get(DEFINITION_ATTR), config)


# Trials that a sampler (or a queued parameter set) has given parameters to.
_PROPOSED = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass(frozen=True)
class _Plan:
    """What a study is set up with."""

    config: StudyConfig
    definition: dict[str, Any]
    baselines: dict[str, dict[str, float]]
    attrs: dict[str, Any]
    n_trials: int
    on_skip: Callable[[str], None]


def _set_up(study: optuna.Study, plan: _Plan) -> None:
    """Do each step of a study's set-up that is not done yet. Every step may be done again, so a
    set-up cut short at any point is finished by whoever comes next; the steps that queue
    trials look first at what is queued, under a lock (one process at a time)."""

    def set_up_here() -> bool:
        if study.user_attrs.get("ready"):
            return False  # another process finished it while this one waited
        for step in SET_UP:
            step(study, plan)
        # The budget under the lock, once, by whoever gets there first: a `tuner run --trials
        # N` and a worker on another machine (the study file's n_trials) that both find the
        # study new must not overwrite one another's budget, however their steps interleave.
        if BUDGET_ATTR not in study.user_attrs:
            study.set_user_attr(BUDGET_ATTR, plan.n_trials)
        if plan.config.budget_epochs is not None and EPOCH_BUDGET_ATTR not in study.user_attrs:
            study.set_user_attr(EPOCH_BUDGET_ATTR, plan.config.budget_epochs)
        return True

    if not locked(study_storage(study), f"set-up:{study.study_name}", set_up_here):
        return
    if scheduled(plan.config):
        # Its work is handed out one piece at a time (tuner.search.schedule), not queued ahead.
        study.set_user_attr("ready", True)
        return
    # Outside the set-up lock: the queue takes its own lock, and a PostgreSQL worker has two
    # connections, not three.
    refill(study)
    study.set_user_attr("ready", True)


def _describe(study: optuna.Study, plan: _Plan) -> None:
    config = plan.config
    if DEFINITION_ATTR not in study.user_attrs:
        study.set_user_attr(DEFINITION_ATTR, plan.definition)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(config.objective_names)  # shown by optuna-dashboard
    for key, value in plan.attrs.items():
        study.set_user_attr(key, value)
    study.set_user_attr("tuner_version", __version__)
    study.set_user_attr("task", config.data.task)
    study.set_user_attr("metric", config.metric)
    # Naive predictions' scores in the study's own metric, shown beside the best trial.
    study.set_user_attr(
        "baselines",
        {name: v[config.measure] for name, v in plan.baselines.items() if config.measure in v},
    )


def _queue_seed_configs(study: optuna.Study, plan: _Plan) -> None:
    config = plan.config
    queued = {t.user_attrs.get("seed_config") for t in study.get_trials(deepcopy=False)}
    seeds: list[dict[str, str]] = []
    if config.seed_configs:
        for seed in SEED_CONFIGS:
            reason = seed_fits(seed, config.space)
            if len(seeds) == plan.n_trials:
                reason = f"the study's budget is {plan.n_trials} trials"
            if reason is not None:
                plan.on_skip(f"seed configuration {seed.name!r} not queued: {reason}")
                continue
            if seed.name not in queued:
                study.enqueue_trial(seed.params, user_attrs={"seed_config": seed.name})
            seeds.append({"name": seed.name, "model": seed.description})
    study.set_user_attr("seed_configs", seeds)


# The steps of a study's set-up, in order; each may be done again.
SET_UP: tuple[Callable[[optuna.Study, _Plan], None], ...] = (_describe, _queue_seed_configs)


@dataclass(frozen=True)
class StudyListing:
    """One line of `tuner studies`."""

    name: str
    direction: str
    metric: str
    counts: Counts
    best_trial: int | None
    best_value: float | None


def list_studies(storage: optuna.storages.BaseStorage) -> list[StudyListing]:
    """Every study in a storage, with its trial counts and best value (none for an ablation's
    companion study)."""
    listings = []
    for name in study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        metric = str(study.user_attrs.get("metric", "value"))
        best_trial, best_value = None, None
        if ABLATION_FOR in study.user_attrs:
            # An ablation's runs hold test scores, and its best run is one lucky seed: its
            # answer is the verdicts of `tuner ablate`, not a best value.
            metric = f"test {metric.removeprefix('val_')}"
        else:
            try:
                best = trials.best_trial(study)
                best_trial, best_value = best.number, trials.reached(best, trials.minimizes(study))
            except TunerError:
                pass
        listings.append(
            StudyListing(
                name=name,
                direction=", ".join(d.name.lower() for d in study.directions),
                metric=metric,
                counts=count(study),
                best_trial=best_trial,
                best_value=best_value,
            )
        )
    return listings


def delete(
    study: optuna.Study, storage: optuna.storages.BaseStorage, artifacts: Location | None
) -> int:
    """Delete a study, everything recorded in it, its ablation (the companion study
    `<name>/ablation`, if any) and its artifacts' files from the store in `artifacts`; returns
    how many artifact files were removed."""
    from tuner.search.companion import companion_name

    removed = remove_all(study, storage, artifacts) if artifacts is not None else 0
    companion = companion_name(study.study_name)
    if companion in study_names(storage):
        optuna.delete_study(study_name=companion, storage=storage)
    optuna.delete_study(study_name=study.study_name, storage=storage)
    return removed
