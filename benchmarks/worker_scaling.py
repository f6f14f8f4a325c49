"""Worker scaling and memory: epochs per hour of `tuner run --workers 2` on this machine
against (a) one bare Keras process with TensorFlow's default threading and (b) two bare Keras
processes, each pinned to its own core with one compute thread (the ceiling).

All three train the same model (GRU(32)) on the same Jena-shaped windows (120 time steps of 14
features, batch 128), validating after every epoch. Throughput counts from the first model build
to the last epoch's end, so the service's work between trials counts against it; process
start-up is reported apart. Peak resident memory is read per process.

    python benchmarks/worker_scaling.py --repeats 3 --epochs 6 --trials 4 --steps 40
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

sys.path.insert(0, str(Path(__file__).parent))
from common import jena_study, median, table  # noqa: E402


def bare(study: Path, epochs: int) -> None:
    """One bare Keras process: our data and model code, no Optuna, no service."""
    import resource

    from tuner.config import load_study_config
    from tuner.data import prepare
    from tuner.search.space import SEED_CONFIGS
    from tuner.training.model import build_model
    from tuner.training.spec import spec_from_params

    config = load_study_config(study)
    data = prepare(config.data)
    import keras

    params = next(seed.params for seed in SEED_CONFIGS if seed.name == "gru")
    train = data.split("train", 128, shuffle=True, seed=0).repeat()
    validation = data.split("validation", 1024)
    start = time.time()
    model = build_model(spec_from_params(params), data.inputs, data.head, metrics=data.metrics)
    model.fit(
        train,
        validation_data=validation,
        epochs=epochs,
        steps_per_epoch=config.training.steps_per_epoch,
        verbose=0,
    )
    end = time.time()
    keras.backend.clear_session()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(json.dumps({"start": start, "end": end, "epochs": epochs, "peak_rss_mb": rss}))


def run_bare(study: Path, epochs: int, placements: list[tuple[str | None, str | None]]) -> dict:
    launched = time.time()
    processes = []
    for cpus, threads in placements:
        env = dict(os.environ)
        command = [sys.executable, __file__, "--bare", str(study), "--epochs", str(epochs)]
        if threads:
            env |= {"TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": threads}
        if cpus:
            command = ["taskset", "-c", cpus, *command]
        processes.append(
            subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, text=True, stderr=subprocess.DEVNULL
            )
        )
    results = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in processes]
    span = max(r["end"] for r in results) - min(r["start"] for r in results)
    return {
        "epochs_per_hour": sum(r["epochs"] for r in results) / span * 3600,
        "wall": time.time() - launched,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
    }


def run_tuner(study: Path, folder: Path, repeat: int, n_trials: int) -> dict:
    url = f"sqlite:///{folder / f'scaling-{repeat}.db'}"
    launched = time.time()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tuner",
            "run",
            str(study),
            "--workers",
            "2",
            "--trials",
            str(n_trials),
            "--storage",
            url,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wall = time.time() - launched
    trials = optuna.load_study(study_name=study.stem, storage=url).trials
    span = (
        max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)
    ).total_seconds()
    epochs = sum(t.user_attrs["epochs"] for t in trials)
    return {
        "epochs_per_hour": epochs / span * 3600,
        "wall": wall,
        "peak_rss_mb": max(t.user_attrs["worker_peak_rss_mb"] for t in trials),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trial")
    parser.add_argument("--trials", type=int, default=4, help="trials in the tuner run")
    parser.add_argument("--steps", type=int, default=40, help="batches per epoch")
    parser.add_argument("--bare", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        bare(args.bare, args.epochs)
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    total = args.trials * args.epochs
    runs: dict[str, list[dict]] = {"one": [], "pinned": [], "tuner": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        study = jena_study(
            folder, "scaling", n_trials=args.trials, epochs=args.epochs, steps=args.steps
        )
        for repeat in range(args.repeats):  # the three side by side in every round
            runs["one"].append(run_bare(study, total, [(None, None)]))
            runs["pinned"].append(run_bare(study, total // 2, [("0", "1"), ("1", "1")]))
            runs["tuner"].append(run_tuner(study, folder, repeat, args.trials))
            print(
                f"round {repeat + 1}: "
                + ", ".join(
                    f"{k} {v[-1]['epochs_per_hour']:.0f} epochs/h" for k, v in runs.items()
                ),
                file=sys.stderr,
                flush=True,
            )
    eph = {k: median([r["epochs_per_hour"] for r in v]) for k, v in runs.items()}
    names = {
        "one": "(a) one bare process, TensorFlow's default threads",
        "pinned": "(b) two bare processes, one core and one thread each",
        "tuner": "tuner run --workers 2",
    }
    rows = [
        [
            names[k],
            f"{eph[k]:.0f}",
            f"{median([r['wall'] for r in runs[k]]):.1f}",
            f"{median([r['peak_rss_mb'] for r in runs[k]]):.0f}",
        ]
        for k in runs
    ]
    print(
        table(
            [
                "configuration",
                "epochs/hour (median)",
                "wall s (median)",
                "peak RSS per process, MB (median)",
            ],
            rows,
        )
    )
    print()
    print(f"tuner / (a) = {eph['tuner'] / eph['one']:.2f}  (target >= 1.6)")
    print(f"tuner / (b) = {eph['tuner'] / eph['pinned']:.2f}  (target >= 0.95)")
    print(
        f"{args.repeats} rounds, {total} epochs per configuration per round, "
        f"{args.steps} batches of 128 per epoch, on {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
