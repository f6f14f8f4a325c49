"""Forecasting: a multivariate time series cut into windows, each predicting a later target value.

A window is `lookback // step` time steps, one every `step` rows, ending at row `end`; its target
is the target column at row `end + delay`. The series is split chronologically into train,
validation and test rows, and every window (inputs and target) lies inside one split. Inputs are
normalised with the mean and standard deviation of the training rows only; targets keep their
own units. With a timestamp column, rows are sorted by it, and with a `frequency` also put on a
regular grid (`grid.regularise`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from tuner.config import DataConfig
from tuner.data import grid
from tuner.data.shapes import Head, Inputs
from tuner.errors import DataError

if TYPE_CHECKING:
    from tuner.data.batches import Batches

SPLITS = ("train", "validation", "test")
# Retraining a chosen model uses the training and validation rows together.
TRAIN_AND_VALIDATION = "train+validation"


@dataclass(frozen=True)
class ForecastArrays:
    """A prepared series: what windows and baselines are made from."""

    inputs: np.ndarray  # (rows, features) float32, normalised
    target: np.ndarray  # (rows,) float32, in the target's own units
    bounds: tuple[int, int, int, int]  # first row of train, validation, test; number of rows
    features: tuple[str, ...]
    target_mean: float
    target_std: float
    timesteps: int
    step: int
    delay: int
    period: int | None = None
    classes: tuple[str, ...] = ()
    # The training rows' mean and standard deviation of each feature (a constant feature's
    # deviation is 1): what inputs were normalised with, and what an exported model normalises
    # raw rows with.
    input_mean: tuple[float, ...] = ()
    input_std: tuple[float, ...] = ()

    @property
    def metrics(self) -> tuple[str, ...]:
        return ("mae", "mse")

    @property
    def model_inputs(self) -> Inputs:
        return Inputs((self.timesteps, len(self.features)))

    @property
    def head(self) -> Head:
        return Head(units=1, scale=self.target_std, offset=self.target_mean)

    def dataset(
        self, split: str, batch_size: int, *, shuffle: bool = False, seed: int | None = None
    ) -> Batches:
        return dataset(self, split, batch_size, shuffle=shuffle, seed=seed)

    def baselines(self, split: str) -> dict[str, dict[str, float]]:
        return baseline(self, split, self.period)

    def rows(self, split: str) -> tuple[int, int]:
        if split == TRAIN_AND_VALIDATION:
            return self.bounds[0], self.bounds[2]
        i = SPLITS.index(split)
        return self.bounds[i], self.bounds[i + 1]

    def window_ends(self, split: str) -> np.ndarray:
        """Row index of the last time step of every window in `split`, in order."""
        start, stop = self.rows(split)
        first = start + (self.timesteps - 1) * self.step
        return np.arange(first, stop - self.delay)


def select(
    config: DataConfig, frame: pd.DataFrame, source: str, columns: list[str] | None = None
) -> pd.DataFrame:
    """The numeric columns the study uses (or `columns`), in chronological order, checked."""
    wanted = columns
    columns = list(frame.columns)
    if config.timestamp is not None:
        if config.timestamp not in columns:
            raise DataError(f"{source}: timestamp column {config.timestamp!r} not found")
        stamps = pd.to_datetime(frame[config.timestamp], errors="coerce", utc=True)
        if stamps.isna().any():
            row = int(np.flatnonzero(stamps.isna().to_numpy())[0])
            raise DataError(
                f"{source}: timestamp column {config.timestamp!r} has an unreadable value "
                f"{frame[config.timestamp].iloc[row]!r} at row {row}"
            )
        columns.remove(config.timestamp)
        if config.frequency is not None:
            frame = grid.regularise(
                frame.drop(columns=config.timestamp),
                stamps,
                config.frequency,
                config.max_gap,
                source,
            )
        else:
            frame = frame.assign(**{config.timestamp: stamps}).sort_values(config.timestamp)
            frame = frame.set_axis(pd.DatetimeIndex(frame[config.timestamp]))
    if wanted is None:
        if config.features is not None:
            features = list(config.features)
        else:
            features = [c for c in columns if pd.api.types.is_numeric_dtype(frame[c])]
        wanted = features + ([config.target] if config.target not in features else [])
    for column in wanted:
        if column not in frame.columns:
            raise DataError(f"{source}: column {column!r} not found (columns: {columns})")
        if not pd.api.types.is_numeric_dtype(frame[column]) or pd.api.types.is_bool_dtype(
            frame[column]
        ):
            raise DataError(
                f"{source}: column {column!r} must be numeric, got dtype {frame[column].dtype}"
            )
        if frame[column].isna().any():
            row = int(np.flatnonzero(frame[column].isna().to_numpy())[0])
            raise DataError(
                f"{source}: column {column!r} has {int(frame[column].isna().sum())} missing "
                f"values (first at row {row}); fill or drop them first"
            )
        if not np.isfinite(frame[column].to_numpy(dtype="float64")).all():
            raise DataError(f"{source}: column {column!r} has infinite values")
    return frame[wanted]


def prepare(config: DataConfig, frame: pd.DataFrame, source: str) -> ForecastArrays:
    """Split, normalise and check a series."""
    if config.lookback % config.step:
        raise DataError(
            f"{source}: lookback ({config.lookback}) must be a multiple of step ({config.step})"
        )
    frame = select(config, frame, source)
    features = tuple(config.features or frame.columns)
    values = frame[list(features)].to_numpy(dtype="float64")
    target = frame[config.target].to_numpy(dtype="float64")
    n = len(frame)
    n_train = int(n * config.split[0])
    n_val = int(n * config.split[1])
    bounds = (0, n_train, n_train + n_val, n)
    timesteps = config.lookback // config.step
    window_rows = (timesteps - 1) * config.step + config.delay + 1
    if window_rows > n:
        raise DataError(
            f"{source}: one window needs {window_rows} rows (lookback {config.lookback}, "
            f"step {config.step}, delay {config.delay}) but the series has only {n}"
        )
    for i, split in enumerate(SPLITS):
        rows = bounds[i + 1] - bounds[i]
        if rows < window_rows:
            raise DataError(
                f"{source}: the {split} split has {rows} rows but one window needs "
                f"{window_rows} (lookback {config.lookback}, step {config.step}, "
                f"delay {config.delay}); "
                f"the series has {n} rows"
            )
    train = values[:n_train]
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std[std == 0] = 1.0
    target_std = float(target[:n_train].std()) or 1.0
    return ForecastArrays(
        inputs=((values - mean) / std).astype("float32"),
        target=target.astype("float32"),
        bounds=bounds,
        features=features,
        target_mean=float(target[:n_train].mean()),
        target_std=target_std,
        timesteps=timesteps,
        step=config.step,
        delay=config.delay,
        period=config.period,
        input_mean=tuple(float(v) for v in mean),
        input_std=tuple(float(v) for v in std),
    )


def new_windows(
    config: DataConfig, arrays: ForecastArrays, frame: pd.DataFrame, source: str
) -> tuple[np.ndarray, pd.DataFrame]:
    """Every window of raw rows of a new series to predict on, as an exported model reads them
    ((windows, timesteps, features) float32, not normalised), and for each the row (or time) it
    ends at and the row (or time) its forecast is for.

    The series is read like the study's (same columns, sorting and grid), but needs no target
    column: the target of the last windows lies beyond its end.
    """
    frame = select(config, frame, source, list(arrays.features))
    n, span = len(frame), (arrays.timesteps - 1) * arrays.step + 1
    if span > n:
        raise DataError(
            f"{source}: one window needs {span} rows (lookback {config.lookback}, "
            f"step {config.step}) but the file has only {n}"
        )
    values = frame.to_numpy(dtype="float32")
    ends = np.arange(span - 1, n)
    offsets = np.arange(-(arrays.timesteps - 1), 1) * arrays.step
    windows = values[ends[:, None] + offsets[None, :]]
    target = ends + arrays.delay
    if config.timestamp is None:
        return windows, pd.DataFrame({"window_end": ends, "forecast_for": target})
    index = pd.DatetimeIndex(frame.index)
    if config.frequency is not None:  # on a regular grid, times beyond the end are known too
        step = pd.tseries.frequencies.to_offset(config.frequency)
        forecast_for = index[ends] + arrays.delay * step
    else:  # times as they come: one beyond the last row is unknown
        inside = np.minimum(target, n - 1)
        forecast_for = index[inside].where(target < n, pd.NaT)
    return windows, pd.DataFrame({"window_end": index[ends], "forecast_for": forecast_for})


def dataset(
    arrays: ForecastArrays,
    split: str,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int | None = None,
) -> Batches:
    """Batches of (window, target) for one split, as numpy arrays every Keras backend reads.

    Yields the same windows as `keras.utils.timeseries_dataset_from_array` (a test holds them
    side by side), but gathers a whole batch of windows with one fancy index instead of one
    window at a time (BENCHMARKS.md). Reshuffles every epoch.
    """
    from tuner.data.batches import Batches

    # Row offsets of a window's time steps relative to its last one: -(T-1)*step .. 0.
    offsets = np.arange(-(arrays.timesteps - 1), 1) * arrays.step
    inputs, target, delay = arrays.inputs, arrays.target, arrays.delay

    def windows(ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return inputs[ends[:, None] + offsets[None, :]], target[ends + delay]

    return Batches(windows, arrays.window_ends(split), batch_size, shuffle=shuffle, seed=seed)


def baseline(
    arrays: ForecastArrays, split: str, period: int | None = None
) -> dict[str, dict[str, float]]:
    """Errors of naive forecasts on `split`: the target's last observed value, and with
    `period`, the value one or more periods before the target (seasonal persistence)."""
    ends = arrays.window_ends(split)
    truth = arrays.target[ends + arrays.delay].astype("float64")
    result = _errors("last_value", arrays.target[ends], truth)
    if period is not None:
        # Go back whole periods until the value is one the window has already seen.
        back = period * -(-arrays.delay // period) if arrays.delay else period
        start = arrays.rows(split)[0]
        usable = ends + arrays.delay - back >= start
        if usable.any():
            guess = arrays.target[(ends + arrays.delay - back)[usable]]
            result |= _errors("seasonal", guess, truth[usable])
    return result


def _errors(name: str, guess: np.ndarray, truth: np.ndarray) -> dict[str, dict[str, float]]:
    diff = np.abs(guess.astype("float64") - truth)
    huber = np.where(diff <= 1.0, 0.5 * diff**2, diff - 0.5)  # Keras' Huber loss, delta 1
    return {
        name: {
            "mae": float(diff.mean()),
            "mse": float((diff**2).mean()),
            "huber": float(huber.mean()),
        }
    }
