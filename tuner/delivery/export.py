"""The exported model: the trained network behind the study's preprocessing, so that it takes the
user's raw data and answers in the user's units, and loads with `keras.saving.load_model` in a
process that has never imported `tuner`.

Only built-in Keras layers and `keras.ops` go into it (no layer of ours, no `Lambda`):

- forecast: windows of raw feature rows -> `Normalization` with the training statistics ->
  the network -> the target in its own units;
- sequence classification: raw sequences, padded at the end with NaN time steps when their
  lengths differ -> NaN steps zeroed, `Normalization`, the presence channel, `Masking` -> the
  network -> class probabilities;
- text classification: strings -> `TextVectorization` with the training vocabulary cut to the
  trial's vocabulary size and sequence length -> the network -> class probabilities.

Forecast and sequence models run on any Keras backend; text models need the TensorFlow backend
(Keras cannot feed strings to a model on JAX).

Keras saves its layers under their public names (`keras.layers`), but the model itself under
`keras.src.models.functional` (every model Keras saves does) and each `keras.ops` call of the
sequence preprocessing as an operation class of `keras.src.ops` (`KERAS_SRC_NAMES`): a Keras that
moved one of these could not load a model exported before. Keras has no public layer that finds
NaN steps, and a layer of ours would need tuner to load, so the dependence stays; it is kept to
these names, tested (tests/delivery/test_export.py reads an exported model's config.json, and
looks each name up in the installed Keras as its loader does), and the JSON `tuner retrain`
writes beside a model records the Keras that saved it (`versions`).
Beside the model goes `card`, the JSON a caller needs to feed it and read its output.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import TYPE_CHECKING, Any

import numpy as np

from tuner.config import DataConfig
from tuner.data import Prepared
from tuner.data.forecast import ForecastArrays
from tuner.data.sequences import SequenceArrays
from tuner.data.text import TextArrays
from tuner.training.spec import ModelSpec

if TYPE_CHECKING:
    import keras

# The trained network's layers that the exported model leaves out: its input, and the layer
# that reads the study's shared token ids with a trial's own vocabulary (TextVectorization
# does that itself in the exported model).
_LEFT_OUT = ("InputLayer", "TokenWindow")

# The private Keras names an exported model's config.json holds, (module, class): the model's
# own, and the operations of the NaN-padded sequences' preprocessing (`_sequences`).
KERAS_SRC_NAMES = frozenset(
    {
        ("keras.src.models.functional", "Functional"),
        ("keras.src.ops.numpy", "Isnan"),
        ("keras.src.ops.numpy", "All"),
        ("keras.src.ops.numpy", "LogicalNot"),
        ("keras.src.ops.numpy", "Where"),
        ("keras.src.ops.numpy", "Multiply"),
        ("keras.src.ops.core", "Cast"),
    }
)


def export_model(trained: keras.Model, data: Prepared, spec: ModelSpec) -> keras.Model:
    """The model that takes raw inputs: preprocessing, then `trained`'s own layers (its weights,
    shared, not copied), then class probabilities for every class of a classifier."""
    import keras

    arrays = data.arrays
    if isinstance(arrays, ForecastArrays):
        first = keras.Input((arrays.timesteps, len(arrays.features)), name="windows")
        x = _normalise(first, arrays.input_mean, arrays.input_std)
    elif isinstance(arrays, SequenceArrays):
        first, x = _sequences(arrays)
    elif isinstance(arrays, TextArrays):
        first = keras.Input((), dtype="string", name="texts")
        length = spec.sequence_length or arrays.tokens.shape[1]
        vocabulary = [str(word) for word in arrays.vocabulary[: spec.vocabulary_size]]
        x = keras.layers.TextVectorization(
            vocabulary=vocabulary, output_sequence_length=length, name="vectorize"
        )(first)
    else:  # pragma: no cover - every task's arrays are handled above
        raise TypeError(f"no export for {type(arrays).__name__}")
    for layer in trained.layers:
        if type(layer).__name__ not in _LEFT_OUT:
            x = layer(x)
    if data.classes and len(data.classes) == 2:
        # One sigmoid unit gives the second class's probability; put the first's beside it.
        other = keras.layers.Rescaling(-1.0, 1.0, name="first_class")(x)
        x = keras.layers.Concatenate(name="probabilities")([other, x])
    return keras.Model(first, x, name=f"{trained.name}_on_raw_{data.task.split('-')[0]}")


def _normalise(x: Any, mean: tuple[float, ...], std: tuple[float, ...]) -> Any:
    import keras

    return keras.layers.Normalization(
        mean=list(mean), variance=list(np.square(std)), name="normalise"
    )(x)


def _sequences(arrays: SequenceArrays) -> tuple[Any, Any]:
    """The input of raw sequences and their preprocessing, as the data package does it."""
    import keras
    from keras import ops

    features = len(arrays.mean)
    if not arrays.masked:  # trained on sequences of one length: no padding, no presence
        first = keras.Input((arrays.x.shape[1], features), name="sequences")
        return first, _normalise(first, arrays.mean, arrays.std)
    first = keras.Input((None, features), name="sequences")
    missing = ops.isnan(first)
    present = ops.cast(ops.logical_not(ops.all(missing, axis=-1, keepdims=True)), "float32")
    x = _normalise(ops.where(missing, 0.0, first), arrays.mean, arrays.std)
    # As in training: padding all zeros (which the network's Masking skips), and a presence
    # channel of 1 on every real step.
    return first, keras.layers.Concatenate(name="presence")([ops.multiply(x, present), present])


def card(config: DataConfig, data: Prepared, spec: ModelSpec) -> dict[str, Any]:
    """What a caller needs to feed the exported model and read its output."""
    arrays = data.arrays
    info: dict[str, Any] = {"task": data.task}
    if isinstance(arrays, ForecastArrays):
        info["input"] = {
            "name": "windows",
            "shape": [None, arrays.timesteps, len(arrays.features)],
            "dtype": "float32",
            "features": list(arrays.features),
            "lookback": config.lookback,
            "step": arrays.step,
            "timesteps": arrays.timesteps,
            "delay": arrays.delay,
            "timestamp": config.timestamp,
            "frequency": config.frequency,
            "target": config.target,
            "what": "raw rows of the features in this order, one every `step` rows, oldest "
            "first; the last is the latest row observed",
        }
        info["output"] = {
            "shape": [None, 1],
            "what": "the target `delay` rows after a window's last row, in its own units",
        }
    elif isinstance(arrays, SequenceArrays):
        steps = None if arrays.masked else arrays.x.shape[1]
        info["input"] = {
            "name": "sequences",
            "shape": [None, steps, len(arrays.mean)],
            "dtype": "float32",
            "what": "raw sequences, padded at the end with time steps of NaN to one length"
            if arrays.masked
            else f"raw sequences of {steps} time steps each",
        }
    elif isinstance(arrays, TextArrays):
        info["input"] = {
            "name": "texts",
            "shape": [None],
            "dtype": "string",
            "what": "raw texts (a numpy array of dtype object, or a tf.string tensor); "
            "needs the TensorFlow backend",
            "vocabulary_size": spec.vocabulary_size,
            "sequence_length": spec.sequence_length or int(arrays.tokens.shape[1]),
        }
    if data.classes:
        info["classes"] = list(data.classes)
        info["output"] = {
            "shape": [None, len(data.classes)],
            "what": "the probability of each class, in the order of `classes`",
        }
    return info


def versions() -> dict[str, str]:
    """The versions of Keras, its backend and tuner that trained and saved a model."""
    import keras

    backend = keras.backend.backend()
    try:
        tuner = importlib.metadata.version("tuner")
    except importlib.metadata.PackageNotFoundError:
        tuner = "unknown"
    return {
        "keras": keras.__version__,
        "backend": backend,
        "backend_version": str(getattr(importlib.import_module(backend), "__version__", "")),
        "tuner": tuner,
    }
