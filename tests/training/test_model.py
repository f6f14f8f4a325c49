from __future__ import annotations

import keras
import numpy as np
import pytest

from tuner.training.model import Head, Inputs, build_model, keras_loss
from tuner.training.spec import ModelSpec


def spec(**changes) -> ModelSpec:
    base = dict(
        cell="gru",
        units=(8,),
        dropout=0.1,
        recurrent_dropout=0.2,
        bidirectional=False,
        activation="tanh",
        learning_rate=3e-3,
    )
    return ModelSpec(**(base | changes))


def rnn_layers(model: keras.Model) -> list[keras.layers.Layer]:
    found = []
    for layer in model.layers:
        inner = layer.forward_layer if isinstance(layer, keras.layers.Bidirectional) else layer
        if isinstance(inner, keras.layers.GRU | keras.layers.LSTM):
            found.append(layer)
    return found


@pytest.mark.parametrize("cell, kind", [("gru", keras.layers.GRU), ("lstm", keras.layers.LSTM)])
def test_one_layer_maps_a_window_to_one_value(cell, kind) -> None:
    model = build_model(spec(cell=cell), (12, 3), Head())
    (layer,) = rnn_layers(model)
    assert isinstance(layer, kind)
    assert layer.units == 8 and not layer.return_sequences
    assert model.output_shape == (None, 1)
    assert model.predict(np.zeros((5, 12, 3), "float32"), verbose=0).shape == (5, 1)


def test_stacked_layers_return_sequences_below_and_use_their_own_units() -> None:
    model = build_model(spec(units=(8, 16, 4), activation="relu"), (12, 3), Head())
    layers = rnn_layers(model)
    assert [layer.units for layer in layers] == [8, 16, 4]
    assert [layer.return_sequences for layer in layers] == [True, True, False]
    # The top layer feeds the dense head and takes the searched activation.
    assert [layer.activation.__name__ for layer in layers] == ["tanh", "tanh", "relu"]


def test_dropout_and_recurrent_dropout_are_set_on_every_layer() -> None:
    model = build_model(spec(units=(8, 8), dropout=0.25, recurrent_dropout=0.4), (12, 3), Head())
    for layer in rnn_layers(model):
        assert layer.dropout == 0.25
        assert layer.recurrent_dropout == 0.4


def test_bidirectional_wraps_every_layer_and_doubles_its_output() -> None:
    model = build_model(spec(cell="lstm", units=(8, 8), bidirectional=True), (12, 3), Head())
    layers = rnn_layers(model)
    assert all(isinstance(layer, keras.layers.Bidirectional) for layer in layers)
    assert layers[0].output.shape == (None, 12, 16)
    assert layers[1].output.shape == (None, 16)
    assert layers[1].forward_layer.recurrent_dropout == 0.2


def test_the_head_rescales_to_the_target_units_and_the_optimizer_gets_the_rate() -> None:
    model = build_model(spec(), (12, 3), Head(scale=10.0, offset=50.0), optimizer="adam")
    scaled = model.get_layer("target_units")
    assert (scaled.scale, scaled.offset) == (10.0, 50.0)
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(model.optimizer.learning_rate) == pytest.approx(3e-3)


def test_a_classification_head_has_its_units_and_activation() -> None:
    model = build_model(
        spec(),
        (12, 3),
        Head(units=4, activation="softmax"),
        loss="sparse_categorical_crossentropy",
        metrics=("accuracy",),
    )
    out = model.predict(np.random.default_rng(0).normal(size=(2, 12, 3)), verbose=0)
    assert out.shape == (2, 4)
    assert np.allclose(out.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_masked_padding_after_a_sequence_changes_nothing(bidirectional) -> None:
    rng = np.random.default_rng(0)
    head = Head(units=3, activation="softmax")
    changes = dict(units=(6, 5), dropout=0.0, recurrent_dropout=0.0, bidirectional=bidirectional)
    padded = build_model(spec(**changes), Inputs((10, 3), masked=True), head, loss="crossentropy")
    short = build_model(spec(**changes), Inputs((4, 3)), head, loss="crossentropy")
    short.set_weights(padded.get_weights())
    steps = np.concatenate([rng.normal(size=(1, 4, 2)), np.ones((1, 4, 1))], axis=2)
    x = np.zeros((1, 10, 3), "float32")
    x[:, :4] = steps
    assert np.allclose(padded(x), short(steps.astype("float32")), atol=1e-5)


def test_a_text_model_reads_its_own_vocabulary_and_length_of_the_ids() -> None:
    text = spec(
        vocabulary_size=20, sequence_length=5, embedding_dim=4, dropout=0.0, recurrent_dropout=0.0
    )
    model = build_model(
        text,
        Inputs((8,), tokens=True),
        Head(1, "sigmoid"),
        loss="crossentropy",
        metrics=("accuracy",),
    )
    assert model.get_layer("embedding").input_dim == 20
    assert model.loss == "binary_crossentropy"
    ids = np.array([[5, 25, 3, 19, 0, 7, 8, 9]], "int32")
    # Ids outside the vocabulary read as out-of-vocabulary (1); ids past the length not at all.
    same = np.array([[5, 1, 3, 19, 0, 2, 2, 2]], "int32")
    assert np.allclose(model(ids), model(same))
    assert not np.allclose(model(ids), model(np.array([[5, 2, 3, 19, 0, 7, 8, 9]], "int32")))


def test_crossentropy_is_binary_for_one_unit_and_sparse_categorical_for_more() -> None:
    assert keras_loss("crossentropy", Head(1, "sigmoid")) == "binary_crossentropy"
    assert keras_loss("crossentropy", Head(4, "softmax")) == "sparse_categorical_crossentropy"
    assert keras_loss("huber", Head()) == "huber"


def test_a_saved_text_model_loads_again(tmp_path) -> None:
    text = spec(vocabulary_size=20, sequence_length=5, embedding_dim=4)
    model = build_model(text, Inputs((8,), tokens=True), Head(3, "softmax"), loss="crossentropy")
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")  # safe mode: no lambdas
    ids = np.array([[5, 25, 3, 19, 0, 7, 8, 9]], "int32")
    assert np.allclose(loaded(ids), model(ids))


def _padded(rng: np.random.Generator) -> np.ndarray:
    x = rng.normal(size=(16, 10, 3))
    x[:, 6:] = 0.0  # padding after each sequence's end
    return x


@pytest.mark.parametrize(
    "inputs, head, x",
    [
        (Inputs((12, 3)), Head(), np.random.default_rng(0).normal(size=(16, 12, 3))),
        (Inputs((10, 3), masked=True), Head(2, "softmax"), _padded(np.random.default_rng(1))),
        (Inputs((8,), tokens=True), Head(3, "softmax"), np.arange(128).reshape(16, 8) % 40),
    ],
    ids=["windows", "masked", "tokens"],
)
def test_xla_compiled_models_train_on_every_kind_of_input(inputs, head, x) -> None:
    changes = dict(vocabulary_size=50, sequence_length=8, embedding_dim=4) if inputs.tokens else {}
    forecast = head.units == 1
    model = build_model(
        spec(**changes),
        inputs,
        head,
        loss="mse" if forecast else "crossentropy",
        metrics=("mae",) if forecast else ("accuracy",),
        jit_compile=True,
    )
    assert model.jit_compile
    before = [w.copy() for w in model.get_weights()]
    y = np.zeros((16, 1), "float32") if forecast else np.arange(16) % head.units
    x = x.astype("int32" if inputs.tokens else "float32")
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
