"""Changes to other libraries' behaviour, fenced together: Keras' dropout masks drawn with
XLA's Philox generator (`dropout`), model weights drawn with NumPy (`initializers`), XLA's CPU
thread pool sized by flags (`xla`), and Keras imported without TensorFlow's start-up noise or,
on JAX, without TensorFlow (`quiet`). Each checks the upstream names, signatures or versions it
leans on, and where they fail either refuses with one line (`checks.PatchError`) or runs
without its change, warns once and has every trial record it (`checks.patches_off`); its
docstring says which and why. `check_patches()` runs the checks when a worker starts.

Layer 2 of tuner. May import: tuner.errors.
"""

from __future__ import annotations


def check_patches() -> list[str]:
    """Check each patch's assumptions about the installed Keras and JAX, before any trial:
    raises `PatchError` where a patch refuses; the patches this process runs without."""
    import keras

    from tuner.patches import dropout, initializers
    from tuner.patches.checks import fall_back, patches_off

    initializers.check()
    if keras.backend.backend() == "jax" and (why := dropout.check()) is not None:
        fall_back("dropout", why)
    return patches_off()
