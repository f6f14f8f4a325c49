"""Soak run (a benchmark, not a test): N `tuner worker` processes on one PostgreSQL study of M
short trials, a random worker SIGKILLed every 30-60 s and started again, and (with
`--restart-postgres` only) one restart of the PostgreSQL server half-way.

At the end it checks that every trial of the budget finished exactly once (complete or pruned
trials == the budget; each failed trial is a killed worker's, queued again once), that none is
left RUNNING or WAITING, and that no worker process's resident memory passed the study's
`[workers] max_memory_mb` by more than one trial's growth; and prints the figures as JSON and a
markdown table row.

    nice -n 10 .venv/bin/python benchmarks/soak.py --workers 4 --trials 200
    nice -n 10 .venv/bin/python benchmarks/soak.py --workers 2 --trials 40 --max-minutes 7

The study is the shipped nyc-weather search space, cut to short trials. A fresh database is
made on $TUNER_TEST_POSTGRES_URL (default: the local server) and dropped afterwards.
`--restart-postgres` runs `pg_ctlcluster <version> main restart`: never on a server others use.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import sqlalchemy
from common import study_variant
from optuna.trial import TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--kill-every", type=float, nargs=2, default=(30.0, 60.0))
    parser.add_argument("--max-minutes", type=float, default=120.0)
    parser.add_argument(
        "--max-trials-per-process", type=int, default=None, help="default: the backend's own"
    )
    parser.add_argument("--max-memory-mb", type=int, default=2500)
    parser.add_argument(
        "--restart-postgres",
        action="store_true",
        help="restart the PostgreSQL server once, half-way (never on a shared server)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-retry", type=int, default=2, help="[workers] max_retry of the soak's study"
    )
    args = parser.parse_args()
    server = os.environ.get("TUNER_TEST_POSTGRES_URL", DEFAULT_SERVER)
    name = f"tuner_soak_{secrets.token_hex(4)}"
    admin = sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    try:
        with tempfile.TemporaryDirectory() as folder:
            figures = soak(Path(folder), url, args)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(json.dumps(figures, indent=2))
    print(
        "| workers | trials | minutes | kills | fresh starts | finished once | running left "
        "| max worker RSS MB | PG restarted |"
    )
    print(
        f"| {figures['workers']} | {figures['trials']} | {figures['minutes']:.1f} | "
        f"{figures['kills']} | {figures['fresh_starts']} | {figures['exactly_once']} | "
        f"{figures['running_left']} | {figures['max_rss_mb']:.0f} | "
        f"{figures['postgres_restarted']} |"
    )
    sys.exit(0 if figures["ok"] else 1)


def soak(folder: Path, url: str, args: argparse.Namespace) -> dict[str, object]:
    rng = random.Random(args.seed)
    workers = {
        "heartbeat_interval": 2,
        "grace_period": 8,
        "reconnect_timeout": 300,
        "max_memory_mb": args.max_memory_mb,
        "max_retry": args.max_retry,
    }
    if args.max_trials_per_process is not None:  # else the backend's default
        workers["max_trials_per_process"] = args.max_trials_per_process
    path = study_variant(
        folder,
        "soak",
        study={"n_trials": args.trials, "seed_configs": False},
        training={"epochs": 2, "steps_per_epoch": 5, "patience": 2},
        workers=workers,
    )
    env = os.environ | {"TUNER_STORAGE": url, "TUNER_CACHE_DIR": str(folder / "cache")}
    logs = folder / "logs"
    logs.mkdir()

    def start(i: int, generation: int) -> subprocess.Popen[bytes]:
        log = (logs / f"worker{i}.{generation}.log").open("wb")
        return subprocess.Popen(
            [sys.executable, "-m", "tuner", "worker", str(path), "--worker-index", str(i)],
            env=env,
            cwd=folder,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    # Made first, so that the workers find the database's tables made.
    observer = optuna.storages.RDBStorage(url, engine_kwargs={"poolclass": NullPool})
    workers = {i: start(i, 0) for i in range(args.workers)}
    generations = collections.Counter[int]()
    peak_rss: dict[int, float] = {}  # by process id
    kills, restarted = 0, False
    started = time.monotonic()
    deadline = started + args.max_minutes * 60
    next_kill = float("inf")  # from when the study is set up (creation is not the soak's)
    while any(p.poll() is None for p in workers.values()) and time.monotonic() < deadline:
        time.sleep(1.0)
        for p in workers.values():
            if p.poll() is None:
                peak_rss[p.pid] = max(peak_rss.get(p.pid, 0.0), _rss_mb(p.pid))
        finished = _finished(observer)
        if next_kill == float("inf") and _ready(observer):
            next_kill = time.monotonic() + rng.uniform(*args.kill_every)
        if time.monotonic() >= next_kill and finished < args.trials:
            alive = [i for i, p in workers.items() if p.poll() is None]
            if alive:
                i = rng.choice(alive)
                workers[i].kill()
                workers[i].wait()
                kills += 1
                generations[i] += 1
                workers[i] = start(i, generations[i])
            next_kill = time.monotonic() + rng.uniform(*args.kill_every)
        if args.restart_postgres and not restarted and finished >= args.trials // 2:
            version = sorted(os.listdir("/etc/postgresql"))[-1]
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
                check=True,
            )
            restarted = True
    minutes = (time.monotonic() - started) / 60
    for p in workers.values():
        if p.poll() is None:
            p.kill()
            p.wait()
    study = optuna.load_study(study_name="soak", storage=observer)
    trials = study.get_trials(deepcopy=False)
    states = collections.Counter(t.state for t in trials)
    # A retried trial's chain: the first trial's number, and every retry of it after.
    chains = collections.defaultdict(list)
    for t in trials:
        chains[t.system_attrs.get("failed_trial", t.number)].append(t)
    finished = {TrialState.COMPLETE, TrialState.PRUNED}
    done = [c for c in chains.values() if any(t.state in finished for t in c)]
    # Failed as many times as `[workers] max_retry` allows, then left failed, by design (a
    # trial that kills its worker every time is not run for ever): not a lost trial.
    given_up = [
        c
        for c in chains.values()
        if c not in done and sum(t.state == TrialState.FAIL for t in c) > args.max_retry
    ]
    once = (
        all(sum(t.state in finished for t in c) == 1 for c in done)
        and len(done) + len(given_up) == args.trials
        and len(chains) == args.trials
    )
    fresh_starts = sum(
        log.read_text(errors="replace").count("worker starting afresh") for log in logs.iterdir()
    )
    max_rss = max(peak_rss.values(), default=0.0)
    bounded = args.max_memory_mb == 0 or max_rss < args.max_memory_mb + 500
    return {
        "workers": args.workers,
        "trials": args.trials,
        "minutes": minutes,
        "kills": kills,
        "fresh_starts": fresh_starts,
        "states": {s.name: n for s, n in states.items()},
        "exactly_once": once,
        "given_up_after_retries": len(given_up),
        "running_left": states[TrialState.RUNNING],
        "waiting_left": states[TrialState.WAITING],
        "max_rss_mb": max_rss,
        "rss_bounded": bounded,
        "postgres_restarted": restarted,
        "ok": once
        and states[TrialState.RUNNING] == 0
        and states[TrialState.WAITING] == 0
        and bounded,
    }


def _finished(storage: optuna.storages.RDBStorage) -> int:
    studies = storage.get_all_studies()
    if not studies:
        return 0
    trials = storage.get_all_trials(studies[0]._study_id, deepcopy=False)
    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)


def _ready(storage: optuna.storages.RDBStorage) -> bool:
    studies = storage.get_all_studies()
    return bool(studies and studies[0].user_attrs.get("ready"))


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


if __name__ == "__main__":
    main()
