"""Dropout masks drawn with XLA's Philox generator while tuner trains on JAX.

On JAX, Keras draws every dropout mask (a `Dropout` layer's, and the masks a GRU or LSTM keeps
for all time steps of a batch) with `jax.random.bernoulli`, whose default generator is
Threefry-2x32: twenty rounds that XLA compiles into a large kernel for each mask. Every trial
compiles its own training step, so those kernels were paid again in every trial. XLA's own
`rng_bit_generator` with the Philox-4x32-10 algorithm (the generator of TensorFlow's stateless
random ops, and one of cuRAND's) draws Bernoulli masks of the same rate in a much smaller
computation: the first training step (tracing and compiling it) of a GRU(37) or of a
bidirectional two-layer LSTM with dropout took a fifth less (BENCHMARKS.md, "Dropout masks
from Philox").

`philox_dropout()` swaps the draw in for the duration of a `with` block, in the thread that runs
it; the block must hold the first call of `fit` (when the training step is traced). Nothing is
saved with a model about how its masks were drawn, and nothing outside the block (a user's own
training, another thread) draws otherwise than Keras does. The masks are as repeatable as
Keras' own: each is drawn from the key the layer's `SeedGenerator` hands out (a new one at every
step), which the trial's seed sets; only their bits differ from Keras' draws. A rate of 0 or 1,
and another backend, draw as Keras does.

The draw leans on private names of Keras (`keras.src.backend.jax.random`: `dropout`,
`jax_draw_seed`, `_get_concrete_noise_shape`, with their parameters) and on JAX's
`lax.rng_bit_generator` with `RNG_PHILOX`; `check()` looks for them when a block starts. Where
one is missing or takes other parameters, or a seed reaches the draw in a form it was not
written for (a `jax.Array` key, not the layer's two words; a rate that is not a number), masks
are drawn as Keras does: the patch falls back rather than refuse, since a search is still
right without it, only slower to compile. It does not fall back in silence: the same trial
seed then trains another model, so the process warns once (`tuner.patches.checks.fall_back`)
and every trial it runs from then on records `patches_off = ["dropout"]`, which tells its
results apart from those of trials that drew from Philox.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tuner.patches.checks import fall_back

# The names of keras.src.backend.jax.random the draw calls, with their parameters.
_KERAS_NAMES = {
    "dropout": ("inputs", "rate", "noise_shape", "seed"),
    "jax_draw_seed": ("seed",),
    "_get_concrete_noise_shape": ("inputs", "noise_shape"),
}
# How many blocks the current thread is in: masks are Philox's there only.
_ACTIVE = threading.local()
_INSTALL = threading.Lock()


def _philox(original: Callable[..., Any], module: Any) -> Callable[..., Any]:
    import jax
    import jax.numpy as jnp
    from jax import lax

    def dropout(inputs: Any, rate: Any, noise_shape: Any = None, seed: Any = None) -> Any:
        if not getattr(_ACTIVE, "depth", 0):
            return original(inputs, rate, noise_shape, seed)
        if isinstance(seed, jax.Array) or not isinstance(rate, int | float):
            # Not what tuner's layers pass today: a Keras that does is drawn from as it draws.
            fall_back("dropout", f"a seed of {type(seed).__name__} or a rate of {rate!r}")
            return original(inputs, rate, noise_shape, seed)
        if not 0 < rate < 1:
            return original(inputs, rate, noise_shape, seed)
        # Keras' seed: two uint32 words, from the layer's SeedGenerator (advanced by this).
        key = jnp.asarray(module.jax_draw_seed(seed))
        if key.shape != (2,) or key.dtype != jnp.uint32:
            fall_back("dropout", f"Keras draws from a key of {key.dtype}{list(key.shape)}")
            return original(inputs, rate, noise_shape, key)
        keep = 1.0 - float(rate)
        # Philox's state: the key (the seed's two words), then a 64-bit counter from 0. Each
        # seed is its own key, so masks drawn from neighbouring seeds are independent.
        state = jnp.concatenate([key, jnp.zeros(2, jnp.uint32)])
        _, bits = lax.rng_bit_generator(  # type: ignore[no-untyped-call]
            state,
            # Keras' own reading of `noise_shape` (its unknown dimensions from `inputs`).
            tuple(module._get_concrete_noise_shape(inputs, noise_shape)),
            dtype=jnp.uint32,
            algorithm=lax.RandomAlgorithm.RNG_PHILOX,
        )
        # Kept with probability `keep`, as a uniform draw below it (jax.random.bernoulli).
        mask = bits < jnp.uint32(min(int(keep * 2**32), 2**32 - 1))
        mask = jnp.broadcast_to(mask, inputs.shape)
        return lax.select(mask, inputs / keep, jnp.zeros_like(inputs))

    dropout.philox = True  # type: ignore[attr-defined]
    return dropout


def check() -> str | None:
    """Why masks cannot be drawn from Philox with the installed Keras and JAX (None: they can).
    The JAX backend only: on another one the patch changes nothing."""
    import jax
    import keras
    from jax import lax

    try:
        from keras.src.backend.jax import random as module
    except ImportError:
        return f"Keras {keras.__version__} has no keras.src.backend.jax.random"
    for name, parameters in _KERAS_NAMES.items():
        function = getattr(module, name, None)
        if not callable(function):
            return f"Keras {keras.__version__} has no keras.src.backend.jax.random.{name}"
        found = tuple(inspect.signature(function).parameters)
        if found != parameters:
            return (
                f"Keras {keras.__version__}'s keras.src.backend.jax.random.{name} takes "
                f"({', '.join(found)}), not ({', '.join(parameters)})"
            )
    if not hasattr(lax, "rng_bit_generator") or not hasattr(
        getattr(lax, "RandomAlgorithm", None), "RNG_PHILOX"
    ):
        return f"JAX {jax.__version__} has no lax.rng_bit_generator with RNG_PHILOX"
    return None


@contextmanager
def philox_dropout() -> Iterator[None]:
    """Within the block, Keras draws dropout masks on JAX with XLA's Philox generator, in this
    thread only; blocks may nest. On another backend the block changes nothing.

    The first block puts a wrapper in place of Keras' JAX `dropout` for good; outside a block
    the wrapper calls Keras' own function, so other threads (and this one after the block) draw
    as Keras does. Where `check()` finds Keras or JAX otherwise than the draw needs, the block
    draws as Keras does, warns once and records it (`tuner.patches.checks.patches_off`)."""
    import keras

    if keras.backend.backend() != "jax":
        yield
        return
    why = check()
    if why is not None:
        fall_back("dropout", why)
        yield  # Keras' own draws
        return
    from keras.src.backend.jax import random as module

    with _INSTALL:
        if not getattr(module.dropout, "philox", False):
            module.dropout = _philox(module.dropout, module)
    _ACTIVE.depth = getattr(_ACTIVE, "depth", 0) + 1
    try:
        yield
    finally:
        _ACTIVE.depth -= 1
