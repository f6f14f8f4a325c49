"""What a study file becomes: frozen, typed objects, and the values their fields may take.

Imports nothing of tuner but `tuner.errors`; every other package reads its settings from here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# A second objective to minimize beside the metric: a Pareto front of accuracy against cost.
COST_OBJECTIVES = ("seconds_per_epoch", "n_params")
METRICS = {
    "val_loss": "minimize",
    "val_mae": "minimize",
    "val_mse": "minimize",
    "val_accuracy": "maximize",
}
CELLS = ("gru", "lstm")
ACTIVATIONS = ("tanh", "relu", "sigmoid", "elu", "gelu", "selu", "linear")
OPTIMIZERS = ("rmsprop", "adam", "sgd")
# `pause`: a trial reaching a rung is paused with a checkpoint and resumed when promoted
# (tuner.search.schedule); the others are Optuna's pruners, which stop a trial for good.
PRUNERS = ("hyperband", "successive-halving", "median", "pause", "none")
BACKENDS = ("jax", "tensorflow")  # as `tuner.training.backend.BACKENDS`
TASKS = ("forecast", "sequence-classification", "text-classification")
# The loss `crossentropy` is binary or sparse categorical, as the number of classes requires.
LOSSES = {
    "forecast": ("mse", "mae", "huber"),
    "sequence-classification": ("crossentropy",),
    "text-classification": ("crossentropy",),
}
TASK_METRICS = {
    "forecast": ("val_loss", "val_mae", "val_mse"),
    "sequence-classification": ("val_loss", "val_accuracy"),
    "text-classification": ("val_loss", "val_accuracy"),
}


@dataclass(frozen=True)
class Param:
    """One search-space parameter: a fixed value, a numeric range, or a list of choices."""

    name: str
    kind: str  # "fixed" | "int" | "float" | "categorical"
    value: Any = None
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def largest(self) -> Any:
        """The largest value this parameter can take."""
        if self.kind == "fixed":
            return self.value
        if self.kind == "categorical":
            return max(self.choices)
        return int(self.high) if self.kind == "int" else self.high

    def contains(self, value: Any) -> bool:
        """Whether `value` could be sampled from this parameter."""
        if self.kind == "fixed":
            return bool(value == self.value)
        if self.kind == "categorical":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.kind == "int" and value != int(value):
            return False
        if self.step and not math.isclose((value - self.low) / self.step % 1, 0, abs_tol=1e-9):
            return False
        return self.low <= value <= self.high


@dataclass(frozen=True)
class SearchSpace:
    cell: Param
    layers: Param
    units: Param
    dropout: Param
    recurrent_dropout: Param
    bidirectional: Param
    activation: Param
    learning_rate: Param
    # Text classification only: the vocabulary (token ids, counting padding and out-of-vocabulary),
    # the tokens read per text, and the size of a token's embedding.
    vocabulary_size: Param | None = None
    sequence_length: Param | None = None
    embedding_dim: Param | None = None


@dataclass(frozen=True)
class SamplerConfig:
    name: str = "tpe"
    # The sampler's (plus the worker's index) and, with the trial's number, its training's.
    seed: int = 0
    n_startup_trials: int = 10
    multivariate: bool = True


@dataclass(frozen=True)
class PrunerConfig:
    name: str = "hyperband"
    min_resource: int = 1
    reduction_factor: int = 3
    n_startup_trials: int = 5
    n_warmup_steps: int = 2
    # Whether the pruner may stop the seed configurations' trials like any other.
    prune_seed_configs: bool = True


@dataclass(frozen=True)
class DataConfig:
    """The [data] table: where the data is, the task, and how to cut it into examples.

    Fields that a task does not use keep their defaults.
    """

    task: str
    dataset: str | None
    path: Path | None
    split: tuple[float, float, float] = (0.5, 0.25, 0.25)
    # forecast
    target: str = ""
    features: tuple[str, ...] | None = None
    timestamp: str | None = None
    frequency: str | None = None  # a pandas offset alias ("10min", "1h"): the regular grid
    max_gap: int = 0  # missing rows in a row that interpolation may fill
    lookback: int = 0
    step: int = 1
    delay: int = 0
    period: int | None = None
    # classification
    text: str | None = None
    label: str | None = None
    seed: int = 0  # of the shuffled, stratified split
    # text classification: the largest vocabulary and sequence length the search space allows,
    # which is what the texts are vectorised with once, for every trial
    max_vocabulary_size: int = 0
    max_sequence_length: int = 0

    def key(self) -> dict[str, Any]:
        """What the prepared data depends on, for caching."""
        return {
            name: (str(value) if isinstance(value, Path) else value)
            for name, value in self.__dict__.items()
        }


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 10
    batch_size: int = 128
    steps_per_epoch: int | None = None
    patience: int = 3
    optimizer: str = "rmsprop"
    loss: str = "mse"  # "crossentropy" for the classification tasks
    jit_compile: bool = False  # XLA: slower first epoch, faster later ones (BENCHMARKS.md)
    # The Keras backend, "jax" or "tensorflow"; None: $TUNER_BACKEND, else the default
    # (`tuner.training.backend`). How trials run, not what they are: not part of the study's
    # definition.
    backend: str | None = None


@dataclass(frozen=True)
class WorkersConfig:
    heartbeat_interval: int = 20
    grace_period: int = 60
    max_retry: int = 2
    max_consecutive_failures: int = 3
    reconnect_timeout: int = 300
    # A worker starts afresh (re-executes itself between two trials) after this many trials, or
    # once its resident memory passes this many MB; 0 turns either off (BENCHMARKS.md). None:
    # the backend's own (`tuner.search.process.TRIALS_PER_PROCESS`): 20 on TensorFlow, whose
    # workers grow with every model, 0 on JAX, whose workers grow only about 3 MB a trial.
    max_trials_per_process: int | None = None
    max_memory_mb: int = 2500


@dataclass(frozen=True)
class AblationConfig:
    """The [ablation] table: whether `tuner run` ablates the best trial once the search's
    budget is spent (tuner.search.ablation), and with how many training seeds per variant."""

    enabled: bool = False
    # Measured on the shipped studies: 5 seeds halve the interval of 3 for 5/3 of the cost
    # (BENCHMARKS.md, "Ablation: how many seeds per variant").
    repeats: int = 5


@dataclass(frozen=True)
class StudyConfig:
    path: Path
    name: str
    metric: str
    direction: str
    n_trials: int
    seed_configs: bool
    sampler: SamplerConfig
    pruner: PrunerConfig
    data: DataConfig
    space: SearchSpace
    training: TrainingConfig
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    cost_objective: str | None = None
    ablation: AblationConfig = field(default_factory=AblationConfig)
    # [budget] epochs: the training epochs of all trials together, instead of `n_trials`.
    budget_epochs: int | None = None

    @property
    def directions(self) -> list[str]:
        """The study's objectives: the metric, then the cost when training time (or size) is a
        second objective."""
        return [self.direction] + (["minimize"] if self.cost_objective else [])

    @property
    def objective_names(self) -> list[str]:
        return [self.metric] + ([self.cost_objective] if self.cost_objective else [])

    @property
    def measure(self) -> str:
        """What the study's metric measures: `val_loss` measures the training loss."""
        return self.training.loss if self.metric == "val_loss" else self.metric[4:]
