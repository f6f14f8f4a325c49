"""The objective: build the trial's model, train it, report the validation metric every epoch so
the pruner can stop it, and record on the trial what was done."""

from __future__ import annotations

import math
import os
import resource
import socket
import statistics
import time
from collections.abc import Callable
from typing import Any

import keras
import optuna

from tuner.config import StudyConfig
from tuner.data import Prepared
from tuner.errors import Interrupted, TrialFailed
from tuner.patches import check_patches
from tuner.patches.checks import patches_off
from tuner.patches.dropout import philox_dropout
from tuner.search import checkpoint
from tuner.search.companion import ABLATION_ATTR
from tuner.search.schedule import (
    CHECKPOINT,
    RESUMED_AT,
    RESUMED_VALUE,
    START_EPOCH,
    Scheduler,
    rungs,
)
from tuner.search.space import suggest, suggest_fixed
from tuner.search.trials import MODEL
from tuner.training.model import build_model
from tuner.training.seeds import training_seed

# The trial's latest epoch, planned epochs and metric, for `tuner run`'s progress display.
PROGRESS_ATTR = "progress"


class Objective:
    """Trains one model per trial on a study's prepared data.

    Args:
        config: The study.
        data: The prepared data, shared by every trial the worker runs.
        should_stop: Polled after every training batch; when it returns True the trial is
            abandoned with `Interrupted`.
        scheduler: With the pruner `pause`: saves checkpoints at rungs and pauses trials there
            (tuner.search.schedule); a trial with a `checkpoint` resumes from it.
    """

    def __init__(
        self,
        config: StudyConfig,
        data: Prepared,
        should_stop: Callable[[], bool] = lambda: False,
        scheduler: Scheduler | None = None,
    ) -> None:
        self.config = config
        self.data = data
        self.should_stop = should_stop
        self.scheduler = scheduler if config.pruner.name == "pause" else None
        # As few validation batches as fit: each batch shape is one more compile a trial.
        self.validation = data.evaluation("validation", config.training.batch_size)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        check_patches()  # a patch that refuses stops the worker before its first trial

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        config, training = self.config, self.config.training
        # An ablation run (tuner.search.ablation) trains fixed parameters from a given seed as
        # the search would, unpruned, and is scored on the test split.
        fixed = trial.user_attrs.get(ABLATION_ATTR)
        spec = suggest_fixed(trial, config.space) if fixed else suggest(trial, config.space)
        trial.set_user_attr("worker", self.worker)
        trial.set_user_attr("backend", keras.backend.backend())
        # Forget the previous trial's model; its memory goes with Python's own collection,
        # since a forced one here cost ~0.8 s a trial (BENCHMARKS.md, service overhead).
        keras.backend.clear_session(free_memory=False)
        if keras.backend.backend() == "jax":
            # JAX keeps every function it compiled in memory, the previous trials' models' too:
            # a worker grew ~20 MB a trial without this, and stays flat with it. What it
            # compiled is still on disk (tuner.training.backend.compilation_cache), read back in
            # no time.
            import jax

            jax.clear_caches()
        # The trial's own seed makes its weights, dropout masks and batch order depend on its
        # number alone, not on which worker ran it or what that worker ran before; a trial
        # queued again (its worker stopped or died) keeps the seed of the run it repeats.
        seed = fixed["seed"] if fixed else trial.user_attrs.get("training_seed")
        if seed is None:
            seed = training_seed(config.sampler.seed, trial.number)
        keras.utils.set_random_seed(seed)
        trial.set_user_attr("training_seed", seed)
        train = self.data.split("train", training.batch_size, shuffle=True, seed=seed)
        model = build_model(
            spec,
            self.data.inputs,
            self.data.head,
            optimizer=training.optimizer,
            loss=training.loss,
            metrics=self.data.metrics,
            jit_compile=training.jit_compile,
        )
        n_params = model.count_params()
        trial.set_user_attr("n_params", n_params)
        trial.set_user_attr(MODEL, int(trial.user_attrs.get(MODEL, trial.number)))
        resume = trial.user_attrs.get(CHECKPOINT) if self.scheduler and not fixed else None
        first = self.resume(trial, model, resume) if resume else 0
        trial.set_user_attr(START_EPOCH, first)
        report = _Report(
            trial,
            config.metric,
            config.direction,
            # Optuna reports and prunes single-objective studies only.
            single=config.cost_objective is None,
            # Seed configurations run to the end unless the study file lets the pruner stop them.
            prune=config.pruner.prune_seed_configs or "seed_config" not in trial.user_attrs,
            planned=training.epochs,
            earlier=list(resume["values"]) if resume else [],
        )
        if self.scheduler is not None and not fixed:
            report.pause = (self.scheduler, set(rungs(config)) | {training.epochs})
        callbacks = [
            report,
            keras.callbacks.EarlyStopping(
                monitor=config.metric,
                patience=training.patience,
                mode=config.direction[:3],
                # An ablation run is scored at its best epoch, as the search's trials are.
                restore_best_weights=bool(fixed),
            ),
            _Stop(self.should_stop),
        ]
        if fixed:  # an ablation run: an experiment, not a candidate to stop early
            report.prune = False
        start = time.perf_counter()
        try:
            # Dropout masks from Philox: the training step compiles faster on JAX.
            with philox_dropout():
                model.fit(
                    # With a step budget, epochs walk on through a repeated stream instead of
                    # restarting it.
                    train.repeat() if training.steps_per_epoch else train,
                    validation_data=self.validation,
                    epochs=training.epochs,
                    initial_epoch=first,
                    steps_per_epoch=training.steps_per_epoch,
                    callbacks=callbacks,
                    shuffle=False,
                    verbose=0,
                )
        finally:
            seconds = time.perf_counter() - start
            trial.set_user_attr("epochs", report.epochs or first)
            trial.set_user_attr("best_epoch", report.best_epoch)
            trial.set_user_attr("train_seconds", round(seconds, 3))
            if report.epochs:
                trial.set_user_attr("seconds_per_epoch", round(report.seconds_per_epoch(), 3))
                # The first epoch also traces (TensorFlow) or compiles (JAX) the model.
                trial.set_user_attr("first_epoch_seconds", round(report.durations[0], 3))
            if report.values and not report.single:
                # Optuna keeps intermediate values of single-objective studies only.
                trial.set_user_attr("epoch_values", report.values)
            trial.set_user_attr("worker_peak_rss_mb", _peak_rss_mb())
            # The patches this trial ran without: its model differs from theirs for its seed.
            trial.set_user_attr("patches_off", patches_off())
        if report.best is None:
            raise TrialFailed(f"no epoch finished, so there is no {config.metric}")
        if fixed:
            # Scored where nothing was chosen: the validation split picked the winner, its
            # epochs and its stopping, so an ablation run's own best validation value (kept
            # for the seed-luck question) would flatter every run alike.
            trial.set_user_attr("validation_value", report.best)
            report.best = self.test_score(model)
            trial.set_user_attr("scored_on", "test")
        if config.cost_objective == "seconds_per_epoch":
            return [report.best, report.seconds_per_epoch()]
        if config.cost_objective == "n_params":
            return [report.best, float(n_params)]
        return report.best

    def resume(self, trial: optuna.Trial, model: keras.Model, saved: dict[str, Any]) -> int:
        """Restore the checkpoint `saved` into `model`, report the epochs before it, and return
        its epoch, where training goes on."""
        assert self.scheduler is not None
        checkpoint.restore(model, self.scheduler.store, str(saved["artifact_id"]))
        epoch = int(saved["epoch"])
        if self.config.cost_objective is None:
            for step, value in enumerate(saved["values"], start=1):
                trial.report(float(value), step=step)
        # The restored model's metric: the checkpoint's last value, if it restored what was saved.
        scores = model.evaluate(self.validation, verbose=0, return_dict=True)
        trial.set_user_attr(RESUMED_VALUE, float(scores[self.config.metric.removeprefix("val_")]))
        trial.set_user_attr(RESUMED_AT, [*trial.user_attrs.get(RESUMED_AT, []), epoch])
        return epoch

    def test_score(self, model: keras.Model) -> float:
        """The model's metric on the test split (`val_mae` -> `mae` on test rows)."""
        test = self.data.evaluation("test", self.config.training.batch_size)
        scores = model.evaluate(test, verbose=0, return_dict=True)
        value = float(scores[self.config.metric.removeprefix("val_")])
        if not math.isfinite(value):
            raise TrialFailed(f"the test {self.config.metric.removeprefix('val_')} is {value}")
        return value


