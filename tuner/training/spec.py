"""One model of the search space, as the model builder takes it, and as a trial records it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TEXT_PARAMS = ("vocabulary_size", "sequence_length", "embedding_dim")


@dataclass(frozen=True)
class ModelSpec:
    """One point of the search space: everything the model builder needs."""

    cell: str
    units: tuple[int, ...]
    dropout: float
    recurrent_dropout: float
    bidirectional: bool
    activation: str
    learning_rate: float
    # Text classification only.
    vocabulary_size: int | None = None
    sequence_length: int | None = None
    embedding_dim: int | None = None


def spec_from_params(params: dict[str, Any]) -> ModelSpec:
    """The model a finished trial trained, from its recorded parameters."""
    layers = int(params["layers"])
    return ModelSpec(
        cell=str(params["cell"]),
        units=tuple(int(params[f"units_{i}"]) for i in range(1, layers + 1)),
        dropout=float(params["dropout"]),
        recurrent_dropout=float(params["recurrent_dropout"]),
        bidirectional=bool(params["bidirectional"]),
        activation=str(params["activation"]),
        learning_rate=float(params["learning_rate"]),
        **{name: int(params[name]) for name in TEXT_PARAMS if name in params},
    )
