"""What drawing dropout masks with Philox (`tuner.patches.dropout.philox_dropout`) saves on JAX:
the first training step of a model (tracing and compiling it) less the second, with Keras' own
draws (Threefry) and with Philox, in turn (each first in every other repetition), in one
process.

    python benchmarks/dropout_compile.py gru 37
    python benchmarks/dropout_compile.py lstm 48,64 --bidirectional

Arguments: the cell and the units of each layer; dropout and recurrent dropout are 0.2. Each
repetition builds the model afresh (nyc-weather's windows: 60 steps x 8 features, batch 64)
after `jax.clear_caches()`, without the persistent compilation cache, one compute thread.
Prints the median and every repetition for each way of drawing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ["JAX_COMPILATION_CACHE_DIR"] = ""
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cell", choices=["gru", "lstm"])
    parser.add_argument("units", help="units per layer, comma-separated")
    parser.add_argument("--bidirectional", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from tuner.patches.quiet import import_keras

    import_keras()
    import jax
    import keras
    import numpy as np

    from tuner.patches.dropout import philox_dropout
    from tuner.training.model import Head, build_model
    from tuner.training.spec import ModelSpec

    spec = ModelSpec(
        args.cell,
        tuple(int(u) for u in args.units.split(",")),
        0.2,
        0.2,
        args.bidirectional,
        "tanh",
        1e-3,
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 60, 8)).astype("float32")
    y = rng.normal(size=(64, 1)).astype("float32")
    ways = {"keras (threefry)": contextlib.nullcontext, "philox": philox_dropout}
    excess: dict[str, list[float]] = {name: [] for name in ways}
    for repeat in range(args.repeats):
        # Each goes first in turn: the process' first compile is the slowest.
        order = list(ways.items())[:: 1 if repeat % 2 else -1]
        for name, way in order:
            keras.backend.clear_session()
            jax.clear_caches()
            keras.utils.set_random_seed(repeat)
            model = build_model(spec, (60, 8), Head(units=1))
            with way():
                start = time.perf_counter()
                model.train_on_batch(x, y)
                first = time.perf_counter() - start
                start = time.perf_counter()
                model.train_on_batch(x, y)
                second = time.perf_counter() - start
            excess[name].append(first - second)
    for name, seconds in excess.items():
        print(
            f"{name}: first step less the second, median {statistics.median(seconds):.2f} s "
            f"({', '.join(f'{s:.2f}' for s in seconds)})"
        )


if __name__ == "__main__":
    main()
