"""Text classification: texts, each with a label, read as sequences of word ids.

Texts are lower-cased, stripped of punctuation and split on whitespace by Keras'
`TextVectorization`, whose vocabulary is learnt from the training texts only and sorted by
falling frequency (id 0 pads, id 1 is any word outside the vocabulary). They are vectorised
once, with the largest vocabulary and sequence length the study's search space allows; a trial
with a smaller vocabulary reads the ids of the words it lacks as the out-of-vocabulary id, and a
trial with a shorter sequence length reads each text's first words
(`tuner.training.layers.TokenWindow`). So the vectorised texts are the same for every trial,
and cached once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from tuner.config import DataConfig
from tuner.data import classes
from tuner.data.shapes import Head, Inputs
from tuner.errors import DataError
from tuner.patches.quiet import import_tensorflow

if TYPE_CHECKING:
    from tuner.data.batches import Batches

# Vectorising a few thousand texts at a time bounds the memory of the string tensors.
_CHUNK = 4096


@dataclass(frozen=True)
class TextArrays:
    """Vectorised texts: what batches and baselines are made from."""

    tokens: np.ndarray  # (examples, max sequence length) int32 word ids, 0-padded at the end
    labels: np.ndarray  # (examples,) int32 class ids
    part: np.ndarray  # (examples,) int8: 0 train, 1 validation, 2 test
    vocabulary: np.ndarray  # (words,) str: the word of each id, by falling frequency
    classes: tuple[str, ...]

    @property
    def metrics(self) -> tuple[str, ...]:
        return classes.METRICS

    @property
    def model_inputs(self) -> Inputs:
        return Inputs(self.tokens.shape[1:], tokens=True)

    @property
    def head(self) -> Head:
        return classes.head(len(self.classes))

    def dataset(
        self, split: str, batch_size: int, *, shuffle: bool = False, seed: int | None = None
    ) -> Batches:
        rows = classes.indices(self.part, split)
        return classes.dataset(
            self.tokens,
            self.labels,
            len(self.classes),
            rows,
            batch_size,
            shuffle=shuffle,
            seed=seed,
        )

    def baselines(self, split: str) -> dict[str, dict[str, float]]:
        return classes.baselines(self.labels, self.part, len(self.classes), split)


# What `TextVectorization`'s default standardisation strips before splitting on whitespace.
_PUNCTUATION = re.compile(r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']')


def _has_word(text: str) -> bool:
    return bool(_PUNCTUATION.sub("", text).split())


def texts_of(frame: pd.DataFrame, source: str, text: str) -> np.ndarray:
    """The texts of column `text`, checked: (examples,) str."""
    if text not in frame.columns:
        raise DataError(
            f"{source}: text column {text!r} not found (columns: {list(frame.columns)})"
        )
    texts = frame[text]
    if not (pd.api.types.is_string_dtype(texts) or pd.api.types.is_object_dtype(texts)):
        raise DataError(f"{source}: text column {text!r} must hold text, got dtype {texts.dtype}")
    missing = texts.isna().to_numpy()
    if missing.any():
        raise DataError(
            f"{source}: text column {text!r} has {int(missing.sum())} missing values "
            f"(first at row {int(np.flatnonzero(missing)[0])})"
        )
    strings: np.ndarray = texts.astype(str).to_numpy()
    return strings


def prepare(
    config: DataConfig, frame: pd.DataFrame, source: str, text: str, label: str
) -> TextArrays:
    """Check, split and vectorise labelled texts (columns `text` and `label` of `frame`)."""
    for role, column in (("text", text), ("label", label)):
        if column not in frame.columns:
            raise DataError(
                f"{source}: {role} column {column!r} not found (columns: {list(frame.columns)})"
            )
    strings = texts_of(frame, source, text)
    labels, names = classes.encode(frame[label], f"label column {label!r}", source)
    part = classes.stratified_split(labels, config.split, config.seed, source)
    if not any(_has_word(t) for t in strings[part == 0]):
        raise DataError(
            f"{source}: text column {text!r}: no training text has a word (only punctuation "
            "and blanks), so there is no vocabulary to learn"
        )
    # Only now: bad data is reported without waiting for TensorFlow.
    import_tensorflow()
    import keras

    vectorize = keras.layers.TextVectorization(
        max_tokens=config.max_vocabulary_size,
        output_sequence_length=config.max_sequence_length,
    )
    vectorize.adapt(strings[part == 0], batch_size=_CHUNK)
    tokens = np.concatenate(
        [
            np.asarray(vectorize(strings[i : i + _CHUNK]), dtype="int32")
            for i in range(0, len(strings), _CHUNK)
        ]
    )
    return TextArrays(
        tokens=tokens,
        labels=labels,
        part=part,
        vocabulary=np.array(vectorize.get_vocabulary(), dtype=str),
        classes=names,
    )
