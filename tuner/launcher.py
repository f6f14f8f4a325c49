"""Running N worker processes of one study on this machine, each on its own share of the CPU
cores, and showing the study's progress until they finish."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TextIO

import optuna
import sqlalchemy

from tuner.config import StudyConfig
from tuner.errors import StorageError, TunerError
from tuner.process import PARENT_ENV
from tuner.queue import Counts, budget, count, set_budget
from tuner.storage import ENV_VAR, open_storage
from tuner.study import open_study

POLL_S = 2.0


@dataclass(frozen=True)
class Placement:
    """Where one worker runs: the cores it may use and its number of compute threads."""

    cpus: tuple[int, ...] | None
    threads: int


def run(
    config: StudyConfig,
    storage_url: str,
    *,
    n_workers: int,
    n_trials: int | None = None,
    pin: bool = True,
    out: TextIO = sys.stdout,
    say: Callable[[str], None] = print,
) -> list[int]:
    """Create or resume the study, make its budget `n_trials` if given, run `n_workers` worker
    processes on it with a progress display, and return their exit codes."""
    from tuner.data import prepare

    data = prepare(config.data)  # checked here once, before any worker starts
    storage = open_storage(storage_url, config.workers)
    study = open_study(
        config,
        storage,
        lambda: data.baselines,
        n_trials=n_trials,
        on_skip=say,
        attrs=lambda: data.study_attrs,
    )
    if n_trials is not None and n_trials != budget(study):
        set_budget(study, n_trials)
    finished = count(study).finished
    say(f"budget: {budget(study)} trials, {finished} finished")
    n_workers = workers_to_start(n_workers, budget(study) - finished, say)
    if n_workers == 0:
        return []
    placements = plan(n_workers, pin)
    processes = start_workers(config.path, storage_url, placements)
    return supervise(processes, study, budget(study), out)


def workers_to_start(
    asked: int, left: int, say: Callable[[str], None], cores: int | None = None
) -> int:
    """`asked`, capped at this machine's cores and the trials left in the budget, with a line
    saying so; 0 when the budget is spent."""
    cores = cores or len(os.sched_getaffinity(0))
    if left <= 0:
        say("the study's budget is spent: no worker started (`--trials N` raises it)")
        return 0
    n = min(asked, cores, left)
    if n < asked:
        why = f"{cores} usable cores" if n == cores else f"{left} trials left in the budget"
        say(f"Warning: --workers {asked} capped at {n}: this machine has {why}")
    return n


def plan(n_workers: int, pin: bool = True, cores: list[int] | None = None) -> list[Placement]:
    """Share this process's cores out among `n_workers` workers.

    With no more workers than cores, each worker gets its own cores and as many threads; with
    more, workers share cores round-robin, one thread each. Without pinning only the thread
    counts are set.
    """
    cores = sorted(cores if cores is not None else os.sched_getaffinity(0))
    if not pin:
        return [Placement(None, max(1, len(cores) // n_workers))] * n_workers
    if n_workers >= len(cores):
        return [Placement((cores[i % len(cores)],), 1) for i in range(n_workers)]
    size = len(cores) // n_workers
    return [Placement(tuple(cores[i * size : (i + 1) * size]), size) for i in range(n_workers)]


def start_workers(
    study_file: Path,
    storage_url: str,
    placements: list[Placement],
    seed_offset: int = 0,
    options: tuple[str, ...] = (),
) -> list[subprocess.Popen[bytes]]:
    """Start one `tuner worker` process per placement, with more `options` if given."""
    # The URL travels in the environment: a password on a command line is visible to `ps`.
    # PARENT_ENV makes each worker stop when this launcher ends, however it ends.
    env = os.environ | {ENV_VAR: storage_url, PARENT_ENV: str(os.getpid())}
    processes = []
    for i, placement in enumerate(placements):
        command = [
            sys.executable,
            "-m",
            "tuner",
            "worker",
            str(study_file),
            "--quiet",
            "--worker-index",
            str(seed_offset + i),
            "--threads",
            str(placement.threads),
            *options,
        ]
        if placement.cpus is not None:
            command += ["--cpus", ",".join(map(str, placement.cpus))]
        # Own session: a Ctrl-C in the terminal reaches only this launcher, which passes one
        # SIGTERM on to each worker (a second signal would make a worker stop at once).
        processes.append(subprocess.Popen(command, env=env, start_new_session=True))
    return processes


def supervise(
    processes: list[subprocess.Popen[bytes]],
    study: optuna.Study,
    n_trials: int,
    out: TextIO,
) -> list[int]:
    """Wait for the workers, forwarding SIGINT/SIGTERM to them and showing progress.

    Returns the workers' exit codes.
    """

    def forward(signum: int, frame: FrameType | None) -> None:
        for p in processes:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    # A closed terminal or ssh session (SIGHUP) stops the workers as Ctrl-C does.
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, forward) for s in signals}
    show = Progress(study, n_trials, out)
    try:
        while any(p.poll() is None for p in processes):
            _try(show)
            _wait(processes, POLL_S)
        _try(show, final=True)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return [p.returncode for p in processes]


def _try(show: Progress, final: bool = False) -> None:
    """Show progress, unless the storage cannot be read just now: the workers ride out an outage
    of the database, and so does their supervisor (the storage has logged it)."""
    try:
        show(final)
    except (StorageError, sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError):
        pass


def _wait(processes: list[subprocess.Popen[bytes]], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(p.poll() is None for p in processes):
        time.sleep(0.1)


class Progress:
    """Prints trials complete / pruned / failed / running and the best value so far: on a
    terminal as one line redrawn in place, elsewhere a line whenever something changes."""

    def __init__(self, study: optuna.Study, n_trials: int, out: TextIO) -> None:
        self.study, self.n_trials, self.out = study, n_trials, out
        self.tty = out.isatty()
        self.last: tuple[int, str] | None = None
        self.started = time.monotonic()

    def __call__(self, final: bool = False) -> None:
        counts, best = count(self.study), self._best()
        line = self.line(counts, best)
        if self.tty:
            elapsed = time.strftime("%M:%S", time.gmtime(time.monotonic() - self.started))
            self.out.write(f"\r{line}  [{elapsed}]\x1b[K" + ("\n" if final else ""))
        elif (counts.finished, best) != self.last:
            self.out.write(line + "\n")
        self.out.flush()
        self.last = (counts.finished, best)

    def line(self, c: Counts, best: str) -> str:
        return (
            f"trials {c.finished}/{self.n_trials}: {c.complete} complete, {c.pruned} pruned, "
            f"{c.failed - c.retried} failed, {c.running} running{best}"
        )

    def _best(self) -> str:
        from tuner.results import best_trial, metric_value

        try:
            best = best_trial(self.study)
        except TunerError:
            return ""
        metric = self.study.user_attrs.get("metric", "value")
        return f"; best {metric} {metric_value(best):.4g} (trial {best.number})"
