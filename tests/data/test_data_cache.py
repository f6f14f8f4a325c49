from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_series

import tuner.data
from tuner.config import DataConfig, load_study_config
from tuner.data import cache, prepare


@pytest.fixture
def builds(monkeypatch) -> list[str]:
    """Records every time data is prepared from its source rather than the cache."""
    seen: list[str] = []
    build = tuner.data.build

    def counted(config):
        seen.append(config.task)
        return build(config)

    monkeypatch.setattr(tuner.data, "build", counted)
    return seen


@pytest.fixture
def config(write_study, tmp_path: Path, monkeypatch):
    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path / "cache"))
    return load_study_config(write_study()).data


def test_data_is_prepared_once_then_mapped_in_from_the_cache(config, builds, tmp_path) -> None:
    first = prepare(config)
    second = prepare(config)
    assert builds == ["forecast"]
    assert isinstance(second.arrays.inputs, np.memmap)
    assert np.array_equal(first.arrays.inputs, second.arrays.inputs)
    assert second.arrays == replace(
        first.arrays, inputs=second.arrays.inputs, target=second.arrays.target
    )
    assert first.baselines == second.baselines
    (entry,) = (tmp_path / "cache" / "prepared").iterdir()
    # Arrays and JSON only: nothing that loading would have to unpickle.
    assert sorted(p.name for p in entry.iterdir()) == ["inputs.npy", "meta.json", "target.npy"]


def test_a_changed_file_or_data_section_is_prepared_again(config, builds) -> None:
    prepare(config)
    prepare(replace(config, delay=4))
    assert builds == ["forecast", "forecast"]
    changed = make_series(seed=1)
    changed.to_csv(config.path, index=False)
    assert prepare(config).arrays.target[0] == pytest.approx(changed["temp"][0])
    assert len(builds) == 3


@dataclass(frozen=True)
class Entry:
    values: np.ndarray
    names: tuple[str, ...]


def test_a_second_writer_of_an_entry_leaves_the_first_in_place(tmp_path: Path) -> None:
    first = Entry(np.arange(3.0), ("a", "b"))
    cache.store(first, tmp_path / "entry")
    cache.store(Entry(np.zeros(3), ("c",)), tmp_path / "entry")  # lost the race: no error
    loaded = cache.load(Entry, tmp_path / "entry")
    assert np.array_equal(loaded.values, first.values) and loaded.names == ("a", "b")
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]  # no temporary left behind


def test_an_unreadable_entry_is_built_again(tmp_path: Path, caplog) -> None:
    (tmp_path / "entry").mkdir()
    (tmp_path / "entry" / "meta.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="tuner.data"):
        value = cache.cached(Entry, "entry", lambda: Entry(np.ones(2), ()), folder=tmp_path)
    assert np.array_equal(value.values, np.ones(2))
    assert "ignoring the unreadable cache entry" in caplog.text


def test_the_cache_folder_comes_from_the_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path / "here"))
    assert cache.cache_dir() == tmp_path / "here"
    monkeypatch.delenv(cache.ENV_VAR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "tuner"


def test_the_key_follows_the_data_section_the_source_and_the_format() -> None:
    source = {"path": "/a.csv", "size": 10, "mtime_ns": 1}
    base = cache.key({"lookback": 12}, source)
    assert base == cache.key({"lookback": 12}, dict(source))
    assert base != cache.key({"lookback": 13}, source)
    assert base != cache.key({"lookback": 12}, source | {"mtime_ns": 2})


def test_a_text_entry_keeps_its_vocabulary_as_strings(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path / "cache"))
    frame = pd.DataFrame({"t": ["a b", "b c", "c d", "a a", "b b", "d d"] * 3, "y": [0, 1] * 9})
    frame.to_csv(tmp_path / "t.csv", index=False)
    data = DataConfig(
        task="text-classification",
        dataset=None,
        path=tmp_path / "t.csv",
        text="t",
        label="y",
        max_vocabulary_size=10,
        max_sequence_length=4,
    )
    fresh, cached = prepare(data).arrays, prepare(data).arrays
    assert list(cached.vocabulary) == list(fresh.vocabulary)
    assert cached.classes == ("0", "1") and np.array_equal(cached.tokens, fresh.tokens)
