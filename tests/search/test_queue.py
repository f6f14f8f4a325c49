from __future__ import annotations

import gc
import multiprocessing as mp
import random
import threading
import time
from collections import Counter

import optuna
import pytest
from optuna.trial import TrialState

from tuner.config import WorkersConfig
from tuner.search.queue import AHEAD, ahead, budget, claim, count, set_budget
from tuner.storage import (
    exclusive,
    open_storage,
    queue_lock,
    study_storage,
    trial_id,
)

WORKERS = WorkersConfig(heartbeat_interval=5, grace_period=30)


def _study(url: str, name: str = "q") -> optuna.Study:
    storage = open_storage(url, WORKERS)
    try:
        return optuna.create_study(study_name=name, storage=storage)
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(study_name=name, storage=storage)


def test_only_a_short_stretch_of_the_budget_is_queued(tmp_path) -> None:
    study = _study(f"sqlite:///{tmp_path / 'q.db'}")
    set_budget(study, 50)
    assert budget(study) == 50
    assert count(study).waiting == AHEAD
    ran = 0
    while (trial := claim(study)) is not None:
        c = count(study)
        assert c.waiting <= ahead(c.running)
        study.tell(trial, float(trial.number))
        ran += 1
    assert ran == 50 and len(study.trials) == 50
    assert all(t.state == TrialState.COMPLETE for t in study.trials)


def test_raising_the_budget_queues_more_and_lowering_it_queues_none(tmp_path) -> None:
    study = _study(f"sqlite:///{tmp_path / 'q.db'}")
    set_budget(study, 3)
    for _ in range(3):
        trial = claim(study)
        assert trial is not None
        study.tell(trial, 1.0)
    assert claim(study) is None
    set_budget(study, 5)
    assert count(study).waiting == 2
    set_budget(study, 4)  # trials already queued stay queued; nothing more is added
    assert count(study).waiting == 2


def test_a_spent_budget_is_seen_without_waiting_for_the_lock(tmp_path) -> None:
    # Hundreds of workers at a study's end each found the queue short and waited their turn for
    # the lock only to add nothing. With the lock held elsewhere, a claim on a study whose whole
    # budget is queued or finished must still answer at once.
    study = _study(f"sqlite:///{tmp_path / 'q.db'}")
    set_budget(study, 2)
    first = claim(study)
    assert first is not None
    study.tell(first, 0.0)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with exclusive(study_storage(study), queue_lock(study.study_name)):
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        answered: list[object] = []
        claimer = threading.Thread(target=lambda: answered.append(claim(study)))
        claimer.start()
        claimer.join(10)
        assert not claimer.is_alive(), "the claim waited for the queue's lock"
        second = answered[0]
        assert second is not None and second.number == 1
        study.tell(second, 0.0)
        assert claim(study) is None
        # With budget left to queue, a refill still takes the lock.
        set_budget_thread = threading.Thread(target=set_budget, args=(study, 3))
        set_budget_thread.start()
        set_budget_thread.join(1)
        assert set_budget_thread.is_alive()
    finally:
        release.set()
        holder.join()
    set_budget_thread.join(10)
    assert count(study).waiting == 1


