"""One worker: takes queued trials of a study one at a time, runs them, and records how each
ended, until no trial is queued or running elsewhere (a trial whose worker died is queued again),
or it is asked to stop.

The loop reads as a story: claim a trial → keep its heartbeat → run the objective → tell the
study. Failures are sorted by kind (as in KerasTuner): a trial that fails is recorded and the
worker goes on; a storage error stops the worker; so do too many failed trials in a row. A
SIGINT or SIGTERM stops the worker between two training batches: its trial is recorded as failed,
queued again for another worker, and the worker exits 0.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.config import StudyConfig
from tuner.errors import Interrupted, StorageError, TrialFailed, TunerError
from tuner.queue import claim
from tuner.quiet import import_keras, quiet_logs

logger = logging.getLogger("tuner.worker")

IDLE_POLL_S = 2.0


class WorkerError(TunerError):
    """The worker cannot go on."""


@dataclass
class WorkerResult:
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    interrupted: bool = False


def place(cpus: list[int] | None, threads: int | None) -> None:
    """Pin this process to `cpus` and size TensorFlow's and XLA's (JAX's) thread pools, before
    either starts.

    Workers that share cores fight over them; one worker per core with one compute thread each
    is what makes N workers N times as fast.
    """
    if cpus:
        os.sched_setaffinity(0, set(cpus))
    n = threads or len(os.sched_getaffinity(0))
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(n)
    os.environ["TF_NUM_INTEROP_THREADS"] = str(min(n, 2))
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(_XLA_OWN)]
    # XLA's CPU client runs Eigen's thread pool over every core it sees unless told otherwise.
    flags.append(f"--xla_cpu_multi_thread_eigen={'true' if n > 1 else 'false'}")
    flags.append(f"intra_op_parallelism_threads={n}")
    os.environ["XLA_FLAGS"] = " ".join(flags)
    quiet_logs()


_XLA_OWN = ("--xla_cpu_multi_thread_eigen", "intra_op_parallelism_threads")


class StopRequest:
    """Turns SIGINT and SIGTERM into a flag the training loop polls; a second signal forces."""

    def __init__(self) -> None:
        self.signal: str | None = None

    def __bool__(self) -> bool:
        return self.signal is not None

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name


class Heartbeat:
    """Records a trial's heartbeat every interval, so that a worker that dies is noticed."""

    def __init__(self, storage: Any, trial_id: int, interval: int, enabled: bool = True) -> None:
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.enabled = enabled
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="heartbeat")

    def __enter__(self) -> Heartbeat:
        if self.enabled:  # the first beat was recorded by `claim`
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._stop.set()
            self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception as e:  # the next beat may succeed; a missed one is not fatal
                logger.warning("heartbeat of trial id %d not recorded: %s", self.trial_id, e)


def has_heartbeat(storage: optuna.storages.BaseStorage) -> bool:
    """Whether `storage` records heartbeats (RDB storages opened for workers do)."""
    return getattr(storage, "get_heartbeat_interval", lambda: None)() is not None


def work(
    config: StudyConfig,
    storage_url: str,
    *,
    worker_index: int = 0,
    cpus: list[int] | None = None,
    threads: int | None = None,
    max_trials: int | None = None,
    on_trial: Callable[[FrozenTrial], None] = lambda trial: None,
    say: Callable[[str], None] = print,
) -> WorkerResult:
    """Join the study named in `config` (creating it if needed) and run its queued trials."""
    from tuner.backend import use

    stop = StopRequest()
    stop.install()
    use(config.training.backend)  # before anything imports Keras
    place(cpus, threads)
    from tuner.data import prepare
    from tuner.storage import open_storage
    from tuner.study import open_study

    data = prepare(config.data)
    storage = open_storage(storage_url, config.workers)
    study = open_study(
        config,
        storage,
        lambda: data.baselines,
        worker_index=worker_index,
        on_skip=say,
        attrs=lambda: data.study_attrs,
    )
    import_keras()  # after `place`, which sizes its thread pools
    from tuner.objective import Objective

    objective = Objective(config, data, should_stop=lambda: bool(stop))
    return run_worker(
        config, study, storage, objective, stop, max_trials=max_trials, on_trial=on_trial
    )


