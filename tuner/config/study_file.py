"""Reading study files: TOML read with the standard library into the objects of
`tuner.config.schema`.

Every rule a study file can break is checked here, before anything touches data or storage, and
reported as one line naming the file, the field, the rule and the value.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from tuner.config.schema import (
    ACTIVATIONS,
    BACKENDS,
    CELLS,
    COST_OBJECTIVES,
    LOSSES,
    METRICS,
    OPTIMIZERS,
    PRUNERS,
    TASK_METRICS,
    TASKS,
    AblationConfig,
    DataConfig,
    Param,
    PrunerConfig,
    SamplerConfig,
    SearchSpace,
    StudyConfig,
    TrainingConfig,
    WorkersConfig,
)
from tuner.errors import ConfigError


class _Table:
    """One TOML table being read: remembers which keys were used, so unknown ones are reported."""

    def __init__(self, file: Path, name: str, raw: Any) -> None:
        self.file, self.name = file, name
        if not isinstance(raw, dict):
            raise ConfigError(f"{file}: [{name}] must be a table, got {raw!r}")
        self.raw: dict[str, Any] = raw
        self.used: set[str] = set()

    def fail(self, key: str, rule: str, value: Any) -> ConfigError:
        return ConfigError(f"{self.file}: [{self.name}] {key}: {rule}, got {value!r}")

    def get(
        self,
        key: str,
        kind: type | tuple[type, ...],
        default: Any = ...,
        check: Callable[[Any], bool] | None = None,
        rule: str = "",
    ) -> Any:
        self.used.add(key)
        if key not in self.raw:
            if default is ...:
                raise ConfigError(f"{self.file}: [{self.name}] {key}: is required but missing")
            return default
        value = self.raw[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise self.fail(key, f"must be of type {names}", value)
        if check is not None and not check(value):
            raise self.fail(key, rule, value)
        bounds = _BOUNDS.get((self.name, key))
        if bounds is not None and isinstance(value, int) and not bounds[0] <= value <= bounds[1]:
            raise self.fail(key, f"must be in [{bounds[0]}, {bounds[1]}]", value)
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: Any = ...) -> Any:
        return self.get(
            key, str, default, lambda v: v in choices, f"must be one of {', '.join(choices)}"
        )

    def done(self) -> None:
        unknown = sorted(set(self.raw) - self.used)
        if unknown:
            allowed = ", ".join(sorted(self.used))
            raise self.fail(unknown[0], f"unknown key (allowed: {allowed})", self.raw[unknown[0]])


def _positive(v: Any) -> bool:
    return bool(v > 0)


def load_study_config(path: str | Path) -> StudyConfig:
    """Read and validate a study file."""
    file = Path(path)
    if file.is_dir():
        raise ConfigError(f"{file}: is a folder, not a study file")
    if not file.is_file():
        raise ConfigError(f"{file}: study file not found")
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{file}: not valid TOML: {e}") from e
    except OSError as e:
        raise ConfigError(f"{file}: cannot be read: {e.strerror or e}") from None
    _check_numbers(file, raw)
    unknown = sorted(set(raw) - set(_SECTIONS))
    if unknown:
        raise ConfigError(
            f"{file}: unknown table [{unknown[0]}] (allowed: {', '.join(_SECTIONS)})"
        )
    tables = {k: _Table(file, k, raw.get(k, {})) for k in _SECTIONS}

    study = tables["study"]
    name = study.get("name", str, check=lambda v: v.strip() != "", rule="must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        # Shown cut short: the point is its length.
        raise ConfigError(
            f"{file}: [study] name: must be at most {MAX_NAME_LENGTH} characters (Optuna's "
            f"column), got {len(name)} characters ({name[:20]!r}...)"
        )
    metric = study.choice("metric", tuple(METRICS), "val_loss")
    direction = study.choice("direction", ("minimize", "maximize"), METRICS[metric])
    if direction != METRICS[metric]:
        raise study.fail("direction", f"{metric} must be {METRICS[metric]}d", direction)
    n_trials = study.get("n_trials", int, 20, _positive, "must be > 0")
    budget_epochs = tables["budget"].get("epochs", int, None, _positive, "must be > 0")
    if budget_epochs is not None and "n_trials" in study.raw:
        raise tables["budget"].fail(
            "epochs",
            "give one budget: [study] n_trials or [budget] epochs, not both",
            budget_epochs,
        )
    seed_configs = study.get("seed_configs", bool, True)
    cost_objective = study.choice("cost_objective", COST_OBJECTIVES, None)
    pruner = _pruner(tables["pruner"], multi_objective=cost_objective is not None)

    data = _data(tables["data"], file.parent)
    if metric not in TASK_METRICS[data.task]:
        rule = (
            "val_accuracy needs a classification task"
            if metric == "val_accuracy"
            else f'{metric} needs task = "forecast"'
        )
        raise study.fail("metric", rule, metric)
    space = _space(tables["space"], data.task)
    if data.task == "text-classification":
        assert space.vocabulary_size is not None and space.sequence_length is not None
        data = replace(
            data,
            max_vocabulary_size=int(space.vocabulary_size.largest()),
            max_sequence_length=int(space.sequence_length.largest()),
        )
    config = StudyConfig(
        path=file,
        name=name,
        metric=metric,
        direction=direction,
        n_trials=n_trials,
        seed_configs=seed_configs,
        sampler=_sampler(tables["sampler"]),
        pruner=pruner,
        data=data,
        space=space,
        training=_training(tables["training"], data.task),
        workers=_workers(tables["workers"]),
        ablation=_ablation(tables["ablation"]),
        cost_objective=cost_objective,
        budget_epochs=budget_epochs,
    )
    for table in tables.values():
        table.done()
    return config


_SECTIONS = (
    "study",
    "budget",
    "sampler",
    "pruner",
    "data",
    "space",
    "training",
    "workers",
    "ablation",
)


def _sampler(t: _Table) -> SamplerConfig:
    return SamplerConfig(
        name=t.choice("name", ("tpe", "random"), "tpe"),
        seed=t.get("seed", int, 0),
        n_startup_trials=t.get("n_startup_trials", int, 10, lambda v: v >= 0, "must be >= 0"),
        multivariate=t.get("multivariate", bool, True),
    )


def _pruner(t: _Table, multi_objective: bool) -> PrunerConfig:
    # Optuna prunes single-objective studies only: a cost objective makes two.
    name = t.choice("name", PRUNERS, "none" if multi_objective else "hyperband")
    if multi_objective and name != "none":
        raise t.fail(
            "name",
            "a study with a cost_objective cannot be pruned (Optuna prunes single-objective "
            'studies only); use name = "none"',
            name,
        )
    return PrunerConfig(
        name=name,
        min_resource=t.get("min_resource", int, 1, _positive, "must be > 0"),
        reduction_factor=t.get("reduction_factor", int, 3, lambda v: v >= 2, "must be >= 2"),
        n_startup_trials=t.get("n_startup_trials", int, 5, lambda v: v >= 0, "must be >= 0"),
        n_warmup_steps=t.get("n_warmup_steps", int, 2, lambda v: v >= 0, "must be >= 0"),
        prune_seed_configs=t.get("prune_seed_configs", bool, True),
    )


def _data(t: _Table, base: Path) -> DataConfig:
    task = t.choice("task", TASKS, "forecast")
    dataset = t.get("dataset", str, None)
    path = t.get("path", str, None)
    if (dataset is None) == (path is None):
        raise t.fail("path", "give exactly one of `path` and `dataset`", path)
    split = t.get("split", list, [0.5, 0.25, 0.25])
    if (
        len(split) != 3
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in split)
        or min(split) <= 0
        or not math.isclose(sum(split), 1.0)
    ):
        raise t.fail(
            "split",
            "must be three positive fractions (train, validation, test) summing to 1",
            split,
        )
    common = DataConfig(
        task=task,
        dataset=dataset,
        path=_resolve(t, base, path) if path is not None else None,
        split=(float(split[0]), float(split[1]), float(split[2])),
    )
    if task == "forecast":
        return _forecast(t, common)
    # Built-in datasets know their own columns; a file's must be named.
    column = ... if path is not None else None
    return replace(
        common,
        text=t.get("text", str, column) if task == "text-classification" else None,
        label=t.get("label", str, column) if task == "text-classification" else None,
        seed=t.get("seed", int, 0),
    )


def _resolve(t: _Table, base: Path, path: str) -> Path:
    try:
        return (base / path).resolve()
    except (RuntimeError, OSError) as e:  # Python 3.11-3.12 raise RuntimeError on a loop
        raise t.fail("path", f"cannot be followed ({e})", path) from None


def _forecast(t: _Table, common: DataConfig) -> DataConfig:
    features = t.get("features", list, None)
    if features is not None and (not features or not all(isinstance(f, str) for f in features)):
        raise t.fail("features", "must be a non-empty list of column names", features)
    timestamp = t.get("timestamp", str, None)
    frequency = t.get("frequency", str, None)
    if frequency is not None:
        if timestamp is None:
            raise t.fail("frequency", "needs a `timestamp` column to put on the grid", frequency)
        if not _is_frequency(frequency):
            raise t.fail(
                "frequency", 'must be a pandas frequency such as "10min" or "1h"', frequency
            )
    max_gap = t.get("max_gap", int, 0, lambda v: v >= 0, "must be >= 0")
    if max_gap and frequency is None:
        raise t.fail(
            "max_gap", "needs a `frequency` (gaps are missing rows of a regular grid)", max_gap
        )
    return replace(
        common,
        target=t.get("target", str),
        features=tuple(features) if features is not None else None,
        timestamp=timestamp,
        frequency=frequency,
        max_gap=max_gap,
        lookback=t.get("lookback", int, check=_positive, rule="must be > 0"),
        step=t.get("step", int, 1, _positive, "must be > 0"),
        delay=t.get("delay", int, check=lambda v: v >= 0, rule="must be >= 0"),
        period=t.get("period", int, None, _positive, "must be > 0"),
    )


def _is_frequency(value: str) -> bool:
    import pandas as pd

    try:
        pd.tseries.frequencies.to_offset(value)
    except ValueError:
        return False
    return True


def _training(t: _Table, task: str) -> TrainingConfig:
    losses = LOSSES[task]
    return TrainingConfig(
        epochs=t.get("epochs", int, 10, _positive, "must be > 0"),
        batch_size=t.get("batch_size", int, 128, _positive, "must be > 0"),
        steps_per_epoch=t.get("steps_per_epoch", int, None, _positive, "must be > 0"),
        patience=t.get("patience", int, 3, _positive, "must be > 0"),
        optimizer=t.choice("optimizer", OPTIMIZERS, "rmsprop"),
        jit_compile=t.get("jit_compile", bool, False),
        backend=t.choice("backend", BACKENDS, None),
        loss=t.get(
            "loss",
            str,
            losses[0],
            lambda v: v in losses,
            f"must be one of {', '.join(losses)} for task {task}",
        ),
    )


def _ablation(t: _Table) -> AblationConfig:
    return AblationConfig(
        enabled=t.get("enabled", bool, False),
        repeats=t.get(
            "repeats",
            int,
            AblationConfig.repeats,
            lambda v: v >= 2,
            "must be >= 2 (an interval needs two)",
        ),
    )


def _workers(t: _Table) -> WorkersConfig:
    interval = t.get("heartbeat_interval", int, 20, _positive, "must be > 0")
    grace = t.get("grace_period", int, 3 * interval, _positive, "must be > 0")
    if grace <= interval:
        raise t.fail("grace_period", f"must be > heartbeat_interval ({interval})", grace)
    return WorkersConfig(
        heartbeat_interval=interval,
        grace_period=grace,
        max_retry=t.get("max_retry", int, 2, lambda v: v >= 0, "must be >= 0"),
        max_consecutive_failures=t.get(
            "max_consecutive_failures", int, 3, _positive, "must be > 0"
        ),
        reconnect_timeout=t.get("reconnect_timeout", int, 300, lambda v: v >= 0, "must be >= 0"),
        max_trials_per_process=t.get(
            "max_trials_per_process", int, None, lambda v: v >= 0, "must be >= 0 (0: no limit)"
        ),
        max_memory_mb=t.get(
            "max_memory_mb", int, 2500, lambda v: v >= 0, "must be >= 0 (0: no limit)"
        ),
    )


# name: (default, value type, rule for every value, rule text)
_SPACE: Mapping[str, tuple[Any, type, Callable[[Any], bool], str]] = {
    "cell": (list(CELLS), str, lambda v: v in CELLS, f"must be one of {', '.join(CELLS)}"),
    "layers": ({"low": 1, "high": 2}, int, lambda v: 1 <= v <= 8, "must be in [1, 8]"),
    "units": (
        {"low": 16, "high": 64, "log": True},
        int,
        lambda v: 1 <= v <= 4096,
        "must be in [1, 4096]",
    ),
    "dropout": ({"low": 0.0, "high": 0.5}, float, lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "recurrent_dropout": (
        {"low": 0.0, "high": 0.5},
        float,
        lambda v: 0 <= v < 1,
        "must be in [0, 1)",
    ),
    "bidirectional": ([False, True], bool, lambda v: True, ""),
    "activation": (
        "tanh",
        str,
        lambda v: v in ACTIVATIONS,
        f"must be one of {', '.join(ACTIVATIONS)}",
    ),
    "learning_rate": (
        {"low": 1e-4, "high": 1e-2, "log": True},
        float,
        lambda v: 0 < v < 1,
        "must be in (0, 1)",
    ),
}


# Text classification only: the input side of the model.
_TEXT_SPACE: Mapping[str, tuple[Any, type, Callable[[Any], bool], str]] = {
    "vocabulary_size": (
        10_000,
        int,
        lambda v: 3 <= v <= 1_000_000,
        "must be in [3, 1000000] (it counts the padding and out-of-vocabulary ids)",
    ),
    "sequence_length": (200, int, lambda v: 1 <= v <= 100_000, "must be in [1, 100000]"),
    "embedding_dim": (32, int, lambda v: 1 <= v <= 4096, "must be in [1, 4096]"),
}


def _space(t: _Table, task: str) -> SearchSpace:
    params = {name: _param(t, name, *spec) for name, spec in _SPACE.items()}
    for name, spec in _TEXT_SPACE.items():
        if task == "text-classification":
            params[name] = _param(t, name, *spec)
        elif name in t.raw:
            raise t.fail(name, 'is only for task = "text-classification"', t.raw[name])
    return SearchSpace(**params)


def _param(
    t: _Table, name: str, default: Any, kind: type, ok: Callable[[Any], bool], rule: str
) -> Param:
    t.used.add(name)
    raw = t.raw.get(name, default)

    def value(v: Any, where: str) -> Any:
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if isinstance(v, bool) != (kind is bool) or not isinstance(v, kind):
            raise t.fail(where, f"must be of type {kind.__name__}", v)
        if not ok(v):
            raise t.fail(where, rule, v)
        return v

    if isinstance(raw, list):
        if not raw:
            raise t.fail(name, "a list of choices must not be empty", raw)
        choices = tuple(value(v, name) for v in raw)
        if len(set(choices)) != len(choices):
            raise t.fail(name, "choices must be distinct", raw)
        if len(choices) == 1:
            return Param(name, "fixed", value=choices[0])
        return Param(name, "categorical", choices=choices)
    if isinstance(raw, dict):
        if kind not in (int, float):
            raise t.fail(name, "takes a value or a list of choices, not a range", raw)
        unknown = set(raw) - {"low", "high", "log", "step"}
        if unknown:
            raise t.fail(
                f"{name}.{sorted(unknown)[0]}", "unknown key (allowed: low, high, log, step)", raw
            )
        if "low" not in raw or "high" not in raw:
            raise t.fail(name, "a range needs both `low` and `high`", raw)
        low, high = value(raw["low"], f"{name}.low"), value(raw["high"], f"{name}.high")
        if not low <= high:
            raise t.fail(name, f"`low <= high` must hold, but got low={low!r}, high={high!r}", raw)
        log = raw.get("log", False)
        if not isinstance(log, bool):
            raise t.fail(f"{name}.log", "must be of type bool", log)
        if log and low <= 0:
            raise t.fail(name, "a log range needs `low > 0`", raw)
        step = raw.get("step")
        if step is not None and (
            isinstance(step, bool) or not isinstance(step, int | float) or step <= 0 or log
        ):
            raise t.fail(f"{name}.step", "must be a positive number, and not used with log", step)
        if low == high:
            return Param(name, "fixed", value=low)
        return Param(name, kind.__name__, low=low, high=high, log=log, step=step)
    return Param(name, "fixed", value=value(raw, name))


# --- Input bounds -------------------------------------------------------------------------------
# Every number a study file gives is finite and fits the integers of numpy, Optuna's storage and
# the sampler; the fields below also get bounds that no sane study comes near, so that a typo
# (`batch_size = 99999999999999999999999`) is one line, not a traceback after a trial was queued.

MAX_NAME_LENGTH = 512  # Optuna's `studies.study_name` column
MAX_SEED = 2**32 - 1  # numpy's and the samplers' seeds
_INT64 = 2**63 - 1
_BIG = 10**9

_BOUNDS: Mapping[tuple[str, str], tuple[int, int]] = {
    ("study", "n_trials"): (1, 1_000_000),
    ("budget", "epochs"): (1, 100_000_000),
    ("sampler", "seed"): (0, MAX_SEED),
    ("sampler", "n_startup_trials"): (0, 1_000_000),
    ("pruner", "min_resource"): (1, 1_000_000),
    ("pruner", "reduction_factor"): (2, 1_000),
    ("pruner", "n_startup_trials"): (0, 1_000_000),
    ("pruner", "n_warmup_steps"): (0, 1_000_000),
    ("data", "seed"): (0, MAX_SEED),
    ("data", "max_gap"): (0, _BIG),
    ("data", "lookback"): (1, 10_000_000),
    ("data", "step"): (1, 10_000_000),
    ("data", "delay"): (0, 10_000_000),
    ("data", "period"): (1, 10_000_000),
    ("training", "epochs"): (1, 100_000),
    ("training", "batch_size"): (1, 2**20),
    ("training", "steps_per_epoch"): (1, _BIG),
    ("training", "patience"): (1, 100_000),
    ("workers", "heartbeat_interval"): (1, 86_400),
    ("workers", "grace_period"): (1, 7 * 86_400),
    ("workers", "max_retry"): (0, 1_000),
    ("workers", "max_consecutive_failures"): (1, 1_000_000),
    ("workers", "reconnect_timeout"): (0, 7 * 86_400),
    ("workers", "max_trials_per_process"): (0, 1_000_000),
    ("workers", "max_memory_mb"): (0, 2**30),
    ("ablation", "repeats"): (2, 1_000),
}


def _check_numbers(file: Path, raw: dict[str, Any]) -> None:
    """Refuse `nan`, `inf` and integers beyond 64 bits anywhere in a study file."""

    def walk(value: Any, table: str, key: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, table or k, f"{key}.{k}" if key else (k if table else ""))
        elif isinstance(value, list):
            for v in value:
                walk(v, table, key)
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{file}: [{table}] {key}: must be a finite number, got {value!r}")
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > _INT64:
            raise ConfigError(
                f"{file}: [{table}] {key}: must be a 64-bit integer (at most {_INT64} in size), "
                f"got {value!r}"
            )

    walk(raw, "", "")
