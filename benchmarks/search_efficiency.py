"""Search efficiency on the shipped forecasting study (nyc-weather), the same search space and
the same budget in training epochs, against what a user would pick instead:

- tuner's default (TPE + Hyperband pruning, seed configurations first, which the pruner may
  stop like any trial), the same with the seed configurations run to the end, and the same
  with successive halving (one bracket) in place of Hyperband,
- tuner with paused trials (`[pruner] name = "pause"`: promotion-type ASHA, checkpoints),
- TPE without pruning, and random search (Optuna's RandomSampler, no seeds) without and with
  tuner's default pruning,
- the one-epoch screen: random configurations trained one epoch each, the best then trained on
  to the study's epochs (budget // 3 screened, the rest on the best, in order),
- KerasTuner's RandomSearch, Hyperband and BayesianOptimization (a benchmark-only dependency:
  keras-tuner),
- Syne Tune's BOHB and ASHA (stopping type, rungs at 1, 3 and 9 epochs), driven epoch by epoch
  in the run's own process. Syne Tune is not in the lock (it requires xgboost, about 400 MB
  with its CUDA libraries): install it beside the venv, outside it, and put it on the path:

      .venv/bin/pip install --target /tmp/st --no-deps syne-tune==0.16.0 dill sortedcontainers
      PYTHONPATH=/tmp/st python benchmarks/search_efficiency.py --methods synetune-bohb

Every method trains the same models (tuner.training.model) on the same windows (tuner.data) and
stops when its epochs are spent. Every epoch's validation MAE is recorded in order, so "best value
within the budget" and "epochs to first beat the best seed configuration" are read from one
curve per run; each epoch's time since the search started (after the data are prepared) is
recorded beside it, so "seconds to first beat" is read the same way. The reference is the
seed's own hand-tuning: each seed configuration trained for the epochs the classic example gave
it (20 for the plain GRU, 40 for each of the other three, 140 in all); its best validation MAE
is the value to beat.

    python benchmarks/search_efficiency.py --seeds 3 --budget 140 --jobs 2

`--study FILE` runs it on another study file (`--one` and `--load` need it too), e.g. the
shipped text study, `studies/amazon-reviews.toml`: there the metric is `val_accuracy`, the
best value the largest, and the reference is the seed configurations its space holds (not
`stacked-gru`, whose relu activation it lacks), reading the largest vocabulary and length with
32-wide embeddings (`TEXT_REFERENCE`), each trained for the study's 8 epochs: the classic
example has no text. KerasTuner's and Syne Tune's spaces there add the study's text
parameters.

    python benchmarks/search_efficiency.py --study studies/amazon-reviews.toml --budget 72 \
        --seeds 3 --methods tuner-default,tuner-pause,kerastuner-bayesian

The value to beat is the median, over the reference's runs (`reference` with seeds 0, 1, ...,
as `--one reference SEED` runs them), of each run's best seed configuration.
`--save FILE` keeps every run's curve, and `--load FILE` prints the tables from it again
(`--budget` there may be smaller than the runs': each curve is cut). `--seeds` takes a count or
`method=count,...` for fewer seeds on some methods. Each difference to `tuner-default` gets the
Hodges-Lehmann shift and its exact Mann-Whitney interval (the confidence printed is the one the
seed counts allow, the nearest at or above 95%).
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
    "tuner-pause",
    "tpe-no-pruning",
    "random",
    "random-pruning",
    "one-epoch-screen",
    "kerastuner-random",
    "kerastuner-hyperband",
    "kerastuner-bayesian",
    "synetune-bohb",
    "synetune-asha",
)
SEED_BUDGETS = {"gru": 20, "gru-dropout": 40, "stacked-gru": 40, "bidirectional-lstm": 40}
ROOT = Path(__file__).parents[1]
# The study searched (`--study`): the shipped forecast study unless another is named.
STUDY = ROOT / "studies" / "nyc-weather.toml"
# A text study's reference: the seed configurations read this much text, with these embeddings
# (the largest vocabulary and length of the shipped text study's space).
TEXT_REFERENCE = {"vocabulary_size": 10_000, "sequence_length": 200, "embedding_dim": 32}


def _metric(config: Any) -> tuple[str, int]:
    """The study's metric and its sign: values times the sign are smaller when better."""
    return config.metric, 1 if config.direction == "minimize" else -1


