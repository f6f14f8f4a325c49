"""A study's definition: what its trials are, fixed when the study is created.

The task, the data section and the data file's identity (its size and SHA-256, not its path),
the metric and direction (and cost objective), the search space and the training section are
stored on the study as the user attribute `definition`. A study file that differs from it is
refused (`tuner run`, `tuner worker`, `tuner retrain`), naming the field, the stored value and the
new one: trials of different data, metrics or spaces would be compared as if alike.

How a study is run may change between runs and is not part of it: the budget (`n_trials`, or
`[budget] epochs`), [workers], [sampler], [pruner] (but whether it is `pause`, `pauses`, and
with `pause` its rungs, `rungs`: where trials pause and which resume), [ablation], and the
execution details of [training] listed in `EXECUTION_DETAILS`.

One change of the definition is allowed, with the pruner `pause` only: raising `[training]
epochs` (`GROWABLE`). The study goes on: its best trials resume from the checkpoints they saved
at their last epoch (tuner.search.schedule), and the definition stores the new, larger count.
With another pruner, trials trained to different lengths would be compared as if alike.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from tuner.config import DataConfig, Param, SearchSpace, StudyConfig, TrainingConfig
from tuner.errors import TunerError

DEFINITION_ATTR = "definition"
# Fields of [training] that say how trials run, not what they are: they may change between runs.
EXECUTION_DETAILS = frozenset({"jit_compile", "backend"})
# Fields that a study file may raise (never lower) with the pruner `pause`: its trials resume.
GROWABLE = frozenset({"training.epochs"})


class DefinitionError(TunerError):
    """A study file differs from the definition stored on its study."""


def definition(config: StudyConfig) -> dict[str, Any]:
    """What defines the trials of the study in `config`, as stored on the study (JSON)."""
    from tuner.data.cache import file_digest

    # A built-in dataset is known by its name (in the data section); a file by its content.
    data = {k: v for k, v in config.data.key().items() if k != "path"}
    if config.data.path is not None and config.data.path.is_file():
        data["file"] = file_digest(config.data.path)
    training = {
        k: v for k, v in dataclasses.asdict(config.training).items() if k not in EXECUTION_DETAILS
    }
    made = {
        "task": config.data.task,
        "metric": config.metric,
        "direction": config.direction,
        "cost_objective": config.cost_objective,
        "data": data,
        "space": dataclasses.asdict(config.space),
        "training": training,
        # Whether trials pause and resume: a study's work is handed out, and its budget of
        # trials counted, one way or the other, so workers of both kinds cannot share it.
        "pauses": config.pruner.name == "pause",
    }
    if config.pruner.name == "pause":
        # Where trials pause, and which are promoted (ASHA's rungs and its rule): workers that
        # disagreed would pause at other epochs and promote by another share of the models.
        made["rungs"] = {
            "min_resource": config.pruner.min_resource,
            "reduction_factor": config.pruner.reduction_factor,
        }
    return dict(json.loads(json.dumps(made, default=str)))


def check(
    stored: dict[str, Any], config: StudyConfig, defined: dict[str, Any] | None = None
) -> None:
    """Refuse `config` if it differs from the `stored` definition of its study (`defined`:
    `definition(config)`, if already made; it reads the whole data file).

    Only the fields stored are compared: a field that a later version of tuner added to the
    definition takes the study file's value in a study stored before it."""
    new = _flat(defined if defined is not None else definition(config))
    for field, value in _flat(stored).items():
        if field.startswith("training.") and field.split(".")[-1] in EXECUTION_DETAILS:
            continue
        if field in GROWABLE and config.pruner.name == "pause" and new.get(field, 0) >= value:
            continue
        if field == "pauses" and value != new.get(field, _MISSING):
            raise DefinitionError(
                f"{config.path}: study {config.name!r} was created "
                + (
                    'with [pruner] name = "pause" (trials that pause and resume), but the file '
                    f"now names {config.pruner.name!r}"
                    if value
                    else 'without paused trials, but the file now gives [pruner] name = "pause"'
                )
                + "; a study's trials are handed out one way for all its workers: to run the "
                "changed file, give it a new [study] name"
            )
        if value != new.get(field, _MISSING):
            grows = (
                " (but for [training] epochs, which may grow with the pruner `pause`)"
                if field in GROWABLE and new.get(field, 0) > value
                else ""
            )
            raise DefinitionError(
                f"{config.path}: study {config.name!r} was created with {field} = "
                f"{_show(value)}, but the file now gives {_show(new.get(field, _MISSING))}; a "
                f"study's definition is fixed when it is created{grows}: to run the changed "
                "file, give it a new [study] name"
            )


def study_config(stored: dict[str, Any] | None, config: StudyConfig) -> StudyConfig:
    """The configuration to build a study's models from: its stored definition, with the
    execution settings of `config` (the study file). `config` must match the definition
    (`check`); a study created before definitions were stored (`stored` None) takes `config`."""
    if stored is None:
        return config
    check(stored, config)
    space: dict[str, Any] = {
        name: None if p is None else Param(**_known(Param, p))
        for name, p in _known(SearchSpace, stored["space"]).items()
    }
    training = {k: v for k, v in stored["training"].items() if k not in EXECUTION_DETAILS}
    training["epochs"] = max(int(training.get("epochs", 0)), config.training.epochs)
    return dataclasses.replace(
        config,
        metric=stored["metric"],
        direction=stored["direction"],
        cost_objective=stored["cost_objective"],
        data=dataclasses.replace(config.data, **_known(DataConfig, stored["data"], "path")),
        space=dataclasses.replace(config.space, **space),
        training=dataclasses.replace(config.training, **_known(TrainingConfig, training)),
    )


def grown(stored: dict[str, Any], defined: dict[str, Any]) -> dict[str, Any] | None:
    """The stored definition with the fields `defined` (a study file's, already `check`ed)
    raised, if it raises any; else None."""
    old, new = _flat(stored), _flat(defined)
    raised = {f for f in GROWABLE if f in old and new.get(f, 0) > old[f]}
    if not raised:
        return None
    updated = json.loads(json.dumps(stored))
    for field in raised:
        *path, last = field.split(".")
        node = updated
        for key in path:
            node = node[key]
        node[last] = new[field]
    return dict(updated)


def _known(kind: type, fields: dict[str, Any], *but: str) -> dict[str, Any]:
    """The stored `fields` that dataclass `kind` has (less `but`), with JSON's lists turned back
    into the tuples it holds."""
    names = {f.name for f in dataclasses.fields(kind)} - set(but)
    return {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items() if k in names}


_MISSING = object()


def _show(value: Any) -> str:
    return "(not set)" if value is _MISSING else json.dumps(value)


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat
