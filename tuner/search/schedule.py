"""Paused trials that resume (the pruner `pause`: promotion-type ASHA) and budgets in epochs.

Optuna has no paused state, a running trial cannot go back to the queue, and a finished trial's
attributes cannot change. So a model's training may span several trials, all carrying the user
attribute `model` (the number of its first trial):

- a trial reaching a rung (`min_resource * reduction_factor**k` epochs, below `[training]
  epochs`) saves a checkpoint (tuner.search.checkpoint) and records it in its user attribute
  `checkpoint` (artifact id, epoch, the metric's values so far, size). If its model is then in
  the top `1/reduction_factor` of the models that reached that rung it trains on in place;
  otherwise it is paused: finished PRUNED, with `paused_at` (the epoch);
- a paused trial is promoted (ASHA's rule: in the top `n // reduction_factor` of the `n` models
  that reached its epoch, highest epoch first) by a worker looking for work, under the study's
  queue lock; the decision is the study user attribute `promoted:<trial number>` (the number of
  its continuation), so two workers racing for it resume it once;
- the continuation is a new trial, queued with the same parameters and user attributes
  (`training_seed`, `model`, `checkpoint`) plus `continues` (the paused trial's number), and
  claimed at once by the worker that promoted it. It reports the earlier epochs' values first,
  so its curve is whole, restores the checkpoint, and records `resumed_at` (the epochs it resumed
  at) and `resumed_value` (the metric of the restored model, before any training);
- a trial that trains to `[training] epochs` saves a last checkpoint, so that raising the epochs
  of a finished study resumes its best trials rather than starting over. Such a continuation
  records `extends` (the epochs its model had), and trains on at each new rung while its model
  is the best there (ASHA alone would pause it at the first new rung until `reduction_factor`
  models had reached it, and spend the budget on new models instead of the one the epochs were
  raised for);
- a checkpoint is deleted once a later one of its model exists, and when the study has no work
  left, every checkpoint but those of the top `n // reduction_factor` (at least one) paused
  models at each epoch, the ones a larger budget would resume first. The study user attribute
  `checkpoint_space` says how many were deleted and kept, and their bytes.

A worker killed while training loses the epochs since its model's last checkpoint: its trial's
retry (tuner.storage.retry) carries the `checkpoint` attribute and resumes from it.

A budget in epochs (`[budget] epochs`, the study user attribute `budget_epochs`) counts the
epochs trained by every trial (resumed epochs once); new work (a promotion or a new trial)
starts while the epochs trained and reserved (each running trial's, up to its next rung) are
fewer than the budget.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.config import StudyConfig
from tuner.search.queue import budget, models
from tuner.search.trials import CONTINUES, MODEL, PAUSED_AT
from tuner.storage import live_trial, locked, queue_lock, study_storage, trial_id

logger = logging.getLogger("tuner.search.schedule")

CHECKPOINT = "checkpoint"
RESUMED_AT = "resumed_at"
RESUMED_VALUE = "resumed_value"
START_EPOCH = "start_epoch"
PROMOTED_PREFIX = "promoted:"
EXTENDS = "extends"
EPOCH_BUDGET_ATTR = "budget_epochs"
DELETED_ATTR = "deleted_checkpoints"
SPACE_ATTR = "checkpoint_space"
PROGRESS_ATTR = "progress"  # as `tuner.search.objective.PROGRESS_ATTR`


class Paused(optuna.TrialPruned):
    """A trial stops at a rung with a checkpoint, to be resumed if it is promoted."""


def scheduled(config: StudyConfig) -> bool:
    """Whether the study's work is handed out here rather than by `tuner.search.queue`'s
    stretch of queued trials: paused trials, or a budget in epochs."""
    return config.pruner.name == "pause" or config.budget_epochs is not None


def rungs(config: StudyConfig, epochs: int | None = None) -> list[int]:
    """The epochs where a trial may pause: `min_resource * reduction_factor**k`, below the
    study's `epochs`."""
    p, top = config.pruner, epochs or config.training.epochs
    found, r = [], p.min_resource
    while r < top:
        found.append(r)
        r *= p.reduction_factor
    return found