def _best(values: Any, sign: int) -> float:
    """The best of `values` for a metric of this sign (`_metric`): the smallest, or the largest
    where the study maximizes it."""
    return float(sign * min(sign * v for v in values))


def _is_text(config: Any) -> bool:
    return config.data.task == "text-classification"


def _setup() -> tuple[Any, Any, Any, Any]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from tuner.config import load_study_config
    from tuner.data import prepare

    config = load_study_config(STUDY)
    data = prepare(config.data)
    import keras

    t = config.training
    train = data.split("train", t.batch_size, shuffle=True, seed=0)
    if t.steps_per_epoch:  # as a trial reads it (tuner.search.objective)
        train = train.repeat()
    validation = data.split("validation", 1024)
    return config, data, (train, validation), keras


def reference(seed: int = 0) -> dict[str, Any]:
    """The seed configurations trained for their own epochs, as the classic example does (with
    `seed`: one training run of them moves the value to beat by about 0.2 °F, so the report
    takes the median over every reference seed it has). On a text study, the seed
    configurations its space holds, with `TEXT_REFERENCE`'s text parameters, each trained for
    the study's epochs (the classic example has no text)."""
    from tuner.search.space import SEED_CONFIGS, seed_fits
    from tuner.training.spec import spec_from_params

    config, data, (train, validation), keras = _setup()
    metric, sign = _metric(config)
    text = _is_text(config)
    values, epochs = {}, 0
    for config_seed in SEED_CONFIGS:
        params = config_seed.params | (TEXT_REFERENCE if text else {})
        if text and seed_fits(config_seed, config.space) is not None:
            continue
        n = config.training.epochs if text else SEED_BUDGETS[config_seed.name]
        keras.utils.set_random_seed(seed)
        model = _build(config, data, spec_from_params(params))
        history = model.fit(
            train,
            validation_data=validation,
            epochs=n,
            steps_per_epoch=config.training.steps_per_epoch,
            verbose=0,
        )
        values[config_seed.name] = _best(history.history[metric], sign)
        epochs += n
    best = _best(values.values(), sign)
    return {"values": values, "best": best, "epochs": epochs}


def _build(config: Any, data: Any, spec: Any) -> Any:
    """The study's model for `spec`, compiled as a trial's is."""
    from tuner.training.model import build_model

    t = config.training
    return build_model(
        spec, data.inputs, data.head, optimizer=t.optimizer, loss=t.loss, metrics=data.metrics
    )


