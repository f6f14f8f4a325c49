"""Predicting on new data with a trial's retrained model: read a data file in the study's own
format, feed its raw examples to the exported model, and give one row per prediction.

A trial without a retrained model is retrained first, through `tuner.delivery.retrain`, so that
the model is the one `tuner retrain` makes and keeps.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tuner.config import StudyConfig
from tuner.data import prepare, read_new
from tuner.delivery.retrain import choose_trial, retrain_trial
from tuner.errors import TunerError
from tuner.patches.quiet import import_keras
from tuner.search.study import load_existing, stored_config
from tuner.storage import open_storage
from tuner.storage.artifacts import (
    Location,
    artifact_dir,
    chosen_dir,
    exists,
    local_file,
    parse_location,
    retrained_models,
    where,
)

BATCH = 1024


class PredictError(TunerError):
    """The model asked for cannot be used."""


@dataclass(frozen=True)
class Predictions:
    """What a trial's model predicts on a file: one row per prediction."""

    trial: int
    model_path: str  # a file, or an object's URL in a bucket
    frame: pd.DataFrame


def predict_file(
    config: StudyConfig,
    url: str,
    data_path: Path,
    number: int | None = None,
    artifacts: Location | None = None,
    say: Callable[[str], None] = lambda message: None,
) -> Predictions:
    """Predict with trial `number`'s (default: the best trial's) retrained model on the data
    file `data_path`, retraining the trial first if it has no model yet.

    The model is looked for in the artifact folder `artifacts` (else $TUNER_ARTIFACTS, else
    where it was saved); a model retrained here goes there too (else to the storage's default).
    """
    study = load_existing(config.name, open_storage(url, must_exist=True))
    # The study as it was run, not as its file reads today (which must match it).
    config = stored_config(study, config)
    trial = choose_trial(study, number)
    data = prepare(config.data)
    # The file is checked before anything is retrained or written.
    new = read_new(config.data, data, data_path)
    record = retrained_models(study).get(trial.number)
    found = _model(record, chosen_dir(artifacts))
    if found is None:
        why = "takes no raw data (retrained by an older tuner)" if record else "is not there yet"
        say(f"trial {trial.number}'s retrained model {why}: retraining it first")
        done = retrain_trial(config, url, artifact_dir(url, artifacts), trial.number, say=say)
        found = (done.location, done.model_name)
    location, name = found
    if not exists(location, name):
        raise PredictError(
            f"the retrained model of trial {trial.number} is not at {where(location, name)}; "
            "point --artifacts (or TUNER_ARTIFACTS) at the artifact store it was saved in, or "
            "retrain it with `tuner retrain`"
        )
    import_keras()
    import keras

    from tuner.data.batches import evaluation_batch_size

    with tempfile.TemporaryDirectory(prefix="tuner-model-") as folder:
        model = keras.saving.load_model(local_file(location, name, Path(folder)))
    # All rows in one batch when they fit: one compiled shape, not a full batch and the rest.
    steps = new.inputs.shape[1] if new.inputs.ndim > 1 else None
    batch_size = evaluation_batch_size(len(new.inputs), steps, BATCH)
    output = model.predict(new.inputs, batch_size=batch_size, verbose=0)
    frame = new.keys.copy()
    if config.data.task == "forecast":
        frame[config.data.target] = output[:, 0]
    else:
        frame["predicted"] = [data.classes[i] for i in output.argmax(axis=1)]
        for i, label in enumerate(data.classes):
            frame[f"probability_{label}"] = output[:, i]
    return Predictions(trial.number, where(location, name), frame)


def _model(
    record: dict[str, Any] | None, location: Location | None
) -> tuple[Location, str] | None:
    """The store and readable name of the exported model a `retrained:N` record names, in the
    store at `location` (default: the one it was saved in); None when there is none (or only a
    model saved before models took raw data)."""
    if record is None or not record.get("model_path"):
        return None
    return (location or parse_location(record["artifact_store"])), str(record["model_path"])
