"""The cost of `tuner run`'s time left, computed on every progress poll (every 2 s), with the
lag's simulation dealing 50 trials a worker (as before) and at most 400 in all but at least 5 a
worker (now), side by side in one run; and what each says: the mean lag and its 5% and 95%
quantiles, which the time left adds to its estimate and to the ends of its range.

Each case: `workers` workers each running a trial with 3 s left, `queued` trials still to
start, and 30 trial durations seen, drawn once (seeded) from a gamma and a lognormal
distribution. Each setting's time is the median of `--repeats` calls.

Usage:
    python benchmarks/time_left.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import median, table  # noqa: E402

CASES = ((2, 50), (8, 200), (16, 1000), (64, 3000), (256, 10000))
SETTINGS = {"50 a worker (before)": (10**9, 50), "400, at least 5 a worker (now)": (400, 5)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    from tuner.search import progress

    rng = np.random.default_rng(0)
    rows = []
    for name, draw in (
        ("gamma", lambda: list(rng.gamma(2.0, 10.0, size=30))),
        ("lognormal", lambda: list(rng.lognormal(3.0, 1.0, size=30))),
    ):
        durations = draw()
        for workers, queued in CASES:
            running = [3.0] * workers
            row: list[object] = [name, workers, queued]
            for total, per_worker in SETTINGS.values():
                progress.LAG_TRIALS, progress.LAG_TRIALS_PER_WORKER = total, per_worker
                seconds = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    progress.estimate(durations, queued, workers, running)
                    seconds.append(time.perf_counter() - start)
                lags = progress._lag(durations, queued, workers, running)
                low, high = np.quantile(lags, [0.05, 0.95])
                row += [
                    f"{1000 * median(seconds):.1f}",
                    f"{np.mean(lags):.1f} ({low:.1f} to {high:.1f})",
                ]
            rows.append(row)
    header = ["durations", "workers", "queued"]
    for setting in SETTINGS:
        header += [f"ms a poll, {setting}", f"lag, s: mean (5% to 95%), {setting}"]
    print(table(header, rows))


if __name__ == "__main__":
    main()