def epoch_budget(study: optuna.Study) -> int | None:
    value = study.user_attrs.get(EPOCH_BUDGET_ATTR)
    return None if value is None else int(value)


def trained(trial: FrozenTrial) -> int:
    """The epochs this trial trained itself (not those of the checkpoint it resumed from)."""
    progress = trial.user_attrs.get(PROGRESS_ATTR) or {}
    return max(0, int(progress.get("epoch", 0)) - int(trial.user_attrs.get(START_EPOCH, 0)))


def epochs_used(trials: Iterable[FrozenTrial], config: StudyConfig | None = None) -> int:
    """The epochs trained by every trial; with `config`, a running trial counts the epochs up
    to its next rung (or its last epoch), which it will train anyway."""
    used = 0
    for t in trials:
        if t.state == TrialState.WAITING:
            continue
        used += trained(t)
        if config is not None and t.state == TrialState.RUNNING:
            at = int((t.user_attrs.get(PROGRESS_ATTR) or {}).get("epoch", 0))
            resumed = int((t.user_attrs.get(CHECKPOINT) or {}).get("epoch", 0))
            at = max(at, int(t.user_attrs.get(START_EPOCH, 0)), resumed)
            stops = [r for r in rungs(config) if r > at] if config.pruner.name == "pause" else []
            used += (stops[0] if stops else config.training.epochs) - at
    return used


def models_at(trials: Iterable[FrozenTrial], epoch: int) -> dict[int, float]:
    """The metric at `epoch` of every model that reached it (one value per model, however many
    trials its training spans)."""
    found: dict[int, float] = {}
    for t in trials:
        value = t.intermediate_values.get(epoch)
        if value is not None and t.state != TrialState.WAITING:
            found.setdefault(int(t.user_attrs.get(MODEL, t.number)), value)
    return found


def top(values: dict[int, float], direction: str, k: int) -> list[int]:
    """The `k` best models of `values`."""
    return sorted(values, key=lambda m: values[m] if direction == "minimize" else -values[m])[:k]


