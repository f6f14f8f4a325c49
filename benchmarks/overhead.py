"""Service overhead: the share of a worker's time spent outside model training (claiming and
sampling a trial, storage reads and writes, building the model, data preparation) with 10 and
with 1,000 trials already in the study.

One real `tuner worker` process (pinned to one core, one thread) runs the trials; the study is
first filled with finished trials of the same search space. Overhead is measured over the
worker's span, from its first trial's start to its last trial's end, against the seconds spent
in `model.fit` (the trials' `train_seconds`); worker start-up (TensorFlow import, data
preparation) is reported apart.

    python benchmarks/overhead.py --repeats 3 --trials 6 --epochs 4 --steps 40
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna

sys.path.insert(0, str(Path(__file__).parent))
from common import median, study_variant, table  # noqa: E402


def fill(study_file: Path, url: str, n: int) -> None:
    """Create the study the way workers do, then add `n` finished trials before its queue."""
    from tuner.config import load_study_config
    from tuner.data import prepare
    from tuner.search.space import suggest
    from tuner.search.study import open_study
    from tuner.storage import open_storage

    config = load_study_config(study_file)
    data = prepare(config.data)
    storage = open_storage(url, config.workers)
    study = open_study(config, storage, lambda: data.baselines)
    sampler = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=n))
    rng = np.random.default_rng(n)
    finished = []
    for _ in range(n):
        trial = sampler.ask()
        suggest(trial, config.space)
        value = float(3.5 + rng.normal(0, 0.3))
        finished.append(
            optuna.trial.create_trial(
                params=trial.params,
                distributions=trial.distributions,
                value=value,
                intermediate_values={e: value + 1 / e for e in range(1, 6)},
                user_attrs={"epochs": 5, "train_seconds": 10.0},
            )
        )
    study.add_trials(finished)


def measure(study_file: Path, folder: Path, existing: int, n_trials: int, tag: str) -> dict:
    url = f"sqlite:///{folder / f'overhead-{tag}.db'}"
    fill(study_file, url, existing)
    launched = time.time()
    subprocess.run(
        [
            "taskset",
            "-c",
            "0",
            sys.executable,
            "-m",
            "tuner",
            "worker",
            str(study_file),
            "--storage",
            url,
            "--threads",
            "1",
            "--quiet",
        ],
        check=True,
        stderr=subprocess.DEVNULL,
    )
    ended = time.time()
    study = optuna.load_study(study_name=study_file.stem, storage=url)
    ours = [
        t for t in study.trials if t.datetime_start and t.datetime_start.timestamp() >= launched
    ]
    assert len(ours) == n_trials, len(ours)
    first = min(t.datetime_start for t in ours).timestamp()
    last = max(t.datetime_complete for t in ours).timestamp()
    train = sum(t.user_attrs["train_seconds"] for t in ours)
    return {
        "share": 1 - train / (last - first),
        "per_trial": (last - first - train) / n_trials,
        "trial_seconds": (last - first) / n_trials,
        "startup": first - launched,
        "exit": ended - last,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trials", type=int, default=6, help="trials the worker runs")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results: dict[int, list[dict]] = {10: [], 1000: []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        study_file = study_variant(
            folder,
            "overhead",
            study={"n_trials": args.trials, "seed_configs": False},
            pruner={"name": "none"},
            training={"epochs": args.epochs, "steps_per_epoch": args.steps},
        )
        for repeat in range(args.repeats):
            for existing in results:
                results[existing].append(
                    measure(study_file, folder, existing, args.trials, f"{existing}-{repeat}")
                )
                r = results[existing][-1]
                print(f"{existing} trials: overhead {r['share']:.1%}", file=sys.stderr)
    rows = []
    for existing, runs in results.items():
        rows.append(
            [
                existing,
                f"{median([r['share'] for r in runs]):.1%}",
                f"{median([r['per_trial'] for r in runs]):.2f}",
                f"{median([r['trial_seconds'] for r in runs]):.1f}",
                f"{median([r['startup'] for r in runs]):.1f}",
            ]
        )
    print(
        table(
            [
                "trials already in the study",
                "overhead share (median)",
                "overhead s per trial",
                "trial s",
                "worker start-up s",
            ],
            rows,
        )
    )
    print(
        f"\n{args.repeats} rounds of {args.trials} trials; {args.epochs} epochs of "
        f"{args.steps} batches per trial; one worker on one core; {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
