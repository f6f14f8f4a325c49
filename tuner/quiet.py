"""Importing TensorFlow without the banner its C++ side prints before logging is set up
(oneDNN, CPU features): harmless, and repeated by every process that imports it."""

from __future__ import annotations

import os


def import_tensorflow() -> None:
    """Import TensorFlow (and so Keras) quietly; a no-op once it is imported."""
    import sys

    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        # A new model per trial means new traced functions: expected, not worth a warning.
        tf.get_logger().setLevel("ERROR")
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)