def in_top(
    trials: list[FrozenTrial], model: int, epoch: int, config: StudyConfig, at_least: int = 0
) -> bool:
    """ASHA's rule: whether `model` is among the best `n // reduction_factor` (or `at_least`) of
    the `n` models that reached `epoch`."""
    values = models_at(trials, epoch)
    k = max(len(values) // config.pruner.reduction_factor, at_least)
    return model in top(values, config.direction, k)


def paused(study: optuna.Study, trials: list[FrozenTrial], epochs: int) -> list[FrozenTrial]:
    """The trials that stopped at their own checkpoint, below `epochs`, and whose model has not
    trained on since: not promoted, no later trial of their model, checkpoint not deleted. A
    complete trial is one only if it trained to the epochs its study had then (raised since):
    one that early stopping ended has nothing left to learn."""
    attrs = study.user_attrs
    deleted = set(attrs.get(DELETED_ATTR) or [])
    busy = {
        int(t.user_attrs.get(MODEL, t.number))
        for t in trials
        if t.state in (TrialState.WAITING, TrialState.RUNNING)
    }
    return [
        t
        for t in trials
        if t.state in (TrialState.PRUNED, TrialState.COMPLETE)
        and CHECKPOINT in t.user_attrs
        # its own checkpoint, at its last epoch (not one it resumed from and trained past)
        and int(t.user_attrs[CHECKPOINT]["epoch"]) == max(t.intermediate_values, default=-1)
        and int(t.user_attrs[CHECKPOINT]["epoch"]) < epochs
        and f"{PROMOTED_PREFIX}{t.number}" not in attrs
        and t.number not in deleted
        and int(t.user_attrs.get(MODEL, t.number)) not in busy
        and (t.state == TrialState.PRUNED or _trained_to_the_end(t))
    ]


def _trained_to_the_end(trial: FrozenTrial) -> bool:
    """Whether a complete trial trained to the `[training] epochs` it ran with, its last
    checkpoint there (not ended sooner by early stopping)."""
    planned = (trial.user_attrs.get(PROGRESS_ATTR) or {}).get("epochs")
    return planned is not None and int(trial.user_attrs[CHECKPOINT]["epoch"]) == int(planned)


def promotable(
    study: optuna.Study, trials: list[FrozenTrial], config: StudyConfig
) -> FrozenTrial | None:
    """The paused trial to resume next: from the highest epoch down, the best one in the top of
    its epoch (ASHA's rule). A complete trial is a candidate once the study's epochs were
    raised past those it trained to (`paused`): the best of those at its epoch is resumed
    however few they are."""
    candidates = paused(study, trials, config.training.epochs)
    sign = 1 if config.direction == "minimize" else -1
    candidates.sort(
        key=lambda t: (-_epoch(t), sign * float(t.user_attrs[CHECKPOINT]["values"][-1]))
    )
    for t in candidates:
        at_least = 1 if t.state == TrialState.COMPLETE else 0
        if in_top(trials, int(t.user_attrs.get(MODEL, t.number)), _epoch(t), config, at_least):
            return t
    return None


def _epoch(t: FrozenTrial) -> int:
    return int(t.user_attrs[CHECKPOINT]["epoch"])


def work_left(study: optuna.Study, config: StudyConfig) -> int:
    """How much work the study has left: epochs of its epoch budget, else models of its trial
    budget plus one if a paused trial is promotable now."""
    trials = study.get_trials(deepcopy=False)
    limit = epoch_budget(study)
    if limit is not None:
        return max(0, limit - epochs_used(trials, config))
    promote = config.pruner.name == "pause" and promotable(study, trials, config) is not None
    return max(0, budget(study) - models(trials)) + promote


class Scheduler:
    """Hands out a study's work under its queue lock: queued trials first (seed configurations,
    retries), then the promotion of a paused trial, then a new trial while the budget lasts.

    Args:
        config: The study.
        store: The study's artifact store (Optuna's), where checkpoints go.
    """

    def __init__(self, config: StudyConfig, store: Any) -> None:
        self.config, self.store = config, store
        self.pauses = config.pruner.name == "pause"

    def claim(self, study: optuna.Study) -> optuna.Trial | None:
        """Take the next piece of work as a running trial; None when there is none now. When
        no trial runs either, the study is done: its checkpoints are tidied (`tidy`)."""
        storage: Any = study_storage(study)
        beats = getattr(storage, "get_heartbeat_interval", lambda: None)() is not None

        def once() -> tuple[int | None, bool]:
            trials = study.get_trials(deepcopy=False)
            waiting = [t for t in trials if t.state == TrialState.WAITING]
            if not waiting:
                paused = promotable(study, trials, self.config) if self.pauses else None
                if paused is not None and self._budget_left(study, trials):
                    study.enqueue_trial(
                        paused.params,
                        user_attrs={
                            k: v
                            for k, v in paused.user_attrs.items()
                            if k
                            in (
                                "training_seed",
                                MODEL,
                                CHECKPOINT,
                                RESUMED_AT,
                                EXTENDS,
                                "seed_config",
                            )
                        }
                        | {CONTINUES: paused.number}
                        | (
                            {EXTENDS: _epoch(paused)}
                            if paused.state == TrialState.COMPLETE
                            else {}
                        ),
                    )
                elif self._budget_left(study, trials) and self._models_left(study, trials):
                    study.enqueue_trial({})
                else:
                    running = any(t.state == TrialState.RUNNING for t in trials)
                    return None, not running
                trials = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
                waiting = list(trials)
                if paused is not None:
                    study.set_user_attr(f"{PROMOTED_PREFIX}{paused.number}", waiting[0].number)
            chosen = trial_id(waiting[0])
            if beats:
                storage.record_heartbeat(chosen)
            if not storage.set_trial_state_values(chosen, state=TrialState.RUNNING):
                return None, False
            return chosen, False

        chosen, done = locked(storage, queue_lock(study.study_name), once)
        if chosen is not None:
            return live_trial(study, chosen)
        if done and self.pauses:
            self.tidy(study)
        return None

    def _budget_left(self, study: optuna.Study, trials: list[FrozenTrial]) -> bool:
        limit = epoch_budget(study)
        return limit is None or epochs_used(trials, self.config) < limit

    def _models_left(self, study: optuna.Study, trials: list[FrozenTrial]) -> bool:
        if epoch_budget(study) is not None:
            return True
        return models(trials) < budget(study)

    def at_rung(self, trial: optuna.Trial, model: Any, epoch: int, values: list[float]) -> None:
        """Save a checkpoint of `trial` at `epoch`, and pause it (raise `Paused`) unless its model
        is in the top of that rung; at the last epoch, save only."""
        from tuner.search import checkpoint  # Keras: imported by workers only

        previous = trial.user_attrs.get(CHECKPOINT)
        artifact_id, size = checkpoint.save(model, self.store, trial)
        trial.set_user_attr(
            CHECKPOINT,
            {"artifact_id": artifact_id, "epoch": epoch, "values": values, "bytes": size},
        )
        if previous is not None:
            # The model's newer checkpoint replaces it (also for a retry of this trial).
            if checkpoint.remove(self.store, previous["artifact_id"]):
                freed = int(trial.user_attrs.get("checkpoint_bytes_deleted", 0))
                trial.set_user_attr("checkpoint_bytes_deleted", freed + int(previous["bytes"]))
        if epoch >= self.config.training.epochs:
            return
        study = trial.study
        number = int(trial.user_attrs.get(MODEL, trial.number))

        # A model resumed because the study's epochs were raised goes on while it is the best
        # at the new rungs (`EXTENDS`).
        at_least = 1 if EXTENDS in trial.user_attrs else 0

        def decide() -> bool:
            trials = study.get_trials(deepcopy=False)
            return in_top(trials, number, epoch, self.config, at_least=at_least)

        if locked(study_storage(study), queue_lock(study.study_name), decide):
            return
        trial.set_user_attr(PAUSED_AT, epoch)
        raise Paused(f"paused at epoch {epoch}")

    def tidy(self, study: optuna.Study) -> None:
        """Delete the checkpoints no larger budget would resume first: all but those of the top
        `n // reduction_factor` (at least one) paused models at each epoch."""
        from tuner.search import checkpoint

        def once() -> None:
            trials = study.get_trials(deepcopy=False)
            if any(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in trials):
                return
            attrs = study.user_attrs
            deleted = set(attrs.get(DELETED_ATTR) or [])
            # Kept: at each epoch, the paused models in the top and the best of the others;
            # and the last checkpoints of complete trials, if `epochs` is raised, alike.
            keep: set[int] = set()
            by_epoch: dict[int, list[FrozenTrial]] = {}
            for t in paused(study, trials, self.config.training.epochs + 1):
                by_epoch.setdefault(_epoch(t), []).append(t)
            sign = 1 if self.config.direction == "minimize" else -1
            for epoch, group in by_epoch.items():
                group.sort(key=lambda t: sign * float(t.user_attrs[CHECKPOINT]["values"][-1]))
                keep.add(group[0].number)
                for t in group:
                    if in_top(trials, int(t.user_attrs.get(MODEL, t.number)), epoch, self.config):
                        keep.add(t.number)
            kept, kept_bytes, freed = 0, 0, 0
            for t in trials:
                saved = t.user_attrs.get(CHECKPOINT)
                # A failed trial's checkpoint is its retry's too.
                if saved is None or t.number in deleted or t.state == TrialState.FAIL:
                    continue
                if t.number in keep:
                    kept, kept_bytes = kept + 1, kept_bytes + int(saved["bytes"])
                    continue
                deleted.add(t.number)
                if checkpoint.remove(self.store, saved["artifact_id"]):
                    freed += int(saved["bytes"])
            # Freed by this tidy and earlier ones, and by models replacing their checkpoints.
            tidied = freed + int((attrs.get(SPACE_ATTR) or {}).get("tidied_bytes", 0))
            replaced = sum(int(t.user_attrs.get("checkpoint_bytes_deleted", 0)) for t in trials)
            study.set_user_attr(DELETED_ATTR, sorted(deleted))
            space = {
                "kept": kept,
                "kept_bytes": kept_bytes,
                "tidied_bytes": tidied,
                "deleted_bytes": tidied + replaced,
            }
            study.set_user_attr(SPACE_ATTR, space)
            logger.info("checkpoints: %s", space)

        locked(study_storage(study), queue_lock(study.study_name), once)