def _peak_rss_mb() -> int:
    """The worker process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


class _Report(keras.callbacks.Callback):
    """Reports the monitored metric after every epoch, keeps the best, prunes, times the epochs,
    and fails the trial as soon as the loss or the metric stops being finite."""

    def __init__(
        self,
        trial: optuna.Trial,
        monitor: str,
        direction: str,
        single: bool,
        prune: bool,
        planned: int = 0,
        earlier: list[float] | None = None,
    ) -> None:
        super().__init__()
        self.trial, self.monitor, self.single, self.prune = trial, monitor, single, prune
        self.planned = planned
        self.better = (lambda a, b: a < b) if direction == "minimize" else (lambda a, b: a > b)
        self.epochs = 0
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.durations: list[float] = []
        self.values: list[float] = []  # the monitored metric, epoch after epoch
        # With the pruner `pause`: the scheduler, and the epochs where it saves a checkpoint.
        self.pause: tuple[Scheduler, set[int]] | None = None
        self._began = 0.0
        for value in earlier or []:  # a resumed trial's epochs before its checkpoint
            self.values.append(value)
            if self.best is None or self.better(value, self.best):
                self.best, self.best_epoch = value, len(self.values)

    def seconds_per_epoch(self) -> float:
        """The median epoch, validation included; the first epoch, which also traces the
        model's functions, only when it is the only one."""
        steady = self.durations[1:] or self.durations
        return statistics.median(steady) if steady else 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._began = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.durations.append(time.perf_counter() - self._began)
        logs = logs or {}
        self.epochs = epoch + 1
        for key in ("loss", self.monitor):
            value = float(logs.get(key, math.nan))
            if not math.isfinite(value):
                raise TrialFailed(f"{key} became {value} at epoch {self.epochs}")
        value = float(logs[self.monitor])
        self.values.append(value)
        if self.best is None or self.better(value, self.best):
            self.best, self.best_epoch = value, self.epochs
        # What `tuner run` shows while the trial runs (cost-aware studies have no intermediate
        # values, so the storage gets it as a user attribute).
        self.trial.set_user_attr(
            PROGRESS_ATTR, {"epoch": self.epochs, "epochs": self.planned, "value": value}
        )
        if not self.single:
            return
        self.trial.report(value, step=self.epochs)
        if self.pause is not None and self.prune and self.epochs in self.pause[1]:
            self.pause[0].at_rung(self.trial, self.model, self.epochs, list(self.values))
        if self.prune and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {self.epochs}: {self.monitor}={value:.4g}")


class _Stop(keras.callbacks.Callback):
    def __init__(self, should_stop: Callable[[], bool]) -> None:
        super().__init__()
        self.should_stop = should_stop

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.should_stop():
            raise Interrupted("stopped by a signal")

    # A large validation split takes a while too (minutes for a big model on Jena's).
    on_test_batch_end = on_train_batch_end
