"""Importing Keras and TensorFlow without the banner their C++ side prints before logging is set
up (oneDNN, CPU features, CUDA, "E0000 ... oneDNN supports DT_BOOL only on AVX-512"): harmless,
repeated by every process that imports them, and it reads like an error."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def silenced_stderr() -> Iterator[None]:
    """File descriptor 2 goes to /dev/null meanwhile: C++ libraries write there directly."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)


def quiet_logs() -> None:
    """Environment settings that keep TensorFlow's and XLA's C++ logging to errors that
    matter; set before either starts."""
    # 3, not 2: the oneDNN line is logged as an error ("E0000 ... oneDNN supports DT_BOOL only
    # on AVX-512"). Set TF_CPP_MIN_LOG_LEVEL yourself to see more.
    if not os.environ.get("TF_CPP_MIN_LOG_LEVEL"):
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def import_tensorflow() -> None:
    """Import TensorFlow (and so Keras) quietly; a no-op once it is imported. Keras on another
    backend can use it from then on (`leave_tensorflow_out`)."""
    if "tensorflow" in sys.modules:
        return
    quiet_logs()
    with silenced_stderr():
        import tensorflow as tf

        # A new model per trial means new traced functions: expected, not worth a warning.
        tf.get_logger().setLevel("ERROR")


def import_keras() -> None:
    """Import Keras quietly on the backend `KERAS_BACKEND` names (`tuner.training.backend.use`): on
    TensorFlow, TensorFlow too; on JAX, not TensorFlow (its memory and start-up are spared),
    now or later (`leave_tensorflow_out`)."""
    if "keras" not in sys.modules:
        if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
            import_tensorflow()
        quiet_logs()
        with silenced_stderr():
            import keras  # noqa: F401
    leave_tensorflow_out()


def leave_tensorflow_out() -> None:
    """In this process, let Keras on a backend other than TensorFlow count TensorFlow as there
    only once something has imported it.

    Keras asks whether TensorFlow is installed in many places, whatever the backend (seeding
    every trial, a `Bidirectional` layer's config, saving), and imports it to find out: that
    cost a JAX worker 2 to 3 s and about 400 MB for a library it never used, and printed
    TensorFlow's start-up lines, which `TF_CPP_MIN_LOG_LEVEL` no longer silences (BENCHMARKS.md).
    tuner imports TensorFlow itself where it needs it (`import_tensorflow`: a text study's
    vectorising), and Keras then uses it as before.
    """
    import keras

    if keras.backend.backend() == "tensorflow":
        return
    try:  # Keras's own module: should it move, TensorFlow is imported as before, no worse
        from keras.src.utils.module_utils import LazyModule
        from keras.src.utils.module_utils import tensorflow as lazy  # every Keras module's `tf`
    except ImportError:
        return

    class IfImported(LazyModule):  # type: ignore[misc]
        """Keras's lazy module that counts as available only once imported."""

        @property
        def available(self) -> bool:
            return self.name in sys.modules and bool(super().available)

    if type(lazy) is LazyModule:
        lazy.__class__ = IfImported
