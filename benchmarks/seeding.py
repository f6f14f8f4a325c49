"""Seeding a trial on JAX: Keras's `keras.utils.set_random_seed`, which imports TensorFlow to
seed it too whenever it is installed, against `tuner.seeds.set_random_seed`, which does not.
Each in a fresh process with Keras on JAX already imported, alternating, `--repeats` times;
the seconds the call took and what it added to the process's peak resident memory.

    python benchmarks/seeding.py --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from common import median, table

CALLS = {
    "keras.utils.set_random_seed": "import keras; seed = keras.utils.set_random_seed",
    "tuner.seeds.set_random_seed": "from tuner.seeds import set_random_seed as seed",
}

PROBE = """
import json, resource, sys, time
from tuner.quiet import import_keras
import_keras()
{call}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
seed(0)
seconds = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"seconds": seconds, "mb": (after - before) / 1024,
                  "tensorflow": "tensorflow" in sys.modules}}))
"""


def probe(call: str) -> dict[str, float]:
    env = os.environ | {"KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(call=CALLS[call])],
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
    runs: dict[str, list[dict[str, float]]] = {call: [] for call in CALLS}
    for _ in range(args.repeats):
        for call in CALLS:
            runs[call].append(probe(call))
    rows = [
        [
            call,
            f"{median([r['seconds'] for r in results]):.2f}",
            f"{median([r['mb'] for r in results]):.0f}",
            "yes" if any(r["tensorflow"] for r in results) else "no",
        ]
        for call, results in runs.items()
    ]
    print(table(["call (JAX)", "seconds, median", "peak MB added, median", "imports TF"], rows))


if __name__ == "__main__":
    main()
