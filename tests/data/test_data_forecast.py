from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import make_series

from tuner.config import load_study_config
from tuner.data import forecast, prepare
from tuner.data.datasets import nyc_weather
from tuner.data.files import read_table
from tuner.errors import DataError


@pytest.fixture
def config(write_study):
    return load_study_config(write_study()).data


def ramp(rows: int = 300) -> pd.DataFrame:
    """A target equal to the row number, and a feature that is the row number too."""
    return pd.DataFrame(
        {"row": np.arange(rows, dtype="float64"), "temp": np.arange(rows, dtype="float64")}
    )


def all_batches(ds):
    xs, ys = zip(*[(np.asarray(x), np.asarray(y)) for x, y in ds], strict=True)
    return np.concatenate(xs), np.concatenate(ys)


@pytest.mark.parametrize("step, delay", [(1, 0), (2, 3), (3, 5)])
def test_a_windows_target_is_the_value_delay_steps_after_its_end(config, step, delay) -> None:
    cfg = replace(
        config, features=("row",), timestamp=None, lookback=6 * step, step=step, delay=delay
    )
    arrays = forecast.prepare(cfg, ramp(), "ramp")
    mean, std = arrays.target_mean, float(np.std(np.arange(arrays.bounds[1])))
    for split in forecast.SPLITS:
        x, y = all_batches(forecast.dataset(arrays, split, batch_size=7))
        rows = np.rint(x[..., 0] * std + mean)  # undo the normalisation: back to row numbers
        ends = rows[:, -1]
        assert np.array_equal(y, ends + delay)
        assert np.array_equal(np.diff(rows, axis=1), np.full((len(x), 5), step))
        start, stop = arrays.rows(split)
        # Every window, inputs and target, lies inside its own split.
        assert rows.min() >= start and (ends + delay).max() == stop - 1
        assert np.array_equal(ends, arrays.window_ends(split))


def test_windows_match_keras_timeseries_dataset_from_array(config) -> None:
    frame = pd.read_csv(config.path)
    arrays = forecast.prepare(config, frame, "series")
    ours_x, ours_y = all_batches(forecast.dataset(arrays, "validation", batch_size=32))
    start, stop = arrays.rows("validation")
    offset = (arrays.timesteps - 1) * arrays.step + arrays.delay
    theirs = keras.utils.timeseries_dataset_from_array(
        arrays.inputs[start : stop - arrays.delay],
        arrays.target[start + offset : stop],
        sequence_length=arrays.timesteps,
        sampling_rate=arrays.step,
        batch_size=32,
    )
    their_x, their_y = all_batches(theirs)
    assert np.array_equal(ours_x, their_x) and np.array_equal(ours_y, their_y)


def test_shuffled_training_windows_are_the_same_windows_in_a_new_order(config) -> None:
    arrays = forecast.prepare(config, pd.read_csv(config.path), "series")
    plain = all_batches(forecast.dataset(arrays, "train", 16))[1]
    ds = forecast.dataset(arrays, "train", 16, shuffle=True, seed=3)
    first, second = all_batches(ds)[1], all_batches(ds)[1]
    # Full batches only, read from passes over the windows, each pass reshuffled: the first
    # pass holds every window once, in a new order, and the second epoch reads on into the next.
    assert len(first) == len(second) == len(plain) // 16 * 16 < len(plain)
    walked = np.concatenate([first, second])
    assert sorted(walked[: len(plain)]) == sorted(plain)
    assert not np.array_equal(walked[: len(plain)], plain)
    assert not np.array_equal(first, second)


def test_no_statistic_comes_from_validation_or_test_rows(config) -> None:
    frame = pd.read_csv(config.path)
    arrays = forecast.prepare(config, frame, "series")
    changed = frame.copy()
    n_train = arrays.bounds[1]
    changed.loc[n_train:, ["temp", "pressure", "humid"]] *= 1000.0
    other = forecast.prepare(config, changed, "series")
    assert np.array_equal(arrays.inputs[:n_train], other.inputs[:n_train])
    assert (arrays.target_mean, arrays.target_std) == (other.target_mean, other.target_std)
    train = frame[["temp", "pressure", "humid"]].to_numpy()[:n_train]
    assert np.allclose(arrays.inputs[:n_train].mean(axis=0), 0, atol=1e-5)
    assert arrays.target_mean == pytest.approx(train[:, 0].mean())


def test_the_rows_are_sorted_by_the_timestamp(config) -> None:
    frame = pd.read_csv(config.path)
    shuffled = frame.sample(frac=1.0, random_state=0)
    a = forecast.prepare(config, frame, "series")
    b = forecast.prepare(config, shuffled, "series")
    assert np.array_equal(a.target, b.target)


