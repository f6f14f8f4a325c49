"""The on-disk cache of prepared data, so that a dataset configuration is read, checked and
normalised (or its texts vectorised) once, not once per worker.

An entry is a folder of `.npy` files, one per array, and a `meta.json` for everything else;
workers load the arrays memory-mapped (`np.load(..., mmap_mode="r")`), never unpickling. (An
`.npz` archive cannot be memory-mapped, hence a folder.) An entry is written under a temporary
name and renamed into place, so a worker never reads half an entry, and two workers that build
the same one at once both end up using a whole one.

Entries are keyed by the study file's data section, the source (a file's path, size and
modification time, or a built-in dataset's version) and `FORMAT_VERSION`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

logger = logging.getLogger("tuner.data")

ENV_VAR = "TUNER_CACHE_DIR"
# Bump when what an entry holds, or how it is computed, changes.
FORMAT_VERSION = 2  # 2: the normalisation statistics, for exported models

T = TypeVar("T")


def cache_dir() -> Path:
    """Where downloads and prepared data go: $TUNER_CACHE_DIR, else ~/.cache/tuner."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tuner"


def file_fingerprint(path: Path) -> dict[str, Any]:
    """What tells one version of a file from another, without reading it."""
    stat = path.stat()
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def key(data: dict[str, Any], source: dict[str, Any]) -> str:
    """The name of the entry for a data section read from a source."""
    text = json.dumps(
        {"format": FORMAT_VERSION, "data": data, "source": source}, sort_keys=True, default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cached(kind: type[T], name: str, build: Callable[[], T], folder: Path | None = None) -> T:
    """The entry `name` as a `kind` (a dataclass of arrays and plain values), built and stored
    first when it is not there yet."""
    folder = (folder or cache_dir() / "prepared") / name
    if folder.is_dir():
        try:
            return load(kind, folder)
        except (OSError, ValueError, KeyError, TypeError) as e:  # not ours, or from elsewhere
            logger.warning("ignoring the unreadable cache entry %s: %s", folder, e)
    value = build()
    try:
        store(value, folder)
    except OSError as e:  # a read-only or full disk slows things down but stops nothing
        logger.warning("cannot cache prepared data in %s: %s", folder.parent, e)
    return value


def store(value: Any, folder: Path) -> None:
    """Write a dataclass of arrays and plain values as the entry `folder`, atomically."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        meta: dict[str, Any] = {"format": FORMAT_VERSION}
        for field in dataclasses.fields(value):
            item = getattr(value, field.name)
            if isinstance(item, np.ndarray):
                np.save(temporary / f"{field.name}.npy", np.ascontiguousarray(item))
            else:
                meta[field.name] = item
        (temporary / "meta.json").write_text(json.dumps(meta))
        os.rename(temporary, folder)
    except OSError:
        if folder.is_dir():  # another worker stored the same entry first: use theirs
            return
        raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def load(kind: type[T], folder: Path) -> T:
    """Read the entry `folder` back, its arrays memory-mapped read-only."""
    meta = json.loads((folder / "meta.json").read_text())
    if meta.pop("format") != FORMAT_VERSION:
        raise ValueError("written by another version")
    values: dict[str, Any] = {}
    for field in dataclasses.fields(kind):  # type: ignore[arg-type]
        if field.name in meta:
            item = meta[field.name]
            values[field.name] = _tuples(item)
        else:
            values[field.name] = np.load(
                folder / f"{field.name}.npy", mmap_mode="r", allow_pickle=False
            )
    return kind(**values)


def _tuples(item: Any) -> Any:
    """JSON has lists where the dataclasses have (frozen) tuples."""
    return tuple(_tuples(v) for v in item) if isinstance(item, list) else item


def file_digest(path: Path) -> dict[str, Any]:
    """What tells one content of a file from another, wherever it lies and whenever it was
    copied: its size and SHA-256."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}
