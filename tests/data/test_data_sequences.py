from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tuner.config import DataConfig
from tuner.data import prepare, sequences
from tuner.data.files import read_sequences
from tuner.errors import DataError


def config(path: Path, **changes) -> DataConfig:
    return DataConfig(task="sequence-classification", dataset=None, path=path, **changes)


def ragged(n: int = 60, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Sequences of 2 features and 1 to 9 steps; the label is the sign of their mean."""
    rng = np.random.default_rng(seed)
    seqs = [rng.normal(size=(int(rng.integers(1, 10)), 2)) + 3 for _ in range(n)]
    labels = np.array(["low", "high"])[(np.arange(n) % 3 == 0).astype(int)]
    return seqs, labels


def write_flat(path: Path, seqs: list[np.ndarray], labels: np.ndarray) -> Path:
    np.savez(path, values=np.concatenate(seqs), lengths=[len(s) for s in seqs], labels=labels)
    return path


def test_padded_and_flat_files_hold_the_same_sequences(tmp_path: Path) -> None:
    seqs, labels = ragged()
    flat = read_sequences(write_flat(tmp_path / "flat.npz", seqs, labels))
    padded = np.full((len(seqs), 9, 2), np.nan)  # what lies past a sequence's length is ignored
    for i, s in enumerate(seqs):
        padded[i, : len(s)] = s
    lengths = [len(s) for s in seqs]
    np.savez(tmp_path / "padded.npz", sequences=padded, lengths=lengths, labels=labels)
    other = read_sequences(tmp_path / "padded.npz")
    assert np.array_equal(flat.values, other.values)
    assert np.array_equal(flat.lengths, other.lengths)
    assert np.array_equal(flat.labels, other.labels)


def test_variable_lengths_are_padded_at_the_end_with_a_presence_channel(tmp_path: Path) -> None:
    seqs, labels = ragged()
    data = prepare(config(write_flat(tmp_path / "x.npz", seqs, labels)))
    arrays = data.arrays
    assert data.inputs.masked and data.input_shape == (9, 3)
    for i, s in enumerate(seqs):
        row = arrays.x[i]
        assert np.all(row[: len(s), 2] == 1.0)  # real steps are never all zero
        assert np.all(row[len(s) :] == 0.0)
    # Features are normalised with the training sequences' time steps only.
    train = np.concatenate([s for s, p in zip(seqs, arrays.part, strict=True) if p == 0])
    mean, std = train.mean(axis=0), train.std(axis=0)
    first = int(np.flatnonzero(arrays.part == 1)[0])
    expected = (seqs[first] - mean) / std
    assert np.allclose(arrays.x[first, : len(seqs[first]), :2], expected, atol=1e-5)


def test_sequences_of_one_length_are_not_masked(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(40, 7))  # 40 sequences of 7 steps, 1 feature
    np.savez(tmp_path / "x.npz", sequences=x, labels=np.arange(40) % 4)
    data = prepare(config(tmp_path / "x.npz"))
    assert not data.inputs.masked and data.input_shape == (7, 1)
    assert data.head.units == 4 and data.head.activation == "softmax"
    assert data.classes == ("0", "1", "2", "3")
    assert data.study_attrs == {"classes": ["0", "1", "2", "3"]}


def test_the_split_is_stratified_and_seeded(tmp_path: Path) -> None:
    seqs, labels = ragged(n=120)
    path = write_flat(tmp_path / "x.npz", seqs, labels)
    a, b = prepare(config(path)).arrays, prepare(config(path, seed=1)).arrays
    assert not np.array_equal(a.part, b.part)
    assert np.array_equal(a.part, prepare(config(path)).arrays.part)
    for split in (0, 1, 2):
        counts = np.bincount(a.labels[a.part == split])
        # Each split holds the classes in the proportions of the whole (40 "high", 80 "low").
        assert counts[1] == 2 * counts[0], (split, counts)
    sizes = np.bincount(a.part)
    assert list(sizes) == [60, 30, 30]


def test_batches_and_the_majority_class_baseline(tmp_path: Path) -> None:
    seqs, labels = ragged(n=120)
    data = prepare(config(write_flat(tmp_path / "x.npz", seqs, labels)))
    x, y = next(iter(data.split("validation", batch_size=100)))
    assert x.shape == (30, 9, 3) and y.dtype.name == "float32"  # two classes: a sigmoid head
    assert data.head.units == 1 and data.head.activation == "sigmoid"
    low = data.classes.index("low")
    # "low" is two thirds of every split: predicting it is right two times in three.
    assert data.baselines["majority_class"]["accuracy"] == pytest.approx(2 / 3)
    entropy = -(2 / 3 * np.log(2 / 3) + 1 / 3 * np.log(1 / 3))
    assert data.baselines["class_frequencies"]["crossentropy"] == pytest.approx(entropy)
    assert np.mean(np.asarray(y) == low) == pytest.approx(2 / 3)
    together = sum(len(b[1]) for b in data.split("train+validation", 16))
    assert together == 90


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (
            dict(values=np.ones(6), lengths=[2, 0, 4], labels=[0, 1, 0]),
            r"x.npz: sequence 1 has length 0; every sequence needs at least one time step",
        ),
        (
            dict(values=np.ones(6), lengths=[2, 4], labels=["a", "a"]),
            r"x.npz: 'labels' has one class \('a'\); a classifier needs two or more",
        ),
        (
            dict(values=np.ones(6), lengths=[2, 3], labels=[0, 1]),
            r"x.npz: `lengths` add up to 5 steps but `values` has 6",
        ),
        (
            dict(sequences=np.array([["a", "b"], ["c", "d"]]), labels=[0, 1]),
            r"x.npz: `sequences` must be numeric, got dtype <U1",
        ),
        (
            dict(values=np.ones(6), labels=[0, 1]),
            r"x.npz: `values` needs `lengths`; found labels, values",
        ),
        (
            dict(series=np.ones(6), labels=[0, 1]),
            r"x.npz: needs `labels` and either `sequences` \(with optional `lengths`\) or "
            r"`values` \+ `lengths`; found labels, series",
        ),
        (
            dict(sequences=np.ones((3, 4)), labels=[0, 1]),
            r"x.npz: `labels` has 2 entries for 3 sequences",
        ),
        (
            dict(values=np.array([1.0, np.nan, 2.0]), lengths=[1, 2], labels=[0, 1]),
            r"x.npz: `values` has 1 time steps with missing or infinite values",
        ),
    ],
)
def test_bad_sequence_files_are_named(tmp_path: Path, arrays, message) -> None:
    np.savez(tmp_path / "x.npz", **arrays)
    with pytest.raises(DataError, match=message):
        prepare(config(tmp_path / "x.npz"))


def test_a_file_that_would_need_unpickling_is_refused(tmp_path: Path) -> None:
    ragged_objects = np.empty(2, dtype=object)
    ragged_objects[:] = [np.ones(3), np.ones(2)]
    np.savez(tmp_path / "x.npz", sequences=ragged_objects, labels=[0, 1])
    with pytest.raises(DataError, match=r"holds arrays of Python objects, which are not read"):
        read_sequences(tmp_path / "x.npz")


def test_empty_and_foreign_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty.npz: the file is empty"):
        read_sequences(tmp_path / "empty.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(DataError, match=r"text.npz: cannot be read as .npz"):
        read_sequences(tmp_path / "text.npz")
    (tmp_path / "x.csv").write_text("a\n1\n")
    with pytest.raises(DataError, match=r"sequence classification reads .npz files, got '.csv'"):
        read_sequences(tmp_path / "x.csv")


def test_new_sequences_need_no_labels_and_are_padded_with_nan(tmp_path: Path) -> None:
    seqs, labels = ragged()
    data = prepare(config(write_flat(tmp_path / "x.npz", seqs, labels)))
    new = [np.ones((2, 2)), np.zeros((4, 2))]
    np.savez(tmp_path / "new.npz", values=np.concatenate(new), lengths=[2, 4])
    read = read_sequences(tmp_path / "new.npz", labelled=False)
    assert read.labels is None
    x = sequences.new_sequences(data.arrays, read, "new.npz")
    assert x.shape == (2, 4, 2) and np.isnan(x[0, 2:]).all() and (x[1] == 0).all()
    np.savez(tmp_path / "three.npz", sequences=np.zeros((2, 4, 3)))
    with pytest.raises(DataError, match=r"^new.npz: the sequences have 3 features per time step"):
        sequences.new_sequences(
            data.arrays, read_sequences(tmp_path / "three.npz", labelled=False), "new.npz"
        )
    with pytest.raises(DataError, match=r"needs `labels` and either"):
        read_sequences(tmp_path / "three.npz")
