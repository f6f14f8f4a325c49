"""Load test of hundreds of light clients on one study, against PostgreSQL directly and through
`tuner storage-proxy` (issue 24), as the study grows towards 10,000 trials; and TPE's time per
suggestion against the number of trials (`--tpe`).

Every client runs `tuner.search.worker.run_worker`, the loop of `tuner worker`: claim a queued
trial (recording its heartbeat), run the objective, tell the study, with a heartbeat thread and a
stale-trial check every `heartbeat_interval` (1 s here, so that a trial of about 1 s makes about
one of each). Only the objective is a stand-in: it suggests the shipped nyc-weather study's
search space (random sampling: TPE's own cost is measured apart, with `--tpe`), sets the user
attributes a real trial sets, and reports every epoch after a short sleep instead of training.
Clients are threads, `--clients` spread over `--processes` processes, each client with its own
storage (its own database connections, or its own gRPC channel), as a worker process has.

Reported per run: trials per second, database connections held (sampled every 0.5 s from
`pg_stat_activity`), a trial's own storage calls (from the claim that returned it to its end,
less the objective's sleep and the sampler; waiting for the CPU on a small machine included), the
wait for a trial to claim (which grows with the clients per trial the storage serves) and the
sampler's time per trial, in windows of 500 trial numbers as the study grows, and lost or
duplicated trials (every trial number once, as many complete trials as the budget, as many
objective calls as trials).

    .venv/bin/python benchmarks/scale.py --clients 256 --storages proxy --trials 10000 --keep
    .venv/bin/python benchmarks/scale.py --calls postgresql://postgres@127.0.0.1/tuner_bench_...
    .venv/bin/python benchmarks/scale.py --tpe --sizes 100,1000,5000,10000

A fresh database is made on $TUNER_TEST_POSTGRES_URL (default: the local server) for each run
and dropped afterwards; the proxy is `python -m tuner storage-proxy` on a free port. Every
`--progress` seconds a line gives the complete trials and the rate, so that a run stopped early
still shows its curve, and the proxy says what calls it served (`tuner storage-proxy --stats`);
client processes and the proxy exit when the run's process does, however it ends.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import table  # noqa: E402
from workers_load import postgres_database  # noqa: E402

from tuner.config import WorkersConfig, load_study_config  # noqa: E402
from tuner.search.queue import claim, set_budget  # noqa: E402
from tuner.search.space import suggest  # noqa: E402
from tuner.search.worker import StopRequest, run_worker  # noqa: E402
from tuner.storage import open_storage  # noqa: E402
from tuner.storage.proxy_client import LEASE_S  # noqa: E402

STUDY = "scale"
STUDY_FILE = ROOT / "studies/nyc-weather.toml"
WORKERS = WorkersConfig(
    heartbeat_interval=1, grace_period=60, max_consecutive_failures=3, reconnect_timeout=60
)
WINDOW = 500
POINTS = (100, 1000, 2000, 5000, 10000)
# The user attributes tuner's objective sets on a trial (tuner.search.objective), besides the
# worker's two (tuner.search.worker).
USER_ATTRS = (
    "worker",
    "backend",
    "training_seed",
    "n_params",
    "model",
    "start_epoch",
    "epochs",
    "best_epoch",
    "train_seconds",
    "seconds_per_epoch",
    "first_epoch_seconds",
    "worker_peak_rss_mb",
)


class TimedSampler(optuna.samplers.BaseSampler):
    """A sampler that adds up the time spent in another one."""

    def __init__(self, sampler: optuna.samplers.BaseSampler) -> None:
        self.sampler, self.spent = sampler, 0.0

    def _timed(self, call: Any, *args: Any) -> Any:
        started = time.perf_counter()
        try:
            return call(*args)
        finally:
            self.spent += time.perf_counter() - started

    def infer_relative_search_space(self, study: Any, trial: Any) -> Any:
        return self._timed(self.sampler.infer_relative_search_space, study, trial)

    def sample_relative(self, study: Any, trial: Any, space: Any) -> Any:
        return self._timed(self.sampler.sample_relative, study, trial, space)

    def sample_independent(self, study: Any, trial: Any, name: str, dist: Any) -> Any:
        return self._timed(self.sampler.sample_independent, study, trial, name, dist)

    def before_trial(self, study: Any, trial: Any) -> None:
        self._timed(self.sampler.before_trial, study, trial)

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        self._timed(self.sampler.after_trial, study, trial, state, values)


def client(url: str, index: int, args: argparse.Namespace, ready: Any, go: Any) -> dict:
    """One worker loop; returns its trials' timings and its errors."""
    config = dataclasses.replace(load_study_config(STUDY_FILE), workers=WORKERS)
    sampler = TimedSampler(optuna.samplers.RandomSampler(seed=index))
    called: list[int] = []
    slept = 0.0
    # number, between trials s, sampler s, finished at, waited for the trial s, its claim call s
    rows: list[tuple[int, float, float, float, float, float]] = []
    last = claimed = claim_s = 0.0

    def timed_claim(study: optuna.Study) -> optuna.Trial | None:
        nonlocal claimed, claim_s
        started = time.perf_counter()
        trial = claim(study)
        claimed = time.perf_counter()
        claim_s = claimed - started
        return trial

    def objective(trial: optuna.Trial) -> float:
        nonlocal slept
        called.append(trial.number)
        suggest(trial, config.space)
        for name in USER_ATTRS[:6]:
            trial.set_user_attr(name, index)
        for epoch in range(args.epochs):
            started = time.perf_counter()
            time.sleep(args.sleep / args.epochs)
            slept += time.perf_counter() - started
            trial.report(1.0 / (epoch + 1), epoch)
            trial.should_prune()
        for name in USER_ATTRS[6:]:
            trial.set_user_attr(name, 1.0)
        return float(trial.number)

    def on_trial(frozen: optuna.trial.FrozenTrial) -> None:
        nonlocal last, slept
        now = time.perf_counter()
        rows.append(
            (
                frozen.number,
                now - last - slept - sampler.spent,
                sampler.spent,
                now,
                claimed - last,
                claim_s,
            )
        )
        last, slept, sampler.spent = now, 0.0, 0.0

    errors: list[str] = []
    waiting = True
    try:
        storage = open_storage(url, WORKERS)
        study = optuna.load_study(
            study_name=STUDY, storage=storage, sampler=sampler, pruner=optuna.pruners.NopPruner()
        )
        ready.release()
        waiting = False
        go.wait()
        last = time.perf_counter()
        run_worker(
            config,
            study,
            storage,
            objective,
            StopRequest(),
            on_trial=on_trial,
            claim_trial=timed_claim,
        )
    except Exception:
        errors.append(traceback.format_exc(limit=4))
    finally:
        if waiting:
            ready.release()
    return {"calls": called, "rows": rows, "errors": errors}


