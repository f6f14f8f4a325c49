"""What a task's data gives the model builder: the network's inputs and its head."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Inputs:
    """What the network reads, set by the task.

    `masked`: sequences of different lengths padded with all-zero time steps after their end,
    which the recurrent layers skip (the data adds a presence channel, so a real step is never
    all zero). `tokens`: integer token ids, fed to a trial's own vocabulary, sequence length and
    embedding (`ModelSpec`).
    """

    shape: tuple[int | None, ...]
    masked: bool = False
    tokens: bool = False


@dataclass(frozen=True)
class Head:
    """The output of the network, set by the task: units, activation and an output rescaling.

    Forecasting targets stay in their own units so that losses, metrics and baselines read in
    those units; `scale` and `offset` (the training target's std and mean) let the network itself
    work on a normalised scale.
    """

    units: int = 1
    activation: str | None = None
    scale: float = 1.0
    offset: float = 0.0
