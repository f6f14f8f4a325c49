"""Sequence classification: numeric sequences, of one length or of many, each with a label.

Sequences come from an `.npz` file (see `files.read_sequences` for its layout). Features are
normalised with the mean and standard deviation of the training sequences' time steps. Sequences
of different lengths are padded at the end with all-zero time steps that the network masks;
every real time step then carries one more feature, a presence channel of 1, so that a real step
whose features all happen to be 0 is never taken for padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from tuner.config import DataConfig
from tuner.data import classes
from tuner.data.files import Sequences
from tuner.data.shapes import Head, Inputs
from tuner.errors import DataError

if TYPE_CHECKING:
    from tuner.data.batches import Batches


@dataclass(frozen=True)
class SequenceArrays:
    """Prepared sequences: what batches and baselines are made from."""

    x: np.ndarray  # (examples, steps, features [+ presence]) float32, normalised, padded
    labels: np.ndarray  # (examples,) int32 class ids
    part: np.ndarray  # (examples,) int8: 0 train, 1 validation, 2 test
    lengths: np.ndarray  # (examples,) int32
    classes: tuple[str, ...]
    masked: bool
    # The training time steps' mean and standard deviation of each feature (a constant
    # feature's deviation is 1), which an exported model normalises raw sequences with.
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    @property
    def metrics(self) -> tuple[str, ...]:
        return classes.METRICS

    @property
    def model_inputs(self) -> Inputs:
        return Inputs(self.x.shape[1:], masked=self.masked)

    @property
    def head(self) -> Head:
        return classes.head(len(self.classes))

    def dataset(
        self, split: str, batch_size: int, *, shuffle: bool = False, seed: int | None = None
    ) -> Batches:
        rows = classes.indices(self.part, split)
        return classes.dataset(
            self.x, self.labels, len(self.classes), rows, batch_size, shuffle=shuffle, seed=seed
        )

    def baselines(self, split: str) -> dict[str, dict[str, float]]:
        return classes.baselines(self.labels, self.part, len(self.classes), split)


def prepare(config: DataConfig, sequences: Sequences, source: str) -> SequenceArrays:
    """Split, normalise and pad labelled sequences."""
    assert sequences.labels is not None  # read with labels
    labels, names = classes.encode(pd.Series(sequences.labels), "'labels'", source)
    part = classes.stratified_split(labels, config.split, config.seed, source)
    lengths = sequences.lengths
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    steps = sequences.values.astype("float64")
    train_steps = np.repeat(part == 0, lengths)
    mean = steps[train_steps].mean(axis=0)
    std = steps[train_steps].std(axis=0)
    std[std == 0] = 1.0
    steps = (steps - mean) / std
    masked = bool(lengths.min() != lengths.max())
    if masked:
        steps = np.concatenate([steps, np.ones((len(steps), 1))], axis=1)
    x = np.zeros((len(lengths), int(lengths.max()), steps.shape[1]), dtype="float32")
    # Row i's time step t sits at steps[starts[i] + t]: scatter every step into its slot.
    example = np.repeat(np.arange(len(lengths)), lengths)
    position = np.arange(len(steps)) - np.repeat(starts, lengths)
    x[example, position] = steps
    return SequenceArrays(
        x=x,
        labels=labels,
        part=part,
        lengths=lengths.astype("int32"),
        classes=names,
        masked=masked,
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
    )


def new_sequences(arrays: SequenceArrays, sequences: Sequences, source: str) -> np.ndarray:
    """New sequences to predict on, as an exported model reads them: raw (not normalised),
    float32, (sequences, steps, features), padded at the end with NaN time steps.

    A model trained on sequences of one length reads sequences of that length only.
    """
    features, lengths = len(arrays.mean), sequences.lengths
    if sequences.values.shape[1] != features:
        raise DataError(
            f"{source}: the sequences have {sequences.values.shape[1]} features per time step; "
            f"the study's have {features}"
        )
    steps = arrays.x.shape[1]
    if not arrays.masked and (lengths != steps).any():
        first = int(np.flatnonzero(lengths != steps)[0])
        raise DataError(
            f"{source}: sequence {first} has {int(lengths[first])} time steps; the study's "
            f"sequences all have {steps}, and its models read that length only"
        )
    x = np.full((len(lengths), int(lengths.max()), features), np.nan, dtype="float32")
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    example = np.repeat(np.arange(len(lengths)), lengths)
    position = np.arange(len(sequences.values)) - np.repeat(starts, lengths)
    x[example, position] = sequences.values
    return x
