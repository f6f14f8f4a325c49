"""A worker process's life outside its trials: stopping when the `tuner run` that started it
ends, however it ends, and starting afresh (re-executing itself) when it has run enough trials
or grown too large.

A worker that `tuner run` starts finds the launcher's process id in `PARENT_ENV`. On Linux the
kernel signals it when the launcher dies (`PR_SET_PDEATHSIG`); elsewhere, and as a second line,
a thread notices that its parent changed. Either way the worker stops as on Ctrl-C: its trial is
failed and queued again. A `tuner worker` started by hand has no such variable and
outlives whoever started it.

Python keeps the memory of every model a worker has built (BENCHMARKS.md: 800 MB at the first
trial, 2.7 GB at the 48th). Between two trials, holding no trial and no lock, a worker can
replace itself with a fresh interpreter (`os.execv`): same process id, so the launcher and the
parent-death signal still know it; same command line, so the same cores, threads and study;
the same worker index and trial counts, carried in `RESUME_ENV`.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, fields
from types import FrameType
from typing import Any, Protocol, TypeVar

from tuner.config import WorkersConfig
from tuner.storage import close

logger = logging.getLogger("tuner.search.worker")
T = TypeVar("T")

PARENT_ENV = "TUNER_LAUNCHER_PID"
RESUME_ENV = "TUNER_WORKER_RESUME"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PARENT_DEATH_SIGNAL = signal.SIGUSR1
PARENT_POLL_S = 1.0
# Added to the worker index (so to the sampler's seed) at each fresh start: far from the indices
# of the other workers (0, 1, 2... from `tuner run`).
SEED_STRIDE = 1_000_003
# After the launcher died and the worker was asked to stop: time to record its trial as failed
# before the worker exits regardless (the trial's heartbeat then fails it).
STOP_GRACE_S = 30.0


class Stoppable(Protocol):
    """The worker's stop request: `signal` names what asked it to stop, None until then."""

    signal: str | None


def die_with_launcher(stop: Stoppable) -> None:
    """Ask this process to stop (as Ctrl-C would) when the launcher in `PARENT_ENV` ends."""
    launcher = os.environ.get(PARENT_ENV)
    if not launcher or not launcher.isdigit():
        return  # started by hand: independent

    def ended(signum: int | None = None, frame: FrameType | None = None) -> None:
        # Not SIGTERM: the kernel sends the parent-death signal again each time the worker is
        # handed on from a thread of the dying launcher to the next, and a second SIGTERM
        # would force the worker to stop before it records its trial.
        if stop.signal is None:
            stop.signal = "the end of its tuner run"

    if sys.platform.startswith("linux"):
        signal.signal(PARENT_DEATH_SIGNAL, ended)
        _parent_death_signal(PARENT_DEATH_SIGNAL)
    threading.Thread(
        target=_watch_parent, args=(int(launcher), ended), daemon=True, name="launcher-watch"
    ).start()


def _parent_death_signal(signum: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _watch_parent(launcher: int, ended: Callable[[], None]) -> None:
    # Also where the kernel sends no signal, and when the launcher died before it was asked to.
    while os.getppid() == launcher:
        time.sleep(PARENT_POLL_S)
    logger.warning("the tuner run that started this worker has ended; stopping")
    ended()
    # A worker that cannot record its trial (the database is unreachable) leaves it to the
    # heartbeat of the others, rather than outliving its launcher by `reconnect_timeout`.
    time.sleep(STOP_GRACE_S)
    os._exit(1)


def resident_mb() -> float:
    """This process's resident memory now, in MB (not the peak, which survives `execv`)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (2**20 if sys.platform == "darwin" else 2**10)


# `[workers] max_trials_per_process` when the study file leaves it out, per Keras backend: a
# TensorFlow worker grows 40 to 60 MB a trial without end; a JAX worker, which clears its
# compiled functions before each trial, grows about 3 MB a trial after the first few, and
# a fresh start costs it more than it gives back (BENCHMARKS.md, "Workers that start afresh").
TRIALS_PER_PROCESS = {"tensorflow": 20, "jax": 0}


def trials_per_process(workers: WorkersConfig, backend: str) -> int:
    """The trials after which a worker on `backend` starts afresh (0: never)."""
    if workers.max_trials_per_process is not None:
        return workers.max_trials_per_process
    return TRIALS_PER_PROCESS.get(backend, 20)


def restart_due(workers: WorkersConfig, trials_here: int) -> str | None:
    """Why this worker should start afresh now, or None. Keras is imported."""
    from tuner.training.backend import current

    limit = trials_per_process(workers, current())
    if limit and trials_here >= limit:
        return f"{trials_here} trials in this process ([workers] max_trials_per_process)"
    if workers.max_memory_mb:
        rss = resident_mb()
        if rss > workers.max_memory_mb:
            return f"resident memory {rss:.0f} MB > [workers] max_memory_mb"
    return None


def carried(kind: type[T]) -> T:
    """The `kind` (a dataclass of counts) that the process this one replaced handed over, or a
    new one."""
    try:
        state = json.loads(os.environ.get(RESUME_ENV, "{}"))
    except json.JSONDecodeError:
        state = {}
    if not isinstance(state, dict):
        state = {}
    names = {f.name for f in fields(kind)} - {"restart_reason"}  # type: ignore[arg-type]
    return kind(**{k: v for k, v in state.items() if k in names})


def can_start_afresh() -> bool:
    """Whether this process is a `tuner worker` command, which can be run again as it was."""
    return sys.argv[1:2] == ["worker"]


def start_afresh(
    state: Any, storage: Any, why: str, say: Callable[[str], None] = lambda message: None
) -> None:
    """Replace this process with a fresh `tuner worker` on the same command line (so the same
    cores, threads and worker index: a default index comes from the process id, which `execv`
    keeps); never returns. `state`, a dataclass of counts, goes to the new process; `say` is
    told why (a routine step, not a warning: `tuner run`'s quiet workers keep it to
    themselves)."""
    say(f"worker starting afresh: {why}")
    close(storage)  # the database sees its connections close, not vanish
    sys.stdout.flush()
    sys.stderr.flush()
    os.environ[RESUME_ENV] = json.dumps(asdict(state))
    argv = [sys.executable, "-m", "tuner", *sys.argv[1:]]
    os.execv(sys.executable, argv)
