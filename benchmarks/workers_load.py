"""Load test of the worker loop: many worker processes, a stand-in objective that sleeps briefly
instead of training, one study of a few thousand queued trials, on PostgreSQL, SQLite and
Optuna's journal file storage.

Every worker runs `tuner.search.worker.run_worker` (claim a queued trial -> heartbeat -> objective
-> tell) on its own storage connection, exactly as `tuner worker` does; only the objective is a
stand-in (one parameter, one intermediate report, a short sleep; random sampling, so that the
sampler's cost does not hide the storage's). The clock runs from the moment every worker is
ready (imports done, storage open) until the last one exits; process start-up is not counted.

Reported per storage: trials per second, errors (worker exceptions and failed trials; must be
zero), warnings logged by the workers, and whether the trial count is exact: as many complete
trials as queued, and as many objective calls as trials (no trial run twice).

    .venv/bin/python benchmarks/workers_load.py --workers 32 --trials 2000
    .venv/bin/python benchmarks/workers_load.py --queue-cost

PostgreSQL: a fresh database is made on $TUNER_TEST_POSTGRES_URL (default: the local server)
and dropped afterwards.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import multiprocessing as mp
import os
import secrets
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tuner.config import WorkersConfig, load_study_config  # noqa: E402
from tuner.search.queue import set_budget  # noqa: E402
from tuner.search.worker import StopRequest, run_worker  # noqa: E402
from tuner.storage import open_storage  # noqa: E402

STUDY = "load"
WORKERS = WorkersConfig(heartbeat_interval=5, grace_period=60, max_consecutive_failures=3)


def open_for_worker(kind: str, where: str) -> optuna.storages.BaseStorage:
    if kind == "journal":
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(where))
    return open_storage(where, WORKERS)


def worker(kind: str, where: str, index: int, sleep: float, ready: Any, go: Any, out: Any) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore")
    counted = _CountWarnings()
    logging.getLogger().addHandler(counted)
    optuna.logging.get_logger("optuna").addHandler(counted)
    config = load_study_config(ROOT / "studies/nyc-weather.toml")
    config = dataclasses.replace(config, workers=WORKERS)
    calls = 0

    def objective(trial: optuna.Trial) -> float:
        nonlocal calls
        calls += 1
        x = trial.suggest_float("x", 0.0, 1.0)
        time.sleep(sleep)
        trial.report(x, 0)
        return x

    errors: list[str] = []
    complete = failed = 0
    waiting = True
    try:
        storage = open_for_worker(kind, where)
        sampler = optuna.samplers.RandomSampler(seed=index)
        study = optuna.load_study(study_name=STUDY, storage=storage, sampler=sampler)
        ready.release()
        waiting = False
        go.wait()
        result = run_worker(config, study, storage, objective, StopRequest())
        complete, failed = result.complete, result.failed
    except Exception:
        if waiting:
            ready.release()
        errors.append(traceback.format_exc(limit=3))
    if "tensorflow" in sys.modules:
        errors.append("the worker loop imported TensorFlow, which the stand-in does not need")
    out.put(
        {
            "calls": calls,
            "complete": complete,
            "failed": failed,
            "errors": errors,
            "warnings": counted.n,
        }
    )


class _CountWarnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.n = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.n += 1


def run(kind: str, where: str, n_workers: int, n_trials: int, sleep: float) -> dict[str, Any]:
    storage = open_for_worker(kind, where)
    study = optuna.create_study(study_name=STUDY, storage=storage)
    set_budget(study, n_trials)
    context = mp.get_context("spawn")  # a fresh interpreter per worker, as `tuner run` starts
    ready, go, out = context.Semaphore(0), context.Event(), context.Queue()
    processes = [
        context.Process(target=worker, args=(kind, where, i, sleep, ready, go, out))
        for i in range(n_workers)
    ]
    for p in processes:
        p.start()
    for _ in processes:
        ready.acquire()
    started = time.perf_counter()
    go.set()
    reports = [out.get() for _ in processes]
    for p in processes:
        p.join()
    seconds = time.perf_counter() - started
    trials = optuna.load_study(study_name=STUDY, storage=open_for_worker(kind, where)).trials
    complete = sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    calls = sum(r["calls"] for r in reports)
    errors = [e for r in reports for e in r["errors"]]
    return {
        "storage": kind,
        "workers": n_workers,
        "trials": len(trials),
        "seconds": seconds,
        "per_second": complete / seconds,
        "errors": len(errors) + sum(r["failed"] for r in reports),
        "warnings": sum(r["warnings"] for r in reports),
        "exact": len(trials) == complete == calls == n_trials,
        "detail": f"{complete} complete, {calls} objective calls",
        "first_error": errors[0] if errors else "",
    }


def queue_cost(kind: str, where: str, queued: int, measured: int, sleep: float) -> float:
    """Milliseconds per trial of one worker running `measured` trials of a budget of `queued`.
    Optuna's cached storage reads every unfinished trial whenever a study's trials are read, so
    this grew with the budget while the whole budget was queued up front; tuner.search.queue keeps
    the queue short so that it does not."""
    storage = open_for_worker(kind, where)
    study = optuna.create_study(study_name=f"queue-{queued}", storage=storage)
    set_budget(study, queued)
    study = optuna.load_study(
        study_name=f"queue-{queued}", storage=storage, sampler=optuna.samplers.RandomSampler()
    )
    config = dataclasses.replace(
        load_study_config(ROOT / "studies/nyc-weather.toml"), workers=WORKERS
    )

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        time.sleep(sleep)
        trial.report(x, 0)
        return x

    started = time.perf_counter()
    run_worker(config, study, storage, objective, StopRequest(), max_trials=measured)
    return (time.perf_counter() - started) / measured * 1000 - sleep * 1000


def postgres_database(server: str) -> tuple[str, sqlalchemy.engine.Engine, str]:
    name = f"tuner_bench_{secrets.token_hex(4)}"
    admin = sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    return url, admin, name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--sleep", type=float, default=0.05, help="seconds per stand-in trial")
    parser.add_argument(
        "--storages", default="postgresql,sqlite,journal", help="comma-separated, in order"
    )
    parser.add_argument(
        "--queue-cost",
        action="store_true",
        help="instead: one worker's storage time per trial against the study's budget",
    )
    args = parser.parse_args()
    server = os.environ.get(
        "TUNER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    if args.queue_cost:
        print("| storage | budget | ms per trial, besides the objective |")
        print("| --- | --- | --- |")
    rows = []
    for kind in args.storages.split(","):
        with tempfile.TemporaryDirectory() as folder:
            admin = None
            if kind == "postgresql":
                where, admin, name = postgres_database(server)
            elif kind == "sqlite":
                where = f"sqlite:///{Path(folder) / 'load.db'}"
            else:
                where = str(Path(folder) / "load.journal")
            try:
                if args.queue_cost:
                    for queued in (100, 500, 2000):
                        ms = queue_cost(kind, where, queued, 100, args.sleep)
                        print(f"| {kind} | {queued} | {ms:.0f} |", flush=True)
                    continue
                row = run(kind, where, args.workers, args.trials, args.sleep)
            finally:
                if admin is not None:
                    with admin.connect() as connection:
                        connection.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
        rows.append(row)
        print(
            f"{kind}: {row['trials']} trials in {row['seconds']:.1f} s = "
            f"{row['per_second']:.1f} trials/s, errors {row['errors']}, warnings "
            f"{row['warnings']}, exact {row['exact']} ({row['detail']})",
            flush=True,
        )
        if row["first_error"]:
            print(row["first_error"], file=sys.stderr)
    if not rows:
        return
    print()
    print("| storage | workers | trials | seconds | trials/s | errors | warnings | count exact |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['storage']} | {r['workers']} | {r['trials']} | {r['seconds']:.1f} | "
            f"{r['per_second']:.1f} | {r['errors']} | {r['warnings']} | "
            f"{'yes' if r['exact'] else 'NO'} |"
        )


if __name__ == "__main__":
    main()
