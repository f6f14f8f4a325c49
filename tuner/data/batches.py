"""Batches of a split, gathered from numpy arrays: what `model.fit`, `evaluate` and `predict`
read on every Keras backend (JAX and TensorFlow alike), as a `keras.utils.PyDataset`.

A batch is one fancy-indexing gather (a task's `gather` turns the rows of one batch into its
inputs and targets), so a batch of windows costs one numpy call, not one per window. Shuffled
batches follow a seeded permutation per pass over the rows: epoch `e` of a split shuffled with
seed `s` always holds the same batches, whichever backend reads them. Importing this module
imports Keras, so the data package imports it only when batches are asked for (after the worker
chose the backend).

Every batch of a shuffled split is full. Keras compiles its training step once per batch shape
(JAX: an XLA compile, the largest cost of a short trial; TensorFlow: a retrace), and a last,
smaller batch compiled the whole step a second time in each trial's second epoch (BENCHMARKS.md,
"One batch shape a trial"). So shuffled batches are read from a stream of the split's rows,
reshuffled on every pass over them: a batch that reaches the end of one pass is filled from the
next, as `tf.data`'s `shuffle().repeat().batch()` does, and no row is left out for good.
Unshuffled batches (validation, test) hold every row once, in order; `evaluation_batch_size`
sizes them to need few shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import keras
import numpy as np

Gather = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

# Rows x time steps in one evaluation batch: the recurrent layers' activations grow with it
# (about 1 MB a unit at this size), the number of batches, and so of compiled shapes, falls.
EVALUATION_ELEMENTS = 2**18


def evaluation_batch_size(rows: int, timesteps: int | None, batch_size: int) -> int:
    """Examples per batch to evaluate (validate, test) `rows` examples of `timesteps` steps:
    all of them in one batch when they fit in `EVALUATION_ELEMENTS`, so the evaluation step is
    compiled for one shape, not two (a full batch and the rest); never fewer than the training
    batch. The batch size changes nothing but the speed."""
    cap = max(batch_size, EVALUATION_ELEMENTS // (timesteps or 256))
    return max(1, min(rows, cap))


class Batches(keras.utils.PyDataset):  # type: ignore[misc]
    """The batches of `rows` (indices into a task's arrays), in order or shuffled.

    Args:
        gather: Turns an array of row indices into one batch (inputs, targets).
        rows: The examples of the split, in their stored order.
        batch_size: Examples per batch. Unshuffled, the last batch may hold fewer; shuffled,
            every batch is full (an epoch is `len(rows) // batch_size` batches of the stream),
            unless the split holds fewer rows than one batch: then it is one batch of them all.
        shuffle: Read the rows as a stream reshuffled on every pass over them.
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
        self._orders: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        if self._streamed:
            return len(self.rows) // self.batch_size
        return -(-len(self.rows) // self.batch_size)

    @property
    def _streamed(self) -> bool:
        """Whether batches are read from the reshuffled stream (all full), not from one pass."""
        return self.shuffle and len(self.rows) >= self.batch_size

    @property
    def num_batches(self) -> int | None:
        return None if self.endless else len(self)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if self._streamed:
            # Batch `index` of the current epoch (endless: of the whole walk) is batch
            # `epoch * len(self) + index` of the stream.
            first = (index if self.endless else self.epoch * len(self) + index) * self.batch_size
            return self.gather(self.stream(first, self.batch_size))
        epoch, position = self.epoch, index
        if self.endless:
            epoch, position = divmod(index, len(self))
        start = position * self.batch_size
        return self.gather(self.order(epoch)[start : start + self.batch_size])

    def stream(self, start: int, count: int) -> np.ndarray:
        """`count` rows of the stream from position `start`: pass `p` over the rows holds
        positions `p * len(rows)` to `(p + 1) * len(rows) - 1`, in `order(p)`."""
        n = len(self.rows)
        parts, position = [], start
        while position < start + count:
            epoch, offset = divmod(position, n)
            part = self.order(epoch)[offset : offset + start + count - position]
            parts.append(part)
            position += len(part)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def order(self, epoch: int) -> np.ndarray:
        """The rows in the order pass `epoch` over them reads them."""
        if not self.shuffle:
            return self.rows
        order = self._orders.get(epoch)
        if order is None:
            rng = np.random.default_rng([self.seed, epoch])
            order = self.rows[rng.permutation(len(self.rows))]
            # A batch spans at most two passes: keep the latest two.
            self._orders = {e: o for e, o in self._orders.items() if e == epoch - 1}
            self._orders[epoch] = order
        return order

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
