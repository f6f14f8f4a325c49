"""Recurrent dropout's cost: seconds per epoch of GRU(32) and LSTM(32) on Jena-shaped windows
(120 time steps of 14 features, batch 128) with and without recurrent dropout, side by side in
one process. On an NVIDIA GPU, Keras runs GRU/LSTM on the fused cuDNN kernel only without
recurrent dropout, so the gap there is large; on a CPU there is no fused kernel.

    python benchmarks/recurrent_dropout.py --repeats 5 --steps 40
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import jena_study, median, table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    from tuner.config import load_study_config
    from tuner.data import prepare
    from tuner.training.model import build_model
    from tuner.training.spec import ModelSpec

    with tempfile.TemporaryDirectory() as tmp:
        config = load_study_config(
            jena_study(Path(tmp), "rd", n_trials=1, epochs=1, steps=args.steps)
        )
        data = prepare(config.data)
    import tensorflow as tf

    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    train = data.split("train", 128, shuffle=True, seed=0).repeat()
    rows = []
    for cell in ("gru", "lstm"):
        models = {}
        for rd in (0.0, 0.2):
            spec = ModelSpec(cell, (32,), 0.0, rd, False, "tanh", 1e-3)
            models[rd] = build_model(spec, data.inputs, data.head, metrics=data.metrics)
            models[rd].fit(train, epochs=1, steps_per_epoch=args.steps, verbose=0)  # trace
        seconds: dict[float, list[float]] = {0.0: [], 0.2: []}
        for _ in range(args.repeats):  # alternate, so that both see the same machine
            for rd, model in models.items():
                start = time.perf_counter()
                model.fit(train, epochs=1, steps_per_epoch=args.steps, verbose=0)
                seconds[rd].append(time.perf_counter() - start)
        off, on = median(seconds[0.0]), median(seconds[0.2])
        rows.append([f"{cell.upper()}(32)", f"{off:.2f}", f"{on:.2f}", f"{on / off:.2f}"])
    print(table(["model", "s/epoch without", "s/epoch with recurrent_dropout=0.2", "ratio"], rows))
    print(
        f"\n{device}; {args.steps} batches of 128 per epoch; median of {args.repeats}; "
        f"TF_NUM_INTRAOP_THREADS={os.environ.get('TF_NUM_INTRAOP_THREADS', 'default')}"
    )


if __name__ == "__main__":
    main()
