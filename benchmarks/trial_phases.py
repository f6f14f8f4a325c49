"""Where one trial's time goes on JAX: building the model, each epoch, and each XLA compile of
the training and evaluation steps, on the nyc-weather study's data and training settings.

    python benchmarks/trial_phases.py gru 37 0.13 0.21 --epochs 3
    python benchmarks/trial_phases.py lstm 48,64 0.2 0.2 --bidirectional --epochs 3

Arguments: the cell, the units of each layer, dropout and recurrent dropout. Runs in this
process, one thread, without the persistent compilation cache (each compile is a real one);
prints one line per phase. Run it with two versions of the code to compare them.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import time
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ["JAX_COMPILATION_CACHE_DIR"] = ""
os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)


class Compiles(logging.Handler):
    """Collects JAX's "Finished XLA compilation of jit(NAME) in S sec" lines."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[tuple[str, float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Finished XLA compilation of jit("):
            name = message.split("jit(", 1)[1].split(")", 1)[0]
            self.seconds.append((name, float(message.rsplit(" in ", 1)[1].split()[0])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cell", choices=["gru", "lstm"])
    parser.add_argument("units", help="units per layer, comma-separated")
    parser.add_argument("dropout", type=float)
    parser.add_argument("recurrent_dropout", type=float)
    parser.add_argument("--bidirectional", action="store_true")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--study", default="studies/nyc-weather.toml")
    args = parser.parse_args()

    from tuner.patches.quiet import import_keras

    import_keras()
    import jax
    import keras

    from tuner.config import load_study_config
    from tuner.data import prepare
    from tuner.training.model import build_model
    from tuner.training.spec import ModelSpec

    compiles = Compiles()
    logging.getLogger("jax").addHandler(compiles)
    logging.getLogger("jax").setLevel(logging.WARNING)
    jax.config.update("jax_log_compiles", True)
    config = load_study_config(args.study)
    data, training = prepare(config.data), config.training
    spec = ModelSpec(
        args.cell,
        tuple(int(u) for u in args.units.split(",")),
        args.dropout,
        args.recurrent_dropout,
        args.bidirectional,
        "tanh",
        1e-3,
    )
    keras.utils.set_random_seed(1)
    start = time.perf_counter()
    model = build_model(spec, data.inputs, data.head, metrics=data.metrics)
    print(f"build {time.perf_counter() - start:.2f} s, {len(compiles.seconds)} compiles")
    compiles.seconds.clear()

    class Epochs(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: object = None) -> None:
            self.began = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: object = None) -> None:
            steps = [f"{n} {s:.2f} s" for n, s in compiles.seconds if n.endswith("_step")]
            print(
                f"epoch {epoch + 1} {time.perf_counter() - self.began:.2f} s, "
                f"{len(compiles.seconds)} compiles" + (f" ({', '.join(steps)})" if steps else "")
            )
            compiles.seconds.clear()

    train = data.split("train", training.batch_size, shuffle=True, seed=1)
    with _masks():
        model.fit(
            train.repeat() if training.steps_per_epoch else train,
            validation_data=_validation(data, training.batch_size),
            epochs=args.epochs,
            steps_per_epoch=training.steps_per_epoch,
            callbacks=[Epochs()],
            verbose=0,
        )


def _masks() -> Any:
    """Dropout masks drawn as the objective draws them (Philox since `tuner.patches.dropout`)."""
    try:
        from tuner.patches.dropout import philox_dropout
    except ImportError:  # older code: Keras' own draws
        return contextlib.nullcontext()
    return philox_dropout()


def _validation(data: object, batch_size: int) -> object:
    """The validation batches as the objective reads them (before `Prepared.evaluation`:
    batches of at least 1,024)."""
    if hasattr(data, "evaluation"):
        return data.evaluation("validation", batch_size)
    return data.split("validation", max(batch_size, 1024))  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
