"""The `tuner` command group: the project's errors as one line and exit code 2."""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

import click

from tuner.errors import TunerError
from tuner.storage import (
    resolve_url,
    scrub,
)


class _Group(click.Group):
    """Turns the project's errors into one line on stderr and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TunerError as e:
            url = ctx.meta.get("storage_url") or resolve_url(None)
            click.echo(f"Error: {scrub(str(e), url)}", err=True)
            ctx.exit(2)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:
            _reader_gone()
            ctx.exit(1)
        except Exception:
            # A bug: show where, but never the storage password.
            url = ctx.meta.get("storage_url") or resolve_url(None)
            click.echo(scrub(traceback.format_exc(), url), err=True, nl=False)
            ctx.exit(1)


def _reader_gone() -> None:
    """The reader of stdout went away (`tuner trials | head -1`): nothing more to say, and
    Python must not fail again flushing stdout at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tuner")
def cli() -> None:
    """Hyperparameter search for recurrent neural networks (GRU/LSTM), on Optuna and Keras.

    A study file (TOML) says what to search and on which data; studies live in a storage
    (a SQLite file by default, PostgreSQL for workers on many machines).

    \b
    Example:
      tuner run studies/nyc-weather.toml --workers 2
      tuner best-trial studies/nyc-weather.toml
    """


def main() -> None:
    import logging

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.WARNING)
    try:
        cli(prog_name="tuner")
    finally:
        try:
            sys.stdout.flush()  # what is still buffered, while a closed pipe can be caught
        except BrokenPipeError:
            _reader_gone()
