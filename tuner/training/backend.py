"""The Keras backend trials train on: JAX or TensorFlow, chosen before Keras is imported.

Keras reads `KERAS_BACKEND` once, when it is first imported, so every process that trains or
loads a model (a worker, `tuner retrain`) sets it before anything imports Keras: the CLI sets it
as soon as it has read the study file. The choice, in one stated order: the study file's
`[training] backend`, else the environment's `TUNER_BACKEND`, else `DEFAULT`. The environment
variable is the default of a machine (a GPU box set up for JAX, say); a study file that names a
backend means it.

Text classification vectorises its texts with Keras' `TextVectorization`, which runs on
TensorFlow whatever the backend: preparing a text study needs TensorFlow installed, training it
on JAX then does not use it.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from tuner.config import BACKENDS
from tuner.errors import ConfigError

DEFAULT = "jax"  # the faster of the two, measured side by side (BENCHMARKS.md)
ENV_VAR = "TUNER_BACKEND"


def choose(configured: str | None = None) -> str:
    """The backend to train on: `configured` (the study file's), else $TUNER_BACKEND, else the
    default."""
    if configured is not None:
        return configured
    chosen = os.environ.get(ENV_VAR) or DEFAULT
    if chosen not in BACKENDS:
        raise ConfigError(f"{ENV_VAR}={chosen!r}: must be one of {', '.join(BACKENDS)}")
    return chosen


def for_models(configured: str | None, task: str) -> str | None:
    """The backend for commands that save or load a model taking raw data (`tuner retrain`,
    `tuner predict`): a text model takes strings, which only TensorFlow feeds to a model, so
    those run on TensorFlow whatever the study trains on."""
    return "tensorflow" if task == "text-classification" else configured


def use(configured: str | None = None) -> str:
    """Make Keras run on the chosen backend in this process (and the processes it starts);
    returns its name. Keras must not be imported yet, or already be on that backend."""
    chosen = choose(configured)
    if "keras" in sys.modules:
        import keras

        current = keras.backend.backend()
        if current != chosen:
            raise ConfigError(
                f"Keras already runs on {current} in this process and cannot switch to "
                f"{chosen}; set KERAS_BACKEND={chosen} or {ENV_VAR}={chosen} before starting"
            )
        return chosen
    os.environ["KERAS_BACKEND"] = chosen
    if chosen == "jax":
        compilation_cache()
    return chosen


def compilation_cache() -> None:
    """Keep what JAX compiles in tuner's cache folder (`<cache>/jax`), for this process and
    those it starts, unless the environment already says where (or `JAX_COMPILATION_CACHE_DIR=`
    empty: not at all).

    Every model JAX builds compiles its weights' initialisers once per shape, and every trial
    compiles its training and evaluation steps; trials of one search share many initialiser
    shapes (seldom whole steps: Keras bakes the dropout rates in), and an ablation's seeds of
    one variant share whole steps. Kept for any compile, however short: building a model fell
    from about 5 s to under 1 s once its shapes were in the cache (BENCHMARKS.md).
    """
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    from tuner.data.cache import cache_dir

    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(cache_dir() / "jax")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    # Least recently used entries go beyond 1 GiB (JAX needs `filelock` for that; without it
    # JAX refuses to read the cache at all, so the size is only bounded when it is there).
    if importlib.util.find_spec("filelock") is not None:
        os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(2**30))


__all__ = ["BACKENDS", "DEFAULT", "ENV_VAR", "choose", "current", "for_models", "use"]


def current() -> str:
    """The backend Keras runs on in this process (importing Keras if need be)."""
    import keras

    return str(keras.backend.backend())
