"""TensorFlow imported behind a JAX worker's back: Keras asks whether TensorFlow is installed
when it seeds (`keras.utils.set_random_seed`, before every trial), configures a Bidirectional
layer and saves, and imports it to find out. Each fresh process imports Keras on JAX, then
times one trial's worth of those calls (seed, build and compile a Bidirectional GRU model,
save it), with Keras as it comes and after `tuner.patches.quiet.leave_tensorflow_out()`,
alternating, `--repeats` times: seconds, what the calls added to the peak resident memory,
and whether TensorFlow ended up imported.

    python benchmarks/tensorflow_on_jax.py --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from common import median, table

PROBE = """
import json, resource, sys, tempfile, time
from tuner.patches.quiet import leave_tensorflow_out, silenced_stderr
import keras
if {leave_out}:
    leave_tensorflow_out()
from tuner.training.model import Head, build_model
from tuner.training.spec import ModelSpec
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
with silenced_stderr():
    keras.utils.set_random_seed(0)
    model = build_model(ModelSpec("gru", (16,), 0.1, 0.1, True, "tanh", 1e-3), (60, 8), Head())
    model.save(tempfile.mkdtemp() + "/m.keras")
seconds = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"seconds": seconds, "mb": (after - before) / 1024,
                  "tensorflow": "tensorflow" in sys.modules}}))
"""

MODES = {"Keras as it comes": False, "after leave_tensorflow_out()": True}


def probe(leave_out: bool) -> dict[str, float]:
    env = os.environ | {"KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(leave_out=leave_out)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for _ in range(args.repeats):
        for mode, leave_out in MODES.items():
            runs[mode].append(probe(leave_out))
    rows = [
        [
            mode,
            f"{median([r['seconds'] for r in results]):.2f}",
            f"{median([r['mb'] for r in results]):.0f}",
            "yes" if any(r["tensorflow"] for r in results) else "no",
        ]
        for mode, results in runs.items()
    ]
    print(
        table(
            ["Keras on JAX", "seed, build, save: s (median)", "peak MB added", "TF imported"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
