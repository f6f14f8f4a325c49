"""One worker: takes queued trials of a study one at a time, runs them, and records how each
ended, until no trial is queued or running elsewhere (a trial whose worker died is queued again),
or it is asked to stop.

The loop reads as a story: claim a trial → keep its heartbeat → run the objective → tell the
study. Failures are sorted by kind (as in KerasTuner): a trial that fails is recorded and the
worker goes on; a storage error stops the worker; so do too many failed trials in a row. A
SIGINT, SIGTERM or SIGHUP stops the worker between two training batches: its trial is recorded as
failed, queued again for another worker (with its parameters and training seed, and without
using up one of its `max_retry` retries), and the worker exits 0. Between two trials a worker may
start afresh, and one started by `tuner run` stops when it ends (`tuner.search.process`).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import os
import random
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.config import StudyConfig, WorkersConfig
from tuner.errors import Interrupted, StorageError, TrialFailed, TunerError
from tuner.patches.quiet import import_keras, quiet_logs
from tuner.search.process import resident_mb
from tuner.search.queue import budget, claim, count, running_elsewhere
from tuner.storage import in_storage_call, queue_again, study_storage, trial_id

logger = logging.getLogger("tuner.search.worker")

IDLE_POLL_S = 2.0
# The jitter of idle polls: its own generator, seeded by the operating system (every trial
# reseeds Python's `random`).
_IDLE = random.Random(os.urandom(16))


class WorkerError(TunerError):
    """The worker cannot go on."""


@dataclass
class WorkerResult:
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    interrupted: bool = False
    # Carried over when the worker starts afresh (`tuner.search.process`).
    failures_in_a_row: int = 0
    restarts: int = 0
    restart_reason: str | None = None


def place(cpus: list[int] | None, threads: int | None) -> None:
    """Pin this process to `cpus` and size TensorFlow's and XLA's (JAX's) thread pools, before
    either starts (XLA's: `tuner.patches.xla`).

    Workers that share cores fight over them; one worker per core with one compute thread each
    is what makes N workers N times as fast.
    """
    from tuner.patches.xla import size_thread_pool

    if cpus:
        os.sched_setaffinity(0, set(cpus))
    n = threads or len(os.sched_getaffinity(0))
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(n)
    os.environ["TF_NUM_INTEROP_THREADS"] = str(min(n, 2))
    # Only for an XLA known to take the flag: it aborts on one it does not know.
    size_thread_pool(n)
    quiet_logs()


class StopRequest:
    """Turns SIGINT, SIGTERM and SIGHUP into a flag the training loop polls.

    A second signal forces the worker to stop (`KeyboardInterrupt`) without waiting for the
    end of a training batch, but at a safe point: never inside a storage call (a transaction,
    or a lock held over a few calls), nor inside the steps `held` keeps together (a trial
    failed and queued again); there it waits for them to end, looking again every
    `RECHECK_S`. The forced worker's trial is left running, and once its heartbeat has been
    missed for `grace_period`, another worker fails it and queues it again.
    """

    def __init__(self) -> None:
        self.signal: str | None = None
        self.forced = False  # a second signal came: stop at the next safe point
        self._held = 0

    def __bool__(self) -> bool:
        return self.signal is not None

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._handle)
        signal.signal(signal.SIGALRM, self._recheck)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Steps that a forced stop must let end together (or not begin)."""
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
        if self.forced:  # the steps ended: stop now rather than at the next look
            self._force(inspect.currentframe())

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is None:
            self.signal = signal.Signals(signum).name
            return
        self.forced = True
        self._force(frame)

    def _recheck(self, signum: int, frame: FrameType | None) -> None:
        if self.forced:
            self._force(frame)

    def _force(self, frame: FrameType | None) -> None:
        if self._held or in_storage_call(frame):
            signal.setitimer(signal.ITIMER_REAL, RECHECK_S)  # not safe yet: look again soon
            return
        self.forced = False
        raise KeyboardInterrupt


# How soon a forced stop looks again for a safe point.
RECHECK_S = 0.05


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
    ablation: bool = False,
) -> WorkerResult:
    """Join the study named in `config` (creating it if needed) and run its queued trials; with
    `ablation`, its companion study of ablation trials (tuner.search.ablation) instead."""
    from tuner.search import process
    from tuner.training.backend import use

    stop = StopRequest()
    stop.install()
    process.die_with_launcher(stop)
    use(config.training.backend)  # before anything imports Keras
    place(cpus, threads)
    from tuner.data import prepare
    from tuner.search.study import open_study
    from tuner.storage import open_storage

    data = prepare(config.data)
    carried = process.carried(WorkerResult)
    storage = open_storage(storage_url, config.workers)
    if ablation:
        from tuner.search.companion import load_companion
        from tuner.search.study import load_existing, stored_config

        # The study as it was run; a study file that no longer matches it is refused here.
        config = stored_config(load_existing(config.name, storage), config)
        study = load_companion(config, storage)
    else:
        study = open_study(
            config,
            storage,
            lambda: data.baselines,
            # After a fresh start the sampler's seed moves on, or it would propose again what it
            # proposed after the last one.
            worker_index=worker_index + carried.restarts * process.SEED_STRIDE,
            on_skip=say,
            attrs=lambda: data.study_attrs,
        )
    import_keras()  # after `place`, which sizes its thread pools
    from tuner.search.objective import Objective
    from tuner.search.schedule import Scheduler, scheduled
    from tuner.storage.artifacts import artifact_dir, open_store

    scheduler = None
    if scheduled(config) and not ablation:
        pauses = config.pruner.name == "pause"
        scheduler = Scheduler(
            config, open_store(artifact_dir(storage_url, None)) if pauses else None
        )
    objective = Objective(config, data, should_stop=lambda: bool(stop), scheduler=scheduler)
    result = run_worker(
        config,
        study,
        storage,
        objective,
        stop,
        max_trials=max_trials,
        on_trial=on_trial,
        result=carried,
        restart_due=process.restart_due if process.can_start_afresh() else None,
        claim_trial=scheduler.claim if scheduler is not None else claim,
    )
    if result.restart_reason is not None:
        result.restarts += 1
        process.start_afresh(result, storage, result.restart_reason, say)
    return result


def run_worker(
    config: StudyConfig,
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    objective: Callable[[optuna.Trial], float | list[float]],
    stop: StopRequest,
    *,
    max_trials: int | None = None,
    on_trial: Callable[[FrozenTrial], None] = lambda trial: None,
    result: WorkerResult | None = None,
    restart_due: Callable[[WorkersConfig, int], str | None] | None = None,
    claim_trial: Callable[[optuna.Study], optuna.Trial | None] = claim,
) -> WorkerResult:
    """Run queued trials until none is left or running elsewhere, `max_trials` have run, or
    `stop` is set, or (between two trials) `restart_due` gives a reason to start afresh.
    `claim_trial` hands out the work: the queue's `claim`, or a `Scheduler`'s (paused trials,
    budgets in epochs).

    `max_trials` counts every trial this worker ran to its end, over its fresh starts:
    complete, pruned and failed alike. A trial stopped by a signal is not counted (it is queued
    again, and the worker stops anyway), nor is one that another worker failed as stale
    meanwhile."""
    result = result or WorkerResult()
    ran_here = 0
    beats = has_heartbeat(storage)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        checked = -math.inf
        idle = 0  # looks in a row that found nothing to claim
        while not stop and (max_trials is None or _ran(result) < max_trials):
            # A trial goes stale only a grace period after its last heartbeat: looking once a
            # heartbeat interval finds it in time, and spares the storage a read every trial.
            if time.monotonic() - checked >= config.workers.heartbeat_interval:
                optuna.storages.fail_stale_trials(study)
                checked = time.monotonic()
            trial = claim_trial(study)  # refills the queue within the budget when it runs short
            if trial is None:
                if beats and running_elsewhere(study):
                    # A trial running elsewhere may yet go stale and be queued again.
                    _sleep(idle_wait(config.workers, idle), stop)
                    idle += 1
                    continue
                break
            idle = 0
            trial.set_user_attr("worker_restarts", result.restarts)
            trial.set_user_attr("worker_rss_mb", round(resident_mb()))
            try:
                with Heartbeat(storage, trial_id(trial), config.workers.heartbeat_interval, beats):
                    frozen, reason = _run(study, storage, trial, objective, stop, result)
            except Exception as e:
                if isinstance(e, StorageError) or not _finished_elsewhere(study, trial):
                    raise
                # While this worker could not reach the storage, another one failed the trial
                # as stale and queued its parameters again.
                logger.warning("trial %d was failed as stale; it is queued again", trial.number)
                continue
            on_trial(frozen)
            ran_here += 1
            if frozen.state == TrialState.FAIL and not result.interrupted:
                result.failures_in_a_row += 1
                if result.failures_in_a_row >= config.workers.max_consecutive_failures:
                    raise WorkerError(
                        f"{result.failures_in_a_row} trials failed in a row, the last with: "
                        f"{reason}"
                    )
            else:
                result.failures_in_a_row = 0
            if restart_due is not None and not stop:
                result.restart_reason = restart_due(config.workers, ran_here)
                if result.restart_reason is not None and _work_left(study):
                    break
                result.restart_reason = None  # no trial left to start afresh for
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
        # The budget keeps its trial: the same parameters and training seed wait for another
        # worker, and an interruption does not count against [workers] max_retry. A forced
        # stop lets both steps end: a trial failed but not queued again would be lost.
        with stop.held():
            frozen = _fail(study, trial, reason)
            if has_heartbeat(storage):
                queue_again(storage, study, frozen)
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


def _ran(result: WorkerResult) -> int:
    """The trials this worker ran to their end: what `max_trials` counts."""
    return result.complete + result.pruned + result.failed


def idle_wait(workers: WorkersConfig, looks: int) -> float:
    """Seconds before a worker that found nothing to claim `looks` times in a row looks again:
    `IDLE_POLL_S` (or the heartbeat interval, if shorter), doubling with each look up to a
    quarter of the grace period, and jittered. A trial that runs elsewhere can go stale only a
    grace period after its last heartbeat, so a quarter of it adds little to the wait for its
    retry; and the hundreds of workers left idle at a study's end, each reading the running
    trials every 2 s, loaded the storage proxy more than the trials still running did
    (BENCHMARKS.md, the load test)."""
    first = min(IDLE_POLL_S, float(workers.heartbeat_interval))
    longest = max(first, workers.grace_period / 4)
    return min(longest, first * 2.0 ** min(looks, 16)) * _IDLE.uniform(0.5, 1.0)


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


def _work_left(study: optuna.Study) -> bool:
    counts = count(study)
    # A queued trial is work left too: the ablation's companion study has no budget.
    return counts.waiting > 0 or counts.finished + counts.running < budget(study)


def _finished_elsewhere(study: optuna.Study, trial: optuna.Trial) -> bool:
    return bool(study_storage(study).get_trial(trial_id(trial)).state.is_finished())
