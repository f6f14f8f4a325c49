"""Keras' weight initialisers computed with NumPy while tuner builds a model.

On JAX every operation Keras' initialisers run (a uniform draw, the orthogonal initialiser's QR,
a fill with zeros) is compiled by XLA once per shape, and the units a trial draws make new
shapes: building the models took 16% of the CPU time of the README's main command, more than
compiling their training steps (BENCHMARKS.md, "One batch shape a trial, and weights drawn with
NumPy"). The same distributions drawn with NumPy compile nothing.

`numpy_initializers()` swaps the computation in for the duration of a `with` block only: the
initialisers stay Keras' own classes, so a saved model names them as before and loads anywhere,
and nothing outside the block (a user's own models) is touched. The draws are not Keras' own
(another generator) and are as repeatable: each initialiser's seed is an integer drawn from
Python's `random` when it is made, which `keras.utils.set_random_seed` seeds, and one seed gives
the same weights on every backend. An initialiser NumPy cannot stand in for (a `SeedGenerator`
seed, a dtype NumPy lacks, an unknown dimension, axes named by the user) computes as Keras does.

The computations lean on Keras' public initialiser classes: each computes its values in its own
`__call__`, from the attributes it was made with (`minval`, `stddev`, `mode`, `gain`, ...), and
`VarianceScaling` takes the modes and distributions Keras 3 has always had. When that fails the
patch refuses, with one line naming Keras' version (`PatchError`): `check()` at the start of
every block, and a `mode` or `distribution` it does not know when a weight is drawn. It does not
fall back, as the dropout patch does, because it cannot know what a new value means: a guess is
a wrong distribution trained in silence, and Keras' own computation, the alternative, gives
other initial weights for the same seed than the trials before it had.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from tuner.patches.checks import PatchError

Compute = Callable[[Any, tuple[int, ...], np.dtype], np.ndarray]


def _rng(initializer: Any) -> np.random.Generator:
    return np.random.default_rng(initializer.seed)


def _uniform(initializer: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    low, high = initializer.minval, initializer.maxval
    return _rng(initializer).uniform(low, high, shape).astype(dtype)


def _normal(initializer: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    x = _rng(initializer).standard_normal(shape)
    return (float(initializer.mean) + float(initializer.stddev) * x).astype(dtype)


def _truncated_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal draws, each redrawn until it lies within two standard deviations."""
    x = rng.standard_normal(shape)
    outside = np.abs(x) > 2.0
    while outside.any():
        x[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(x) > 2.0
    return x


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """Keras' fan-in and fan-out of a weight of `shape` (its input and output axes the last
    but one and the last)."""
    if not shape:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive_field = math.prod(shape[:-2])
    return shape[-2] * receptive_field, shape[-1] * receptive_field


MODES = ("fan_in", "fan_out", "fan_avg")
DISTRIBUTIONS = ("truncated_normal", "untruncated_normal", "uniform")


def _unknown(what: str, value: Any, known: tuple[str, ...]) -> PatchError:
    import keras

    return PatchError(
        f"VarianceScaling's {what} {value!r} (Keras {keras.__version__}) is none of "
        f"{', '.join(known)}, which tuner's NumPy initialisers compute; tuner refuses to guess"
    )


def _variance_scaling(initializer: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    mode, distribution = initializer.mode, initializer.distribution
    if mode not in MODES:
        raise _unknown("mode", mode, MODES)
    if distribution not in DISTRIBUTIONS:
        raise _unknown("distribution", distribution, DISTRIBUTIONS)
    fan_in, fan_out = _fans(shape)
    fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[mode]
    scale = initializer.scale / max(1.0, fan)
    rng = _rng(initializer)
    if distribution == "truncated_normal":
        # Keras' constant: the standard deviation of a standard normal truncated at 2.
        x = _truncated_normal(rng, shape) * math.sqrt(scale) / 0.87962566103423978
    elif distribution == "untruncated_normal":
        x = rng.standard_normal(shape) * math.sqrt(scale)
    else:
        limit = math.sqrt(3.0 * scale)
        x = rng.uniform(-limit, limit, shape)
    return x.astype(dtype)


def _orthogonal(initializer: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    rows, columns = math.prod(shape[:-1]), shape[-1]
    a = _rng(initializer).standard_normal((max(rows, columns), min(rows, columns)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    if rows < columns:
        q = q.T
    return (float(initializer.gain) * q.reshape(shape)).astype(dtype)


def _fill(value: float) -> Compute:
    def fill(initializer: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return np.full(shape, value, dtype=dtype)

    return fill


def _computations() -> dict[type, tuple[Compute, bool]]:
    """Keras' initialiser classes, each with its NumPy computation and whether it is random.
    Subclasses that keep their base's `__call__` (GlorotUniform, HeNormal, ...) follow it."""
    from keras import initializers

    return {
        initializers.RandomUniform: (_uniform, True),
        initializers.RandomNormal: (_normal, True),
        initializers.VarianceScaling: (_variance_scaling, True),
        initializers.Orthogonal: (_orthogonal, True),
        initializers.Zeros: (_fill(0.0), False),
        initializers.Ones: (_fill(1.0), False),
    }


# The attributes each computation reads, by Keras class name.
_ATTRIBUTES = {
    "RandomUniform": ("minval", "maxval", "seed"),
    "RandomNormal": ("mean", "stddev", "seed"),
    "VarianceScaling": ("scale", "mode", "distribution", "seed"),
    "Orthogonal": ("gain", "seed"),
}


def check() -> None:
    """Refuse (`PatchError`) a Keras whose initialiser classes no longer compute their values in
    their own `__call__` from the attributes the NumPy computations read."""
    import keras

    for cls in _computations():
        if "__call__" not in cls.__dict__:
            raise PatchError(
                f"Keras {keras.__version__}'s {cls.__name__} no longer defines its own "
                "__call__, which tuner's NumPy initialisers replace"
            )
        needed = _ATTRIBUTES.get(cls.__name__, ())
        # seed=0: Keras would otherwise draw a seed from Python's `random`, moving it on.
        made = cls(seed=0) if "seed" in needed else cls()
        missing = [name for name in needed if not hasattr(made, name)]
        if missing:
            raise PatchError(
                f"Keras {keras.__version__}'s {cls.__name__} has no {', '.join(missing)}, "
                "which tuner's NumPy initialisers read"
            )


def _numpy_call(
    original: Callable[..., Any], compute: Compute, random: bool
) -> Callable[..., Any]:
    from keras import backend

    def __call__(self: Any, shape: Any, dtype: Any = None) -> Any:
        name = backend.standardize_dtype(dtype)
        dims = tuple(shape)
        if (
            all(isinstance(d, int) for d in dims)
            and name in (_FLOATS if random else _NUMPY_DTYPES)
            and (not random or isinstance(self.seed, int))
            and (compute is not _orthogonal or len(dims) >= 2)
            # Axes named by the user (newer Keras): Keras' own fans.
            and getattr(self, "input_axes", None) is None
            and getattr(self, "output_axes", None) is None
        ):
            return compute(self, dims, np.dtype(name))
        return original(self, shape, dtype)

    return __call__


_FLOATS = frozenset({"float16", "float32", "float64"})
_NUMPY_DTYPES = _FLOATS | {"int32", "int64", "bool"}


# Held for the block: two threads' blocks would otherwise restore each other's computations.
_LOCK = threading.RLock()


@contextmanager
def numpy_initializers() -> Iterator[None]:
    """Within the block, Keras' built-in initialisers compute their values with NumPy. One
    thread at a time runs such a block (others wait); the same thread may nest them. Raises
    `PatchError` where Keras is not as the computations assume (`check`)."""
    check()
    with _LOCK:
        computations = _computations()
        originals = {cls: cls.__dict__["__call__"] for cls in computations}
        try:
            for cls, (compute, random) in computations.items():
                setattr(cls, "__call__", _numpy_call(originals[cls], compute, random))  # noqa: B010
            yield
        finally:
            for cls, original in originals.items():
                setattr(cls, "__call__", original)  # noqa: B010
