"""The recurrent search space: the only module that calls `trial.suggest_*`.

A trial's parameters are named so that they read well in optuna-dashboard and stock Optuna:
`cell`, `layers`, `units_1` .. `units_N` (one per recurrent layer, sampled only for the layers a
trial has), `dropout`, `recurrent_dropout`, `bidirectional`, `activation` (of the top recurrent
layer, the one that feeds the dense head; lower layers keep tanh) and `learning_rate`; for text
classification also `vocabulary_size`, `sequence_length` and `embedding_dim`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tuner.config import Param, SearchSpace
from tuner.training.spec import TEXT_PARAMS, ModelSpec

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True)
class SeedConfig:
    """A hand-tuned configuration that every new study runs first, for reference."""

    name: str
    description: str
    params: dict[str, Any]


SEED_CONFIGS = (
    SeedConfig(
        "gru",
        "GRU(32)",
        {
            "cell": "gru",
            "layers": 1,
            "units_1": 32,
            "dropout": 0.0,
            "recurrent_dropout": 0.0,
            "bidirectional": False,
            "activation": "tanh",
            "learning_rate": 1e-3,
        },
    ),
    SeedConfig(
        "gru-dropout",
        "GRU(32, dropout=0.2, recurrent_dropout=0.2)",
        {
            "cell": "gru",
            "layers": 1,
            "units_1": 32,
            "dropout": 0.2,
            "recurrent_dropout": 0.2,
            "bidirectional": False,
            "activation": "tanh",
            "learning_rate": 1e-3,
        },
    ),
    SeedConfig(
        "stacked-gru",
        "GRU(32, dropout=0.1, recurrent_dropout=0.5, return_sequences=True) + "
        'GRU(64, activation="relu", dropout=0.1, recurrent_dropout=0.5)',
        {
            "cell": "gru",
            "layers": 2,
            "units_1": 32,
            "units_2": 64,
            "dropout": 0.1,
            "recurrent_dropout": 0.5,
            "bidirectional": False,
            "activation": "relu",
            "learning_rate": 1e-3,
        },
    ),
    SeedConfig(
        "bidirectional-lstm",
        "Bidirectional(LSTM(32))",
        {
            "cell": "lstm",
            "layers": 1,
            "units_1": 32,
            "dropout": 0.0,
            "recurrent_dropout": 0.0,
            "bidirectional": True,
            "activation": "tanh",
            "learning_rate": 1e-3,
        },
    ),
)


def suggest(trial: optuna.Trial, space: SearchSpace) -> ModelSpec:
    """Sample (or read back, for an enqueued trial) one model from the search space."""
    layers = int(_suggest(trial, space.layers))
    units = tuple(int(_suggest(trial, space.units, f"units_{i}")) for i in range(1, layers + 1))
    return ModelSpec(
        cell=str(_suggest(trial, space.cell)),
        units=units,
        dropout=float(_suggest(trial, space.dropout)),
        recurrent_dropout=float(_suggest(trial, space.recurrent_dropout)),
        bidirectional=bool(_suggest(trial, space.bidirectional)),
        activation=str(_suggest(trial, space.activation)),
        learning_rate=float(_suggest(trial, space.learning_rate)),
        **{name: int(_suggest(trial, param)) for name, param in _text_params(space).items()},
    )


def _text_params(space: SearchSpace) -> dict[str, Param]:
    params = {name: getattr(space, name) for name in TEXT_PARAMS}
    return {name: param for name, param in params.items() if param is not None}


def _suggest(trial: optuna.Trial, param: Param, name: str | None = None) -> Any:
    name = name or param.name
    # A fixed value is still recorded as a one-choice parameter, so a trial's params always
    # describe its whole model.
    if param.kind == "fixed":
        return trial.suggest_categorical(name, [param.value])
    if param.kind == "categorical":
        return trial.suggest_categorical(name, list(param.choices))
    if param.kind == "int":
        step = int(param.step) if param.step else 1
        return trial.suggest_int(name, int(param.low), int(param.high), step=step, log=param.log)
    return trial.suggest_float(name, param.low, param.high, step=param.step, log=param.log)


def seed_fits(seed: SeedConfig, space: SearchSpace) -> str | None:
    """Why `seed` lies outside `space`, or None when the study can run it as it is."""
    for name, value in seed.params.items():
        param = space.units if name.startswith("units_") else getattr(space, name)
        if not param.contains(value):
            return f"{name}={value!r} is outside the search space"
    return None


def suggest_fixed(trial: optuna.Trial, space: SearchSpace) -> ModelSpec:
    """Read back an ablation trial's model, enqueued with fixed parameters.

    Ablation changes one thing of a trial, which may take it outside the study's search space
    (a third layer where the space stops at two, LSTM where it allows GRU only), so its
    parameters are recorded against the widest ranges a study file allows: the same
    distributions for every ablation trial, as Optuna requires of one study.
    """
    from tuner.config import ACTIVATIONS, CELLS

    layers = trial.suggest_int("layers", 1, MAX_LAYERS)
    units = tuple(trial.suggest_int(f"units_{i}", 1, MAX_UNITS) for i in range(1, layers + 1))
    text = {
        name: trial.suggest_int(name, low, high)
        for name, (low, high) in _TEXT_RANGES.items()
        if name in _text_params(space)
    }
    return ModelSpec(
        cell=str(trial.suggest_categorical("cell", CELLS)),
        units=units,
        dropout=trial.suggest_float("dropout", 0.0, 1.0),
        recurrent_dropout=trial.suggest_float("recurrent_dropout", 0.0, 1.0),
        bidirectional=bool(trial.suggest_categorical("bidirectional", (False, True))),
        activation=str(trial.suggest_categorical("activation", ACTIVATIONS)),
        learning_rate=trial.suggest_float("learning_rate", 1e-8, 1.0, log=True),
        **text,
    )


# The bounds a study file allows (tuner.config), which ablation trials are recorded against.
MAX_LAYERS = 8
MAX_UNITS = 4096
_TEXT_RANGES = {
    "vocabulary_size": (3, 1_000_000),
    "sequence_length": (1, 100_000),
    "embedding_dim": (1, 4096),
}