def test_a_trial_claimed_in_one_call_is_left_as_a_claim_and_a_heartbeat_leave_it(
    storage_url: str,
) -> None:
    # What the proxy answers a claim with (`claimed_in`, one transaction), against Optuna's
    # own calls on the database: the same state, start time and heartbeat; the queue's first
    # trial taken first; None once nothing is queued.
    from tuner.storage.optuna_internals import claimed_in, stale_trial_ids

    study = _study(storage_url)
    for x in range(3):
        study.enqueue_trial({"x": x})
    storage = study_storage(study)
    study_id = storage.get_study_id_from_name("q")
    first, second, third = (trial_id(t) for t in study.get_trials())
    assert storage.get_trial(first).datetime_start is None
    assert claimed_in(storage, study_id, heartbeat=True) == (first, 2, 1)
    storage.record_heartbeat(second)  # Optuna's way, for the other
    assert storage.set_trial_state_values(second, TrialState.RUNNING)
    ours, theirs = storage.get_trial(first), storage.get_trial(second)
    assert ours.state == theirs.state == TrialState.RUNNING
    assert ours.datetime_start is not None and theirs.datetime_start is not None
    assert abs((theirs.datetime_start - ours.datetime_start).total_seconds()) < 60
    assert stale_trial_ids(storage, study_id, 3600) == []  # both beat: neither is stale
    time.sleep(2.2)  # SQLite's clock counts whole seconds
    assert set(stale_trial_ids(storage, study_id, 1)) == {first, second}
    assert claimed_in(storage, study_id, heartbeat=False) == (third, 0, 3)
    assert set(stale_trial_ids(storage, study_id, 1)) == {first, second}  # the third: no beat
    assert claimed_in(storage, study_id, heartbeat=True) == (None, 0, 3)
    assert [t.state for t in study.get_trials()] == [TrialState.RUNNING] * 3