def test_baselines_are_last_value_and_seasonal_persistence(config) -> None:
    cfg = replace(config, features=("row",), timestamp=None, lookback=4, step=1, delay=3)
    arrays = forecast.prepare(cfg, ramp(), "ramp")
    # On a ramp, the last value is always `delay` short.
    assert forecast.baseline(arrays, "validation")["last_value"]["mae"] == pytest.approx(3.0)
    t = np.arange(400)
    daily = pd.DataFrame({"row": t % 24, "temp": np.sin(2 * np.pi * t / 24)})
    arrays = forecast.prepare(replace(cfg, delay=5), daily, "daily")
    scores = forecast.baseline(arrays, "validation", period=24)
    assert scores["seasonal"]["mae"] == pytest.approx(0.0, abs=1e-6)
    assert scores["last_value"]["mae"] > 0.5


def test_retraining_uses_training_and_validation_windows_together(config) -> None:
    data = prepare(config)
    together = all_batches(data.split("train+validation", 64))[1]
    apart = [all_batches(data.split(s, 64))[1] for s in ("train", "validation")]
    # Windows that straddle the two splits are used too: more windows, never fewer.
    assert len(together) >= sum(len(y) for y in apart)
    assert set(apart[0]) | set(apart[1]) <= set(together)
    test = data.baselines_on("test")["last_value"]["mae"]
    assert test > 0 and test != data.baselines["last_value"]["mae"]


def test_prepare_gives_the_model_its_input_shape_head_and_baselines(config) -> None:
    data = prepare(config)
    assert data.input_shape == (6, 3)  # lookback 12 / step 2; temp, pressure, humid
    assert data.head.offset == pytest.approx(data.arrays.target_mean)
    assert set(data.baselines["last_value"]) == {"mae", "mse", "huber"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(target="wind"), r"column 'wind' not found"),
        (dict(features=("temp", "city")), r"column 'city' must be numeric, got dtype"),
        (
            dict(lookback=200),
            r"the validation split has 150 rows but one window needs 202 "
            r"\(lookback 200, step 2, delay 3\); the series has 600 rows",
        ),
        (dict(lookback=7), r"lookback \(7\) must be a multiple of step \(2\)"),
        (
            dict(lookback=1200),
            r"one window needs 1202 rows \(lookback 1200, step 2, delay 3\) but the series has "
            r"only 600",
        ),
        (dict(timestamp="when"), r"timestamp column 'when' not found"),
    ],
)
def test_bad_data_is_named(config, change, message) -> None:
    frame = pd.read_csv(config.path).assign(city="Jena")
    with pytest.raises(DataError, match=message):
        forecast.prepare(replace(config, **change), frame, "series.csv")


def test_missing_values_are_named_with_their_first_row(config) -> None:
    frame = pd.read_csv(config.path)
    frame.loc[[17, 40], "pressure"] = np.nan
    with pytest.raises(
        DataError, match=r"column 'pressure' has 2 missing values \(first at row 17\)"
    ):
        forecast.prepare(config, frame, "series.csv")


def test_an_unreadable_timestamp_is_named(config) -> None:
    frame = pd.read_csv(config.path)
    frame.loc[5, "time"] = "yesterday"
    with pytest.raises(DataError, match=r"has an unreadable value 'yesterday' at row 5"):
        forecast.prepare(config, frame, "series.csv")


