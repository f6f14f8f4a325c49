"""Running N worker processes of one study on this machine, each on its own share of the CPU
cores (and of the GPUs, if it has any), and showing the study's progress until they finish."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import IO, TextIO

import optuna
import sqlalchemy

from tuner.config import StudyConfig
from tuner.errors import StorageError
from tuner.patches.quiet import quiet_logs
from tuner.search.process import PARENT_ENV
from tuner.search.progress import Progress
from tuner.search.queue import budget, count, set_budget
from tuner.search.schedule import epoch_budget, scheduled, work_left
from tuner.search.study import open_study
from tuner.storage import ENV_VAR, mask, opened

POLL_S = 2.0


@dataclass(frozen=True)
class Placement:
    """Where one worker runs: the cores it may use and its number of compute threads."""

    cpus: tuple[int, ...] | None
    threads: int
    gpu: str | None = None  # the one GPU it sees (CUDA_VISIBLE_DEVICES), if any


def run(
    config: StudyConfig,
    storage_url: str,
    *,
    n_workers: int,
    n_trials: int | None = None,
    pin: bool = True,
    out: TextIO = sys.stdout,
    say: Callable[[str], None] = print,
    warn: Callable[[str], None] | None = None,
) -> list[int]:
    """Create or resume the study, make its budget `n_trials` if given, run `n_workers` worker
    processes on it with a progress display, and return their exit codes.

    Says which study, where and with how many workers (`n_workers` as capped) only once the
    study is open: a refused study file or bad data gets its one error line alone. Warnings
    (the cap) go to `warn`, by default `say`."""
    from tuner.data import prepare

    data = prepare(config.data)  # checked here once, before any worker starts
    # Closed when the workers are done: the progress display reads it until then.
    with opened(storage_url, config.workers) as storage:
        skipped: list[str] = []  # said after the header
        study = open_study(
            config,
            storage,
            lambda: data.baselines,
            n_trials=n_trials,
            on_skip=skipped.append,
            attrs=lambda: data.study_attrs,
        )
        if n_trials is not None and n_trials != budget(study):
            set_budget(study, n_trials)
        finished = count(study).finished
        left = budget(study) - finished
        if scheduled(config):  # paused trials to resume, or a budget in epochs
            left = work_left(study, config)
        n_workers = workers_to_start(n_workers, left, warn or say) if left > 0 else 0
        say(f"study {config.name!r} in {mask(storage_url)}, {n_workers} worker(s)")
        for line in skipped:
            say(line)
        limit = epoch_budget(study)
        if limit is not None:
            say(f"budget: {limit} epochs, {limit - left} trained")
        else:
            say(f"budget: {budget(study)} trials, {finished} finished")
        if n_workers == 0:
            say(SPENT)
            return []
        placements = on_gpus(plan(n_workers, pin), gpus())
        processes = start_workers(config.path, storage_url, placements)
        return supervise(processes, study, budget(study), out)


def workers_to_start(
    asked: int, left: int, say: Callable[[str], None], cores: int | None = None
) -> int:
    """`asked`, capped at this machine's cores and the trials left in the budget, with a line
    saying so; 0 when the budget is spent."""
    cores = cores or len(os.sched_getaffinity(0))
    if left <= 0:
        say(SPENT)
        return 0
    n = min(asked, cores, left)
    if n < asked:
        why = (
            f"this machine has {cores} usable cores"
            if n == cores
            else f"the study has {left} trials left in its budget"
        )
        say(f"Warning: --workers {asked} capped at {n}: {why}")
    return n


SPENT = "the study's budget is spent: no worker started (`--trials N` raises it)"


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


def gpus() -> list[str]:
    """The GPUs workers may use: those CUDA_VISIBLE_DEVICES names when it is set (empty: none),
    else those `nvidia-smi` lists; none on a machine without NVIDIA's driver."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d for d in (d.strip() for d in visible.split(",")) if d and d != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listed = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in listed.splitlines() if line.strip()]


