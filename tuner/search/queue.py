"""The trial queue: how a study's budget of trials is handed out to workers, one trial each.

A study's budget (`n_trials`, kept as the study's user attribute `n_trials`) is the number of
trials it finishes, however many workers run. Only a short stretch of it waits in the storage at
any time, as WAITING trials (the seed configurations first); workers claim them one at a time
and refill the stretch as they go, one worker at a time under a lock. The count stays exact, and
reading the queue costs the same at the 10th trial and the 10,000th: Optuna re-reads every
unfinished trial whenever it looks at a study, so a queue holding the whole budget made every
trial pay for the length of the budget (BENCHMARKS.md, the load test).

A trial whose worker died or was stopped is failed and queued again under a new number, in its
place: the retry, not the failed trial, counts towards the budget.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import os
import random
import threading
import weakref
from dataclasses import astuple, dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.search.trials import CONTINUES
from tuner.storage import (
    Busy,
    HoldsLocks,
    Refilled,
    claimed_trial,
    is_retry,
    live_trial,
    locked,
    locked_if_free,
    queue_lock,
    study_storage,
    trial_id,
)

logger = logging.getLogger("tuner.search")

BUDGET_ATTR = "n_trials"
# The user attribute of a paused trial's continuation (tuner.search.schedule): the number of the
# trial it continues. Its model was counted once, with its first trial.
# Queued trials kept ahead of the workers: at least this many, and one per running trial
# (`ahead`).
AHEAD = 8
# The claims' own generator, seeded by the operating system: every trial reseeds Python's
# `random` (keras.utils.set_random_seed), so workers training the same seed (an ablation's)
# would otherwise start at the same queued trial, claim after claim.
_CLAIMS = random.Random(os.urandom(16))


@dataclass(frozen=True)
class Counts:
    """Where a study's trials stand; `retried` counts failed trials queued again, `resumed` the
    finished continuations of paused trials (tuner.search.schedule)."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    retried: int = 0
    running: int = 0
    waiting: int = 0
    resumed: int = 0

    @property
    def finished(self) -> int:
        """Trials that count towards `n_trials` and have finished: a retry in place of the trial
        it repeats, and a paused model once however many times it resumed."""
        return self.complete + self.pruned + self.failed - self.retried - self.resumed

    @property
    def budgeted(self) -> int:
        """Trials that count towards `n_trials`: finished, running or queued."""
        return self.finished + self.running + self.waiting

    def __add__(self, other: Counts) -> Counts:
        return Counts(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))


# Finished trials never change, so each study's first trials up to its first unfinished one are
# counted once and kept here: a count then costs the trials after them (about as many as are
# running), not the whole study. Every worker counts before it refills the queue, so at 5,000
# trials counting them all cost the workers of the load test more CPU than the storage did
# (BENCHMARKS.md). Kept per storage object (weakly: a storage no longer used takes its counts
# with it) and study name; the last trial counted (its id, number and end) is checked on each
# use, so a study made again under its name, or a trial committed late into the counted stretch,
# starts the count afresh.
_COUNTED: weakref.WeakKeyDictionary[Any, dict[str, tuple[int, tuple[object, ...], Counts]]] = (
    weakref.WeakKeyDictionary()
)


def count(study: optuna.Study) -> Counts:
    trials = study.get_trials(deepcopy=False)
    kept = _COUNTED.setdefault(study_storage(study), {})
    done, mark, counted = kept.get(study.study_name, (0, (), Counts()))
    if done and (len(trials) < done or _mark(trials[done - 1]) != mark):
        done, counted = 0, Counts()
    end = done
    while end < len(trials) and trials[end].state.is_finished():
        end += 1
    if end > done:
        counted = counted + _tally(trials[done:end])
        kept[study.study_name] = (end, _mark(trials[end - 1]), counted)
    return counted + _tally(trials[end:])


def _mark(trial: FrozenTrial) -> tuple[object, ...]:
    return (trial_id(trial), trial.number, trial.datetime_complete)


def _tally(trials: list[FrozenTrial]) -> Counts:
    n = {state: 0 for state in TrialState}
    for trial in trials:
        n[trial.state] += 1
    return Counts(
        complete=n[TrialState.COMPLETE],
        pruned=n[TrialState.PRUNED],
        failed=n[TrialState.FAIL],
        retried=sum(1 for t in trials if is_retry(t)),
        running=n[TrialState.RUNNING],
        waiting=n[TrialState.WAITING],
        resumed=sum(
            1
            for t in trials
            if t.state.is_finished() and CONTINUES in t.user_attrs and not is_retry(t)
        ),
    )


def models(trials: list[FrozenTrial]) -> int:
    """The models among `trials`, what `n_trials` counts: every trial but a retry (which takes
    the place of the trial it repeats) and a paused trial's continuation (its model was counted
    with its first trial)."""
    return sum(1 for t in trials if CONTINUES not in t.user_attrs and not is_retry(t))