def test_files_that_cannot_be_read_are_named(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match=r"empty.csv: the file is empty"):
        read_table(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("a,b\n")
    with pytest.raises(DataError, match=r"header.csv: the file has no rows"):
        read_table(tmp_path / "header.csv")
    with pytest.raises(DataError, match=r"nope.csv: data file not found"):
        read_table(tmp_path / "nope.csv")
    (tmp_path / "data.xlsx").write_text("x")
    with pytest.raises(DataError, match=r"unsupported data file type '.xlsx'"):
        read_table(tmp_path / "data.xlsx")


def test_parquet_reads_like_csv(tmp_path: Path, config) -> None:
    frame = pd.read_csv(config.path)
    frame.to_parquet(tmp_path / "series.parquet")
    assert read_table(tmp_path / "series.parquet").equals(frame)


def test_nyc_weather_is_hourly_complete_and_physically_possible() -> None:
    frame = nyc_weather()
    assert frame.index.to_series().diff().dropna().eq(pd.Timedelta(hours=1)).all()
    assert len(frame) > 8700 and not frame.isna().any().any()
    assert frame["humid"].between(0, 100).all()
    assert (np.hypot(frame["wind_x"], frame["wind_y"]) <= 150).all()
    ewr = nyc_weather("EWR")  # holds a recorded wind speed of 1048 mph
    assert (np.hypot(ewr["wind_x"], ewr["wind_y"]) <= 150).all()


def test_a_regular_grid_fills_short_gaps_by_interpolation_in_time(config) -> None:
    frame = pd.read_csv(config.path)
    gappy = frame.drop(index=[100, 101, 102, 300])  # a gap of 3 rows and one of 1
    gappy.loc[200, "pressure"] = np.nan  # a missing value is a gap too
    gridded = replace(config, frequency="1h", max_gap=3)
    arrays = forecast.prepare(gridded, gappy.sample(frac=1.0, random_state=1), "series")
    plain = forecast.prepare(config, frame, "series")
    assert len(arrays.target) == len(frame)
    kept = np.setdiff1d(np.arange(len(frame)), [100, 101, 102, 300])
    assert np.array_equal(arrays.target[kept], plain.target[kept])
    # A filled value lies on the straight line between the known values around its gap.
    temp = frame["temp"].to_numpy()
    assert arrays.target[101] == pytest.approx(temp[99] + (temp[103] - temp[99]) / 2, rel=1e-6)
    assert arrays.target[300] == pytest.approx((temp[299] + temp[301]) / 2, rel=1e-6)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda f: f.drop(index=range(100, 105)),
            r"series.csv: column 'temp' has a gap of 5 missing rows from "
            r"2020-01-05 04:00:00\+00:00 on the 1h grid, longer than max_gap = 3 \(the longest "
            r"gap that is filled\); fill it first, or raise max_gap",
        ),
        (
            lambda f: f.assign(humid=f["humid"].where(f.index >= 2)),
            r"column 'humid' has no value in the first 2 rows of the 1h grid \(from "
            r"2020-01-01 00:00:00\+00:00\), where nothing can be interpolated",
        ),
        (
            lambda f: f.assign(time=f["time"].where(f.index != 5, f["time"][4])),
            r"timestamp 2020-01-01 04:00:00\+00:00 appears more than once; a regular grid needs "
            r"one row per time",
        ),
        (
            lambda f: f.assign(time=f["time"].where(f.index != 5, "2020-01-01 05:30:00")),
            r"timestamp 2020-01-01 05:30:00\+00:00 is not on the 1h grid that starts at "
            r"2020-01-01 00:00:00\+00:00",
        ),
    ],
)
def test_what_a_regular_grid_cannot_mend_is_named(config, damage, message) -> None:
    frame = damage(pd.read_csv(config.path))
    with pytest.raises(DataError, match=message):
        forecast.prepare(replace(config, frequency="1h", max_gap=3), frame, "series.csv")


def test_new_windows_are_raw_rows_and_say_what_each_forecast_is_for(config) -> None:
    """What `tuner predict` feeds an exported model: every window of a new file, raw, with the
    time its forecast is for (on a grid, also beyond the file's end)."""
    train = make_series()
    arrays = forecast.prepare(replace(config, frequency="1h"), train, "series.csv")
    assert np.allclose(
        arrays.inputs[:, 0] * arrays.input_std[0] + arrays.input_mean[0], train["temp"], atol=1e-4
    )
    new = make_series(20, seed=5).drop(columns="humid").assign(humid=1.0)  # any column order
    windows, keys = forecast.new_windows(replace(config, frequency="1h"), arrays, new, "new.csv")
    # lookback 12, step 2: 6 rows a window, spanning 11 rows; the first ends at row 10.
    assert windows.shape == (10, 6, 3) and windows.dtype == np.float32
    assert np.array_equal(windows[0, :, 0], new["temp"].to_numpy("float32")[0:11:2])
    assert np.array_equal(windows[-1, :, 2], np.ones(6))
    assert list(keys["window_end"].astype(str)[:1]) == ["2020-01-01 10:00:00+00:00"]
    assert str(keys["forecast_for"].iloc[-1]) == "2020-01-01 22:00:00+00:00"  # 3 h past the end
    # Without a grid, a time past the end is unknown.
    _, keys = forecast.new_windows(config, arrays, new, "new.csv")
    assert keys["forecast_for"].isna().sum() == 3


def test_new_windows_need_the_features_and_one_windows_rows(config) -> None:
    arrays = forecast.prepare(config, make_series(), "series.csv")
    with pytest.raises(DataError, match=r"^new.csv: column 'pressure' not found"):
        forecast.new_windows(config, arrays, make_series(20).drop(columns="pressure"), "new.csv")
    with pytest.raises(
        DataError,
        match=r"^new.csv: one window needs 11 rows \(lookback 12, step 2\) but the file has "
        r"only 9$",
    ):
        forecast.new_windows(config, arrays, make_series(9), "new.csv")
