"""Putting a time series on a regular grid: one row every `frequency`, short gaps filled.

A row missing from the file, or a missing value in a column, is a gap. Gaps of up to `max_gap`
rows in a row are filled by linear interpolation in time; a longer gap, or one at the start or
end of the series, is an error that names the column, where the gap starts and how long it is.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tuner.errors import DataError


def regularise(
    frame: pd.DataFrame, stamps: pd.Series, frequency: str, max_gap: int, source: str
) -> pd.DataFrame:
    """`frame` indexed by `stamps` (sorted, distinct) on a grid of `frequency`, gaps filled."""
    index = pd.DatetimeIndex(stamps)
    duplicated = index.duplicated()
    if duplicated.any():
        raise DataError(
            f"{source}: timestamp {index[duplicated][0]} appears more than once; "
            "a regular grid needs one row per time"
        )
    frame = frame.set_axis(index).sort_index()
    grid = pd.date_range(frame.index[0], frame.index[-1], freq=frequency)
    off_grid = ~frame.index.isin(grid)
    if off_grid.any():
        raise DataError(
            f"{source}: timestamp {frame.index[off_grid][0]} is not on the {frequency} grid that "
            f"starts at {frame.index[0]}"
        )
    frame = frame.reindex(grid)
    for column in frame.columns:
        if pd.api.types.is_numeric_dtype(frame[column]):
            frame[column] = _fill(frame[column], max_gap, frequency, source)
    return frame


def _fill(series: pd.Series, max_gap: int, frequency: str, source: str) -> pd.Series:
    missing = series.isna().to_numpy()
    if not missing.any():
        return series
    # Number the runs of missing rows, and measure each run.
    starts = missing & ~np.concatenate([[False], missing[:-1]])
    run = np.cumsum(starts) * missing
    lengths = np.bincount(run)[run]
    inside = np.zeros_like(missing)
    known = np.flatnonzero(~missing)
    if len(known):
        inside[known[0] : known[-1]] = True
    fill = missing & inside & (lengths <= max_gap)
    left = np.flatnonzero(missing & ~fill)
    if len(left):
        first, name, time = left[0], series.name, series.index[left[0]]
        if not inside[first]:
            end = "first" if not len(known) or first < known[0] else "last"
            raise DataError(
                f"{source}: column {name!r} has no value in the {end} {lengths[first]} rows of "
                f"the {frequency} grid (from {time}), where nothing can be interpolated; "
                "drop those rows first"
            )
        raise DataError(
            f"{source}: column {name!r} has a gap of {lengths[first]} missing rows from {time} "
            f"on the {frequency} grid, longer than max_gap = {max_gap} (the longest gap that is "
            "filled); fill it first, or raise max_gap"
        )
    return series.where(~fill, series.interpolate(method="time", limit_area="inside"))
