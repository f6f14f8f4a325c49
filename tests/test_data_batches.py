from __future__ import annotations

import numpy as np

from tuner.data.batches import Batches


def gather(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return rows[:, None].astype("float32"), rows.astype("float32")


def epoch(batches: Batches) -> np.ndarray:
    return np.concatenate([y for _, y in batches])


def test_batches_hold_every_row_once_in_order_unless_shuffled() -> None:
    plain = Batches(gather, np.arange(10, 20), 4)
    assert len(plain) == 3 and plain.num_batches == 3
    assert [len(y) for _, y in plain] == [4, 4, 2]
    assert np.array_equal(epoch(plain), np.arange(10, 20))


def test_shuffled_batches_follow_the_seed_and_are_reshuffled_every_epoch() -> None:
    one, two = (Batches(gather, np.arange(50), 8, shuffle=True, seed=3) for _ in range(2))
    first = epoch(one)
    assert sorted(first) == list(range(50)) and not np.array_equal(first, np.arange(50))
    assert np.array_equal(first, epoch(two))  # the same seed, the same order
    second = epoch(one)
    assert sorted(second) == list(range(50)) and not np.array_equal(first, second)
    other = Batches(gather, np.arange(50), 8, shuffle=True, seed=4)
    assert not np.array_equal(epoch(other), first)


def test_repeat_walks_on_through_reshuffled_epochs_without_end() -> None:
    finite = Batches(gather, np.arange(10), 4, shuffle=True, seed=1)
    endless = finite.repeat()
    assert endless.num_batches is None
    taken = np.concatenate([endless[i][1] for i in range(9)])  # three epochs of 3 batches
    epochs = [epoch(finite) for _ in range(3)]
    assert np.array_equal(taken, np.concatenate(epochs))
    assert not np.array_equal(epochs[0], epochs[1])