def process(url: str, indices: list[int], args: argparse.Namespace, *sync: Any) -> None:
    """Runs `indices`' clients as threads of one process; puts their results on `out`."""
    ready, go, out = sync
    parent = os.getppid()

    def orphaned() -> None:  # a killed run leaves no client behind
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=orphaned, daemon=True).start()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")
    results: list[dict] = []

    def one(i: int) -> None:
        results.append(client(url, i, args, ready, go))

    threads = [threading.Thread(target=one, args=(i,)) for i in indices]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(
        {
            "calls": [n for r in results for n in r["calls"]],
            "rows": [row for r in results for row in r["rows"]],
            "errors": [e for r in results for e in r["errors"]],
        }
    )


class Progress:
    """Prints the complete trials and the rate since the last line every `every` seconds, on a
    thread of its own, so that a run stopped early still shows how far it got and how fast."""

    def __init__(self, url: str, every: float) -> None:
        self.engine = sqlalchemy.create_engine(url, poolclass=NullPool)
        self.every, self._stop = every, threading.Event()
        self._thread = threading.Thread(target=self._print, daemon=True)
        self._thread.start()

    def _print(self) -> None:
        query = sqlalchemy.text("SELECT count(*) FROM trials WHERE state = 'COMPLETE'")
        started, before = time.monotonic(), 0
        while not self._stop.wait(self.every):
            with self.engine.connect() as connection:
                done = int(connection.execute(query).scalar() or 0)
            print(
                f"  {time.monotonic() - started:6.0f} s: {done} trials complete, "
                f"{(done - before) / self.every:.1f}/s in the last {self.every:g} s",
                flush=True,
            )
            before = done

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.engine.dispose()


class Connections:
    """Samples the database's connections every 0.5 s on a thread of its own."""

    def __init__(self, admin: sqlalchemy.engine.Engine, name: str) -> None:
        self.admin, self.name, self.samples = admin, name, [0]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        query = sqlalchemy.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :db")
        with self.admin.connect() as connection:
            while not self._stop.wait(0.5):
                self.samples.append(int(connection.execute(query, {"db": self.name}).scalar()))

    def stop(self) -> tuple[int, int]:
        """The median and the most connections seen."""
        self._stop.set()
        self._thread.join()
        return int(statistics.median(self.samples)), max(self.samples)