def run_worker(
    config: StudyConfig,
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    objective: Callable[[optuna.Trial], float | list[float]],
    stop: StopRequest,
    *,
    max_trials: int | None = None,
    on_trial: Callable[[FrozenTrial], None] = lambda trial: None,
) -> WorkerResult:
    """Run queued trials until none is left or running elsewhere, `max_trials` have run, or
    `stop` is set."""
    result = WorkerResult()
    failures_in_a_row = 0
    beats = has_heartbeat(storage)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        checked = -math.inf
        while not stop and (max_trials is None or result.complete + result.pruned < max_trials):
            # A trial goes stale only a grace period after its last heartbeat: looking once a
            # heartbeat interval finds it in time, and spares the storage a read every trial.
            if time.monotonic() - checked >= config.workers.heartbeat_interval:
                optuna.storages.fail_stale_trials(study)
                checked = time.monotonic()
            trial = claim(study)  # refills the queue within the budget when it runs short
            if trial is None:
                if beats and study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                    # A trial running elsewhere may yet go stale and be queued again.
                    _sleep(min(IDLE_POLL_S, config.workers.heartbeat_interval), stop)
                    continue
                break
            try:
                with Heartbeat(storage, trial._trial_id, config.workers.heartbeat_interval, beats):
                    frozen, reason = _run(study, storage, trial, objective, stop, result)
            except Exception as e:
                if isinstance(e, StorageError) or not _finished_elsewhere(study, trial):
                    raise
                # While this worker could not reach the storage, another one failed the trial
                # as stale and queued its parameters again.
                logger.warning("trial %d was failed as stale; it is queued again", trial.number)
                continue
            on_trial(frozen)
            if frozen.state == TrialState.FAIL and not result.interrupted:
                failures_in_a_row += 1
                if failures_in_a_row >= config.workers.max_consecutive_failures:
                    raise WorkerError(
                        f"{failures_in_a_row} trials failed in a row, the last with: {reason}"
                    )
            else:
                failures_in_a_row = 0
    result.interrupted = result.interrupted or bool(stop)
    return result


def _run(
    study: optuna.Study,
    storage: Any,
    trial: optuna.Trial,
    objective: Callable[[optuna.Trial], float | list[float]],
    stop: StopRequest,
    result: WorkerResult,
) -> tuple[FrozenTrial, str | None]:
    """Run the objective on `trial` and tell the study how it ended (and why, if it failed)."""
    try:
        value = objective(trial)
    except optuna.TrialPruned:
        frozen = study.tell(trial, state=TrialState.PRUNED)
        result.pruned += 1
        return frozen, None
    except Interrupted:
        reason = f"interrupted by {stop.signal}"
        frozen = _fail(study, trial, reason)
        # The budget keeps its trial: the same parameters wait for another worker.
        retry = storage.get_heartbeat_stale_trial_callback() if has_heartbeat(storage) else None
        if retry is not None:
            retry(study, frozen)
        result.interrupted = True
        return frozen, reason
    except Exception as e:
        if _is_storage_error(e):
            raise
        reason = str(e) if isinstance(e, TrialFailed) else f"{type(e).__name__}: {e}"
        frozen = _fail(study, trial, reason)
        result.failed += 1
        return frozen, reason
    frozen = study.tell(trial, value)
    result.complete += 1
    return frozen, None


def _sleep(seconds: float, stop: StopRequest) -> None:
    deadline = time.monotonic() + seconds
    while not stop and time.monotonic() < deadline:
        time.sleep(0.1)


def _fail(study: optuna.Study, trial: optuna.Trial, reason: str) -> FrozenTrial:
    trial.set_user_attr("fail_reason", reason[:500])
    logger.warning("trial %d failed: %s", trial.number, reason)
    return study.tell(trial, state=TrialState.FAIL)


def _is_storage_error(e: BaseException) -> bool:
    import sqlalchemy

    return isinstance(
        e,
        sqlalchemy.exc.SQLAlchemyError
        | optuna.exceptions.StorageInternalError
        | optuna.exceptions.UpdateFinishedTrialError
        | StorageError,
    )


def _finished_elsewhere(study: optuna.Study, trial: optuna.Trial) -> bool:
    return study._storage.get_trial(trial._trial_id).state.is_finished()
