"""Batches of a split, gathered from numpy arrays: what `model.fit`, `evaluate` and `predict`
read on every Keras backend (JAX and TensorFlow alike), as a `keras.utils.PyDataset`.

A batch is one fancy-indexing gather (a task's `gather` turns the rows of one batch into its
inputs and targets), so a batch of windows costs one numpy call, not one per window. Shuffled
batches follow a seeded permutation per epoch: epoch `e` of a split shuffled with seed `s` always
holds the same batches, whichever backend reads them. Importing this module imports Keras, so the
data package imports it only when batches are asked for (after the worker chose the backend).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import keras
import numpy as np

Gather = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class Batches(keras.utils.PyDataset):  # type: ignore[misc]
    """The batches of `rows` (indices into a task's arrays), in order or shuffled.

    Args:
        gather: Turns an array of row indices into one batch (inputs, targets).
        rows: The examples of the split, in their stored order.
        batch_size: Examples per batch; the last batch of an epoch may hold fewer.
        shuffle: Reshuffle the rows every epoch.
        seed: Seeds the shuffling (None: a fresh random seed).
        endless: Walk on through epoch after epoch without end, as `tf.data`'s `repeat()` does:
            what a step budget (`steps_per_epoch`) reads.
    """

    def __init__(
        self,
        gather: Gather,
        rows: np.ndarray,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int | None = None,
        endless: bool = False,
    ) -> None:
        # One thread, no queue: a gather takes well under a millisecond, and threads would only
        # compete with the training step for the worker's core.
        super().__init__(workers=1, use_multiprocessing=False)
        self.gather, self.rows, self.batch_size = gather, rows, batch_size
        self.shuffle, self.endless = shuffle, endless
        self.seed = (
            seed if seed is not None else int(np.random.SeedSequence().generate_state(1)[0])
        )
        self.epoch = 0
        self._order: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return -(-len(self.rows) // self.batch_size)

    @property
    def num_batches(self) -> int | None:
        return None if self.endless else len(self)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        epoch, position = self.epoch, index
        if self.endless:
            epoch, position = divmod(index, len(self))
        start = position * self.batch_size
        return self.gather(self.order(epoch)[start : start + self.batch_size])

    def order(self, epoch: int) -> np.ndarray:
        """The rows in the order epoch `epoch` reads them."""
        if not self.shuffle:
            return self.rows
        if self._order is None or self._order[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._order = (epoch, self.rows[rng.permutation(len(self.rows))])
        return self._order[1]

    def on_epoch_end(self) -> None:
        self.epoch += 1

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One epoch (endless: every epoch), then the next iteration reads the next epoch, as
        a `tf.data` pipeline reshuffled on each iteration does."""
        if self.endless:
            yield from super().__iter__()
            return
        for index in range(len(self)):
            yield self[index]
        self.on_epoch_end()

    def repeat(self) -> Batches:
        """The same batches walking on through epoch after epoch (reshuffled each), without
        end: for `model.fit(..., steps_per_epoch=N)`, as `tf.data.Dataset.repeat()`."""
        return Batches(
            self.gather,
            self.rows,
            self.batch_size,
            shuffle=self.shuffle,
            seed=self.seed,
            endless=True,
        )
