"""A paused trial's checkpoint: its model's weights and its optimizer's state (the step count,
the learning rate and each slot, RMSprop's velocities or Adam's moments) as one NumPy `.npz`
file, kept in the study's artifact store (Optuna's `ArtifactStore`: a folder, or an S3 bucket)
as an artifact of the trial that saved it.

A model restored from it into a model built from the same parameters trains on as the saved
one would have: same weights, same optimizer step and slots (checked by the tests)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import keras
import numpy as np
import optuna
from optuna.artifacts.exceptions import ArtifactNotFound


def save(model: keras.Model, store: Any, trial: optuna.Trial) -> tuple[str, int]:
    """Upload `model`'s weights and optimizer state as an artifact of `trial`; returns the
    artifact's id and its size in bytes."""
    arrays = {f"w{i}": w for i, w in enumerate(model.get_weights())}
    for i, v in enumerate(model.optimizer.variables):
        arrays[f"o{i}"] = keras.ops.convert_to_numpy(v)
    with tempfile.TemporaryDirectory(prefix="tuner-checkpoint-") as folder:
        path = Path(folder) / f"trial-{trial.number}.npz"
        np.savez(path, **arrays)
        size = path.stat().st_size
        artifact_id = optuna.artifacts.upload_artifact(
            artifact_store=store, file_path=str(path), study_or_trial=trial
        )
    return artifact_id, size


def restore(model: keras.Model, store: Any, artifact_id: str) -> None:
    """Load the checkpoint `artifact_id` into `model`, built and compiled from the parameters of
    the trial that saved it."""
    with tempfile.TemporaryDirectory(prefix="tuner-checkpoint-") as folder:
        path = Path(folder) / "checkpoint.npz"
        optuna.artifacts.download_artifact(
            artifact_store=store, file_path=str(path), artifact_id=artifact_id
        )
        with np.load(path, allow_pickle=False) as saved:
            weights = [saved[f"w{i}"] for i in range(len(model.get_weights()))]
            model.set_weights(weights)
            # The optimizer's slots exist only once it is built for the model's variables.
            model.optimizer.build(model.trainable_variables)
            variables = model.optimizer.variables
            n = sum(1 for key in saved.files if key.startswith("o"))
            if n != len(variables):
                raise ValueError(
                    f"checkpoint {artifact_id} holds {n} optimizer variables, but the model's "
                    f"optimizer has {len(variables)}"
                )
            for i, variable in enumerate(variables):
                variable.assign(saved[f"o{i}"])


def remove(store: Any, artifact_id: str) -> bool:
    """Delete a checkpoint's file; False if it was gone already."""
    try:
        store.remove(artifact_id)
    except ArtifactNotFound:
        return False
    return True
