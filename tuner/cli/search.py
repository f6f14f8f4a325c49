"""Commands that run a search: `run`, `worker` and `ablate`."""

from __future__ import annotations

import os
import socket
import zlib
from pathlib import Path
from typing import Any

import click

from tuner.cli.answers import print_best
from tuner.cli.group import cli
from tuner.cli.options import (
    load,
    pin_option,
    storage_option,
    study_file,
    workers_option,
)
from tuner.errors import TunerError
from tuner.search.ablation import DEFAULT_MAX_REPEATS, SEQUENTIAL_MIN_REPEATS


@cli.command()
@study_file
@storage_option
@workers_option
@click.option(
    "--trials",
    "-n",
    "n_trials",
    type=click.IntRange(min=1),
    help="Make the study's trial budget N: trials to finish in all, counting those already "
    "finished.  [default: n_trials from the study file for a new study; an existing study "
    "keeps its budget]",
)
@pin_option
def run(study_file: Path, storage: str, workers: int, n_trials: int | None, pin: bool) -> None:
    """Create or resume a study and run worker processes on it until its budget is spent.

    Shows progress while the workers run (each running trial's epoch and latest metric, and the
    time left), then the best trial beside the naive baseline. On a machine with GPUs the
    workers share them out (CUDA_VISIBLE_DEVICES). The Keras backend is the study file's
    [training] backend, else TUNER_BACKEND, else jax.
    Ctrl-C stops the workers cleanly: their trials go back into the queue. With `enabled =
    true` in the study file's [ablation] table, then ablates the best trial (`tuner ablate`).

    \b
    Example:
      tuner run studies/nyc-weather.toml --workers 2 --trials 30
    """
    from tuner.search.launcher import run as launch

    config = load(study_file)
    codes = launch(
        config,
        storage,
        n_workers=workers,
        n_trials=n_trials,
        pin=pin,
        say=click.echo,
        warn=lambda message: click.echo(message, err=True),
    )
    print_best(config, storage, required=False)
    failed = [f"worker {i} exited with code {c}" for i, c in enumerate(codes) if c]
    if failed:
        raise click.ClickException("; ".join(failed))
    if config.ablation.enabled:  # the study file's [ablation] table
        from tuner.answers.ablation import format_ablation, read_ablation
        from tuner.search.ablation import ablate as run_ablation
        from tuner.search.ablation import search_finished

        if not search_finished(config, storage):
            click.echo("the search stopped before its budget was spent: no ablation yet")
            return
        number = run_ablation(
            config,
            storage,
            repeats=config.ablation.repeats,
            n_workers=workers,
            pin=pin,
            say=click.echo,
        )
        click.echo(format_ablation(read_ablation(config, storage, number)))


@cli.command()
@study_file
@storage_option
@click.option(
    "--max-trials",
    type=click.IntRange(min=1),
    help="Stop after running this many trials, counting complete, pruned and failed ones "
    "alike (not a trial stopped by a signal, which is queued again).  "
    "[default: until the queue is empty]",
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
    help="Compute threads (TensorFlow's, or XLA's on JAX).  [default: one per usable core]",
)
@click.option("--quiet", "-q", is_flag=True, help="Print only warnings and errors.")
@click.option(
    "--ablation",
    is_flag=True,
    help="Run the study's queued ablation trials (`tuner ablate`) instead of its search.",
)
@click.option(
    "--stopped-exit-code",
    type=click.IntRange(0, 255),
    default=0,
    show_default=True,
    help="Exit with this code when a signal stopped the worker (its trial queued again), so "
    "that a scheduler starts another in its place: 143 in a Kubernetes Job, whose "
    "podFailurePolicy then replaces the pod (deploy/kubernetes).",
)
def worker(
    study_file: Path,
    storage: str,
    max_trials: int | None,
    worker_index: int | None,
    cpus: str | None,
    threads: int | None,
    quiet: bool,
    ablation: bool,
    stopped_exit_code: int,
) -> None:
    """Join a study as one more worker and run its queued trials.

    Start as many as you like, in other shells or on other machines pointed at the same
    storage. The study is created if it does not exist yet.

    \b
    Example:
      tuner worker studies/nyc-weather.toml --storage postgresql://tuner@db-host/tuner
    """
    from tuner.search.worker import work

    config = load(study_file)
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
        ablation=ablation,
    )
    ran = result.complete + result.pruned + result.failed
    if result.interrupted:
        echo(f"stopped after {ran} trials; the trial in progress was queued again")
        if stopped_exit_code:
            raise SystemExit(stopped_exit_code)
    elif ran == 0 and ablation:
        echo(f"no queued ablation trials of study {config.name!r}; `tuner ablate` queues them")
    elif ran == 0:
        echo(f"no queued trials in study {config.name!r}; `tuner run --trials N` adds more")
    else:
        echo(f"done: {result.complete} complete, {result.pruned} pruned, {result.failed} failed")


