"""Data: the only package that reads files. Turns a study's data section into tf.data splits,
the model's input shape and head, and naive baselines on the validation split."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from tuner.config import DataConfig
from tuner.data import forecast
from tuner.data.datasets import load_builtin
from tuner.data.files import read_table
from tuner.model import Head

if TYPE_CHECKING:
    import tensorflow as tf


@dataclass(frozen=True)
class Prepared:
    """A study's data, ready for training: made once per worker, shared by its trials."""

    task: str
    input_shape: tuple[int | None, ...]
    head: Head
    metrics: tuple[str, ...]
    # Naive predictions' scores on the validation split: {name: {measure: value}}, where a
    # measure is what a study metric measures ("mae", "mse", "huber", "accuracy").
    baselines: dict[str, dict[str, float]]
    arrays: forecast.ForecastArrays
    period: int | None = None

    def split(
        self, name: str, batch_size: int, *, shuffle: bool = False, seed: int | None = None
    ) -> tf.data.Dataset:
        """Batches of one split: "train", "validation", "test" or "train+validation"."""
        return forecast.dataset(self.arrays, name, batch_size, shuffle=shuffle, seed=seed)

    def baselines_on(self, split: str) -> dict[str, dict[str, float]]:
        """The naive predictions' scores on another split ("test", say)."""
        return forecast.baseline(self.arrays, split, self.period)


def load_frame(config: DataConfig) -> tuple[pd.DataFrame, str]:
    """The raw table a data section names, and how to name it in messages."""
    if config.dataset is not None:
        return load_builtin(config.dataset), f"dataset {config.dataset!r}"
    assert config.path is not None
    return read_table(config.path), str(config.path)


def prepare(config: DataConfig) -> Prepared:
    """Read, check and prepare a study's data."""
    frame, source = load_frame(config)
    arrays = forecast.prepare(config, frame, source)
    return Prepared(
        task=config.task,
        input_shape=(arrays.timesteps, len(arrays.features)),
        head=Head(units=1, scale=arrays.target_std, offset=arrays.target_mean),
        metrics=("mae", "mse"),
        baselines=forecast.baseline(arrays, "validation", config.period),
        arrays=arrays,
        period=config.period,
    )