def ahead(demand: int) -> int:
    """The queued trials kept ahead of `demand` workers (those running a trial, and, where the
    proxy refills, those that found none): refilled when half have been claimed. Each refill
    holds the queue's lock while it adds them, and every read of the queue's trials (a count
    before a refill) brings them all: with 256 workers, two per running trial made a refill add
    hundreds of trials under the lock (BENCHMARKS.md, the load test)."""
    return max(AHEAD, demand)


def budget(study: optuna.Study) -> int:
    return int(study.user_attrs.get(BUDGET_ATTR, 0))


def set_budget(study: optuna.Study, n_trials: int) -> None:
    """Make the study's budget `n_trials` (trials already finished or running stay)."""
    study.set_user_attr(BUDGET_ATTR, n_trials)
    refill(study)


def refill(
    study: optuna.Study, wait: bool = True, demand: int = 0, locks: HoldsLocks | None = None
) -> int:
    """Queue empty trials up to the stretch kept ahead of the workers (`ahead`: the running
    trials, or `demand` if more), within the budget; returns how many were queued. With
    `wait=False`, queue none while another process is refilling, rather than wait for it.
    `locks`: where the queue's lock is held, if not through the study's storage (the proxy's
    own refill holds its workers' lock in its own process, `ProxyRefill`)."""
    storage: Any = study_storage(study)  # its own caching view, which must see new trials

    def missing() -> int:
        c = count(study)
        return min(budget(study) - c.budgeted, ahead(max(c.running, demand)) - c.waiting)

    def once() -> int:
        n = missing()
        for _ in range(n):
            study.enqueue_trial({})
        return max(n, 0)

    # Look before taking the lock: once the whole budget is queued, every worker that finds the
    # queue short would otherwise wait its turn for the lock only to add nothing, hundreds of
    # them at a study's end (BENCHMARKS.md, the load test). What is queued, running or finished
    # only grows (a retry replaces the trial it retries), so a budget spent without the lock is
    # spent under it; the lock is still what keeps two refills from both adding.
    if missing() <= 0:
        return 0
    if locks is not None:
        try:
            with locks.exclusive(queue_lock(study.study_name), wait=wait):
                return once()
        except Busy:
            return 0
    if not wait:
        return locked_if_free(storage, queue_lock(study.study_name), once) or 0
    return locked(storage, queue_lock(study.study_name), once)


def claim(study: optuna.Study) -> optuna.Trial | None:
    """Take one queued trial, refilling the queue when it runs short; None when none is queued
    now: the budget is spent or, through the proxy, its refill has not landed yet (a worker
    looks again while trials run, `tuner.search.worker`).

    Unlike `Study.ask`, this never creates a trial beyond the budget, which keeps the number of
    trials exact however many workers run.
    """
    storage: Any = study_storage(study)
    beats = getattr(storage, "get_heartbeat_interval", lambda: None)() is not None
    served = claimed_trial(study, beats)
    if served is not None:
        return _claimed_in_one_call(study, served, beats)
    queue, running = _queue(study)
    # Refilling takes the lock and counts every trial: worth it only once the stretch ahead
    # has run half down, not before every claim (BENCHMARKS.md, idle workers).
    if len(queue) < ahead(running) // 2:
        refill(study)
        queue, running = _queue(study)
    # Start at a random one of the first few queued trials, about one per worker at work: workers
    # that all tried the first one would queue on its lock, and all but one would lose, trial
    # after trial. The queue is still taken about in order (seed configurations first).
    start = _CLAIMS.randrange(min(len(queue), running + 1) or 1)
    for waiting in queue[start:] + queue[:start]:
        if beats:
            # Before the claim, not after: a worker that dies between the two, or a claim lost
            # with a dropped connection, then leaves a trial that goes stale and is retried,
            # rather than one that stays RUNNING for ever.
            storage.record_heartbeat(waiting)
        try:
            # Succeeds for exactly one worker: the storage checks the trial is still WAITING.
            if storage.set_trial_state_values(waiting, state=TrialState.RUNNING):
                return live_trial(study, waiting)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another worker claimed it, and has finished it since this one looked
    return None


def _claimed_in_one_call(
    study: optuna.Study, served: tuple[int | None, int, int, bool], beats: bool
) -> optuna.Trial | None:
    """`claim` where the storage claims a queued trial in one call, and refills the queue
    itself (the proxy, `ProxyRefill`): no read of the queue first, no race for one trial lost
    by all but one worker, and no wait for the queue's lock. `served`: the call's answer."""
    chosen, waiting, running, spent = served
    if chosen is None and waiting == running == 0 and not spent:
        # Nothing queued or running, and budget left: the proxy's refill was held off by the
        # lock (a worker setting the budget, or a proxy just started, which grants no lock for
        # a lease period). A worker that found nothing would stop: this one refills, waiting
        # for the lock, and looks once more. (Not when the budget is spent: counting the study
        # here reads every trial the worker has not seen, hundreds of idle workers at once.)
        refill(study)
        chosen, waiting, running, _ = claimed_trial(study, beats) or (None, 0, 0, True)
    if chosen is None:
        # Queued trials held by other claims are as good as running: claimed at this moment.
        _SEEN_RUNNING[study] = running + waiting
        return None
    return live_trial(study, chosen)


