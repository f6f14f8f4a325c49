"""Reading user files: CSV and Parquet tables, and `.npz` arrays of labelled sequences, with one
clear error per way they can be bad."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tuner.errors import DataError

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
# A text table's first line break comes within this many bytes, and it holds no NUL byte: a
# sparse or binary file is refused from this much of it, not read whole into memory.
SNIFF_BYTES = 4 * 2**20


def read_table(path: Path) -> pd.DataFrame:
    """A CSV or Parquet file as a data frame."""
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            _sniff_text_table(path)
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


def _sniff_text_table(path: Path) -> None:
    """Refuse a file that cannot hold a row of text data, from its first few MB."""
    with path.open("rb") as handle:
        head = handle.read(SNIFF_BYTES)
    if not head.strip():
        if path.stat().st_size > len(head):
            raise DataError(
                f"{path}: not a text table: its first {len(head) // 2**20} MB are blank "
                "(a sparse file?)"
            )
        raise DataError(f"{path}: the file is empty")
    nul = head.find(b"\0")
    if nul >= 0:
        raise DataError(
            f"{path}: not a text table: it holds NUL bytes (a binary or sparse file), "
            f"the first at byte {nul}"
        )
    if b"\n" not in head and b"\r" not in head and path.stat().st_size > len(head):
        raise DataError(
            f"{path}: not a text table: no line break in its first {len(head) // 2**20} MB"
        )


@dataclass(frozen=True)
class Sequences:
    """Labelled sequences as read: every time step of every sequence, one after the other."""

    values: np.ndarray  # (total steps, features)
    lengths: np.ndarray  # (sequences,)
    labels: np.ndarray | None  # (sequences,); None when read without labels


def read_sequences(path: Path, labelled: bool = True) -> Sequences:
    """Labelled sequences from an `.npz` file, in one of two layouts.

    - `sequences` (n, steps) or (n, steps, features), optionally with `lengths` (n,) when the
      sequences are padded: sequence i is `sequences[i, :lengths[i]]`;
    - `values` (total steps,) or (total steps, features) with `lengths` (n,): every sequence's
      time steps one after the other, sequence i being the `lengths[i]` rows after the first
      `sum(lengths[:i])` (variable lengths without padding);

    with `labels` (n,): integers, booleans or strings (`np.str_`). Written for instance by
    `np.savez("x.npz", values=np.concatenate(seqs), lengths=[len(s) for s in seqs],
    labels=labels)`. The file is read without unpickling: arrays of Python objects are refused.
    Sequences to predict on (`labelled=False`) need no `labels`.
    """
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    if path.suffix.lower() != ".npz":
        raise DataError(f"{path}: sequence classification reads .npz files, got {path.suffix!r}")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: cannot be read as .npz: not a zip archive of .npy arrays")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except ValueError as e:
        if "Object arrays" in str(e):
            raise DataError(
                f"{path}: holds arrays of Python objects, which are not read (they would have to "
                "be unpickled); store numbers, or strings as np.str_"
            ) from e
        raise DataError(f"{path}: cannot be read as .npz: {e}") from e
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: cannot be read as .npz: {e}") from e
    return _sequences(arrays, str(path), labelled)


def _sequences(arrays: dict[str, np.ndarray], source: str, labelled: bool = True) -> Sequences:
    found = ", ".join(sorted(arrays)) or "nothing"
    layout = "either `sequences` (with optional `lengths`) or `values` + `lengths`"
    if labelled:
        layout = f"`labels` and {layout}"
    if (labelled and "labels" not in arrays) or ("sequences" in arrays) == ("values" in arrays):
        raise DataError(f"{source}: needs {layout}; found {found}")
    if "values" in arrays and "lengths" not in arrays:
        raise DataError(f"{source}: `values` needs `lengths`; found {found}")
    data = arrays.get("sequences", arrays.get("values"))
    name = "sequences" if "sequences" in arrays else "values"
    assert data is not None
    if data.dtype.kind not in "biuf":
        raise DataError(f"{source}: `{name}` must be numeric, got dtype {data.dtype}")
    labels = arrays.get("labels") if labelled else None
    if labels is not None and (labels.ndim != 1 or labels.dtype.kind not in "biuU"):
        raise DataError(
            f"{source}: `labels` must be one integer, boolean or string per sequence, "
            f"got shape {labels.shape} dtype {labels.dtype}"
        )
    if name == "sequences":
        if data.ndim not in (2, 3):
            raise DataError(
                f"{source}: `sequences` must have shape (n, steps) or (n, steps, features), "
                f"got {data.shape}"
            )
        padded = data if data.ndim == 3 else data[..., None]
        lengths = arrays.get("lengths", np.full(len(padded), padded.shape[1]))
    else:
        if data.ndim not in (1, 2):
            raise DataError(
                f"{source}: `values` must have shape (steps,) or (steps, features), "
                f"got {data.shape}"
            )
        lengths = arrays["lengths"]
    if lengths.ndim != 1 or lengths.dtype.kind not in "iu":
        raise DataError(f"{source}: `lengths` must be one integer per sequence, got {lengths!r}")
    if len(lengths) == 0:
        raise DataError(f"{source}: holds no sequences")
    if labels is not None and len(labels) != len(lengths):
        raise DataError(
            f"{source}: `labels` has {len(labels)} entries for {len(lengths)} sequences"
        )
    short = np.flatnonzero(lengths <= 0)
    if len(short):
        raise DataError(
            f"{source}: sequence {int(short[0])} has length {int(lengths[short[0]])}; "
            "every sequence needs at least one time step"
        )
    if name == "sequences":
        if lengths.max() > padded.shape[1]:
            raise DataError(
                f"{source}: `lengths` go up to {int(lengths.max())} but `sequences` hold "
                f"{padded.shape[1]} steps"
            )
        keep = np.arange(padded.shape[1])[None, :] < lengths[:, None]
        values = padded[keep]
    else:
        values = data if data.ndim == 2 else data[:, None]
        if int(lengths.sum()) != len(values):
            raise DataError(
                f"{source}: `lengths` add up to {int(lengths.sum())} steps but `values` has "
                f"{len(values)}"
            )
    bad = ~np.isfinite(values.astype("float64"))
    if bad.any():
        raise DataError(
            f"{source}: `{name}` has {int(bad.any(axis=1).sum())} time steps with missing "
            "or infinite values"
        )
    return Sequences(values=values, lengths=lengths.astype("int64"), labels=labels)
