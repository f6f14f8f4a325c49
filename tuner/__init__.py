"""Hyperparameter search for recurrent neural networks, on Optuna and Keras."""

from __future__ import annotations

__version__ = "0.1.0"