# What the last claim through the proxy that found nothing saw running, by study object: a
# worker that finds nothing asks whether trials run elsewhere (`running_elsewhere`), and
# reading them brought it every trial finished since its last read: hundreds for each of the
# 256 idle workers of the load test, which stalled the proxy (BENCHMARKS.md).
_SEEN_RUNNING: weakref.WeakKeyDictionary[optuna.Study, int] = weakref.WeakKeyDictionary()


def running_elsewhere(study: optuna.Study) -> bool:
    """Whether any trial of the study runs, after a claim here found nothing: as that claim's
    answer said (through the proxy), else as the storage says."""
    seen = _SEEN_RUNNING.pop(study, None)
    if seen is not None:
        return seen > 0
    return bool(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


class ProxyRefill:
    """The queue's refill done by `tuner storage-proxy` itself, in its own process, as it
    answers claims (`tuner.storage.proxy_server`); `storage`: its caching storage, `locks`:
    its leases, the locks of its workers.

    Workers through the proxy that refilled the queue themselves each took the queue's lock
    through it (a lease, polled while another worker held it) and counted the study first (a
    read of every trial they had not yet seen): with 256 workers, the polling made 50% to 80%
    of all calls, and the stretch ahead followed the running trials, so the fewer ran, the
    fewer were queued (BENCHMARKS.md, the load test). Here one thread of the proxy's own
    refills, one study at a time, still under the queue's lock (a worker refills too when it
    sets the budget), and the stretch it keeps ahead follows the demand: the trials running
    and the claims that found nothing since its last refill. A claim that got a trial is
    answered at once; one that found nothing waits for the refill under way (or one it
    starts), and claims again: a worker that finds nothing backs off for longer and longer
    (`tuner.search.worker.idle_wait`), which left most of 256 workers starting at once idle
    for seconds while trials were queued.
    """

    def __init__(self, storage: optuna.storages.BaseStorage, locks: HoldsLocks) -> None:
        self.storage, self.locks = storage, locks
        self._lock = threading.Lock()
        self._studies: dict[tuple[int, str], optuna.Study] = {}
        self._refills: dict[int, concurrent.futures.Future[Refilled]] = {}  # under way
        self._hungry: collections.Counter[int] = collections.Counter()
        self._spent: dict[tuple[int, str], int] = {}  # study -> the budget found spent
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="refill")

    def __call__(
        self, study_id: int, chosen: int | None, waiting: int, running: int
    ) -> concurrent.futures.Future[Refilled] | None:
        """After a claim of the study `study_id` that got the trial `chosen` (None: none) and
        left `waiting` trials queued and `running` running: the refill the claim should wait
        for (how many trials it queues), or None. A claim that found nothing waits for the
        refill under way, or for one it starts; one that got a trial may start one, and waits
        for none."""
        with self._lock:
            if chosen is None:
                self._hungry[study_id] += 1
            under_way = self._refills.get(study_id)
            if under_way is not None:
                return under_way if chosen is None else None
            demand = running + self._hungry[study_id]
            if waiting >= ahead(demand) // 2:
                return None
            self._hungry.pop(study_id, None)
            started = self._thread.submit(self._refill, study_id, demand)
            self._refills[study_id] = started
        return started if chosen is None else None

    def _refill(self, study_id: int, demand: int) -> Refilled:
        try:
            study = self._study(study_id)
            n_trials = budget(study)
            key = (study_id, study.study_name)
            # What is queued, running or finished only grows (`refill`): a budget found spent
            # stays spent until it is raised. At a study's end every claim that found nothing
            # started a refill, and each counted every trial, twice: at 10,000 trials that
            # kept the proxy's one process busy and its calls took twice as long
            # (BENCHMARKS.md, the load test).
            if self._spent.get(key) == n_trials:
                return Refilled(0, True)
            queued = refill(study, wait=False, demand=demand, locks=self.locks)
            # Counted again in this process, from the trials its caching storage holds.
            spent = count(study).budgeted >= n_trials
            if spent:
                self._spent[key] = n_trials
            return Refilled(queued, spent)
        except Exception as e:  # the claims go on; the next one that runs short tries again
            logger.warning("refilling the queue of study %d failed: %s", study_id, e)
            return Refilled(0, False)
        finally:
            with self._lock:  # taken by `__call__` until it has recorded this refill
                del self._refills[study_id]

    def _study(self, study_id: int) -> optuna.Study:
        # By name too: a study deleted and made again may get the same id (SQLite).
        key = (study_id, self.storage.get_study_name_from_id(study_id))
        study = self._studies.get(key)
        if study is None:
            study = optuna.load_study(
                study_name=key[1],
                storage=self.storage,
                sampler=optuna.samplers.RandomSampler(),  # never asked: trials are enqueued
            )
            self._studies[key] = study
        return study


def _queue(study: optuna.Study) -> tuple[list[int], int]:
    """The ids of the queued (WAITING) trials, by number, and the number of RUNNING trials."""
    unfinished = study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
    queue = [trial_id(t) for t in unfinished if t.state == TrialState.WAITING]
    return queue, len(unfinished) - len(queue)
