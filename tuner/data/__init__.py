"""Data: the only package that reads files. Turns a study's data section into batches that
every Keras backend reads (`batches.Batches`), the model's inputs and head, and naive baselines
on the validation split.

One module per task (`forecast`, `sequences`, `text`; `classes` holds what the classification
tasks share), `datasets` for the built-in datasets, `files` for user files, and `cache` for the
prepared arrays kept on disk, so that a dataset configuration is prepared once, not by every
worker.

Layer 4 of tuner. May import: tuner.errors, tuner.config, tuner.patches, tuner.storage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from tuner.config import DataConfig
from tuner.data import cache, forecast, sequences, text
from tuner.data.datasets import builtin
from tuner.data.files import read_sequences, read_table
from tuner.data.shapes import Head, Inputs
from tuner.errors import DataError

if TYPE_CHECKING:
    from tuner.data.batches import Batches


class TaskArrays(Protocol):
    """A task's prepared arrays (`forecast.ForecastArrays`, `sequences.SequenceArrays`,
    `text.TextArrays`): dataclasses of numpy arrays and plain values, as cached."""

    @property
    def model_inputs(self) -> Inputs: ...

    @property
    def head(self) -> Head: ...

    @property
    def metrics(self) -> tuple[str, ...]: ...

    @property
    def classes(self) -> tuple[str, ...]: ...

    def dataset(
        self, split: str, batch_size: int, *, shuffle: bool = False, seed: int | None = None
    ) -> Batches: ...

    def baselines(self, split: str) -> dict[str, dict[str, float]]: ...


@dataclass(frozen=True)
class Prepared:
    """A study's data, ready for training: made once per worker, shared by its trials."""

    task: str
    inputs: Inputs
    head: Head
    metrics: tuple[str, ...]
    # Naive predictions' scores on the validation split: {name: {measure: value}}, where a
    # measure is what a study metric measures ("mae", "mse", "huber", "accuracy",
    # "crossentropy").
    baselines: dict[str, dict[str, float]]
    arrays: TaskArrays
    # The class names of a classification task, in the order of the class ids.
    classes: tuple[str, ...] = ()

    @property
    def input_shape(self) -> tuple[int | None, ...]:
        return self.inputs.shape

    @property
    def study_attrs(self) -> dict[str, Any]:
        """What a new study records about its data, beside the baselines."""
        return {"classes": list(self.classes)} if self.classes else {}

    def split(
        self, name: str, batch_size: int, *, shuffle: bool = False, seed: int | None = None
    ) -> Batches:
        """Batches of one split: "train", "validation", "test" or "train+validation"."""
        return self.arrays.dataset(name, batch_size, shuffle=shuffle, seed=seed)

    def evaluation(self, name: str, batch_size: int) -> Batches:
        """The unshuffled batches of a split to evaluate on, sized by `evaluation_batch_size`
        (`batch_size` is the training batch, the least they hold)."""
        from tuner.data.batches import evaluation_batch_size

        rows = len(self.split(name, batch_size).rows)
        size = evaluation_batch_size(rows, self.inputs.shape[0], batch_size)
        return self.split(name, size)

    def baselines_on(self, split: str) -> dict[str, dict[str, float]]:
        """The naive predictions' scores on another split ("test", say)."""
        return self.arrays.baselines(split)


def prepare(config: DataConfig) -> Prepared:
    """Read, check and prepare a study's data, or map it in from the cache."""
    if config.dataset is not None:
        source = builtin(config.dataset, config.task).version()
    else:
        assert config.path is not None
        if not config.path.is_file():
            raise DataError(f"{config.path}: data file not found")
        source = cache.file_fingerprint(config.path)
    kind = _KINDS[config.task]
    name = f"{config.task}-{cache.key(config.key(), source)}"
    arrays: TaskArrays = cache.cached(kind, name, lambda: build(config))
    return Prepared(
        task=config.task,
        inputs=arrays.model_inputs,
        head=arrays.head,
        metrics=arrays.metrics,
        baselines=arrays.baselines("validation"),
        arrays=arrays,
        classes=arrays.classes,
    )


def build(config: DataConfig) -> TaskArrays:
    """Prepare a study's data from its source, without the cache."""
    if config.task == "sequence-classification":
        assert config.path is not None  # no built-in dataset holds sequences to classify
        return sequences.prepare(config, read_sequences(config.path), str(config.path))
    frame, source = load_frame(config)
    if config.task == "text-classification":
        return text.prepare(config, frame, source, *text_columns(config))
    return forecast.prepare(config, frame, source)


def text_columns(config: DataConfig) -> tuple[str, str]:
    """The text and label columns of a text classification study."""
    column, label = config.text, config.label
    if config.dataset is not None:
        found = builtin(config.dataset, config.task)
        column, label = column or found.text, label or found.label
    assert column is not None and label is not None
    return column, label


@dataclass(frozen=True)
class NewData:
    """Examples of a new data file to predict on, as an exported model reads them (raw:
    windows of feature rows, NaN-padded sequences, or texts), and what each one is."""

    inputs: np.ndarray
    # One row per example: the row and time a forecast's window ends at and the one it is
    # for, or the sequence's or text's position in the file.
    keys: pd.DataFrame


def read_new(config: DataConfig, prepared: Prepared, path: Path) -> NewData:
    """Read a data file in the study's own format to predict on; no target or label needed."""
    source = str(path)
    arrays = prepared.arrays
    if isinstance(arrays, forecast.ForecastArrays):
        windows, keys = forecast.new_windows(config, arrays, read_table(path), source)
        return NewData(windows, keys)
    if isinstance(arrays, sequences.SequenceArrays):
        x = sequences.new_sequences(arrays, read_sequences(path, labelled=False), source)
        return NewData(x, pd.DataFrame({"sequence": np.arange(len(x))}))
    texts = text.texts_of(read_table(path), source, text_columns(config)[0])
    return NewData(texts.astype(object), pd.DataFrame({"row": np.arange(len(texts))}))


def load_frame(config: DataConfig) -> tuple[pd.DataFrame, str]:
    """The raw table a data section names, and how to name it in messages."""
    if config.dataset is not None:
        return builtin(config.dataset, config.task).load(), f"dataset {config.dataset!r}"
    assert config.path is not None
    return read_table(config.path), str(config.path)


_KINDS: dict[str, type] = {
    "forecast": forecast.ForecastArrays,
    "sequence-classification": sequences.SequenceArrays,
    "text-classification": text.TextArrays,
}
