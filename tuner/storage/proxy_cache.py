"""A proxy client's cache of a study's trials, in place of Optuna's `GrpcClientCache`, so that
reading the unfinished trials (what `tuner.search.queue.claim` does) costs what is unfinished
and what changed, not the whole study (issue 24).

It keeps what Optuna's cache keeps and asks the proxy the same question on every read: the
trials it last saw unfinished, and those newer than the newest it saw finished (a finished trial
never changes). Optuna's then filters and sorts every cached trial on each read; this one keeps
them in order of number as they arrive, and finds the unfinished ones by id. Reads return what
Optuna's returns: the same trials, by number.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Container

from optuna.trial import FrozenTrial, TrialState

# (study_id, included_trial_ids, trial_id_greater_than) -> the trials asked for, each with its
# id, raising `grpc.RpcError` as the call does (`tuner.storage.optuna_internals.request_trials`,
# which reads the ids, private to Optuna's trials, for this module).
Fetch = Callable[[int, list[int], int], list[tuple[int, FrozenTrial]]]

FINISHED = tuple(s for s in TrialState if s.is_finished())


class _Study:
    def __init__(self) -> None:
        self.numbers: list[int] = []  # sorted
        self.trials: list[FrozenTrial] = []  # the trial of each of `numbers`
        self.unfinished: dict[int, int] = {}  # trial id -> number
        self.last_finished_trial_id = -1

    def add(self, trial_id: int, trial: FrozenTrial) -> None:
        i = bisect.bisect_left(self.numbers, trial.number)
        if i < len(self.numbers) and self.numbers[i] == trial.number:
            self.trials[i] = trial
        else:  # new trials come last, so this is an append but for a late commit
            self.numbers.insert(i, trial.number)
            self.trials.insert(i, trial)
        if trial.state.is_finished():
            self.last_finished_trial_id = max(self.last_finished_trial_id, trial_id)
            self.unfinished.pop(trial_id, None)
        else:
            self.unfinished[trial_id] = trial.number

    def trial(self, number: int) -> FrozenTrial:
        return self.trials[bisect.bisect_left(self.numbers, number)]


class TrialCache:
    """The two calls `optuna.storages.GrpcStorageProxy` makes of its cache."""

    def __init__(self, fetch: Fetch) -> None:
        self._fetch = fetch
        self._studies: dict[int, _Study] = {}
        self._lock = threading.Lock()

    def delete_study_cache(self, study_id: int) -> None:
        with self._lock:
            self._studies.pop(study_id, None)

    def get_all_trials(
        self, study_id: int, states: Container[TrialState] | None
    ) -> list[FrozenTrial]:
        """The study's trials (in `states`, if given), by number; raises `KeyError` for a study
        the proxy does not know, as Optuna's cache does."""
        import grpc

        with self._lock:
            study = self._studies.setdefault(study_id, _Study())
            try:
                fetched = self._fetch(
                    study_id, list(study.unfinished), study.last_finished_trial_id
                )
            except grpc.RpcError as e:
                if isinstance(e, grpc.Call) and e.code() == grpc.StatusCode.NOT_FOUND:
                    self._studies.pop(study_id, None)
                    raise KeyError from e
                raise
            for fetched_id, trial in fetched:
                study.add(fetched_id, trial)
            if states is None:
                return list(study.trials)
            if any(s in states for s in FINISHED):
                return [t for t in study.trials if t.state in states]
            # Only unfinished trials can be asked for: the few that are, not the study.
            found = (study.trial(n) for n in sorted(set(study.unfinished.values())))
            return [t for t in found if t.state in states]
