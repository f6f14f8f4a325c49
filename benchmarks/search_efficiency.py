"""Search efficiency on the shipped forecasting study (nyc-weather), the same search space and
the same budget in training epochs, against what a user would pick instead:

- tuner's default (TPE + Hyperband pruning, seed configurations first, which the pruner may
  stop like any trial), the same with the seed configurations run to the end, and the same
  with successive halving (one bracket) in place of Hyperband,
- TPE without pruning, and random search (Optuna's RandomSampler, no pruning, no seeds),
- KerasTuner's RandomSearch and Hyperband (a benchmark-only dependency: keras-tuner).

Every method trains the same models (tuner.training.model) on the same windows (tuner.data) and
stops when its epochs are spent. Every epoch's validation MAE is recorded in order, so "best value
within the budget" and "epochs to first beat the best seed configuration" are read from one
curve per run. The reference is the seed's own hand-tuning: each seed configuration trained for
the epochs the classic example gave it (20 for the plain GRU, 40 for each of the other three,
140 in all); its best validation MAE is the value to beat.

    python benchmarks/search_efficiency.py --seeds 3 --budget 140 --jobs 2

`--save FILE` keeps every run's curve, and `--load FILE` prints the tables from it again.
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
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import median, study_variant, table  # noqa: E402

METHODS = (
    "tuner-default",
    "tuner-seeds-to-end",
    "tuner-successive-halving",
    "tpe-no-pruning",
    "random",
    "kerastuner-random",
    "kerastuner-hyperband",
)
SEED_BUDGETS = {"gru": 20, "gru-dropout": 40, "stacked-gru": 40, "bidirectional-lstm": 40}


def _setup() -> tuple[Any, Any, Any, Any]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from tuner.config import load_study_config
    from tuner.data import prepare

    config = load_study_config(Path(__file__).parents[1] / "studies" / "nyc-weather.toml")
    data = prepare(config.data)
    import keras

    t = config.training
    train = data.split("train", t.batch_size, shuffle=True, seed=0).repeat()
    validation = data.split("validation", 1024)
    return config, data, (train, validation), keras


def reference() -> dict[str, Any]:
    """The seed configurations trained for their own epochs, as the classic example does."""
    from tuner.search.space import SEED_CONFIGS
    from tuner.training.model import build_model
    from tuner.training.spec import spec_from_params

    config, data, (train, validation), keras = _setup()
    values = {}
    for seed in SEED_CONFIGS:
        keras.utils.set_random_seed(0)
        model = build_model(
            spec_from_params(seed.params),
            data.inputs,
            data.head,
            optimizer=config.training.optimizer,
            loss=config.training.loss,
            metrics=data.metrics,
        )
        history = model.fit(
            train,
            validation_data=validation,
            epochs=SEED_BUDGETS[seed.name],
            steps_per_epoch=config.training.steps_per_epoch,
            verbose=0,
        )
        values[seed.name] = min(history.history["val_mae"])
    return {"values": values, "best": min(values.values()), "epochs": sum(SEED_BUDGETS.values())}


def run_tuner(method: str, seed: int, budget: int, folder: Path) -> dict[str, Any]:
    """One of tuner's own configurations, through the real worker loop: the curve, and where
    each trial's epochs are on it (the seed configurations' trials marked)."""
    from tuner.config import load_study_config
    from tuner.data import prepare
    from tuner.search.objective import Objective
    from tuner.search.study import open_study
    from tuner.search.worker import StopRequest, run_worker
    from tuner.storage import open_storage

    changes: dict[str, dict[str, Any]] = {"study": {"n_trials": 200}, "sampler": {"seed": seed}}
    if method == "tuner-seeds-to-end":
        changes["pruner"] = {"prune_seed_configs": False}
    elif method == "tuner-successive-halving":
        changes["pruner"] = {"name": "successive-halving"}
    elif method != "tuner-default":
        changes["pruner"] = {"name": "none"}
    if method == "random":
        changes["sampler"]["name"] = "random"
        changes["study"]["seed_configs"] = False
    config = load_study_config(study_variant(folder, f"{method}-{seed}", **changes))
    data = prepare(config.data)
    storage = open_storage(f"sqlite:///{folder / f'{method}-{seed}.db'}", config.workers)
    study = open_study(config, storage, lambda: data.baselines)
    objective = Objective(config, data)
    curve: list[float] = []
    trials: list[dict[str, Any]] = []

    def record(trial: Any) -> None:
        curve.extend(trial.intermediate_values[e] for e in sorted(trial.intermediate_values))
        trials.append(
            {
                "epochs": len(trial.intermediate_values),
                "state": trial.state.name.lower(),
                "seed_config": trial.user_attrs.get("seed_config"),
            }
        )

    while len(curve) < budget:
        run_worker(config, study, storage, objective, StopRequest(), max_trials=1, on_trial=record)
    return {"curve": curve, "trials": trials}


def run_kerastuner(method: str, seed: int, budget: int, folder: Path) -> dict[str, Any]:
    """KerasTuner on the same space, models and data."""
    import keras_tuner as kt

    from tuner.training.model import build_model
    from tuner.training.spec import ModelSpec

    config, data, (train, validation), keras = _setup()
    curve: list[float] = []

    class Budget(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            if len(curve) >= budget:
                raise kt.errors.FatalError("epoch budget spent")

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            curve.append(float(logs["val_mae"]))

    def build(hp: kt.HyperParameters) -> keras.Model:
        layers = hp.Int("layers", 1, 2)
        units = tuple(hp.Int(f"units_{i}", 16, 64, sampling="log") for i in range(1, 3))
        spec = ModelSpec(
            cell=hp.Choice("cell", ["gru", "lstm"]),
            units=units[:layers],
            dropout=hp.Float("dropout", 0.0, 0.5),
            recurrent_dropout=hp.Float("recurrent_dropout", 0.0, 0.5),
            bidirectional=hp.Boolean("bidirectional"),
            activation=hp.Choice("activation", ["tanh", "relu"]),
            learning_rate=hp.Float("learning_rate", 3e-4, 1e-2, sampling="log"),
        )
        return build_model(
            spec,
            data.inputs,
            data.head,
            optimizer=config.training.optimizer,
            loss=config.training.loss,
            metrics=data.metrics,
        )

    t = config.training
    common = dict(
        objective=kt.Objective("val_mae", "min"),
        seed=seed,
        overwrite=True,
        directory=str(folder),
        project_name=f"{method}-{seed}",
        max_consecutive_failed_trials=1000,
    )
    if method == "kerastuner-random":
        tuner = kt.RandomSearch(build, max_trials=10_000, **common)
    else:
        tuner = kt.Hyperband(
            build, max_epochs=t.epochs, factor=3, hyperband_iterations=100, **common
        )
    stop = keras.callbacks.EarlyStopping(monitor="val_mae", patience=t.patience)
    try:
        tuner.search(
            train,
            validation_data=validation,
            epochs=t.epochs,
            steps_per_epoch=t.steps_per_epoch,
            callbacks=[stop, Budget()],
            verbose=0,
        )
    except kt.errors.FatalError:
        pass
    return {"curve": curve, "trials": []}


def one(method: str, seed: int, budget: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if method == "reference":
            result: Any = reference()
        elif method.startswith("kerastuner"):
            result = run_kerastuner(method, seed, budget, Path(tmp))
        else:
            result = run_tuner(method, seed, budget, Path(tmp))
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=140, help="training epochs per run")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, one core each")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--save", metavar="FILE", help="also write every run's curve here (JSON)")
    parser.add_argument(
        "--load", metavar="FILE", help="report on the runs saved by --save instead of running"
    )
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args.one[0], int(args.one[1]), args.budget)
        return
    if args.load:
        saved = json.loads(Path(args.load).read_text())
        report(
            {(r["method"], r["seed"]): r["result"] for r in saved},
            args.methods.split(","),
            args.seeds,
            args.budget,
        )
        return
    jobs = [("reference", 0)] + [
        (m, s) for s in range(args.seeds) for m in args.methods.split(",")
    ]
    results: dict[tuple[str, int], Any] = {}
    running: list[tuple[tuple[str, int], int, subprocess.Popen[str]]] = []
    env = os.environ | {
        "TF_NUM_INTRAOP_THREADS": "1",
        "TF_NUM_INTEROP_THREADS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    while jobs or running:
        while jobs and len(running) < args.jobs:
            job = jobs.pop(0)
            core = min(
                {0, 1, 2, 3}.intersection(range(os.cpu_count() or 1)) - {c for _, c, _ in running}
            )
            command = [
                "taskset",
                "-c",
                str(core),
                sys.executable,
                __file__,
                "--one",
                job[0],
                str(job[1]),
                "--budget",
                str(args.budget),
            ]
            running.append(
                (
                    job,
                    core,
                    subprocess.Popen(
                        command,
                        env=env,
                        text=True,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL,
                    ),
                )
            )
        # Whichever run ends first frees its core (a run's output is one short line of JSON).
        while all(process.poll() is None for _, _, process in running):
            time.sleep(1)
        done = next(r for r in running if r[2].poll() is not None)
        running.remove(done)
        job, core, process = done
        out = process.communicate()[0]
        results[job] = json.loads(out.strip().splitlines()[-1])
        print(f"done {job}: {json.dumps(results[job])}", file=sys.stderr, flush=True)
    if args.save:
        Path(args.save).write_text(
            json.dumps([{"method": m, "seed": s, "result": r} for (m, s), r in results.items()])
        )
    report(results, args.methods.split(","), args.seeds, args.budget)


def report(
    results: dict[tuple[str, int], Any], methods: list[str], seeds: int, budget: int
) -> None:
    ref = results[("reference", 0)]
    target = ref["best"]
    miss = budget + 1  # sorts after every hit; shown as ">budget"

    def shown(epochs: float) -> str:
        return f">{budget}" if epochs >= miss else f"{epochs:g}"

    rows = []
    summary: dict[str, dict[str, float]] = {}
    for method in methods:
        bests, to_beat, seed_epochs = [], [], []
        for seed in range(seeds):
            run = results[(method, seed)]
            curve = run["curve"][:budget]
            bests.append(min(curve))
            to_beat.append(next((i + 1 for i, v in enumerate(curve) if v < target), miss))
            seed_epochs.append(sum(t["epochs"] for t in run["trials"] if t["seed_config"]))
        summary[method] = {"best": median(bests), "to_beat": median(to_beat)}
        rows.append(
            [
                method,
                f"{median(bests):.3f}",
                " / ".join(f"{b:.3f}" for b in bests),
                f"{shown(median(to_beat))} ({' / '.join(shown(h) for h in to_beat)})",
                " / ".join(str(e) for e in seed_epochs) if any(seed_epochs) else "-",
            ]
        )
    print(
        f"Reference: the seed configurations trained for their own epochs ({ref['epochs']} "
        "in all): "
        + ", ".join(f"{k} {v:.3f}" for k, v in ref["values"].items())
        + f"; best {target:.3f} (val_mae, °F)\n"
    )
    print(
        table(
            [
                "method",
                f"best val_mae in {budget} epochs (median)",
                "per seed",
                f"epochs to beat {target:.3f}: median (per seed)",
                "epochs spent on the seed configurations' trials, per seed",
            ],
            rows,
        )
    )
    kt_random = summary.get("kerastuner-random")
    for method in methods:
        ours = summary[method]
        if not method.startswith("tuner-") or not kt_random:
            continue
        if ours["to_beat"] < miss:
            # A median that is a miss only says that RandomSearch needs more than the budget.
            bound = "" if kt_random["to_beat"] < miss else "at most "
            print(
                f"\nepochs to beat, {method} / KerasTuner RandomSearch: {bound}"
                f"{ours['to_beat'] / min(kt_random['to_beat'], miss):.2f} (target <= 0.5)"
            )
        wins = sum(min(results[(method, s)]["curve"][:budget]) < target for s in range(seeds))
        print(
            f"{method} beats every seed configuration within {budget} epochs in "
            f"{wins} of {seeds} seeds"
        )


if __name__ == "__main__":
    main()
