"""A worker's resident memory per trial, with and without starting afresh: one `tuner worker`,
N trials of the shipped nyc-weather search space (short trials: `--epochs`, 10 batches each),
once with `[workers] max_trials_per_process = 0, max_memory_mb = 0` (never) and once with
`max_trials_per_process = --every`; then the memory at the start of each trial (the trials'
user attribute `worker_rss_mb`), the wall time of each run, and the time one fresh start costs
((with - without) / fresh starts: noisy on a loaded machine).

    nice -n 10 .venv/bin/python benchmarks/worker_memory.py --trials 100 --every 10

The data is prepared once, before either run, so that both map it from the cache.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from common import study_variant, table


def run(folder: Path, mode: str, trials: int, every: int, epochs: int) -> dict[str, object]:
    path = study_variant(
        folder,
        f"memory-{mode}",
        study={"n_trials": trials, "seed_configs": False},
        pruner={"name": "none"},
        training={"epochs": epochs, "steps_per_epoch": 10, "patience": epochs + 1},
        workers={"max_trials_per_process": every if mode == "afresh" else 0, "max_memory_mb": 0},
    )
    url = f"sqlite:///{folder / f'{mode}.db'}"
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "tuner", "worker", str(path), "-q", "--storage", url],
        check=True,
        cwd=folder,
    )
    seconds = time.monotonic() - started
    study = optuna.load_study(study_name=f"memory-{mode}", storage=url)
    rss = [t.user_attrs["worker_rss_mb"] for t in sorted(study.trials, key=lambda t: t.number)]
    restarts = max(t.user_attrs["worker_restarts"] for t in study.trials)
    return {"mode": mode, "seconds": seconds, "restarts": restarts, "rss_mb": rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        os.environ["TUNER_CACHE_DIR"] = str(folder / "cache")
        from tuner.config import load_study_config
        from tuner.data import prepare

        prepare(load_study_config(study_variant(folder, "warm")).data)
        results = [
            run(folder, m, args.trials, args.every, args.epochs) for m in ("never", "afresh")
        ]
    never, afresh = results
    rows = [
        [
            r["mode"],
            len(r["rss_mb"]),  # type: ignore[arg-type]
            r["rss_mb"][0],  # type: ignore[index]
            r["rss_mb"][len(r["rss_mb"]) // 2],  # type: ignore[index, arg-type]
            r["rss_mb"][-1],  # type: ignore[index]
            max(r["rss_mb"]),  # type: ignore[call-overload]
            r["restarts"],
            f"{r['seconds']:.0f}",
        ]
        for r in results
    ]
    print(json.dumps(results))
    print(
        table(
            [
                "mode",
                "trials",
                "RSS 1st",
                "RSS middle",
                "RSS last",
                "RSS max",
                "fresh starts",
                "seconds",
            ],
            rows,
        )
    )
    if afresh["restarts"]:
        cost = (afresh["seconds"] - never["seconds"]) / afresh["restarts"]  # type: ignore[operator]
        print(f"time per fresh start: {cost:.1f} s")


if __name__ == "__main__":
    main()
