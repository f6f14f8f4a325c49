"""The `tuner` command: parses, calls one function, prints."""

from __future__ import annotations

import json
import os
import socket
import sys
import traceback
import zlib
from pathlib import Path
from typing import Any

import click

from tuner.config import StudyConfig, load_study_config
from tuner.errors import TunerError
from tuner.storage import (
    ENV_VAR,
    hide_password_in_logs,
    mask,
    open_storage,
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
        except Exception:
            # A bug: show where, but never the storage password.
            url = ctx.meta.get("storage_url") or resolve_url(None)
            click.echo(scrub(traceback.format_exc(), url), err=True, nl=False)
            ctx.exit(1)


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


study_file = click.argument(
    "study_file", type=click.Path(dir_okay=False, path_type=Path), metavar="STUDY_FILE"
)


def storage_option(f: Any) -> Any:
    return click.option(
        "--storage",
        "storage",
        envvar=ENV_VAR,
        show_envvar=True,
        metavar="URL",
        help="Storage URL: any SQLAlchemy URL Optuna accepts. [default: sqlite:///tuner.db]",
        callback=_remember_storage,
        expose_value=True,
    )(f)


def _remember_storage(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    url = resolve_url(value)
    ctx.meta["storage_url"] = url
    hide_password_in_logs(url)
    return url


def _load(path: Path) -> StudyConfig:
    return load_study_config(path)


@cli.command()
@study_file
@storage_option
@click.option(
    "--workers",
    "-w",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes to run on this machine.",
)
@click.option(
    "--trials",
    "-n",
    "n_trials",
    type=click.IntRange(min=1),
    help="The study's trial budget: trials to finish in all, counting those already "
    "finished.  [default: n_trials from the study file]",
)
@click.option(
    "--pin/--no-pin", default=True, show_default=True, help="Give each worker its own CPU cores."
)
def run(study_file: Path, storage: str, workers: int, n_trials: int | None, pin: bool) -> None:
    """Create or resume a study and run worker processes on it until its budget is spent.

    Shows progress while the workers run, then the best trial beside the naive baseline.
    Ctrl-C stops the workers cleanly: their trials go back into the queue.

    \b
    Example:
      tuner run studies/nyc-weather.toml --workers 2 --trials 30
    """
    from tuner.launcher import run as launch

    config = _load(study_file)
    click.echo(f"study {config.name!r} in {mask(storage)}, {workers} worker(s)")
    codes = launch(
        config,
        storage,
        n_workers=workers,
        n_trials=n_trials or config.n_trials,
        pin=pin,
        say=click.echo,
    )
    _print_best(config, storage, required=False)
    failed = [f"worker {i} exited with code {c}" for i, c in enumerate(codes) if c]
    if failed:
        raise click.ClickException("; ".join(failed))


@cli.command()
@study_file
@storage_option
@click.option(
    "--max-trials",
    type=click.IntRange(min=1),
    help="Stop after this many trials.  [default: until the queue is empty]",
)
@click.option(
    "--worker-index",
    type=click.IntRange(min=0),
    help="Offsets the sampler's seed, so that workers propose different trials.  "
    "[default: from this machine's name and this process's id]",
)
@click.option("--cpus", metavar="LIST", help="Pin this worker to these CPU cores (e.g. 0 or 2,3).")
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="TensorFlow compute threads.  [default: one per usable core]",
)
@click.option("--quiet", "-q", is_flag=True, help="Print only warnings and errors.")
def worker(
    study_file: Path,
    storage: str,
    max_trials: int | None,
    worker_index: int | None,
    cpus: str | None,
    threads: int | None,
    quiet: bool,
) -> None:
    """Join a study as one more worker and run its queued trials.

    Start as many as you like, in other shells or on other machines pointed at the same
    storage. The study is created if it does not exist yet.

    \b
    Example:
      tuner worker studies/nyc-weather.toml --storage postgresql://tuner@db-host/tuner
    """
    from tuner.worker import work

    config = _load(study_file)
    cores = _parse_cpus(cpus)
    echo = (lambda message: None) if quiet else click.echo
    index = _default_worker_index() if worker_index is None else worker_index
    result = work(
        config,
        storage,
        worker_index=index,
        cpus=cores,
        threads=threads,
        max_trials=max_trials,
        on_trial=(lambda t: None) if quiet else _print_trial,
        say=echo,
    )
    ran = result.complete + result.pruned + result.failed
    if result.interrupted:
        echo(f"stopped after {ran} trials; the trial in progress was queued again")
    elif ran == 0:
        echo(f"no queued trials in study {config.name!r}; `tuner run --trials N` adds more")
    else:
        echo(f"done: {result.complete} complete, {result.pruned} pruned, {result.failed} failed")


def _default_worker_index() -> int:
    # The process id alone repeats across machines and containers (every container's worker
    # is process 1), and workers with one index propose the same trials.
    return zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode()) % 2**31


def _parse_cpus(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(c) for c in text.split(",")]
    except ValueError:
        raise click.BadParameter(
            f"must be core numbers separated by commas, got {text!r}", param_hint="--cpus"
        ) from None


def _print_trial(trial: Any) -> None:
    attrs = trial.user_attrs
    state = trial.state.name.lower()
    detail = (
        f"value {trial.value:.4g}" if trial.value is not None else attrs.get("fail_reason", "")
    )
    click.echo(
        f"trial {trial.number} {state}: {detail}".rstrip(": ")
        + f" ({attrs.get('epochs', 0)} epochs, {attrs.get('train_seconds', 0):.1f} s)"
    )


@cli.command("best-trial")
@study_file
@storage_option
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
def best_trial(study_file: Path, storage: str, fmt: str) -> None:
    """Show the best trial: value, parameters, epochs and training time, beside the naive
    baseline and the seed configurations.

    \b
    Example:
      tuner best-trial studies/nyc-weather.toml --format json
    """
    config = _load(study_file)
    _print_best(config, storage, required=True, fmt=fmt)


def _print_best(config: StudyConfig, url: str, required: bool, fmt: str = "text") -> None:
    from tuner.results import format_summary, summary
    from tuner.study import load_existing

    study = load_existing(config.name, open_storage(url, must_exist=True))
    try:
        s = summary(study)
    except TunerError:
        if required:
            raise
        click.echo("no trial has completed yet")
        return
    click.echo(json.dumps(s, indent=2) if fmt == "json" else format_summary(s))


@cli.command()
@study_file
@storage_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
def trials(study_file: Path, storage: str, fmt: str) -> None:
    """List every trial of a study: number, state, value, parameters, epochs, training time.

    \b
    Example:
      tuner trials studies/nyc-weather.toml --format csv > trials.csv
    """
    from tuner.results import trials_frame
    from tuner.study import load_existing

    config = _load(study_file)
    frame = trials_frame(load_existing(config.name, open_storage(storage, must_exist=True)))
    if fmt == "csv":
        frame.to_csv(sys.stdout, index=False)
    elif fmt == "json":
        click.echo(frame.to_json(orient="records", date_format="iso", indent=2))
    else:
        click.echo(frame.to_string(index=False))


def main() -> None:
    import logging

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.WARNING)
    cli(prog_name="tuner")