def test_the_proxys_refill_keeps_ahead_of_the_claims_that_found_nothing(
    storage_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stretch the proxy keeps queued follows the demand, not only the running trials:
    # with 8 running and 13 claims that found nothing since its last refill, it queues 21,
    # where one per running trial queued 8 and left most of the workers waiting. Under the
    # lock workers take: held by one, the proxy queues none. A claim that found nothing waits
    # for the refill; one that got a trial waits for none. A budget found spent is not counted
    # again until it is raised.
    from tuner.search import queue
    from tuner.search.queue import BUDGET_ATTR, ProxyRefill
    from tuner.storage.optuna_internals import claimed_in
    from tuner.storage.proxy_server import Leases

    study = _study(storage_url)
    set_budget(study, 40)
    storage = study_storage(study)
    study_id = storage.get_study_id_from_name("q")
    for _ in range(AHEAD):
        assert claimed_in(storage, study_id, heartbeat=True)[0] is not None
    leases = Leases(60, opens_after=0)
    proxy = ProxyRefill(storage, leases)
    for _ in range(12):  # claims that found nothing, while the queue seemed long enough
        assert proxy(study_id, None, 20, 8) is None
    started = proxy(study_id, None, 0, 8)  # one that found it short
    assert started is not None and started.result() == (21, False) and 21 == ahead(8 + 13)
    assert count(study).waiting == 21
    assert proxy(study_id, None, 19, 9) is None  # the demand counted afresh: long enough
    assert leases.acquire(queue_lock("q"), "a worker")
    started = proxy(study_id, None, 0, 30)
    assert started is not None and started.result() == (0, False)  # held off by the lock
    leases.release(queue_lock("q"), "a worker")
    assert proxy(study_id, 1, 0, 40) is None  # got a trial: starts a refill, waits for none
    deadline = time.monotonic() + 10
    while count(study).budgeted < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert count(study).budgeted == 40  # the rest of the budget, no more
    started = proxy(study_id, None, 0, 40)  # (may join the refill still under way)
    assert started is not None and started.result().spent  # workers may stop
    counted: list[optuna.Study] = []
    monkeypatch.setattr(queue, "count", lambda s: counted.append(s) or count(s))
    for _ in range(3):  # the claims that found nothing at the study's end
        started = proxy(study_id, None, 0, 40)
        assert started is not None and started.result() == (0, True)
    assert counted == []  # no trial read: the budget is as it was when found spent
    study.set_user_attr(BUDGET_ATTR, 44)  # raised, as `tuner run` with a larger n_trials does
    started = proxy(study_id, None, 0, 40)
    assert started is not None and started.result() == (4, True) and counted
    assert count(study).budgeted == 44


def _counted_afresh(study: optuna.Study) -> tuple[int, ...]:
    trials = study.get_trials(deepcopy=False)
    return tuple(sum(t.state == s for t in trials) for s in TrialState)


def _counted(study: optuna.Study) -> tuple[int, ...]:
    c = count(study)
    by_state = {
        TrialState.COMPLETE: c.complete,
        TrialState.PRUNED: c.pruned,
        TrialState.FAIL: c.failed,
        TrialState.RUNNING: c.running,
        TrialState.WAITING: c.waiting,
    }
    return tuple(by_state[s] for s in TrialState)


def test_counting_keeps_what_is_finished_and_still_sees_every_change(tmp_path) -> None:
    # Counts are kept for the finished trials up to the first unfinished one; trials that end
    # out of order, new ones, and a study made again under its name must all still be seen.
    url = f"sqlite:///{tmp_path / 'q.db'}"
    study = _study(url)
    set_budget(study, 12)
    running = [claim(study) for _ in range(3)]
    assert _counted(study) == _counted_afresh(study)
    study.tell(running[2], 1.0)  # ends before the first two
    assert _counted(study) == _counted_afresh(study)
    study.tell(running[0], state=TrialState.PRUNED)
    study.tell(running[1], state=TrialState.FAIL)
    assert _counted(study) == _counted_afresh(study)
    assert count(study).finished == 3
    while (trial := claim(study)) is not None:
        study.tell(trial, 0.0)
        assert _counted(study) == _counted_afresh(study)
    assert count(study).complete == 10 and count(study).finished == 12
    storage = study_storage(study)
    optuna.delete_study(study_name="q", storage=storage)
    again = optuna.create_study(study_name="q", storage=storage)
    set_budget(again, 2)
    assert count(again).finished == 0 and count(again).waiting == 2


def test_counts_kept_for_a_storage_go_with_it(tmp_path) -> None:
    # A long-lived process (the dashboard, a launcher) opens storages again and again: what
    # counting keeps for one must not outlive it.
    from tuner.search import queue

    before = len(queue._COUNTED)
    for i in range(3):
        study = _study(f"sqlite:///{tmp_path / f'{i}.db'}")
        set_budget(study, 2)
        study.tell(claim(study), 0.0)
        assert count(study).finished == 1
        assert len(queue._COUNTED) == before + 1
        del study
        gc.collect()
    assert len(queue._COUNTED) == before


def _worker(url: str, results: mp.Queue) -> None:
    study = _study(url)
    ran = 0
    while (trial := claim(study)) is not None:
        time.sleep(0.01)
        study.tell(trial, 0.0)
        ran += 1
    results.put(ran)


@pytest.mark.slow
def test_processes_refilling_together_keep_the_count_exact(storage_url: str) -> None:
    study = _study(storage_url)
    set_budget(study, 60)
    context = mp.get_context("spawn")
    results = context.Queue()
    processes = [context.Process(target=_worker, args=(storage_url, results)) for _ in range(4)]
    for p in processes:
        p.start()
    ran = [results.get(timeout=300) for _ in processes]
    for p in processes:
        p.join(timeout=60)
    assert sum(ran) == 60
    trials = optuna.load_study(study_name="q", storage=storage_url).trials
    states = Counter(t.state for t in trials)
    assert states == {TrialState.COMPLETE: 60}


def _claimed_after_seed_0(study: optuna.Study) -> list[int]:
    random.seed(0)  # what every trial's keras.utils.set_random_seed does to Python's `random`
    claimed = []
    for _ in range(6):
        trial = claim(study)
        assert trial is not None
        claimed.append(trial.number)
    return claimed


def test_workers_whose_trials_reseed_random_alike_do_not_claim_in_lockstep(tmp_path) -> None:
    # Two workers training the same seed: the queue's random start must not follow the seed,
    # or they would go for the same trial, claim after claim.
    studies = [_study(f"sqlite:///{tmp_path / f'{name}.db'}", name) for name in ("a", "b")]
    for study in studies:
        set_budget(study, 40)
        for _ in range(7):  # others at work: the start is drawn among the first 8 queued
            trial = claim(study)
            assert trial is not None
    assert _claimed_after_seed_0(studies[0]) != _claimed_after_seed_0(studies[1])
