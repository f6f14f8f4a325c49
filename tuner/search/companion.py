"""The companion study that holds an ablation's runs: `<study name>/ablation` in the same
storage, and the user attribute that makes one of its trials an ablation run."""

from __future__ import annotations

import optuna

from tuner.config import StudyConfig
from tuner.errors import StorageError
from tuner.storage import study_names

SUFFIX = "/ablation"
# The user attribute that makes a trial an ablation trial for tuner.search.objective: its
# training seed and epochs, {"seed": int, "epochs": int}.
ABLATION_ATTR = "ablation"
# The companion study's user attribute that names the study it ablates.
ABLATION_FOR = "ablation_for"


def companion_name(study_name: str) -> str:
    return study_name + SUFFIX


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
    if not study.user_attrs.get(ABLATION_FOR):
        study.set_user_attr(ABLATION_FOR, config.name)
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
