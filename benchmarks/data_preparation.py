"""How long a worker spends preparing a study's data before its first trial, with and without
the prepared-data cache.

For each shipped study's data section, three ways, taken in turn in every round:

- `no cache`: read, check, normalise (or vectorise) and compute the baselines, which is what
  every worker did before the cache (`tuner.data.build` and the baselines);
- `first worker`: the same, and the arrays written to an empty cache;
- `later workers`: `tuner.data.prepare` with the entry in the cache, mapped in.

The Jena study cannot download its file here (no network), so it runs on a file of the real
one's size and format (420,551 rows of 14 features every 10 minutes, made up), which is what
the loader's time depends on. Everything runs in one process after a warm-up, with the files in
the page cache: the times are what a second worker on the same machine sees, and the cold-disk
time of the first read is left out for all three.

Usage:
    python benchmarks/data_preparation.py [--repeats 5] [--studies nyc-weather ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import tuner.data  # noqa: E402
from tuner.config import DataConfig, load_study_config  # noqa: E402
from tuner.data import cache  # noqa: E402
from tuner.data.datasets import JENA_COLUMNS, JENA_FILE  # noqa: E402

STUDIES = Path(__file__).parents[1] / "studies"
JENA_ROWS = 420_551


def fake_jena(path: Path, rows: int = JENA_ROWS) -> None:
    """A CSV with the Jena file's columns, timestamp format and size."""
    rng = np.random.default_rng(0)
    times = pd.date_range("2009-01-01 00:10", periods=rows, freq="10min")
    frame = pd.DataFrame(
        {c: rng.normal(10, 5, rows).round(2) for c in JENA_COLUMNS},
        index=times.strftime("%d.%m.%Y %H:%M:%S"),
    )
    frame.rename_axis("Date Time").reset_index().to_csv(path, index=False)


def no_cache(config: DataConfig) -> None:
    tuner.data.build(config).baselines("validation")


def first_worker(config: DataConfig) -> None:
    shutil.rmtree(cache.cache_dir() / "prepared", ignore_errors=True)
    tuner.data.prepare(config)


def later_worker(config: DataConfig) -> None:
    tuner.data.prepare(config)


WAYS: dict[str, Callable[[DataConfig], None]] = {
    "no cache": no_cache,
    "first worker": first_worker,
    "later workers": later_worker,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--studies", nargs="+", default=["nyc-weather", "jena-climate", "amazon-reviews"]
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="tuner-bench-"))
    os.environ[cache.ENV_VAR] = str(folder)
    try:
        if "jena-climate" in args.studies:
            (folder / "datasets").mkdir()
            fake_jena(folder / "datasets" / JENA_FILE)
        print(f"seconds to prepare a study's data (median of {args.repeats}; min..max)")
        for name in args.studies:
            config = load_study_config(STUDIES / f"{name}.toml").data
            later_worker(config)  # warm-up: imports, page cache, the cache entry
            runs: dict[str, list[float]] = {way: [] for way in WAYS}
            for _ in range(args.repeats):
                for way, run in reversed(WAYS.items()):  # `later` needs the entry `first` left
                    began = time.perf_counter()
                    run(config)
                    runs[way].append(time.perf_counter() - began)
            base = statistics.median(runs["no cache"])
            print(f"\n{name}")
            for way, values in runs.items():
                median = statistics.median(values)
                print(
                    f"  {way:<14} {median:8.3f} s  x{base / median:7.1f} faster  "
                    f"({min(values):.3f}..{max(values):.3f})"
                )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
