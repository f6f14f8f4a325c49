from __future__ import annotations

import threading

import jax
import keras
import numpy as np
import pytest

from tuner.patches import checks
from tuner.patches.dropout import philox_dropout


@pytest.fixture(autouse=True)
def patches_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with every patch on, and what it turns off stays in the test."""
    monkeypatch.setattr(checks, "_OFF", {})


pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="the Philox masks replace JAX's draws only"
)


def primitives(function, *args) -> set[str]:
    """The primitives of `function`'s computation, inner ones (a scan's body) included."""
    found: set[str] = set()

    def walk(jaxpr) -> None:
        for equation in jaxpr.eqns:
            found.add(equation.primitive.name)
            for value in equation.params.values():
                for inner in value if isinstance(value, list | tuple) else [value]:
                    if hasattr(inner, "jaxpr"):  # a ClosedJaxpr
                        walk(inner.jaxpr)
                    elif hasattr(inner, "eqns"):
                        walk(inner)

    walk(jax.make_jaxpr(function)(*args).jaxpr)
    return found


def masks(rate: float, seed: keras.random.SeedGenerator, shape=(200, 500)) -> np.ndarray:
    return keras.ops.convert_to_numpy(
        keras.random.dropout(np.ones(shape, "float32"), rate, seed=seed)
    )


def test_masks_keep_each_value_with_one_minus_the_rate_and_scale_it() -> None:
    with philox_dropout():
        drawn = masks(0.3, keras.random.SeedGenerator(1))
    kept = drawn != 0
    # 100,000 draws: the kept share is within 4 standard errors (0.0058) of 0.7.
    assert abs(kept.mean() - 0.7) < 0.006
    np.testing.assert_allclose(drawn[kept], 1 / 0.7, rtol=1e-6)
    # No structure: rows and columns keep alike, and neighbours are uncorrelated.
    assert np.ptp(kept.mean(axis=1)) < 0.3 and np.ptp(kept.mean(axis=0)) < 0.3
    assert abs(np.corrcoef(kept[:, :-1].ravel(), kept[:, 1:].ravel())[0, 1]) < 0.02


def test_masks_repeat_with_the_seed_and_differ_from_draw_to_draw() -> None:
    with philox_dropout():
        a = keras.random.SeedGenerator(7)
        first, second = masks(0.5, a), masks(0.5, a)
        b = keras.random.SeedGenerator(7)
        again_first, again_second = masks(0.5, b), masks(0.5, b)
        other = masks(0.5, keras.random.SeedGenerator(8))
    assert np.array_equal(first, again_first) and np.array_equal(second, again_second)
    # The generator's next key (its second word plus one) gives an unrelated mask, not a
    # shifted copy of the first: about half the values agree, at any shift.
    for x, y in [(first, second), (first, other)]:
        assert 0.45 < np.mean((x != 0) == (y != 0)) < 0.55
        assert 0.45 < np.mean((x.ravel()[4:] != 0) == (y.ravel()[:-4] != 0)) < 0.55


@pytest.mark.parametrize(
    "make",
    [
        lambda: keras.layers.GRU(8, dropout=0.2, recurrent_dropout=0.3),
        lambda: keras.layers.Bidirectional(
            keras.layers.LSTM(8, dropout=0.2, recurrent_dropout=0.3)
        ),
        lambda: keras.layers.Dropout(0.4),
    ],
    ids=["gru", "bidirectional-lstm", "dropout"],
)
def test_layers_draw_their_masks_from_philox_in_the_block_only(make) -> None:
    layer = make()
    x = np.random.default_rng(0).normal(size=(4, 5, 3)).astype("float32")
    layer.build(x.shape)

    def call(x):
        out, _ = layer.stateless_call(
            [v.value for v in layer.trainable_variables],
            [v.value for v in layer.non_trainable_variables],
            x,
            training=True,
        )
        return out

    # A new function each time: JAX keeps a function's trace.
    with philox_dropout():
        inside = primitives(lambda v: call(v), x)
        out = keras.ops.convert_to_numpy(call(x))
    outside = primitives(lambda v: call(v), x)
    assert "rng_bit_generator" in inside and "random_bits" not in inside
    assert "random_bits" in outside and "rng_bit_generator" not in outside
    assert np.isfinite(out).all()


def test_what_philox_cannot_draw_is_drawn_as_keras_does() -> None:
    x = np.ones((50, 40), "float32")
    key = jax.random.PRNGKey(0)
    with philox_dropout():
        assert np.array_equal(keras.ops.convert_to_numpy(keras.random.dropout(x, 0.0)), x)
        # A JAX key as the seed: Keras' own draw (JAX's `random_bits`, Threefry).
        drawn = primitives(lambda v: keras.random.dropout(v, 0.5, seed=key), x)
    assert "random_bits" in drawn and "rng_bit_generator" not in drawn


def test_other_threads_and_code_after_the_block_draw_as_keras_does() -> None:
    x = np.ones((50, 40), "float32")

    def draw(v):
        return keras.random.dropout(v, 0.5, seed=keras.random.SeedGenerator(1))

    elsewhere: list[set[str]] = []
    with pytest.raises(RuntimeError), philox_dropout():
        with philox_dropout():  # nested in one thread
            assert "rng_bit_generator" in primitives(lambda v: draw(v), x)
        assert "rng_bit_generator" in primitives(lambda v: draw(v), x)
        thread = threading.Thread(
            target=lambda: elsewhere.append(primitives(lambda v: draw(v), x))
        )
        thread.start()
        thread.join()
        raise RuntimeError("boom")
    assert "random_bits" in elsewhere[0] and "rng_bit_generator" not in elsewhere[0]
    after = primitives(lambda v: draw(v), x)
    assert "random_bits" in after and "rng_bit_generator" not in after


def test_a_keras_without_the_private_names_draws_its_own_masks_says_so_once_and_is_recorded(
    monkeypatch, caplog
) -> None:
    from keras.src.backend.jax import random as module

    from tuner.patches import check_patches
    from tuner.patches.checks import patches_off
    from tuner.patches.dropout import check

    assert check() is None and check_patches() == []
    monkeypatch.setattr(keras, "__version__", "9.0.0")
    moved = module._get_concrete_noise_shape
    monkeypatch.delattr(module, "_get_concrete_noise_shape")
    assert check() == "Keras 9.0.0 has no keras.src.backend.jax.random._get_concrete_noise_shape"
    x = np.ones((50, 40), "float32")
    with caplog.at_level("WARNING", logger="tuner.patches"), philox_dropout():
        # Back where this Keras' own draw looks for it (a Keras that moved it has it elsewhere).
        monkeypatch.setattr(module, "_get_concrete_noise_shape", moved, raising=False)
        drawn = primitives(lambda v: keras.random.dropout(v, 0.5, seed=1), x)
        with philox_dropout():
            pass
    assert "random_bits" in drawn and "rng_bit_generator" not in drawn  # Keras' own draw
    assert patches_off() == ["dropout"]
    [line] = [r.getMessage() for r in caplog.records]  # once
    assert "tuner.patches.dropout is off" in line and "Keras 9.0.0" in line


def test_a_private_name_that_takes_other_parameters_is_named(monkeypatch) -> None:
    from keras.src.backend.jax import random as module

    from tuner.patches.dropout import check

    monkeypatch.setattr(module, "jax_draw_seed", lambda seed, dtype: seed)
    assert check() == (
        f"Keras {keras.__version__}'s keras.src.backend.jax.random.jax_draw_seed takes "
        "(seed, dtype), not (seed)"
    )


def test_a_seed_the_draw_was_not_written_for_is_recorded_too() -> None:
    from tuner.patches.checks import patches_off

    x = np.ones((50, 40), "float32")
    with philox_dropout():
        keras.random.dropout(x, 0.5, seed=keras.random.SeedGenerator(1))
        assert patches_off() == []
        keras.random.dropout(x, 0.5, seed=jax.random.PRNGKey(0))
    assert patches_off() == ["dropout"]
