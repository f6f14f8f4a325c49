"""XLA's CPU thread pool sized by `XLA_FLAGS`, set before JAX (or TensorFlow) starts.

XLA's CPU client runs Eigen's thread pool over every core it sees unless told otherwise, and
workers that share cores fight over them: `--xla_cpu_multi_thread_eigen=false` when a worker has
one core. XLA reads `XLA_FLAGS` once, when it starts, and an `--xla_*` flag it does not know is
fatal there ("Unknown flag in XLA_FLAGS", and the process aborts): an XLA that dropped the flag
would abort every worker at its first computation. A process cannot ask its own XLA which flags
it knows without starting it (too late to set them then), and asking another process costs
seconds at every worker's start. So the flag is set only for the versions of the library whose
XLA trains (jaxlib on JAX, TensorFlow on TensorFlow) that it was tried with (`KNOWN`); for any
other it is left out, with a warning once, and trials record `patches_off = ["xla"]`.

It falls back rather than refuse because the flag changes how fast a trial runs, not what it
computes: XLA's default pool is slower when workers share cores, never wrong. It is recorded
all the same, since a study may weigh seconds per epoch (`cost_objective`).

`intra_op_parallelism_threads=N` goes after it, as before (a token without `--` is skipped by
XLA after a flag; as the first token, XLA would take it for the name of a file of flags).
"""

from __future__ import annotations

import importlib.metadata
import os

from tuner.patches.checks import fall_back, within

# Each library whose XLA reads the flag: its distributions, then the versions tried with it,
# from the oldest pyproject.toml allows to below the next one not yet tried.
KNOWN: dict[str, tuple[tuple[str, ...], tuple[int, ...], tuple[int, ...]]] = {
    "jax": (("jaxlib",), (0, 4, 36), (0, 11)),
    "tensorflow": (("tensorflow", "tensorflow-cpu"), (2, 18), (2, 22)),
}

# The flags tuner sets, replacing any of the user's.
OWN = ("--xla_cpu_multi_thread_eigen", "intra_op_parallelism_threads")


def installed_version(distributions: tuple[str, ...]) -> str | None:
    """The version of the first of `distributions` installed (None: none is)."""
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def check(backend: str) -> str | None:
    """Why the thread flags cannot be given to the XLA of `backend`'s library (None: they can,
    or no XLA of a known library will read them)."""
    if backend not in KNOWN:
        return None
    distributions, low, below = KNOWN[backend]
    version = installed_version(distributions)
    if version is None or within(version, low, below):
        return None
    tried = f"{'.'.join(map(str, low))} to below {'.'.join(map(str, below))}"
    return (
        f"{distributions[0]} {version} is outside the versions tried with "
        f"--xla_cpu_multi_thread_eigen ({tried}), and XLA aborts on a flag it does not know; "
        "left out, so XLA's threads use every core it sees"
    )


def size_thread_pool(threads: int) -> None:
    """Tell the XLA of `KERAS_BACKEND`'s library to compute with `threads` threads (one: no
    thread pool), replacing such flags in `XLA_FLAGS`; nothing, with a warning once, where that
    library's version is outside `KNOWN`."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(OWN)]
    why = check(os.environ.get("KERAS_BACKEND", "tensorflow"))
    if why is None:
        flags.append(f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'}")
        flags.append(f"intra_op_parallelism_threads={threads}")
    else:
        fall_back("xla", why)
    if flags:
        os.environ["XLA_FLAGS"] = " ".join(flags)
    else:
        os.environ.pop("XLA_FLAGS", None)
