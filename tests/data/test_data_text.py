from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import reviews

from tuner.config import DataConfig
from tuner.data import prepare
from tuner.errors import DataError
from tuner.training.layers import OOV_ID, TokenWindow


def config(path: Path | None, **changes) -> DataConfig:
    base = dict(
        task="text-classification",
        dataset=None,
        path=path,
        text="body",
        label="stars",
        max_vocabulary_size=30,
        max_sequence_length=12,
    )
    return DataConfig(**(base | changes))


@pytest.fixture
def csv(tmp_path: Path) -> Path:
    reviews().to_csv(tmp_path / "reviews.csv", index=False)
    return tmp_path / "reviews.csv"


def test_texts_become_word_ids_by_frequency_learnt_from_training_texts(csv: Path) -> None:
    frame = reviews()
    frame.loc[1, "body"] = "zebra " * 20  # a word seen in one text only
    frame.to_csv(csv, index=False)
    data = prepare(config(csv))
    arrays = data.arrays
    vocabulary = list(arrays.vocabulary)
    assert vocabulary[:2] == ["", "[UNK]"] and len(vocabulary) == 30
    assert ("zebra" in vocabulary) == (arrays.part[1] == 0)
    assert "bad" in vocabulary and "Bad!" not in vocabulary  # lower case, no punctuation
    assert data.input_shape == (12,) and data.inputs.tokens
    assert arrays.tokens.dtype == np.int32 and arrays.tokens.max() < 30
    first = frame.loc[0, "body"].lower().replace("!", "").split()[:12]
    ids = [vocabulary.index(w) if w in vocabulary else OOV_ID for w in first]
    assert list(arrays.tokens[0, : len(ids)]) == ids
    assert np.all(arrays.tokens[0, len(ids) :] == 0)
    assert data.classes == ("bad", "good")
    # "bad" is two texts in three of every split.
    assert data.baselines["majority_class"]["accuracy"] == pytest.approx(2 / 3)


def test_a_trial_with_a_smaller_vocabulary_reads_what_vectorising_with_it_gives(csv: Path) -> None:
    data = prepare(config(csv))
    arrays = data.arrays
    texts = reviews()["body"].to_numpy()
    small = keras.layers.TextVectorization(max_tokens=10, output_sequence_length=6)
    small.adapt(texts[arrays.part == 0])
    window = TokenWindow(vocabulary_size=10, sequence_length=6)
    assert np.array_equal(np.asarray(window(arrays.tokens)), np.asarray(small(texts)))


def test_the_amazon_reviews_ship_offline_with_their_labels() -> None:
    data = prepare(
        DataConfig(
            task="text-classification",
            dataset="amazon-reviews",
            path=None,
            max_vocabulary_size=500,
            max_sequence_length=20,
        )
    )
    assert data.classes == ("great", "other")
    assert data.arrays.tokens.shape == (5000, 20)
    assert 0.6 < data.baselines["majority_class"]["accuracy"] < 0.7


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(text="review"), r"reviews.csv: text column 'review' not found \(columns: "),
        (dict(label="score"), r"reviews.csv: label column 'score' not found"),
        (dict(text="id"), r"text column 'id' must hold text, got dtype int64"),
    ],
)
def test_bad_columns_are_named(csv: Path, change, message) -> None:
    with pytest.raises(DataError, match=message):
        prepare(config(csv, **change))


def test_a_label_with_one_class_and_missing_texts_are_named(csv: Path) -> None:
    reviews().assign(stars="good").to_csv(csv, index=False)
    with pytest.raises(
        DataError,
        match=r"reviews.csv: label column 'stars' has one class \('good'\); a classifier needs "
        r"two or more",
    ):
        prepare(config(csv))
    frame = reviews()
    frame.loc[[4, 9], "body"] = np.nan
    frame.to_csv(csv, index=False)
    with pytest.raises(
        DataError, match=r"text column 'body' has 2 missing values \(first at row 4\)"
    ):
        prepare(config(csv))


def test_a_built_in_dataset_of_another_task_is_named() -> None:
    data = DataConfig(task="forecast", dataset="amazon-reviews", path=None, target="score")
    with pytest.raises(
        DataError,
        match=r"dataset 'amazon-reviews' holds text-classification data, not forecast data; "
        r'set \[data\] task = "text-classification"',
    ):
        prepare(data)
