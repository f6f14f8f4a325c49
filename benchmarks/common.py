"""Shared pieces of the benchmarks: Jena-shaped data, study files, medians and tables."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

JENA_FEATURES = 14


def jena_like(rows: int = 20_000, seed: int = 0) -> pd.DataFrame:
    """A series shaped like the Jena climate data: 14 features every 10 minutes, with a daily
    cycle, slow drifts and noise. The shape, not the values, decides training speed."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    day = np.sin(2 * np.pi * t / 144)
    columns = {}
    for i in range(JENA_FEATURES):
        drift = np.cumsum(rng.normal(0, 0.05, rows))
        columns[f"f{i}"] = (i + 1) * day + drift + rng.normal(0, 0.3, rows)
    frame = pd.DataFrame(columns)
    frame["time"] = pd.date_range("2009-01-01", periods=rows, freq="10min").astype(str)
    return frame


FIXED_GRU = """
[space]
cell = "gru"
layers = 1
units = 32
dropout = 0.0
recurrent_dropout = 0.0
bidirectional = false
activation = "tanh"
learning_rate = 0.001
"""


def jena_study(
    folder: Path, name: str, *, n_trials: int, epochs: int, steps: int, rows: int = 20_000
) -> Path:
    """A study of GRU(32) on Jena-shaped windows (120 time steps of 14 features, batch 128)
    with no pruning and no early stopping: every trial trains exactly `epochs` epochs."""
    jena_like(rows).to_csv(folder / "jena-like.csv", index=False)
    path = folder / f"{name}.toml"
    path.write_text(f"""
[study]
name = "{name}"
metric = "val_mae"
n_trials = {n_trials}
seed_configs = false

[pruner]
name = "none"

[data]
path = "jena-like.csv"
target = "f1"
timestamp = "time"
lookback = 720
step = 6
delay = 144
split = [0.7, 0.15, 0.15]

[training]
epochs = {epochs}
batch_size = 128
steps_per_epoch = {steps}
patience = {epochs + 1}
{FIXED_GRU}""")
    return path


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


ROOT = Path(__file__).parents[1]


def study_variant(folder: Path, name: str, base: Path | None = None, **changes: dict) -> Path:
    """A copy of a study file (the shipped nyc-weather study by default) under another name,
    with some tables' keys changed: `study_variant(d, "x", training={"epochs": 3})`."""
    import tomllib

    data = tomllib.loads((base or ROOT / "studies" / "nyc-weather.toml").read_text())
    for table_name, values in changes.items():
        data.setdefault(table_name, {}).update(values)
    data["study"]["name"] = name
    path = folder / f"{name}.toml"
    path.write_text(
        "\n".join(
            f"[{t}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in values.items())
            for t, values in data.items()
        )
    )
    return path


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return repr(value)
