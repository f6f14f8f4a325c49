from __future__ import annotations

import numpy as np

from tuner.data.batches import EVALUATION_ELEMENTS, Batches, evaluation_batch_size


def gather(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return rows[:, None].astype("float32"), rows.astype("float32")


def epoch(batches: Batches) -> np.ndarray:
    return np.concatenate([y for _, y in batches])


def test_batches_hold_every_row_once_in_order_unless_shuffled() -> None:
    plain = Batches(gather, np.arange(10, 20), 4)
    assert len(plain) == 3 and plain.num_batches == 3
    assert [len(y) for _, y in plain] == [4, 4, 2]
    assert np.array_equal(epoch(plain), np.arange(10, 20))


def test_shuffled_batches_follow_the_seed_and_are_reshuffled_every_pass() -> None:
    one, two = (Batches(gather, np.arange(48), 8, shuffle=True, seed=3) for _ in range(2))
    first = epoch(one)
    assert sorted(first) == list(range(48)) and not np.array_equal(first, np.arange(48))
    assert np.array_equal(first, epoch(two))  # the same seed, the same order
    second = epoch(one)
    assert sorted(second) == list(range(48)) and not np.array_equal(first, second)
    other = Batches(gather, np.arange(48), 8, shuffle=True, seed=4)
    assert not np.array_equal(epoch(other), first)


def test_shuffled_batches_are_all_full_and_leave_no_row_out_for_good() -> None:
    # 50 rows in batches of 8: 6 full batches an epoch; a batch that reaches the end of one
    # pass over the rows is filled from the next (one compiled shape, not two).
    batches = Batches(gather, np.arange(50), 8, shuffle=True, seed=3)
    assert len(batches) == 6
    epochs = [[y for _, y in batches] for _ in range(5)]
    assert all(len(y) == 8 for batch in epochs for y in batch)
    walked = np.concatenate([np.concatenate(batch) for batch in epochs])
    # 5 epochs of 48 rows walked 4 whole passes (200 rows) and 40 rows of the fifth, each
    # pass every row once.
    for p in range(4):
        assert sorted(walked[p * 50 : (p + 1) * 50]) == list(range(50))
    assert np.array_equal(walked[:50], batches.order(0)) and len(set(walked[200:])) == 40
    # Fewer rows than a batch: one batch of them all.
    small = Batches(gather, np.arange(5), 8, shuffle=True, seed=3)
    assert len(small) == 1 and sorted(epoch(small)) == list(range(5))


def test_repeat_walks_on_through_reshuffled_epochs_without_end() -> None:
    finite = Batches(gather, np.arange(10), 4, shuffle=True, seed=1)
    endless = finite.repeat()
    assert endless.num_batches is None
    taken = np.concatenate([endless[i][1] for i in range(6)])  # three epochs of 2 batches
    epochs = [epoch(finite) for _ in range(3)]
    assert np.array_equal(taken, np.concatenate(epochs))
    assert all(len(endless[i][1]) == 4 for i in range(20))
    assert not np.array_equal(epochs[0], epochs[1])


def test_evaluation_batches_hold_a_whole_split_when_it_fits() -> None:
    assert evaluation_batch_size(2000, 60, 64) == 2000  # 2000 x 60 steps fit: one batch
    assert evaluation_batch_size(50_000, 60, 64) == EVALUATION_ELEMENTS // 60
    assert evaluation_batch_size(50_000, 10_000, 64) == 64  # never below the training batch
    assert evaluation_batch_size(10, None, 64) == 10
