"""The `tuner` command: each command parses, calls one function of its package, and prints.

One module per package it drives (`search`, `answers`, `delivery`, `studies`, `storage`), the
group and its error handling in `group`, the options several commands share in `options`.

Layer 9 of tuner, the top. May import: every package of tuner.
"""

from tuner.cli import (  # noqa: F401  (registers the commands)
    answers,
    delivery,
    search,
    storage,
    studies,
)
from tuner.cli.group import cli, main

__all__ = ["cli", "main"]
