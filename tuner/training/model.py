"""Building and compiling the Keras model of one point of the search space.

Knows nothing of Optuna: it takes a `ModelSpec`, and the task's inputs and head. The recurrent
stack is the same for every task; only what comes before it (masking of padded sequences, or a
token embedding) and the head differ.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuner.data.shapes import Head, Inputs
from tuner.training.spec import ModelSpec

if TYPE_CHECKING:
    import keras


def build_model(
    spec: ModelSpec,
    inputs: Inputs | tuple[int | None, ...],
    head: Head,
    *,
    optimizer: str = "rmsprop",
    loss: str = "mse",
    metrics: tuple[str, ...] = ("mae",),
    jit_compile: bool = False,
) -> keras.Model:
    """A compiled recurrent network: `len(spec.units)` stacked GRU/LSTM layers and a dense head.

    `inputs` is the task's `Inputs`, or just a shape for windows of numbers. `loss` is a Keras
    loss, or "crossentropy": binary or sparse categorical, as the head's units say.
    `jit_compile` compiles the training step with XLA on TensorFlow; on JAX it always is.
    """
    import keras

    from tuner.patches.initializers import numpy_initializers

    if not isinstance(inputs, Inputs):
        inputs = Inputs(tuple(inputs))
    # Weights (and the optimizer's slots) drawn with NumPy: on JAX, Keras' own initialisers
    # compile every operation once per shape, the larger part of building a model.
    with numpy_initializers():
        model = _network(spec, inputs, head)
        model.compile(
            optimizer=_optimizer(optimizer, spec.learning_rate),
            loss=keras_loss(loss, head),
            metrics=list(metrics),
            # On JAX every step is compiled by XLA; jit_compile=False there runs op by op,
            # 100 times slower (BENCHMARKS.md, the backends side by side). The setting is
            # TensorFlow's.
            jit_compile=jit_compile or keras.backend.backend() == "jax",
        )
        model.optimizer.build(model.trainable_variables)
    return model


def _network(spec: ModelSpec, inputs: Inputs, head: Head) -> keras.Model:
    """The network, uncompiled: what the task puts before the recurrent stack, the stack, the
    head."""
    import keras

    x = first = keras.Input(
        shape=inputs.shape, dtype="int32" if inputs.tokens else "float32", name="inputs"
    )
    if inputs.tokens:
        if spec.vocabulary_size is None or spec.embedding_dim is None:
            raise ValueError("a model of token ids needs a vocabulary size and an embedding dim")
        from tuner.training.layers import TokenWindow

        x = TokenWindow(spec.vocabulary_size, spec.sequence_length, name="token_window")(x)
        x = keras.layers.Embedding(
            spec.vocabulary_size, spec.embedding_dim, mask_zero=True, name="embedding"
        )(x)
    elif inputs.masked:
        x = keras.layers.Masking(0.0, name="padding")(x)
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
    return keras.Model(first, outputs, name="rnn")


def keras_loss(loss: str, head: Head) -> str:
    """The Keras loss a study's loss stands for with this head."""
    if loss != "crossentropy":
        return loss
    return "binary_crossentropy" if head.units == 1 else "sparse_categorical_crossentropy"


def _optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    import keras

    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9)
    return keras.optimizers.RMSprop(learning_rate)