def run_tuner(method: str, seed: int, budget: int, folder: Path) -> dict[str, Any]:
    """One of tuner's own configurations, through the real worker loop: the curve, and where
    each trial's epochs are on it (the seed configurations' trials marked)."""
    from tuner.config import load_study_config
    from tuner.data import prepare
    from tuner.search.objective import Objective
    from tuner.search.queue import claim
    from tuner.search.schedule import START_EPOCH, Scheduler, scheduled
    from tuner.search.study import open_study
    from tuner.search.worker import StopRequest, run_worker
    from tuner.storage import open_storage
    from tuner.storage.artifacts import open_store

    changes: dict[str, dict[str, Any]] = {"study": {"n_trials": 200}, "sampler": {"seed": seed}}
    if method == "tuner-seeds-to-end":
        changes["pruner"] = {"prune_seed_configs": False}
    elif method == "tuner-successive-halving":
        changes["pruner"] = {"name": "successive-halving"}
    elif method == "tuner-pause":
        changes["pruner"] = {"name": "pause"}
    elif method not in ("tuner-default", "random-pruning"):
        changes["pruner"] = {"name": "none"}
    if method in ("random", "random-pruning"):
        changes["sampler"]["name"] = "random"
        changes["study"]["seed_configs"] = False
    config = load_study_config(study_variant(folder, f"{method}-{seed}", STUDY, **changes))
    data = prepare(config.data)
    storage = open_storage(f"sqlite:///{folder / f'{method}-{seed}.db'}", config.workers)
    study = open_study(config, storage, lambda: data.baselines)
    scheduler = Scheduler(config, open_store(folder / "artifacts")) if scheduled(config) else None
    objective = Objective(config, data, scheduler=scheduler)
    curve: list[float] = []
    times: list[float] = []
    trials: list[dict[str, Any]] = []
    started = last = time.monotonic()
    store = folder / "artifacts"
    held = {"bytes": 0, "files": 0}  # the most the checkpoints took at once

    def record(trial: Any) -> None:
        nonlocal last
        if store.is_dir():
            files = [f.stat().st_size for f in store.rglob("*") if f.is_file()]
            held["bytes"], held["files"] = (
                max(held["bytes"], sum(files)),
                max(held["files"], len(files)),
            )
        # A continuation reports its model's earlier epochs first: only the epochs it trained
        # count. A trial's time is spread evenly over its epochs.
        start = int(trial.user_attrs.get(START_EPOCH, 0))
        trained = [trial.intermediate_values[e] for e in sorted(trial.intermediate_values)][start:]
        now = time.monotonic()
        curve.extend(trained)
        times.extend(
            last - started + (now - last) * (i + 1) / len(trained) for i in range(len(trained))
        )
        last = now
        trials.append(
            {
                "epochs": len(trained),
                "state": trial.state.name.lower(),
                "seed_config": trial.user_attrs.get("seed_config"),
                "resumed_at": trial.user_attrs.get("resumed_at"),
            }
        )

    while len(curve) < budget:
        ran = run_worker(
            config,
            study,
            storage,
            objective,
            StopRequest(),
            max_trials=1,
            on_trial=record,
            claim_trial=scheduler.claim if scheduler is not None else claim,
        )
        if not ran.complete + ran.pruned + ran.failed:
            break  # the study has no work left (n_trials spent)
    result: dict[str, Any] = {"curve": curve, "times": times, "trials": trials}
    if scheduler is not None and scheduler.pauses:
        # The budget is spent: tidy as a study with no work left does, and say what was kept.
        scheduler.tidy(study)
        kept = [f.stat().st_size for f in store.rglob("*") if f.is_file()]
        result["checkpoints"] = {
            "most_bytes": held["bytes"],
            "most_files": held["files"],
            "kept_bytes": sum(kept),
            "kept_files": len(kept),
            "space": study.user_attrs.get("checkpoint_space"),
        }
    return result


