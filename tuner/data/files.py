"""Reading user files: CSV and Parquet tables, with one clear error per way they can be bad."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tuner.errors import DataError

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


def read_table(path: Path) -> pd.DataFrame:
    """A CSV or Parquet file as a data frame."""
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path)
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            raise DataError(
                f"{path}: unsupported data file type {suffix!r} (use {', '.join(TABLE_SUFFIXES)})"
            )
    except pd.errors.EmptyDataError as e:
        raise DataError(f"{path}: the file is empty") from e
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as e:
        raise DataError(f"{path}: cannot be read as {suffix[1:]}: {e}") from e
    if frame.empty:
        raise DataError(f"{path}: the file has no rows")
    return frame
