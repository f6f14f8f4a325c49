"""Retraining the winner: rebuild a complete trial's model, train it on the training and
validation data for its best number of epochs, score it on the held-out test split beside the
naive baseline, and keep as artifacts of the study the exported `.keras` model (which takes raw
data: `tuner.delivery.export`) and a JSON of its scores and of what a caller needs to use it.

Optuna allows no change to a finished trial, so the artifacts are uploaded to the study, and the
study's user attribute `retrained:N` links them to trial N.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.answers.results import improvement
from tuner.config import StudyConfig
from tuner.data import Prepared, prepare
from tuner.delivery.export import card, export_model, versions
from tuner.errors import TunerError
from tuner.patches.checks import patches_off
from tuner.patches.dropout import philox_dropout
from tuner.search.study import load_existing, stored_config
from tuner.search.trials import best_trial, minimizes, paused, reached
from tuner.storage import open_storage
from tuner.storage.artifacts import RETRAINED_PREFIX, Location, name_artifact, open_store, where
from tuner.training.model import build_model
from tuner.training.spec import spec_from_params


class RetrainError(TunerError):
    """The trial asked for cannot be retrained."""


@dataclass(frozen=True)
class Retrained:
    """A retrained model: where its artifacts are, and what its metrics JSON holds."""

    trial: int
    model_artifact: str
    metrics_artifact: str
    location: Location
    metrics: dict[str, Any]
    # Where the model and its JSON are under readable names, relative to the store.
    model_name: str = ""
    metrics_name: str = ""

    @property
    def model_path(self) -> str:
        """The `.keras` file (a path, or an object's URL in a bucket), with its extension, as
        `keras.saving.load_model` wants it."""
        return where(self.location, self.model_name or self.model_artifact)

    @property
    def metrics_path(self) -> str:
        """The JSON beside the model."""
        return where(self.location, self.metrics_name or self.metrics_artifact)


# What the retrained model's test scores carry: no error rate (printed, and in its JSON).
ONE_RUN = (
    "none: one training run on one seed, scored once on the test split; `tuner ablate` "
    "retrains the trial on several seeds and gives its test score an interval"
)


def retrain_trial(
    config: StudyConfig,
    url: str,
    location: Location,
    number: int | None = None,
    say: Callable[[str], None] = lambda message: None,
) -> Retrained:
    """Retrain trial `number` (default: the best) of the study in `config` and save it."""
    from tuner.patches.quiet import import_keras
    from tuner.training.backend import for_models, use

    use(for_models(config.training.backend, config.data.task))  # before anything imports Keras
    import_keras()
    storage = open_storage(url, must_exist=True)
    study = load_existing(config.name, storage)
    # The study as it was run, not as its file reads today (which must match it).
    config = stored_config(study, config)
    trial = choose_trial(study, number)
    data = prepare(config.data)
    say(
        f"retraining trial {trial.number} on training + validation data for "
        f"{epochs_of(trial, config)} epochs"
    )
    return retrain(config, study, trial, data, location)


def choose_trial(study: optuna.Study, number: int | None) -> FrozenTrial:
    """Trial `number` of `study`, which must be complete or paused; the best trial when `number`
    is None."""
    if number is None:
        return best_trial(study)
    trials = study.get_trials(deepcopy=False)
    found = [t for t in trials if t.number == number]
    if not found:
        numbers = f"0 to {len(trials) - 1}" if trials else "none yet"
        raise RetrainError(
            f"study {study.study_name!r} has no trial {number} (its trials: {numbers})"
        )
    trial = found[0]
    if trial.state != TrialState.COMPLETE and not paused(trial):
        raise RetrainError(
            f"trial {number} of study {study.study_name!r} is {trial.state.name.lower()}; "
            "only a complete or paused trial has a model to retrain or to predict with"
        )
    return trial


def epochs_of(trial: FrozenTrial, config: StudyConfig) -> int:
    """The trial's best number of epochs (as recorded by the objective)."""
    attrs = trial.user_attrs
    return int(attrs.get("best_epoch") or attrs.get("epochs") or config.training.epochs)


def retrain(
    config: StudyConfig,
    study: optuna.Study,
    trial: FrozenTrial,
    data: Prepared,
    location: Location,
) -> Retrained:
    """Train, score and save; returns where the artifacts went."""
    import keras

    store = open_store(location)  # a store that cannot be reached is refused before training
    training = config.training
    epochs = epochs_of(trial, config)
    # The trial's own seed (trials before it was recorded: the study's), so the weights start
    # where the trial's did.
    seed = int(trial.user_attrs.get("training_seed", config.sampler.seed))
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    spec = spec_from_params(trial.params)
    model = build_model(
        spec,
        data.inputs,
        data.head,
        optimizer=training.optimizer,
        loss=training.loss,
        metrics=data.metrics,
        jit_compile=training.jit_compile,
    )
    train = data.split("train+validation", training.batch_size, shuffle=True, seed=seed)
    start = time.perf_counter()
    with philox_dropout():  # as in the search
        model.fit(
            # As in the search: a step budget walks on through a repeated stream.
            train.repeat() if training.steps_per_epoch else train,
            epochs=epochs,
            steps_per_epoch=training.steps_per_epoch,
            shuffle=False,
            verbose=0,
        )
    seconds = time.perf_counter() - start
    on_test = data.evaluation("test", training.batch_size)
    test = model.evaluate(on_test, return_dict=True, verbose=0)
    test = {name: float(value) for name, value in test.items()}
    key = config.metric.removeprefix("val_")
    value = test.get(key, math.nan)
    if not math.isfinite(value):
        raise RetrainError(
            f"retraining trial {trial.number} gave test {key} = {value}; nothing was saved"
        )
    minimize = config.direction == "minimize"
    baselines = {
        name: scores[config.measure]
        for name, scores in data.baselines_on("test").items()
        if config.measure in scores
    }
    metrics = {
        "study": study.study_name,
        "trial": trial.number,
        "params": trial.params,
        "metric": config.metric,
        "validation_value": reached(trial, minimizes(study)),
        "trained_on": "train+validation",
        "epochs": epochs,
        "training_seed": seed,
        "train_seconds": round(seconds, 3),
        "n_params": model.count_params(),
        "test": test,
        "test_value": value,
        "test_baselines": baselines,
        "improvement_on_test": {
            name: improvement(value, reference, minimize) for name, reference in baselines.items()
        },
        "error_rate": ONE_RUN,
        # How to feed the saved model and read its output, and what made it.
        "model": card(config.data, data, spec),
        "versions": versions(),
        # Patches it was retrained without (tuner.patches.checks): then not as its trial was.
        "patches_off": patches_off(),
    }
    stem = f"{re.sub(r'[^A-Za-z0-9._-]+', '-', study.study_name)}-trial-{trial.number}"
    with tempfile.TemporaryDirectory() as tmp:
        model_file = Path(tmp, f"{stem}.keras")
        metrics_file = Path(tmp, f"{stem}.json")
        export_model(model, data, spec).save(model_file)
        metrics_file.write_text(json.dumps(metrics, indent=2) + "\n")
        model_id = optuna.artifacts.upload_artifact(
            artifact_store=store, file_path=str(model_file), study_or_trial=study
        )
        metrics_id = optuna.artifacts.upload_artifact(
            artifact_store=store, file_path=str(metrics_file), study_or_trial=study
        )
    model_name = name_artifact(location, model_id, stem, model_file.name)
    metrics_name = name_artifact(location, metrics_id, stem, metrics_file.name)
    study.set_user_attr(
        f"{RETRAINED_PREFIX}{trial.number}",
        {
            "model_artifact": model_id,
            "model_file": model_file.name,
            "model_path": model_name,
            "metrics_artifact": metrics_id,
            "metrics_path": metrics_name,
            "artifact_store": str(location),
            f"test_{key}": value,
            "test_baselines": baselines,
            "epochs": epochs,
        },
    )
    return Retrained(
        trial.number, model_id, metrics_id, location, metrics, model_name, metrics_name
    )
