"""A failed trial queued again, exactly once: a trial whose worker died (found stale by the
heartbeat) or was stopped goes back into the queue with its parameters.

Several workers may find the same trial stale at once, and a worker that lost the answer to its
own "fail" cannot tell whether it or another won. So the retry is queued under the study's queue
lock, after looking for one already made: the retry carries the user attribute `retry_of`, the
number of the trial it repeats.
"""

from __future__ import annotations

import copy
import warnings

import optuna
from optuna.trial import FrozenTrial

from tuner.storage.locks import locked
from tuner.storage.optuna_internals import study_storage

RETRY_OF = "retry_of"

with warnings.catch_warnings():
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    _Retry = optuna.storages.RetryHeartbeatStaleTrialCallback


def queue_lock(study_name: str) -> str:
    """The name of the lock held while a study's queue changes."""
    return f"queue:{study_name}"


class RetryOnce(_Retry):
    """Optuna's `RetryHeartbeatStaleTrialCallback`, queuing at most one retry of a trial."""

    def __init__(self, max_retry: int | None = None) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(max_retry=max_retry)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        def queue_once() -> None:
            if retry_of(study, trial.number) is not None:
                return
            marked = copy.deepcopy(trial)  # afresh each time: Optuna's callback changes it
            marked.user_attrs = {**trial.user_attrs, RETRY_OF: trial.number}
            marked.user_attrs.pop("fail_reason", None)
            marked.user_attrs.pop("progress", None)  # the failed run's last epoch
            super(RetryOnce, self).__call__(study, marked)

        locked(study_storage(study), queue_lock(study.study_name), queue_once)


def retry_of(study: optuna.Study, number: int) -> FrozenTrial | None:
    """The trial queued to repeat trial `number`, if there is one."""
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get(RETRY_OF) == number:
            return t
    return None