@cli.command()
@study_file
@storage_option
@click.option(
    "--trial",
    "number",
    type=click.IntRange(min=0),
    help="The complete or paused trial to ablate.  [default: the best trial]",
)
@click.option(
    "--repeats",
    "-k",
    type=click.IntRange(min=2, max=1_000),
    help="Training seeds per variant (the same K seeds for every variant).  "
    "[default: `repeats` of the study file's [ablation] table, else 5]",
)
@workers_option
@pin_option
@click.option(
    "--until-decided",
    is_flag=True,
    help="Add one seed at a time until every technique is decided (helped or hurt) or "
    "--max-repeats is reached, with intervals valid however often they are looked at.",
)
@click.option(
    "--max-repeats",
    type=click.IntRange(min=2, max=1_000),
    default=DEFAULT_MAX_REPEATS,
    show_default=True,
    help="With --until-decided: the most seeds per variant.",
)
def ablate(
    study_file: Path,
    storage: str,
    number: int | None,
    repeats: int | None,
    workers: int,
    pin: bool,
    until_decided: bool,
    max_repeats: int,
) -> None:
    """Train the best trial as it is and with one technique changed at a time (recurrent
    dropout, dropout, bidirectional, one layer more or fewer, GRU or LSTM), on the same K
    fresh training seeds, each run as the search would and scored on the test split, and say
    whether each technique helped, hurt or made no clear difference.

    With no real effect, the chance that an ablation says "helped" or "hurt" about any
    technique is at most 5% (Holm over its contrasts; with --until-decided, anytime-valid
    intervals). "No clear difference" says how large an effect could still hide.

    The runs are queued trials of the companion study `<study name>/ablation`: run again to
    resume, and `tuner worker STUDY_FILE --ablation` on other machines helps.

    \b
    Example:
      tuner ablate studies/nyc-weather.toml --workers 2
      tuner ablate studies/nyc-weather.toml --workers 2 --until-decided --max-repeats 20
    """
    from tuner.answers.ablation import decided, format_ablation, read_ablation
    from tuner.search.ablation import ablate as run_ablation

    config = load(study_file)
    if until_decided and max_repeats < SEQUENTIAL_MIN_REPEATS:
        click.echo(
            f"Warning: --max-repeats {max_repeats}: with fewer than {SEQUENTIAL_MIN_REPEATS} "
            "seeds, anytime-valid intervals cannot decide any of an ablation's 5 or 6 "
            "techniques",
            err=True,
        )
    if repeats is not None and until_decided and repeats > max_repeats:
        raise click.BadParameter(
            f"--repeats {repeats} is more than --max-repeats {max_repeats}", param_hint="--repeats"
        )
    number = run_ablation(
        config,
        storage,
        number=number,
        repeats=repeats or config.ablation.repeats,
        n_workers=workers,
        pin=pin,
        until=(
            (lambda n: decided(read_ablation(config, storage, n, baselines=False)))
            if until_decided
            else None
        ),
        max_repeats=max_repeats,
        say=click.echo,
    )
    click.echo(format_ablation(read_ablation(config, storage, number)))


def _default_worker_index() -> int:
    # The process id alone repeats across machines and containers (every container's worker
    # is process 1), and workers with one index propose the same trials.
    return zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode()) % 2**31


def _parse_cpus(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        cores = [int(c) for c in text.split(",")]
    except ValueError:
        raise click.BadParameter(
            f"must be core numbers separated by commas, got {text!r}", param_hint="--cpus"
        ) from None
    usable = sorted(os.sched_getaffinity(0))
    outside = [c for c in cores if c not in usable]
    if outside:
        raise TunerError(
            f"--cpus: core {outside[0]} is not one this process may use "
            f"(usable: {','.join(map(str, usable))}), got {text!r}"
        )
    return cores


def _print_trial(trial: Any) -> None:
    attrs = trial.user_attrs
    state = trial.state.name.lower()
    detail = (
        "value " + ", ".join(f"{v:.4g}" for v in trial.values)
        if trial.values
        else attrs.get("fail_reason", "")
    )
    click.echo(
        f"trial {trial.number} {state}: {detail}".rstrip(": ")
        + f" ({attrs.get('epochs', 0)} epochs, {attrs.get('train_seconds', 0):.1f} s)"
    )
