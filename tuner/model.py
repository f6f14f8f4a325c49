"""Building and compiling the Keras model of one point of the search space.

Knows nothing of Optuna: it takes a `ModelSpec` and the task's head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tuner.space import ModelSpec

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class Head:
    """The output of the network, set by the task: units, activation and an output rescaling.

    Forecasting targets stay in their own units so that losses, metrics and baselines read in
    those units; `scale` and `offset` (the training target's std and mean) let the network itself
    work on a normalised scale.
    """

    units: int = 1
    activation: str | None = None
    scale: float = 1.0
    offset: float = 0.0


def build_model(
    spec: ModelSpec,
    input_shape: tuple[int | None, ...],
    head: Head,
    *,
    optimizer: str = "rmsprop",
    loss: str = "mse",
    metrics: tuple[str, ...] = ("mae",),
) -> keras.Model:
    """A compiled recurrent network: `len(spec.units)` stacked GRU/LSTM layers and a dense head."""
    import keras

    inputs = keras.Input(shape=input_shape, name="inputs")
    x = inputs
    rnn = keras.layers.GRU if spec.cell == "gru" else keras.layers.LSTM
    for i, units in enumerate(spec.units, start=1):
        top = i == len(spec.units)
        layer = rnn(
            units,
            activation=spec.activation if top else "tanh",
            dropout=spec.dropout,
            recurrent_dropout=spec.recurrent_dropout,
            return_sequences=not top,
            name=f"{spec.cell}_{i}",
        )
        if spec.bidirectional:
            layer = keras.layers.Bidirectional(layer, name=f"bidirectional_{i}")
        x = layer(x)
    outputs = keras.layers.Dense(head.units, activation=head.activation, name="head")(x)
    if head.scale != 1.0 or head.offset != 0.0:
        outputs = keras.layers.Rescaling(head.scale, head.offset, name="target_units")(outputs)
    model = keras.Model(inputs, outputs, name="rnn")
    model.compile(
        optimizer=_optimizer(optimizer, spec.learning_rate), loss=loss, metrics=list(metrics)
    )
    return model


def _optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    import keras

    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9)
    return keras.optimizers.RMSprop(learning_rate)
