"""XLA (`jit_compile`) for the recurrent models: first-epoch time (tracing and compiling) and
steady epoch time, with and without, for each seed configuration, side by side in one process.

On a CPU, a small recurrent network's step is dominated by TensorFlow running the recurrent
loop's many small ops one by one; XLA fuses them, at the price of compiling each new model.
Whether it pays depends on how many epochs a trial runs.

    taskset -c 0 env TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 \\
        python benchmarks/jit_compile.py --repeats 3 --steps 40
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import jena_study, median, study_variant, table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3, help="steady epochs timed per model")
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    from tuner.config import load_study_config
    from tuner.data import prepare
    from tuner.search.space import SEED_CONFIGS
    from tuner.training.model import build_model
    from tuner.training.spec import spec_from_params

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        shapes = {
            "nyc-weather (60 steps x 8)": study_variant(Path(tmp), "nyc"),
            "Jena-shaped (120 steps x 14)": jena_study(
                Path(tmp), "jena", n_trials=1, epochs=1, steps=args.steps
            ),
        }
        for shape, path in shapes.items():
            config = load_study_config(path)
            data = prepare(config.data)
            batch = config.training.batch_size
            train = data.split("train", batch, shuffle=True, seed=0).repeat()
            validation = data.split("validation", 1024)
            for seed in SEED_CONFIGS:
                times = {}
                for jit in (False, True):
                    model = build_model(
                        spec_from_params(seed.params),
                        data.inputs,
                        data.head,
                        metrics=data.metrics,
                        jit_compile=jit,
                    )
                    epochs = []
                    for _ in range(args.repeats + 1):
                        start = time.perf_counter()
                        model.fit(
                            train,
                            validation_data=validation,
                            epochs=1,
                            steps_per_epoch=args.steps,
                            verbose=0,
                        )
                        epochs.append(time.perf_counter() - start)
                    times[jit] = (epochs[0], median(epochs[1:]))
                (f0, s0), (f1, s1) = times[False], times[True]
                trial = {e: (f0 + (e - 1) * s0, f1 + (e - 1) * s1) for e in (4, 12)}
                rows.append(
                    [
                        shape,
                        seed.name,
                        f"{f0:.2f} / {f1:.2f}",
                        f"{s0:.2f} / {s1:.2f}",
                        f"{s0 / s1:.2f}",
                        f"{trial[4][0] / trial[4][1]:.2f}",
                        f"{trial[12][0] / trial[12][1]:.2f}",
                    ]
                )
                print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    print(
        table(
            [
                "windows",
                "model",
                "first epoch s (plain / XLA)",
                "later epochs s",
                "speed-up, later epochs",
                "speed-up, 4-epoch trial",
                "speed-up, 12-epoch trial",
            ],
            rows,
        )
    )
    print(f"\n{args.steps} batches per epoch plus validation; median of {args.repeats}")


if __name__ == "__main__":
    main()
