"""Seeds drawn from a study's `[sampler] seed`, and setting them: numpy alone at import, so
that modules which only plan trials (the ablation) do not import Keras."""

from __future__ import annotations

import sys

import numpy as np


def training_seed(study_seed: int, number: int) -> int:
    """Trial `number`'s seed for its training, drawn from the study's `[sampler] seed`."""
    return int(np.random.SeedSequence([study_seed, number]).generate_state(1)[0] >> 1)


def set_random_seed(seed: int) -> None:
    """`keras.utils.set_random_seed`: Python's, NumPy's and Keras's seeds (its initialisers, its
    dropout masks), without importing TensorFlow to seed it as well when nothing else has.

    Keras seeds TensorFlow whenever it is installed, whatever the backend, and so imports it: on
    JAX that cost every worker about 2 s and 440 MB for a library it never used, and printed
    TensorFlow's start-up lines. Trials feed Keras themselves, not through `tf.data`, so on JAX
    there is nothing of TensorFlow's to seed.
    """
    import keras

    if "tensorflow" in sys.modules or keras.backend.backend() == "tensorflow":
        keras.utils.set_random_seed(seed)
        return
    # Keras asks its lazy TensorFlow module whether TensorFlow is there, which imports it; it is
    # told no for this one call, and asked afresh afterwards (TextVectorization needs it).
    from keras.src.utils import module_utils

    lazy = module_utils.tensorflow
    available = lazy._available
    lazy._available = False
    try:
        keras.utils.set_random_seed(seed)
    finally:
        lazy._available = available