def on_gpus(placements: list[Placement], devices: list[str]) -> list[Placement]:
    """Share the GPUs out among the workers round-robin: several workers per GPU share it (four
    small recurrent models on one GPU train 2.4 times the epochs per second of one;
    BENCHMARKS.md)."""
    if not devices:
        return placements
    return [replace(p, gpu=devices[i % len(devices)]) for i, p in enumerate(placements)]


# Several workers on one GPU: neither backend may take the whole card's memory up front.
GPU_SHARING_ENV = {
    "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
    "TF_FORCE_GPU_ALLOW_GROWTH": "true",
}


def start_workers(
    study_file: Path,
    storage_url: str,
    placements: list[Placement],
    seed_offset: int = 0,
    options: tuple[str, ...] = (),
) -> list[subprocess.Popen[bytes]]:
    """Start one `tuner worker` process per placement, with more `options` if given."""
    # The URL travels in the environment: a password on a command line is visible to `ps`.
    quiet_logs()  # TensorFlow's and XLA's start-up noise, in the workers too
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
        own = env
        if placement.gpu is not None:
            own = env | GPU_SHARING_ENV | {"CUDA_VISIBLE_DEVICES": placement.gpu}
        # Own session: a Ctrl-C in the terminal reaches only this launcher, which passes one
        # SIGTERM on to each worker (a second signal would force a worker to stop, at the next
        # point outside a storage call, leaving its trial to go stale).
        processes.append(
            subprocess.Popen(command, env=own, start_new_session=True, stderr=subprocess.PIPE)
        )
    return processes


def supervise(
    processes: list[subprocess.Popen[bytes]],
    study: optuna.Study,
    n_trials: int,
    out: TextIO,
    best: bool = True,
) -> list[int]:
    """Wait for the workers, forwarding SIGINT/SIGTERM to them and showing progress (with the
    best trial so far, if `best`).

    Returns the workers' exit codes.
    """

    def forward(signum: int, frame: FrameType | None) -> None:
        for p in processes:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    # A closed terminal or ssh session (SIGHUP) stops the workers as Ctrl-C does.
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, forward) for s in signals}
    show = Progress(study, n_trials, out, n_workers=len(processes), best=best)
    readers = [
        threading.Thread(target=_pass_on, args=(p.stderr, show.echo), daemon=True)
        for p in processes
        if p.stderr is not None
    ]
    for reader in readers:
        reader.start()
    try:
        while any(p.poll() is None for p in processes):
            _try(show)
            _wait(processes, POLL_S)
        for reader in readers:
            reader.join(timeout=5)
        _try(show, final=True)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return [p.returncode for p in processes]


# Start-up lines of TensorFlow, XLA, absl and CUDA that say nothing about the study: absl's
# "E0000 00:00:... cpu_feature_guard ..." style of line, and the banners that escape it.
_NOISE = re.compile(
    r"^[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\]|oneDNN custom operations|"
    r"rebuild TensorFlow with the appropriate compiler flags|absl::InitializeLog|"
    r"Unable to register cu\w+ factory|TF-TRT Warning|An NVIDIA GPU may be present"
)


def _pass_on(stream: IO[bytes], echo: Callable[[str], None]) -> None:
    """Pass a worker's stderr on, less the start-up noise of the libraries it loads.

    The stream is read to its end whatever `echo` does: should the launcher's own output break
    (its terminal closed, a pipe whose reader went away), the lines are dropped from then on.
    A worker whose stderr pipe fills up blocks in its next write, its heartbeat keeps its trial
    alive, and the launcher would wait for it for ever."""
    passing = True
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace").rstrip("\n")
        if passing and line and not _NOISE.search(line):
            try:
                echo(line)
            except Exception:  # OSError, BrokenPipeError, a closed stream's ValueError
                passing = False


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
