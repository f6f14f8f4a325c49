"""The seed models on one GPU, on the JAX backend: seconds per epoch with and without recurrent
dropout, and the epochs per second of 1, 2, 4 and 8 worker processes sharing the GPU.

Data shaped like the Jena study's windows (batch 128 x 120 steps x 14 features, random
values: the shape, not the values, decides the speed), 100 training batches and 25 validation
batches an epoch. Each worker process sees the GPU without preallocating it
(XLA_PYTHON_CLIENT_PREALLOCATE=false, as `tuner run` sets for GPU workers). Sized to finish in
under 8 minutes on one GPU (about 5 on an H200).

Usage:
    python benchmarks/gpu.py [--epochs 4] [--workers 1,2,4,8] [--gpu 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BATCH, STEPS, FEATURES, TRAIN_BATCHES, VALIDATION_BATCHES = 128, 120, 14, 100, 25


def epochs_of(seed: str, epochs: int, recurrent_dropout: bool) -> list[float]:
    """Seconds of each epoch of a seed model (this process; Keras on JAX)."""
    import keras
    import numpy as np

    from tuner.search.space import SEED_CONFIGS
    from tuner.training.model import build_model
    from tuner.training.spec import spec_from_params

    params = dict(next(c.params for c in SEED_CONFIGS if c.name == seed))
    if not recurrent_dropout:
        params["recurrent_dropout"] = 0.0
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH * TRAIN_BATCHES, STEPS, FEATURES)).astype("float32")
    y = rng.normal(size=(BATCH * TRAIN_BATCHES,)).astype("float32")
    n_val = BATCH * VALIDATION_BATCHES
    keras.utils.set_random_seed(0)
    model = build_model(spec_from_params(params), (STEPS, FEATURES), _head())
    durations: list[float] = []

    class Clock(keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_begin(self, epoch: int, logs: object = None) -> None:
            self.began = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: object = None) -> None:
            durations.append(time.perf_counter() - self.began)

    model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=epochs,
        validation_data=(x[:n_val], y[:n_val]),
        callbacks=[Clock()],
        verbose=0,
    )
    return durations


def _head():  # type: ignore[no-untyped-def]
    from tuner.training.model import Head

    return Head()


def one(args: argparse.Namespace) -> None:
    """Child process: train one model, print its epochs' seconds as JSON."""
    global TRAIN_BATCHES, VALIDATION_BATCHES
    TRAIN_BATCHES, VALIDATION_BATCHES = args.train_batches, max(1, args.train_batches // 4)
    print(json.dumps(epochs_of(args.seed, args.epochs, not args.no_recurrent_dropout)))


def child(seed: str, epochs: int, recurrent_dropout: bool, gpu: str) -> subprocess.Popen[str]:
    env = os.environ | {
        "KERAS_BACKEND": "jax",
        "CUDA_VISIBLE_DEVICES": gpu,
        "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    command = [sys.executable, __file__, "--child", "--seed", seed, "--epochs", str(epochs)]
    command += ["--train-batches", str(TRAIN_BATCHES)]
    if not recurrent_dropout:
        command.append("--no-recurrent-dropout")
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)


def result(process: subprocess.Popen[str]) -> list[float]:
    out, _ = process.communicate()
    if process.returncode:
        raise SystemExit(f"a child failed with code {process.returncode}")
    return list(json.loads(out.strip().splitlines()[-1]))


@dataclasses.dataclass
class Row:
    model: str
    recurrent_dropout: bool
    first_s: float
    later_s: float


def main() -> None:
    global TRAIN_BATCHES, VALIDATION_BATCHES
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--gpu", default="0")
    parser.add_argument("--seeds", default="gru,gru-dropout,stacked-gru,bidirectional-lstm")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--train-batches", type=int, default=TRAIN_BATCHES, help="an epoch's")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", default="gru", help=argparse.SUPPRESS)
    parser.add_argument("--no-recurrent-dropout", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be 2 or more (the first epoch compiles)")
    if args.child:
        one(args)
        return
    TRAIN_BATCHES, VALIDATION_BATCHES = args.train_batches, max(1, args.train_batches // 4)
    began = time.perf_counter()
    rows = []
    print(
        f"per epoch: {TRAIN_BATCHES} batches of {BATCH} x {STEPS} x {FEATURES} + "
        f"{VALIDATION_BATCHES} validation batches, JAX, GPU {args.gpu}"
    )
    for seed in args.seeds.split(","):
        for dropout in (True, False):
            if not dropout and seed in ("gru", "bidirectional-lstm"):
                continue  # these have no recurrent dropout to remove
            seconds = result(child(seed, args.epochs, dropout, args.gpu))
            row = Row(seed, dropout, seconds[0], statistics.median(seconds[1:]))
            rows.append(row)
            print(
                f"  {seed:<20} recurrent dropout {'on ' if dropout else 'off'}: first epoch "
                f"{row.first_s:.2f} s, later {row.later_s:.3f} s",
                flush=True,
            )
    scaling = {}
    print(f"\nworkers sharing GPU {args.gpu} (GRU(32), {args.epochs} epochs each):")
    for n in (int(w) for w in args.workers.split(",")):
        start = time.perf_counter()
        processes = [child("gru", args.epochs, True, args.gpu) for _ in range(n)]
        for p in processes:
            result(p)
        wall = time.perf_counter() - start
        scaling[n] = n * args.epochs / wall
        print(
            f"  {n} worker(s): {scaling[n]:.2f} epochs/s "
            f"(x{scaling[n] / scaling[min(scaling)]:.2f} of one), {wall:.0f} s",
            flush=True,
        )
    print(f"\ntotal {time.perf_counter() - began:.0f} s")
    if args.out:
        args.out.write_text(
            json.dumps({"epochs": [dataclasses.asdict(r) for r in rows], "workers": scaling})
            + "\n"
        )


if __name__ == "__main__":
    main()