def _ends_with_parent() -> None:
    """In a child before it runs: the kernel sends it SIGTERM when this process dies (Linux)."""
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


def start_proxy(url: str, stats: float = 0.0) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proxy = subprocess.Popen(
        [sys.executable, "-m", "tuner", "storage-proxy", "--storage", url]
        + ["--host", "127.0.0.1", "--port", str(port), "--stats", str(stats)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=_ends_with_parent,
    )
    assert proxy.stdout is not None
    line = proxy.stdout.readline()
    if "serving" not in line:
        raise RuntimeError(f"the proxy did not start: {line}{proxy.stdout.read()}")

    def relay() -> None:  # its --stats lines, and the pipe kept from filling up
        assert proxy.stdout is not None
        for said in proxy.stdout:
            print(f"  proxy {said.rstrip()}", flush=True)

    threading.Thread(target=relay, daemon=True).start()
    return proxy, f"grpc://127.0.0.1:{port}"


def run(server: str, kind: str, n_clients: int, args: argparse.Namespace) -> dict[str, Any]:
    url, admin, name = postgres_database(server)
    proxy = progress = None
    processes: list[Any] = []
    try:
        study = optuna.create_study(study_name=STUDY, storage=open_storage(url))
        set_budget(study, args.trials)
        opens = 0.0
        if kind == "proxy":
            proxy, url = start_proxy(url, args.progress)
            opens = time.monotonic() + LEASE_S  # a fresh proxy grants no lock before
        connections = Connections(admin, name)
        context = mp.get_context("spawn")
        ready, go, out = context.Semaphore(0), context.Event(), context.Queue()
        n_processes = min(args.processes, n_clients)
        processes = [
            context.Process(
                target=process,
                args=(url, list(range(p, n_clients, n_processes)), args, ready, go, out),
            )
            for p in range(n_processes)
        ]
        for p in processes:
            p.start()
        for _ in range(n_clients):
            ready.acquire()
        time.sleep(max(0.0, opens - time.monotonic()))
        started = time.perf_counter()
        go.set()
        progress = Progress(name_url(server, name), args.progress) if args.progress else None
        reports = [out.get() for _ in processes]
        seconds = time.perf_counter() - started
        for p in processes:
            p.join()
        held = connections.stop()
    finally:
        if progress is not None:
            progress.stop()
        for p in processes:  # still running only if the run failed or was interrupted
            if p.is_alive():
                p.terminate()
        if proxy is not None:
            proxy.terminate()
            proxy.wait()
        trials = optuna.load_study(study_name=STUDY, storage=open_storage(name_url(server, name)))
        trials = trials.trials
        if args.keep:
            print(f"kept: {name_url(server, name)}", flush=True)
        else:
            with admin.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
    called = [n for r in reports for n in r["calls"]]
    rows = sorted(row for r in reports for row in r["rows"])
    errors = [e for r in reports for e in r["errors"]]
    numbers = sorted(t.number for t in trials)
    complete = sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    return {
        "kind": kind,
        "clients": n_clients,
        "processes": n_processes,
        "trials": len(trials),
        "complete": complete,
        "seconds": seconds,
        "per_second": complete / seconds,
        # perf_counter is the system's monotonic clock, the same in every process.
        "to_last": max((r[3] for r in rows), default=started) - started,
        "connections": held,
        "errors": errors,
        # Trial numbers missing from 0..n-1 or held twice, trials run twice, budget not complete.
        "lost": max(args.trials - complete, 0) + len(set(range(len(numbers))) - set(numbers)),
        "duplicated": (len(numbers) - len(set(numbers))) + (len(called) - len(set(called))),
        "calls": len(called),
        "windows": windows(rows, args.trials),
    }


def name_url(server: str, name: str) -> str:
    url = sqlalchemy.engine.make_url(server).set(database=name)
    return url.render_as_string(hide_password=False)


def windows(rows: list[tuple[float, ...]], budget: int) -> list[dict[str, Any]]:
    """Medians over the `WINDOW` trial numbers before each of `POINTS` within the budget.

    A trial's time splits in two: the wait for it (from the client's last trial's end until a
    claim returned it: the claims that found nothing, the pauses between them, and the last
    claim call), which grows with the clients per trial the storage serves a second; and its own
    storage calls (from that claim's return to the trial's end, less the objective's sleep and
    the sampler: its parameters, user attributes, reports and the tell, and waiting for the CPU),
    which is what a trial costs the storage as the study grows."""
    found = []
    for point in [p for p in POINTS if p <= budget]:
        inside = [r for r in rows if max(0, point - WINDOW) <= r[0] < point]
        if len(inside) < 2:
            continue
        span = max(r[3] for r in inside) - min(r[3] for r in inside)
        work = [r[1] - r[4] for r in inside]
        found.append(
            {
                "at": point,
                "storage_ms": statistics.median(work) * 1000,
                "storage_mean_ms": statistics.fmean(work) * 1000,
                "claim_ms": statistics.median(r[5] for r in inside) * 1000,
                "wait_ms": statistics.median(r[4] for r in inside) * 1000,
                "sampler_ms": statistics.median(r[2] for r in inside) * 1000,
                "per_second": len(inside) / span if span > 0 else float("nan"),
            }
        )
    return found


# --- where a trial's storage time goes, at 100 trials and at many ---------------------------


def calls(url: str, repeats: int, grow: list[int]) -> None:
    """Milliseconds of each kind of storage call a worker makes, directly and through a fresh
    proxy, on a study of the first 100 trials of the study `STUDY` that a `--keep` run left in
    the database at `url`, on that study, and on that study grown to each of `grow` trials
    (copies of its complete trials)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")
    direct = open_storage(url, WORKERS)
    big = optuna.load_study(study_name=STUDY, storage=direct)
    small = optuna.create_study(study_name=f"{STUDY}-100", storage=direct)
    small.add_trials(big.trials[:100])
    proxy, proxy_url = start_proxy(url)
    rows = []
    try:
        storages = {"postgresql": open_storage(url, WORKERS), "proxy": open_storage(proxy_url)}
        for size in [0, *grow]:
            done = big.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            big.add_trials(done[i % len(done)] for i in range(max(0, size - len(done))))
            for label, storage in storages.items():
                for name in [f"{STUDY}-100"] * (size == 0) + [STUDY]:
                    study = optuna.load_study(study_name=name, storage=storage)
                    for what, ms in time_calls(study, repeats):
                        rows.append([label, what, len(study.trials), f"{ms:.2f}"])
                        print(" | ".join(str(c) for c in rows[-1]), flush=True)
    finally:
        proxy.terminate()
        proxy.wait()
    print()
    print(table(["storage", "call", "trials in the study", "ms (median)"], rows))


def time_calls(study: optuna.Study, repeats: int) -> list[tuple[str, float]]:
    """Median milliseconds of the storage calls of a worker's trial that may grow with it."""
    view: Any = study._storage  # what the worker's calls go through
    study_id, first = study._study_id, study.get_trials(deepcopy=False)[0]._trial_id
    running = view.create_new_trial(study_id)  # for the calls that write
    unfinished = (optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING)
    measured = {
        "unfinished trials (claim)": lambda: view.get_all_trials(
            study_id, deepcopy=False, states=unfinished
        ),
        "all trials (queue count)": lambda: view.get_all_trials(study_id, deepcopy=False),
        "one trial": lambda: view.get_trial(first),
        "user attribute": lambda: view.set_trial_user_attr(running, "x", 1),
        "heartbeat": lambda: view.record_heartbeat(running),
        "stale trials": lambda: optuna.storages.fail_stale_trials(study),
    }
    found = []
    for what, call in measured.items():
        call()  # the first call fills the caches
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        found.append((what, statistics.median(times) * 1e3))
    return found


# --- TPE's time per suggestion ------------------------------------------------------------------

SAMPLERS = {
    "tuner's TPE (multivariate, group, constant_liar, n_ei_candidates=24)": {},
    "multivariate off": {"multivariate": False, "group": False},
    "n_ei_candidates=8": {"n_ei_candidates": 8},
    "multivariate off, n_ei_candidates=8": {
        "multivariate": False,
        "group": False,
        "n_ei_candidates": 8,
    },
}


def tpe(sizes: list[int], repeats: int) -> None:
    """Milliseconds of one `study.ask` plus the search space's suggestions, on a study (in
    memory, so that only the sampler is timed) of N complete trials of the shipped space."""
    config = load_study_config(STUDY_FILE)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    header = ["trials", *SAMPLERS]
    rows = []
    complete = 0
    for size in sizes:
        while complete < size:  # not `len(study.trials)`: it copies every trial
            trial = study.ask()
            suggest(trial, config.space)
            study.tell(trial, trial.number % 97 / 97)
            complete += 1
        row: list[object] = [size]
        for changes in SAMPLERS.values():
            kwargs = {"multivariate": True, "group": True, "constant_liar": True} | changes
            times = []
            for r in range(repeats):
                view = optuna.load_study(
                    study_name=study.study_name,
                    storage=study._storage,
                    sampler=optuna.samplers.TPESampler(seed=r, n_startup_trials=8, **kwargs),
                )
                started = time.perf_counter()
                trial = view.ask()
                suggest(trial, config.space)
                times.append(time.perf_counter() - started)
                view.tell(trial, state=optuna.trial.TrialState.FAIL)  # TPE skips failed trials
            row.append(f"{statistics.median(times) * 1000:.0f}")
        rows.append(row)
        print(" | ".join(str(c) for c in row), flush=True)
    print()
    print("ms per suggestion (one trial's `ask` and parameters), median of", repeats)
    print(table(header, rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="32", help="comma-separated client counts")
    parser.add_argument("--storages", default="proxy,postgresql", help="proxy, postgresql")
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--processes", type=int, default=4, help="clients are their threads")
    parser.add_argument("--epochs", type=int, default=4, help="reports per trial")
    parser.add_argument("--sleep", type=float, default=1.0, help="seconds of 'training' a trial")
    parser.add_argument("--tpe", action="store_true", help="instead: TPE's time per suggestion")
    parser.add_argument("--sizes", default="100,1000,5000,10000", help="with --tpe")
    parser.add_argument("--repeats", type=int, default=5, help="with --tpe")
    parser.add_argument("--keep", action="store_true", help="keep the last run's database")
    parser.add_argument(
        "--progress", type=float, default=60.0, help="seconds between progress lines (0: none)"
    )
    parser.add_argument("--calls", metavar="URL", help="instead: time each storage call")
    parser.add_argument("--grow", default="5000,10000", help="with --calls: trials to add to")
    args = parser.parse_args()
    if args.calls:
        calls(args.calls, args.repeats, [int(g) for g in args.grow.split(",") if g])
        return
    if args.tpe:
        tpe([int(s) for s in args.sizes.split(",")], args.repeats)
        return
    server = os.environ.get(
        "TUNER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    with sqlalchemy.create_engine(server, poolclass=NullPool).connect() as connection:
        limit = connection.exec_driver_sql("SHOW max_connections").scalar()
    print(f"PostgreSQL max_connections = {limit}", flush=True)
    results = []
    for n in [int(c) for c in args.clients.split(",")]:
        for kind in args.storages.split(","):
            r = run(server, kind, n, args)
            results.append(r)
            print(
                f"{kind}, {n} clients: {r['complete']} of {args.trials} complete in "
                f"{r['seconds']:.0f} s ({r['to_last']:.0f} s to the last trial's end) = "
                f"{r['per_second']:.1f} trials/s, connections "
                f"{r['connections']}, {len(r['errors'])} client errors, lost {r['lost']}, "
                f"duplicated {r['duplicated']}, objective calls {r['calls']}",
                flush=True,
            )
            for w in r["windows"]:
                print(
                    f"  at {w['at']}: a trial's storage calls {w['storage_ms']:.0f} ms (mean "
                    f"{w['storage_mean_ms']:.0f}), waited for it {w['wait_ms']:.0f} ms (the "
                    f"claim that got it {w['claim_ms']:.0f} ms), sampler "
                    f"{w['sampler_ms']:.1f} ms, {w['per_second']:.1f} trials/s",
                    flush=True,
                )
            if r["errors"]:
                print("  first client error:", r["errors"][0].strip().splitlines()[-1])
    print()
    print(
        table(
            [
                "storage",
                "clients (processes)",
                "complete / budget",
                "seconds",
                "trials/s",
                "connections (median, max)",
                "client errors",
                "lost",
                "duplicated",
            ],
            [
                [
                    r["kind"],
                    f"{r['clients']} ({r['processes']})",
                    f"{r['complete']} / {args.trials}",
                    f"{r['seconds']:.0f}",
                    f"{r['per_second']:.1f}",
                    f"{r['connections'][0]}, {r['connections'][1]}",
                    len(r["errors"]),
                    r["lost"],
                    r["duplicated"],
                ]
                for r in results
            ],
        )
    )
    print()
    print(
        table(
            [
                "storage",
                "clients",
                "at trial",
                "a trial's storage calls, ms (median)",
                "waited for the trial, ms (its claim)",
                "sampler ms/trial",
                "trials/s in window",
            ],
            [
                [
                    r["kind"],
                    r["clients"],
                    w["at"],
                    f"{w['storage_ms']:.0f}",
                    f"{w['wait_ms']:.0f} ({w['claim_ms']:.0f})",
                    f"{w['sampler_ms']:.1f}",
                    f"{w['per_second']:.1f}",
                ]
                for r in results
                for w in r["windows"]
            ],
        )
    )


if __name__ == "__main__":
    main()
