"""Keras layers of our own. Importing this module registers them, so that a saved model that
uses them loads again (`keras.saving.load_model`)."""

from __future__ import annotations

from typing import Any

import keras

# Token ids as the data package writes them: 0 pads a text, 1 stands for any word outside the
# vocabulary, and the others are words by falling frequency in the training texts.
PAD_ID, OOV_ID = 0, 1


@keras.saving.register_keras_serializable(package="tuner")
class TokenWindow(keras.layers.Layer):  # type: ignore[misc]
    """Keeps a text's first `sequence_length` token ids, and maps the ids of words outside a
    vocabulary of `vocabulary_size` ids (the most frequent words) to the out-of-vocabulary id.

    Texts are vectorised once, with the largest vocabulary and length a study searches; this is
    how each trial reads them with its own.
    """

    def __init__(
        self, vocabulary_size: int, sequence_length: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.sequence_length = sequence_length

    def call(self, ids: Any) -> Any:
        if self.sequence_length is not None:
            ids = ids[:, : self.sequence_length]
        return keras.ops.where(ids >= self.vocabulary_size, OOV_ID, ids)

    def compute_output_shape(self, shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        length = shape[1]
        if self.sequence_length is not None and length is not None:
            length = min(length, self.sequence_length)
        return (shape[0], length)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        return config | {
            "vocabulary_size": self.vocabulary_size,
            "sequence_length": self.sequence_length,
        }
