"""What the two classification tasks share: labels turned into class ids, a seeded stratified
split, batches of examples, the head, and the majority-class baseline."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from tuner.data.shapes import Head
from tuner.errors import DataError

if TYPE_CHECKING:
    from tuner.data.batches import Batches

SPLITS = ("train", "validation", "test")
TRAIN_AND_VALIDATION = "train+validation"
METRICS = ("accuracy",)
# Keras clips predicted probabilities to this before taking their log.
EPSILON = 1e-7


def encode(labels: pd.Series, what: str, source: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class ids (0, 1, ...) and the class names they stand for, in sorted order."""
    missing = labels.isna().to_numpy()
    if missing.any():
        raise DataError(
            f"{source}: {what} has {int(missing.sum())} missing values "
            f"(first at row {int(np.flatnonzero(missing)[0])})"
        )
    raw = labels.to_numpy()
    # Labels read from a file may mix numbers and words: compare them as text.
    values, ids = np.unique(raw.astype(str) if raw.dtype == object else raw, return_inverse=True)
    classes = tuple(str(v) for v in values)
    if len(classes) < 2:
        raise DataError(
            f"{source}: {what} has one class ({classes[0]!r}); a classifier needs two or more"
        )
    return ids.astype("int32"), classes


def stratified_split(
    labels: np.ndarray, fractions: tuple[float, float, float], seed: int, source: str
) -> np.ndarray:
    """Which split each example is in (0 train, 1 validation, 2 test): shuffled with `seed`,
    each class shared out in the study's fractions."""
    rng = np.random.default_rng(seed)
    part = np.empty(len(labels), dtype="int8")
    cuts = np.cumsum(fractions)[:2]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        train_end, validation_end = np.rint(cuts * len(members)).astype(int)
        part[members[:train_end]] = 0
        part[members[train_end:validation_end]] = 1
        part[members[validation_end:]] = 2
    for i, split in enumerate(SPLITS):
        if not (part == i).any():
            raise DataError(
                f"{source}: the {split} split is empty ({len(labels)} examples, "
                f"split {list(fractions)}); more examples or a larger fraction are needed"
            )
    return part


def indices(part: np.ndarray, split: str) -> np.ndarray:
    """The examples of one split, in their stored order."""
    if split == TRAIN_AND_VALIDATION:
        return np.flatnonzero(part <= 1)
    return np.flatnonzero(part == SPLITS.index(split))


def head(n_classes: int) -> Head:
    """One sigmoid unit for two classes, else a softmax over the classes."""
    return Head(units=1, activation="sigmoid") if n_classes == 2 else Head(n_classes, "softmax")


def dataset(
    x: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    rows: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int | None = None,
) -> Batches:
    """Batches of (examples, labels) of the rows `rows`, reshuffled every epoch if `shuffle`."""
    from tuner.data.batches import Batches

    # A sigmoid head compares with labels of 0.0 and 1.0, a softmax head with class ids.
    ys = labels.astype("float32" if n_classes == 2 else "int32")

    def gather(i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return x[i], ys[i]

    return Batches(gather, rows, batch_size, shuffle=shuffle, seed=seed)


def baselines(
    labels: np.ndarray, part: np.ndarray, n_classes: int, split: str
) -> dict[str, dict[str, float]]:
    """Naive predictions' scores on `split`: the training split's most frequent class (accuracy),
    and its class frequencies as the predicted probabilities (cross-entropy)."""
    frequencies = np.bincount(labels[part == 0], minlength=n_classes) / np.sum(part == 0)
    truth = labels[indices(part, split)]
    probability = np.clip(frequencies[truth], EPSILON, 1.0)
    return {
        "majority_class": {"accuracy": float(np.mean(truth == np.argmax(frequencies)))},
        "class_frequencies": {"crossentropy": float(-np.mean(np.log(probability)))},
    }
