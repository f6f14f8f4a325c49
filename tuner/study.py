"""A study's life in the storage: created once with its baselines, seed configurations and
trial budget, loaded by every worker, listed and deleted."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from tuner import __version__, results
from tuner.artifacts import remove_all
from tuner.config import StudyConfig
from tuner.errors import StorageError, TunerError
from tuner.queue import Counts, count, set_budget
from tuner.space import SEED_CONFIGS, seed_fits
from tuner.storage import study_names

READY_TIMEOUT_S = 300


def make_sampler(config: StudyConfig, worker_index: int = 0) -> optuna.samplers.BaseSampler:
    """The study's sampler; each worker of a study gets its own seed, or they would all propose
    the same parameters."""
    s = config.sampler
    # Within the seeds numpy accepts, however large the worker index (seeds wrap around).
    seed = (s.seed + worker_index) % 2**32
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
    if p.name == "none":
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
    """The study named in `config`: loaded, or created with its baselines, seed configurations
    and a queue of `n_trials` trials (default: the study file's) when it does not exist yet, by
    whichever worker gets there first. `attrs` gives more user attributes to record at creation
    (a classification study's class names)."""
    kwargs: dict[str, Any] = {
        "study_name": config.name,
        "storage": storage,
        "sampler": make_sampler(config, worker_index),
        "pruner": make_pruner(config),
    }
    if config.name not in study_names(storage):
        values = baselines()  # before anything is written: bad data must leave no study behind
        more = attrs()
        try:
            directions = [optuna.study.StudyDirection[d.upper()] for d in config.directions]
            study = optuna.create_study(directions=directions, **kwargs)
        except optuna.exceptions.DuplicatedStudyError:
            pass  # another worker created it a moment ago
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(config.objective_names)  # shown by optuna-dashboard
            for key, value in more.items():
                study.set_user_attr(key, value)
            _set_up(study, config, values, n_trials or config.n_trials, on_skip)
            return study
    study = optuna.load_study(**kwargs)
    found = [d.name.lower() for d in study.directions]
    if found != config.directions:
        raise StorageError(
            f"study {config.name!r} exists with directions {found}, "
            f"but {config.path} asks for {config.directions}"
        )
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not study.user_attrs.get("ready"):
        if time.monotonic() > deadline:
            raise StorageError(f"study {config.name!r} was never finished being set up")
        time.sleep(0.5)
    return study


def load_existing(name: str, storage: optuna.storages.BaseStorage) -> optuna.Study:
    """A study that must already exist, for commands that only read."""
    if name not in study_names(storage):
        raise StorageError(f"no study named {name!r} in this storage")
    return optuna.load_study(study_name=name, storage=storage)


def _set_up(
    study: optuna.Study,
    config: StudyConfig,
    baselines: dict[str, dict[str, float]],
    n_trials: int,
    on_skip: Callable[[str], None],
) -> None:
    study.set_user_attr("tuner_version", __version__)
    study.set_user_attr("task", config.data.task)
    study.set_user_attr("metric", config.metric)
    # Naive predictions' scores in the study's own metric, shown beside the best trial.
    study.set_user_attr(
        "baselines",
        {name: v[config.measure] for name, v in baselines.items() if config.measure in v},
    )
    seeds: list[dict[str, str]] = []
    if config.seed_configs:
        for seed in SEED_CONFIGS:
            reason = seed_fits(seed, config.space)
            if len(seeds) == n_trials:
                reason = f"the study's budget is {n_trials} trials"
            if reason is not None:
                on_skip(f"seed configuration {seed.name!r} not queued: {reason}")
                continue
            study.enqueue_trial(seed.params, user_attrs={"seed_config": seed.name})
            seeds.append({"name": seed.name, "model": seed.description})
    study.set_user_attr("seed_configs", seeds)
    set_budget(study, n_trials)
    study.set_user_attr("ready", True)


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
    """Every study in a storage, with its trial counts and best value."""
    listings = []
    for name in study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        try:
            best = results.best_trial(study)
            best_trial, best_value = best.number, results.metric_value(best)
        except TunerError:
            best_trial, best_value = None, None
        listings.append(
            StudyListing(
                name=name,
                direction=", ".join(d.name.lower() for d in study.directions),
                metric=str(study.user_attrs.get("metric", "value")),
                counts=count(study),
                best_trial=best_trial,
                best_value=best_value,
            )
        )
    return listings


def delete(
    study: optuna.Study, storage: optuna.storages.BaseStorage, artifacts: Path | None
) -> int:
    """Delete a study, everything recorded in it, and its artifacts' files from the store in
    `artifacts`; returns how many artifact files were removed."""
    removed = remove_all(study, storage, artifacts) if artifacts is not None else 0
    optuna.delete_study(study_name=study.study_name, storage=storage)
    return removed
