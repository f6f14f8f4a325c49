"""JAX's compilation cache and memory: the two measurements behind
`tuner.training.backend.compilation_cache` and the `jax.clear_caches()` at the start of each JAX
trial (`tuner.search.objective`).

    python benchmarks/jax_cache.py build     # model build time: no cache, cold cache, warm cache
    python benchmarks/jax_cache.py memory    # resident MB after each of 15 models, without and
                                             # with jax.clear_caches() between them

Each measurement runs in fresh processes, one after the other (`build`) or side by side, each
pinned to its own core (`memory`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

BUILD_UNITS = (20, 21, 22, 23, 24)
MEMORY_UNITS = range(10, 40, 2)


def _jax(cache: str | None) -> None:
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    os.environ["JAX_COMPILATION_CACHE_DIR"] = cache or ""
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"


def build(cache: str | None) -> None:
    _jax(cache)
    import keras

    from tuner.training.model import Head, ModelSpec, build_model

    times = []
    for units in BUILD_UNITS:
        keras.backend.clear_session(free_memory=False)
        keras.utils.set_random_seed(units)
        start = time.perf_counter()
        build_model(ModelSpec("gru", (units,), 0.1, 0.1, False, "tanh", 1e-3), (60, 8), Head())
        times.append(time.perf_counter() - start)
    print(", ".join(f"{t:.2f}" for t in times))


def memory(clear: bool, cache: str) -> None:
    _jax(cache)
    import jax
    import keras
    import numpy as np

    x = np.random.rand(64 * 5, 20, 4).astype("float32")
    y = np.random.rand(64 * 5, 1).astype("float32")
    resident = []
    for i, units in enumerate(MEMORY_UNITS):
        if clear:
            jax.clear_caches()
        keras.backend.clear_session(free_memory=False)
        model = keras.Sequential(
            [
                keras.Input((20, 4)),
                keras.layers.GRU(units, dropout=0.1, recurrent_dropout=0.1 + i / 100),
                keras.layers.Dense(1),
            ]
        )
        model.compile("rmsprop", "mse")
        model.fit(x, y, batch_size=64, epochs=2, validation_data=(x, y), verbose=0)
        with open("/proc/self/statm") as f:
            resident.append(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 2**20)
    print(", ".join(str(r) for r in resident))


def _child(*args: str, core: int | None = None) -> subprocess.Popen[str]:
    command = [sys.executable, __file__, *args]
    if core is not None:
        command = ["taskset", "-c", str(core), *command]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def main() -> None:
    what = sys.argv[1]
    if what == "_build":
        build(sys.argv[2] or None)
        return
    if what == "_memory":
        memory(sys.argv[2] == "clear", sys.argv[3])
        return
    with tempfile.TemporaryDirectory() as cache:
        if what == "build":
            for label, folder in (("no cache", ""), ("cold cache", cache), ("warm cache", cache)):
                out, _ = _child("_build", folder).communicate()
                print(f"| {label} | {out.strip()} |")
        elif what == "memory":
            runs = {
                label: _child("_memory", label, os.path.join(cache, label), core=core)
                for core, label in enumerate(("keep", "clear"))
            }
            for label, process in runs.items():
                out, _ = process.communicate()
                print(f"| {label} | {out.strip()} |")
        else:
            raise SystemExit(f"unknown measurement {what!r}: build or memory")


if __name__ == "__main__":
    main()
