from __future__ import annotations

import keras
import numpy as np
import pytest

from tuner.patches import checks
from tuner.patches.initializers import numpy_initializers
from tuner.training.model import Head, build_model
from tuner.training.spec import ModelSpec


@pytest.fixture(autouse=True)
def patches_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with every patch on, and what it turns off stays in the test."""
    monkeypatch.setattr(checks, "_OFF", {})


SHAPE = (40, 96)


def draws(initializer: keras.initializers.Initializer) -> np.ndarray:
    return keras.ops.convert_to_numpy(initializer(SHAPE, dtype="float32"))


@pytest.mark.parametrize(
    "initializer",
    [
        keras.initializers.GlorotUniform(seed=1),
        keras.initializers.HeNormal(seed=1),  # a truncated normal
        keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal", seed=1),
        keras.initializers.RandomUniform(-0.3, 0.1, seed=1),
        keras.initializers.RandomNormal(0.5, 0.2, seed=1),
    ],
    ids=lambda i: type(i).__name__,
)
def test_numpy_draws_follow_keras_distributions(initializer) -> None:
    keras_own = draws(initializer)
    with numpy_initializers():
        ours = draws(initializer)
        again = draws(initializer)
    assert ours.dtype == np.float32 and ours.shape == SHAPE
    assert np.array_equal(ours, again)  # one seed, one draw, as Keras does
    assert not np.array_equal(ours, keras_own)  # computed by NumPy, not by Keras
    # Same distribution: range, mean and spread agree to sampling error (3,840 draws).
    assert ours.min() >= keras_own.min() - 0.05 * np.ptp(keras_own)
    assert ours.max() <= keras_own.max() + 0.05 * np.ptp(keras_own)
    assert abs(ours.mean() - keras_own.mean()) < 0.1 * keras_own.std() + 1e-3
    assert ours.std() == pytest.approx(keras_own.std(), rel=0.08)


def test_numpy_orthogonal_is_orthogonal_and_fills_are_filled() -> None:
    with numpy_initializers():
        wide = draws(keras.initializers.Orthogonal(gain=2.0, seed=3))
        tall = keras.ops.convert_to_numpy(keras.initializers.Orthogonal(seed=3)((96, 40)))
        zeros = keras.initializers.Zeros()((3, 4), dtype="float32")
        ones = keras.initializers.Ones()((5,), dtype="int32")
    assert np.allclose(wide @ wide.T, 4.0 * np.eye(40), atol=1e-4)
    assert np.allclose(tall.T @ tall, np.eye(40), atol=1e-5)
    assert np.array_equal(np.asarray(zeros), np.zeros((3, 4))) and zeros.dtype == np.float32
    assert np.array_equal(np.asarray(ones), np.ones(5)) and ones.dtype == np.int32


def test_keras_computes_as_before_outside_the_block_and_where_numpy_cannot() -> None:
    glorot = keras.initializers.GlorotUniform(seed=1)
    before = draws(glorot)
    with numpy_initializers():
        pass
    assert np.array_equal(draws(glorot), before)  # restored
    generator = keras.initializers.GlorotUniform(seed=keras.random.SeedGenerator(5))
    with numpy_initializers():
        value = generator(SHAPE)  # a SeedGenerator: Keras' own computation
    assert not isinstance(value, np.ndarray)


def test_a_model_built_twice_from_one_seed_has_the_same_weights_and_keras_configs() -> None:
    spec = ModelSpec("lstm", (8, 6), 0.1, 0.1, True, "tanh", 1e-3)

    def build() -> keras.Model:
        keras.utils.set_random_seed(11)
        return build_model(spec, (5, 3), Head())

    one, two = build(), build()
    for a, b in zip(one.get_weights(), two.get_weights(), strict=True):
        assert np.array_equal(a, b)
    recurrent = one.get_layer("bidirectional_1").forward_layer.cell.recurrent_kernel
    r = keras.ops.convert_to_numpy(recurrent)
    assert np.allclose(r @ r.T, np.eye(r.shape[0]), atol=1e-5)  # (8, 32): orthonormal rows
    config = one.get_layer("bidirectional_1").forward_layer.get_config()
    assert config["kernel_initializer"]["class_name"] == "GlorotUniform"
    assert config["recurrent_initializer"]["class_name"] == "Orthogonal"
    assert one.optimizer.built


def test_fans_are_keras_fans() -> None:
    from keras.src.initializers.random_initializers import compute_fans

    from tuner.patches.initializers import _fans

    for shape in [(7,), (8, 96), (3, 8, 96), (2, 3, 8, 96)]:
        assert _fans(shape) == compute_fans(shape)


@pytest.mark.parametrize(
    ("attribute", "value"), [("mode", "fan_geo_avg"), ("distribution", "orthogonal")]
)
def test_an_unknown_mode_or_distribution_is_refused_by_name(attribute, value) -> None:
    from tuner.patches.checks import PatchError

    initializer = keras.initializers.VarianceScaling(seed=1)
    setattr(initializer, attribute, value)  # as a newer Keras might accept it
    with numpy_initializers(), pytest.raises(PatchError, match=f"{attribute} '{value}'"):
        draws(initializer)


def test_a_keras_whose_initialisers_moved_is_refused_with_its_version(monkeypatch) -> None:
    from tuner.patches import check_patches
    from tuner.patches.checks import PatchError, patches_off

    monkeypatch.setattr(keras, "__version__", "9.0.0")
    monkeypatch.delattr(keras.initializers.RandomNormal, "__call__")
    with pytest.raises(PatchError, match=r"^Keras 9\.0\.0's RandomNormal no longer defines"):
        check_patches()
    with pytest.raises(PatchError, match="RandomNormal"), numpy_initializers():
        pass
    assert patches_off() == []  # refused, not fallen back


def test_a_keras_whose_initialisers_lost_an_attribute_is_refused(monkeypatch) -> None:
    from tuner.patches import check_patches
    from tuner.patches.checks import PatchError

    monkeypatch.delattr(keras.initializers.Orthogonal, "__init__")  # Keras' base takes seed only
    made = keras.initializers.Orthogonal(seed=0)
    assert not hasattr(made, "gain")
    with pytest.raises(PatchError, match="Orthogonal has no gain"):
        check_patches()
