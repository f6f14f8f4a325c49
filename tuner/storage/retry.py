"""A failed trial queued again, exactly once: a trial whose worker died (found stale by the
heartbeat) or was stopped goes back into the queue with its parameters (and its user
attributes, its `training_seed` among them).

`[workers] max_retry` bounds the failures of a trial whose worker died, not the interruptions:
a trial stopped by a signal (Ctrl-C, SIGTERM, a rolling restart of the workers) is queued again
however often that happens, and the numbers of the runs that were stopped are kept in the user
attribute `interrupted_runs`, which the limit leaves out.

Several workers may find the same trial stale at once, and a worker that lost the answer to its
own "fail" cannot tell whether it or another won. So the retry is queued under the study's queue
lock, after looking for one already made: the retry carries the user attribute `retry_of`, the
number of the trial it repeats.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from tuner.config import WorkersConfig
from tuner.storage.locks import locked
from tuner.storage.optuna_internals import repeats, study_storage

RETRY_OF = "retry_of"
# The numbers of the trials in a retry's history that a signal stopped (`max_retry` skips them).
INTERRUPTED_RUNS = "interrupted_runs"

with warnings.catch_warnings():
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    _Retry = optuna.storages.RetryHeartbeatStaleTrialCallback


def queue_lock(study_name: str) -> str:
    """The name of the lock held while a study's queue changes."""
    return f"queue:{study_name}"


class RetryOnce(_Retry):
    """Optuna's `RetryHeartbeatStaleTrialCallback`, queuing at most one retry of a trial, and
    counting towards `max_retry` the failures alone, not the interruptions."""

    def __init__(self, max_retry: int | None = None) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(max_retry=None)  # the limit is checked here, interruptions aside
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial, interrupted: bool = False) -> None:
        """Queue `trial` again, unless it is queued again already or, having failed (not been
        `interrupted`), it has used up its retries."""
        stopped = list(trial.user_attrs.get(INTERRUPTED_RUNS) or []) + [trial.number] * interrupted
        failures = len(repeats(trial)) + 1 - len(stopped)
        if self.max_retry is not None and failures > self.max_retry:
            return

        def queue_once() -> None:
            if retry_of(study, trial.number) is not None:
                return
            marked = copy.deepcopy(trial)  # afresh each time: Optuna's callback changes it
            marked.user_attrs = {**trial.user_attrs, RETRY_OF: trial.number}
            if stopped:
                marked.user_attrs[INTERRUPTED_RUNS] = stopped
            marked.user_attrs.pop("fail_reason", None)
            marked.user_attrs.pop("progress", None)  # the failed run's last epoch
            super(RetryOnce, self).__call__(study, marked)

        locked(study_storage(study), queue_lock(study.study_name), queue_once)


def queue_again(
    storage: optuna.storages.BaseStorage, study: optuna.Study, trial: FrozenTrial
) -> None:
    """Queue again `trial`, which a signal stopped, with its parameters and user attributes,
    through `storage`'s retry callback (none: not queued), without using up its retries."""
    retry = storage.get_heartbeat_stale_trial_callback()  # type: ignore[attr-defined]
    if isinstance(retry, RetryOnce):
        retry(study, trial, interrupted=True)
    elif retry is not None:
        retry(study, trial)


def retry_of(study: optuna.Study, number: int) -> FrozenTrial | None:
    """The trial queued to repeat trial `number`, if there is one."""
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get(RETRY_OF) == number:
            return t
    return None


def heartbeat_settings(workers: WorkersConfig | None) -> dict[str, Any]:
    """The heartbeat arguments of a storage that workers run trials on (none for a storage that
    is only read): the `[workers]` interval and grace period, and `RetryOnce`."""
    if workers is None:
        return {}
    return {
        "heartbeat_interval": workers.heartbeat_interval,
        "grace_period": workers.grace_period,
        "heartbeat_stale_trial_callback": RetryOnce(max_retry=workers.max_retry),
    }