def run_kerastuner(method: str, seed: int, budget: int, folder: Path) -> dict[str, Any]:
    """KerasTuner on the same space, models and data (on a text study, with its text
    parameters and its fixed activation added to the forecast study's space)."""
    import keras_tuner as kt

    from tuner.training.spec import ModelSpec

    config, data, (train, validation), keras = _setup()
    metric, sign = _metric(config)
    space = config.space
    curve: list[float] = []
    times: list[float] = []
    started = time.monotonic()

    class Budget(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            if len(curve) >= budget:
                raise kt.errors.FatalError("epoch budget spent")

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            curve.append(float(logs[metric]))
            times.append(time.monotonic() - started)

    def build(hp: kt.HyperParameters) -> keras.Model:
        layers = hp.Int("layers", 1, 2)
        units = tuple(hp.Int(f"units_{i}", 16, 64, sampling="log") for i in range(1, 3))
        text = {}
        if _is_text(config):
            lr = space.learning_rate
            activation = hp.Fixed("activation", space.activation.value)
            learning_rate = hp.Float("learning_rate", lr.low, lr.high, sampling="log")
            v = space.vocabulary_size
            text = {
                "vocabulary_size": hp.Int(
                    "vocabulary_size", int(v.low), int(v.high), sampling="log"
                ),
                "sequence_length": hp.Choice(
                    "sequence_length", list(space.sequence_length.choices)
                ),
                "embedding_dim": hp.Choice("embedding_dim", list(space.embedding_dim.choices)),
            }
        else:
            activation = hp.Choice("activation", ["tanh", "relu"])
            learning_rate = hp.Float("learning_rate", 3e-4, 1e-2, sampling="log")
        spec = ModelSpec(
            cell=hp.Choice("cell", ["gru", "lstm"]),
            units=units[:layers],
            dropout=hp.Float("dropout", 0.0, 0.5),
            recurrent_dropout=hp.Float("recurrent_dropout", 0.0, 0.5),
            bidirectional=hp.Boolean("bidirectional"),
            activation=activation,
            learning_rate=learning_rate,
            **text,
        )
        return _build(config, data, spec)

    t = config.training
    common = dict(
        objective=kt.Objective(metric, "min" if sign == 1 else "max"),
        seed=seed,
        overwrite=True,
        directory=str(folder),
        project_name=f"{method}-{seed}",
        max_consecutive_failed_trials=1000,
    )
    if method == "kerastuner-random":
        tuner = kt.RandomSearch(build, max_trials=10_000, **common)
    elif method == "kerastuner-bayesian":
        # As many random start-up trials as tuner's TPE (the default, 3 per hyperparameter,
        # would spend the whole 140 epochs at random).
        tuner = kt.BayesianOptimization(
            build, max_trials=10_000, num_initial_points=config.sampler.n_startup_trials, **common
        )
    else:
        tuner = kt.Hyperband(
            build, max_epochs=t.epochs, factor=3, hyperband_iterations=100, **common
        )
    stop = keras.callbacks.EarlyStopping(monitor=metric, patience=t.patience)
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
    return {"curve": curve, "times": times, "trials": []}


def run_screen(seed: int, budget: int) -> dict[str, Any]:
    """The one-epoch screen: `budget // 3` random configurations (tuner's space, Optuna's
    RandomSampler) trained one epoch each; then the best of them, in order, trained on from
    their first epoch to the study's epochs (with the study's early stopping) until the budget
    is spent."""
    import optuna

    from tuner.search.space import suggest

    config, data, (train, validation), keras = _setup()
    metric, sign = _metric(config)
    t = config.training
    curve: list[float] = []
    times: list[float] = []
    started = time.monotonic()

    class Budget(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            if len(curve) >= budget:
                self.model.stop_training = True
                raise _Spent

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            curve.append(float(logs[metric]))
            times.append(time.monotonic() - started)

    sampler = optuna.samplers.RandomSampler(seed=seed)
    study = optuna.create_study(sampler=sampler)
    screened = []
    try:
        for i in range(budget // 3):
            spec = suggest(study.ask(), config.space)
            keras.utils.set_random_seed(seed * 10_000 + i)
            model = _build(config, data, spec)
            model.fit(
                train,
                validation_data=validation,
                epochs=1,
                steps_per_epoch=t.steps_per_epoch,
                callbacks=[Budget()],
                verbose=0,
            )
            screened.append((sign * curve[-1], i, model))
        for _, _, model in sorted(screened, key=lambda s: s[:2]):
            model.fit(
                train,
                validation_data=validation,
                initial_epoch=1,
                epochs=t.epochs,
                steps_per_epoch=t.steps_per_epoch,
                callbacks=[
                    keras.callbacks.EarlyStopping(monitor=metric, patience=t.patience),
                    Budget(),
                ],
                verbose=0,
            )
    except _Spent:
        pass
    return {"curve": curve, "times": times, "trials": []}


def run_synetune(method: str, seed: int, budget: int) -> dict[str, Any]:
    """Syne Tune's BOHB (asynchronous successive halving with a kernel-density model, stopping
    type, one bracket, rungs at 1, 3 and 9 epochs as tuner's Hyperband) or ASHA (the same with
    random configurations), driven epoch by epoch in this process: the same space as KerasTuner's
    runs above (with a text study's parameters), the same models, data and early stopping. A
    benchmark-only dependency, outside the lock (BENCHMARKS.md says how to install it)."""
    import datetime

    from syne_tune.backend.trial_status import Trial
    from syne_tune.config_space import choice, lograndint, loguniform, randint, uniform
    from syne_tune.optimizer.baselines import ASHA, BOHB
    from syne_tune.optimizer.scheduler import SchedulerDecision

    from tuner.training.spec import ModelSpec

    config, data, (train, validation), keras = _setup()
    metric, sign = _metric(config)
    text = _is_text(config)
    t = config.training
    curve: list[float] = []
    times: list[float] = []
    started = time.monotonic()
    space = {
        "layers": randint(1, 2),
        "units_1": lograndint(16, 64),
        "units_2": lograndint(16, 64),
        "cell": choice(["gru", "lstm"]),
        "dropout": uniform(0.0, 0.5),
        "recurrent_dropout": uniform(0.0, 0.5),
        "bidirectional": choice([False, True]),
        "activation": choice(["tanh", "relu"]),
        "learning_rate": loguniform(3e-4, 1e-2),
    }
    if text:  # as KerasTuner's space on a text study
        study_space = config.space
        v = study_space.vocabulary_size
        space |= {
            "activation": choice([study_space.activation.value]),
            "learning_rate": loguniform(
                study_space.learning_rate.low, study_space.learning_rate.high
            ),
            "vocabulary_size": lograndint(int(v.low), int(v.high)),
            "sequence_length": choice(list(study_space.sequence_length.choices)),
            "embedding_dim": choice(list(study_space.embedding_dim.choices)),
        }
    kind = BOHB if method == "synetune-bohb" else ASHA
    scheduler = kind(
        space,
        metric=metric,
        time_attr="epoch",
        max_t=t.epochs,
        do_minimize=sign == 1,
        random_seed=seed,
        grace_period=1,
        reduction_factor=3,
    )

    class Report(keras.callbacks.Callback):
        def __init__(self, trial: Any) -> None:
            super().__init__()
            self.trial, self.stopped = trial, False

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            if len(curve) >= budget:
                self.model.stop_training = True
                raise _Spent

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            value = float(logs[metric])
            curve.append(value)
            times.append(time.monotonic() - started)
            self.last = {metric: value, "epoch": epoch + 1}
            decision = scheduler.on_trial_result(self.trial, self.last)
            if decision == SchedulerDecision.STOP:
                self.model.stop_training, self.stopped = True, True

    number = 0
    try:
        while len(curve) < budget:
            suggestion = scheduler.suggest()
            trial = Trial(
                trial_id=number, config=suggestion.config, creation_time=datetime.datetime.now()
            )
            scheduler.on_trial_add(trial)
            c = suggestion.config
            spec = ModelSpec(
                cell=c["cell"],
                units=(int(c["units_1"]), int(c["units_2"]))[: int(c["layers"])],
                dropout=float(c["dropout"]),
                recurrent_dropout=float(c["recurrent_dropout"]),
                bidirectional=bool(c["bidirectional"]),
                activation=c["activation"],
                learning_rate=float(c["learning_rate"]),
                **(
                    {
                        "vocabulary_size": int(c["vocabulary_size"]),
                        "sequence_length": int(c["sequence_length"]),
                        "embedding_dim": int(c["embedding_dim"]),
                    }
                    if text
                    else {}
                ),
            )
            keras.utils.set_random_seed(seed * 10_000 + number)
            model = _build(config, data, spec)
            report = Report(trial)
            model.fit(
                train,
                validation_data=validation,
                epochs=t.epochs,
                steps_per_epoch=t.steps_per_epoch,
                callbacks=[
                    keras.callbacks.EarlyStopping(monitor=metric, patience=t.patience),
                    report,
                ],
                verbose=0,
            )
            # As Syne Tune's own loop: a trial it stopped is removed; one that ended by itself
            # (early stopping) is complete, with its last result.
            if report.stopped:
                scheduler.on_trial_remove(trial)
            else:
                scheduler.on_trial_complete(trial, report.last)
            number += 1
    except _Spent:
        pass
    return {"curve": curve, "times": times, "trials": []}


class _Spent(Exception):
    """The epoch budget is spent."""


def one(method: str, seed: int, budget: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if method == "reference":
            result: Any = reference(seed)
        elif method.startswith("kerastuner"):
            result = run_kerastuner(method, seed, budget, Path(tmp))
        elif method == "one-epoch-screen":
            result = run_screen(seed, budget)
        elif method.startswith("synetune"):
            result = run_synetune(method, seed, budget)
        else:
            result = run_tuner(method, seed, budget, Path(tmp))
    print(json.dumps(result))


def main() -> None:
    global STUDY
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--seeds", default="3", help="seeds per method: a count, or method=count,... (else 3)"
    )
    parser.add_argument("--budget", type=int, default=140, help="training epochs per run")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, one core each")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--save", metavar="FILE", help="also write every run's curve here (JSON)")
    parser.add_argument(
        "--load", metavar="FILE", help="report on the runs saved by --save instead of running"
    )
    parser.add_argument(
        "--study",
        type=Path,
        default=STUDY,
        help="the study file searched (default: the shipped nyc-weather study)",
    )
    parser.add_argument(
        "--level",
        type=float,
        default=0.95,
        help="the least confidence of each difference's interval (3 seeds against 3 reach 90%% "
        "at most)",
    )
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    STUDY = args.study.resolve()
    if args.one:
        one(args.one[0], int(args.one[1]), args.budget)
        return
    methods = args.methods.split(",")
    seeds = _seeds(args.seeds, methods)
    if args.load:
        saved = json.loads(Path(args.load).read_text())
        runs = {(r["method"], r["seed"]): r["result"] for r in saved}
        report(runs, seeds, args.budget, args.level)
        return
    jobs = [("reference", 0)] + [
        (m, s) for s in range(max(seeds.values())) for m in methods if s < seeds[m]
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
                "--study",
                str(STUDY),
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
    report(results, seeds, args.budget, args.level)


def _seeds(text: str, methods: list[str]) -> dict[str, int]:
    """`--seeds`: "5", or "tuner-default=5,random=3" (methods not named get 3)."""
    if "=" not in text:
        return dict.fromkeys(methods, int(text))
    given = {k: int(v) for k, v in (part.split("=") for part in text.split(","))}
    return {m: given.get(m, 3) for m in methods}


def shift_interval(
    a: list[float], b: list[float], level: float = 0.95
) -> tuple[float, float, float, float]:
    """The Hodges-Lehmann estimate of the shift `a - b` (the median of every pairwise
    difference) and its exact, distribution-free interval from the Mann-Whitney U statistic:
    the k-th smallest and largest pairwise differences, k the largest for which the interval's
    confidence (returned, the last value) is at least `level`."""
    from itertools import combinations

    m, n = len(a), len(b)
    diffs = sorted(x - y for x in a for y in b)
    # The null distribution of U: every way of choosing a's ranks among m + n.
    counts: dict[int, int] = {}
    for ranks in combinations(range(m + n), m):
        u = sum(ranks) - m * (m - 1) // 2
        counts[u] = counts.get(u, 0) + 1
    total = sum(counts.values())
    below, k = 0.0, 0
    while True:
        below_next = below + counts.get(k, 0) / total  # P(U <= k)
        if 1 - 2 * below_next < level:
            break
        below, k = below_next, k + 1
    if k == 0:
        return median(diffs), float("-inf"), float("inf"), 1.0
    return median(diffs), diffs[k - 1], diffs[m * n - k], 1 - 2 * below


def report(
    results: dict[tuple[str, int], Any], seeds: dict[str, int], budget: int, level: float = 0.95
) -> None:
    """Print the tables; values are the study's metric, and "best" is the smallest, or the
    largest where the study maximizes it (a text study's accuracy)."""
    from tuner.config import load_study_config

    metric, sign = _metric(load_study_config(STUDY))
    unit = ", °F" if STUDY.name == "nyc-weather.toml" else ""

    methods = list(seeds)
    refs = [r for (m, _), r in sorted(results.items()) if m == "reference"]
    target = median([r["best"] for r in refs])
    half = refs[0]["epochs"] // 2  # the goal: the reference's value in half its epochs
    miss = budget + 1  # sorts after every hit; shown as ">budget"

    def shown(epochs: float) -> str:
        return f">{budget}" if epochs >= miss else f"{epochs:g}"

    rows = []
    summary: dict[str, dict[str, float]] = {}
    per_seed: dict[str, dict[str, list[float]]] = {}
    for method in methods:
        bests, to_beat, seconds, seed_epochs = [], [], [], []
        for seed in range(seeds[method]):
            run = results[(method, seed)]
            curve = run["curve"][:budget]
            bests.append(_best(curve, sign))
            hit = next((i for i, v in enumerate(curve) if sign * v < sign * target), None)
            to_beat.append(miss if hit is None else hit + 1)
            times = run.get("times")
            seconds.append(float("inf") if hit is None or not times else times[hit])
            seed_epochs.append(sum(t["epochs"] for t in run["trials"] if t["seed_config"]))
        summary[method] = {"best": median(bests), "to_beat": median(to_beat)}
        per_seed[method] = {"best": bests, "to_beat": [float(e) for e in to_beat]}
        rows.append(
            [
                method,
                str(seeds[method]),
                f"{median(bests):.3f}",
                f"{min(bests):.3f} to {max(bests):.3f}",
                f"{shown(median(to_beat))} ({' / '.join(shown(h) for h in to_beat)})",
                f"{sum(e <= half for e in to_beat)} / {seeds[method]}",
                _seconds(median(seconds)),
                " / ".join(str(e) for e in seed_epochs) if any(seed_epochs) else "-",
            ]
        )
    names = list(refs[0]["values"])
    print(
        f"Reference: the seed configurations trained for their own epochs ({refs[0]['epochs']} "
        f"in all), {len(refs)} training run(s) each, per configuration the values and their "
        "median: "
        + "; ".join(
            f"{k} {' / '.join(format(r['values'][k], '.3f') for r in refs)} "
            f"({median([r['values'][k] for r in refs]):.3f})"
            for k in names
        )
        + f"; value to beat, the median of each run's best: {target:.3f} ({metric}{unit})\n"
    )
    print(
        table(
            [
                "method",
                "seeds",
                f"best {metric} in {budget} epochs (median)",
                "range over seeds",
                f"epochs to beat {target:.3f}: median (per seed)",
                f"seeds that beat it within {half} epochs (half the reference's)",
                "seconds to beat it (median)",
                "epochs on the seed configurations' trials, per seed",
            ],
            rows,
        )
    )
    if "tuner-default" in per_seed:
        diffs = []
        ours = per_seed["tuner-default"]
        for method in methods:
            if method == "tuner-default":
                continue
            row = [method]
            for key, fmt in (("best", "{:+.3f}"), ("to_beat", "{:+.0f}")):
                est, low, high, conf = shift_interval(per_seed[method][key], ours[key], level)
                row.append(
                    f"{fmt.format(est)} [{fmt.format(low)}, {fmt.format(high)}] ({conf:.0%})"
                )
            diffs.append(row)
        print(
            "\nEach method minus tuner-default: Hodges-Lehmann shift [exact interval] "
            f"(its confidence). Misses count as {miss} epochs.\n"
        )
        print(table(["method", f"best {metric}, difference", "epochs to beat, difference"], diffs))
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
        n = seeds[method]
        wins = sum(
            sign * _best(results[(method, s)]["curve"][:budget], sign) < sign * target
            for s in range(n)
        )
        print(
            f"{method} beats every seed configuration within {budget} epochs in "
            f"{wins} of {n} seeds"
        )


def _seconds(value: float) -> str:
    return "-" if value == float("inf") else f"{value:.0f}"


if __name__ == "__main__":
    main()
