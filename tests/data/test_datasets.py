from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tuner.config import DataConfig
from tuner.data import cache, datasets, prepare
from tuner.data.datasets import JENA_COLUMNS, JENA_FILE, jena_climate, jena_file
from tuner.errors import DataError

# Nothing listens on the discard port: a download from here fails at once, as offline.
UNREACHABLE = "http://127.0.0.1:9/jena_climate_2009_2016.csv.zip"


def jena_like(rows: int = 300) -> pd.DataFrame:
    """A small file with the columns and timestamp format of the Jena climate CSV, with the
    real file's faults: a repeated row and wind speeds of -9999."""
    rng = np.random.default_rng(0)
    times = pd.date_range("2009-01-01 00:10", periods=rows, freq="10min")
    frame = pd.DataFrame(
        {c: rng.normal(10, 2, rows).round(2) for c in JENA_COLUMNS},
        index=times.strftime("%d.%m.%Y %H:%M:%S"),
    )
    frame.loc[frame.index[50], ["wv (m/s)", "max. wv (m/s)"]] = -9999.0
    frame = pd.concat([frame.iloc[:100], frame.iloc[99:100], frame.iloc[100:]])
    return frame.rename_axis("Date Time").reset_index()


@pytest.fixture
def datasets_dir(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "datasets"
    folder.mkdir(parents=True)
    return folder


def test_jena_climate_is_read_from_the_cache_folder(datasets_dir: Path) -> None:
    raw = jena_like()
    raw.to_csv(datasets_dir / JENA_FILE, index=False)
    frame = jena_climate()
    assert list(frame.columns) == list(JENA_COLUMNS)
    assert len(frame) == 300 and frame.index.is_monotonic_increasing
    assert frame.index[0] == pd.Timestamp("2009-01-01 00:10")  # day first, as in the file
    # -9999 is a sensor error: interpolated between its neighbours.
    wind = frame["wv (m/s)"]
    assert wind.iloc[50] == pytest.approx((wind.iloc[49] + wind.iloc[51]) / 2)
    assert (frame["max. wv (m/s)"] >= 0).all()


def test_a_jena_study_prepares_its_windows(datasets_dir: Path) -> None:
    jena_like().to_csv(datasets_dir / JENA_FILE, index=False)
    config = DataConfig(
        task="forecast",
        dataset="jena-climate",
        path=None,
        target="T (degC)",
        lookback=36,
        step=6,
        delay=12,
    )
    data = prepare(config)
    assert data.input_shape == (6, 14)
    assert data.baselines["last_value"]["mae"] > 0


def test_a_downloaded_archive_is_unzipped_once(datasets_dir: Path) -> None:
    jena_like().to_csv(datasets_dir / "source.csv", index=False)
    with zipfile.ZipFile(datasets_dir / f"{JENA_FILE}.zip", "w") as archive:
        archive.write(datasets_dir / "source.csv", JENA_FILE)
    path = jena_file(origin=UNREACHABLE)  # the archive is there: nothing to download
    assert path == datasets_dir / JENA_FILE
    assert path.read_bytes() == (datasets_dir / "source.csv").read_bytes()


def test_offline_the_jena_loader_says_what_to_download_and_where(datasets_dir: Path) -> None:
    message = (
        rf"jena-climate: cannot download {UNREACHABLE} \(.+\); download it yourself and put "
        rf"it, or the {JENA_FILE} inside it, in {datasets_dir}$"
    )
    with pytest.raises(DataError, match=message):
        jena_file(origin=UNREACHABLE)
    assert list(datasets_dir.iterdir()) == []  # no half-downloaded file left behind


def test_a_broken_archive_is_named(datasets_dir: Path) -> None:
    (datasets_dir / f"{JENA_FILE}.zip").write_text("not a zip")
    with pytest.raises(DataError, match=r"is not a zip archive holding jena_climate_2009_2016"):
        jena_file()


def test_every_built_in_dataset_names_its_task() -> None:
    assert {name: b.task for name, b in datasets.BUILTIN.items()} == {
        "nyc-weather": "forecast",
        "jena-climate": "forecast",
        "amazon-reviews": "text-classification",
    }
    with pytest.raises(DataError, match=r"unknown dataset 'mnist' \(built-in: amazon-reviews, "):
        datasets.builtin("mnist", "forecast")
