"""The `tuner` command: parses, calls one function, prints."""

from __future__ import annotations

import json
import os
import socket
import sys
import traceback
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

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


# Neither `dir_okay=False` nor `readable`: the loader says what is wrong in one line, not usage.
study_file = click.argument(
    "study_file", type=click.Path(readable=False, path_type=Path), metavar="STUDY_FILE"
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


F = TypeVar("F", bound=Callable[..., Any])


def format_option(*choices: str) -> Callable[[F], F]:
    """`--format`, the first choice by default."""
    option: Callable[[F], F] = click.option(
        "--format",
        "fmt",
        type=click.Choice(list(choices)),
        default=choices[0],
        show_default=True,
        help="Output format.",
    )
    return option


def _remember_storage(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    if value is not None and not value.strip():
        raise TunerError(
            "--storage: the storage URL is empty; give one (such as sqlite:///tuner.db), or "
            "leave --storage out for the default"
        )
    url = resolve_url(value)
    ctx.meta["storage_url"] = url
    hide_password_in_logs(url)
    return url


def _load(path: Path, models: bool = False) -> StudyConfig:
    """The study file's configuration, with Keras set to its backend; `models` for commands
    that save or load models taking raw data (text models need TensorFlow)."""
    from tuner.backend import for_models, use

    config = load_study_config(path)
    # Keras reads its backend once, on import: set it before any command imports Keras.
    backend = config.training.backend
    use(for_models(backend, config.data.task) if models else backend)
    return config


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
    help="Make the study's trial budget N: trials to finish in all, counting those already "
    "finished.  [default: n_trials from the study file for a new study; an existing study "
    "keeps its budget]",
)
@click.option(
    "--pin/--no-pin", default=True, show_default=True, help="Give each worker its own CPU cores."
)
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
    from tuner.launcher import run as launch

    config = _load(study_file)
    click.echo(f"study {config.name!r} in {mask(storage)}, {workers} worker(s)")
    codes = launch(
        config,
        storage,
        n_workers=workers,
        n_trials=n_trials,
        pin=pin,
        say=click.echo,
    )
    _print_best(config, storage, required=False)
    failed = [f"worker {i} exited with code {c}" for i, c in enumerate(codes) if c]
    if failed:
        raise click.ClickException("; ".join(failed))
    if config.ablation.enabled:  # the study file's [ablation] table
        from tuner.ablation import ablate as run_ablation
        from tuner.ablation import format_ablation, search_finished

        if not search_finished(config, storage):
            click.echo("the search stopped before its budget was spent: no ablation yet")
            return
        result = run_ablation(
            config,
            storage,
            repeats=config.ablation.repeats,
            n_workers=workers,
            pin=pin,
            say=click.echo,
        )
        click.echo(format_ablation(result))


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
    help="Compute threads (TensorFlow's, or XLA's on JAX).  [default: one per usable core]",
)
@click.option("--quiet", "-q", is_flag=True, help="Print only warnings and errors.")
@click.option(
    "--ablation",
    is_flag=True,
    help="Run the study's queued ablation trials (`tuner ablate`) instead of its search.",
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
        ablation=ablation,
    )
    ran = result.complete + result.pruned + result.failed
    if result.interrupted:
        echo(f"stopped after {ran} trials; the trial in progress was queued again")
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
    help="The complete trial to ablate.  [default: the best trial]",
)
@click.option(
    "--repeats",
    "-k",
    type=click.IntRange(min=2, max=1_000),
    help="Training seeds per variant (the same K seeds for every variant).  "
    "[default: `repeats` of the study file's [ablation] table, else 5]",
)
@click.option(
    "--workers",
    "-w",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes to run on this machine.",
)
@click.option(
    "--pin/--no-pin", default=True, show_default=True, help="Give each worker its own CPU cores."
)
def ablate(
    study_file: Path,
    storage: str,
    number: int | None,
    repeats: int | None,
    workers: int,
    pin: bool,
) -> None:
    """Train the best trial as it is and with one technique changed at a time (recurrent
    dropout, dropout, bidirectional, one layer more or fewer, GRU or LSTM), each with the same
    K training seeds, and say whether each technique helped, hurt or made no clear difference,
    with a 95% interval.

    The runs are queued trials of the companion study `<study name>/ablation`: run again to
    resume, and `tuner worker STUDY_FILE --ablation` on other machines helps.

    \b
    Example:
      tuner ablate studies/nyc-weather.toml --workers 2
    """
    from tuner.ablation import ablate as run_ablation
    from tuner.ablation import format_ablation

    config = _load(study_file)
    result = run_ablation(
        config,
        storage,
        number=number,
        repeats=repeats or config.ablation.repeats,
        n_workers=workers,
        pin=pin,
        say=click.echo,
    )
    click.echo(format_ablation(result))


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


@cli.command("best-trial")
@study_file
@storage_option
@format_option("text", "json")
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
    from tuner.diagnoses import diagnose
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
    s["diagnoses"] = diagnose(study, config)
    click.echo(json.dumps(s, indent=2) if fmt == "json" else format_summary(s))


@cli.command()
@study_file
@storage_option
@format_option("table", "csv", "json")
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


def artifacts_option(f: Any) -> Any:
    return click.option(
        "--artifacts",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="TUNER_ARTIFACTS",
        show_envvar=True,
        metavar="DIR",
        help="The artifact store (retrained models): a folder.  [default: artifacts/ beside a "
        "SQLite storage file, else in the current folder]",
    )(f)


@cli.command()
@storage_option
@artifacts_option
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; 0.0.0.0 lets other machines in (there is no login).",
)
def dashboard(storage: str, artifacts: Path | None, port: int, host: str) -> None:
    """Open optuna-dashboard on the storage: every study, its trials, plots and importances,
    and the retrained models (artifacts). Runs until Ctrl-C.

    \b
    Example:
      tuner dashboard --port 8080
      (then open http://127.0.0.1:8080/dashboard/ in a browser)
    """
    from tuner.artifacts import artifact_dir
    from tuner.dashboard import is_loopback, serve

    if not is_loopback(host):
        click.echo(
            f"Warning: --host {host} lets other machines open the dashboard, which has no "
            "login: anyone who can reach this port can read and delete your studies",
            err=True,
        )
    serve(storage, host, port, artifact_dir(storage, artifacts), say=click.echo)


@cli.command("best-trials")
@study_file
@storage_option
@click.option(
    "--top", "-k", type=click.IntRange(min=1), default=5, show_default=True, help="How many."
)
@format_option("table", "json", "csv")
@click.option(
    "--artifacts",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="TUNER_ARTIFACTS",
    show_envvar=True,
    metavar="DIR",
    help="Show retrained models' paths in this artifact folder.  [default: the folder each "
    "was saved in]",
)
def best_trials(
    study_file: Path, storage: str, top: int, fmt: str, artifacts: Path | None
) -> None:
    """Show the best complete trials (value, parameters, epochs, training time, and the
    retrained model if there is one), then the naive baselines and the seed configurations.

    \b
    Example:
      tuner best-trials studies/nyc-weather.toml --top 5 --format csv > best.csv
    """
    from tuner.diagnoses import diagnose
    from tuner.results import best_trials as top_trials
    from tuner.results import best_trials_frame, format_best_trials
    from tuner.study import load_existing

    config = _load(study_file)
    study = load_existing(config.name, open_storage(storage, must_exist=True))
    report = top_trials(study, top, artifacts.absolute() if artifacts else None)
    report["diagnoses"] = diagnose(study, config)
    if fmt == "json":
        click.echo(json.dumps(report, indent=2))
    elif fmt == "csv":
        best_trials_frame(report).to_csv(sys.stdout, index=False)
    else:
        click.echo(format_best_trials(report))


@cli.command()
@click.argument(
    "study_files",
    nargs=-1,
    required=True,
    type=click.Path(readable=False, path_type=Path),
    metavar="STUDY_FILE...",
)
@storage_option
@click.option(
    "--out",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("report"),
    show_default=True,
    metavar="DIR",
    help="Folder to write report.html, summary.md and figures/ to.",
)
def report(study_files: tuple[Path, ...], storage: str, out: Path) -> None:
    """Write a report on one or more studies (datasets): the best trial against the seed
    configurations and the naive baseline, hyperparameter importance, and what each technique
    (recurrent dropout, depth, bidirectional layers, GRU or LSTM) did, with bootstrap
    confidence intervals; across studies, whether each technique helped, hurt or made no
    clear difference on each dataset.

    Writes a self-contained HTML page (works offline), PNG figures and a markdown summary.

    \b
    Example:
      tuner report studies/nyc-weather.toml studies/other.toml --out report/
    """
    from tuner.report import make_report

    files = make_report([_load(p) for p in study_files], storage, out)
    click.echo(f"wrote {files.html}, {files.markdown} and {len(files.pngs)} figures")


@cli.command()
@study_file
@storage_option
@artifacts_option
@click.option(
    "--trial",
    "number",
    type=click.IntRange(min=0),
    help="The trial's number.  [default: the best trial]",
)
def retrain(study_file: Path, storage: str, artifacts: Path | None, number: int | None) -> None:
    """Retrain a complete trial's model on the training and validation data for its best
    number of epochs, score it on the held-out test split beside the naive baseline, and save
    the .keras model and its metrics (JSON) as artifacts of the study.

    \b
    Example:
      tuner retrain studies/nyc-weather.toml --trial 12
    """
    from tuner.artifacts import artifact_dir
    from tuner.retrain import retrain_trial

    config = _load(study_file, models=True)
    done = retrain_trial(config, storage, artifact_dir(storage, artifacts), number, say=click.echo)
    m = done.metrics
    key = f"test {config.metric.removeprefix('val_')}"
    click.echo(f"trial {done.trial}: {key} = {m['test_value']:.4g}")
    for name, value in m["test_baselines"].items():
        click.echo(
            f"baseline {name}: {key} = {value:.4g}"
            + _versus_baseline(m["test_value"], value, config.metric, config.direction)
        )
    click.echo(f"model: {done.model_path} (takes raw data; keras.saving.load_model loads it)")
    click.echo(f"about it: {done.metrics_path} (JSON: inputs, outputs, test scores, versions)")


@cli.command()
@study_file
@storage_option
@artifacts_option
@click.option(
    "--data",
    "data_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="The data to predict on, in the study's own format (CSV or Parquet for a forecast or "
    "texts, .npz for sequences); targets and labels are not needed.",
)
@click.option(
    "--trial",
    "number",
    type=click.IntRange(min=0),
    help="The trial whose model predicts.  [default: the best trial]",
)
@click.option(
    "--out",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("predictions.csv"),
    show_default=True,
    metavar="FILE",
    help="The CSV file to write, one row per prediction.",
)
def predict(
    study_file: Path,
    storage: str,
    artifacts: Path | None,
    data_path: Path,
    number: int | None,
    out: Path,
) -> None:
    """Predict on a data file with a trial's retrained model (retraining the trial first if it
    has none), and write one row per prediction: for a forecast, the row or time its window
    ends at, the one it is for, and the predicted target; for a classifier, the predicted
    class and each class's probability.

    \b
    Example:
      tuner predict studies/nyc-weather.toml --data latest.csv --out forecast.csv
    """
    from tuner.predict import predict_file

    config = _load(study_file, models=True)
    if not out.absolute().parent.is_dir():
        raise click.BadParameter(f"the folder {out.parent} does not exist", param_hint="--out")
    done = predict_file(config, storage, data_path, number, artifacts, say=click.echo)
    done.frame.to_csv(out, index=False)
    click.echo(
        f"wrote {len(done.frame)} predictions of trial {done.trial} to {out} "
        f"(model {done.model_path})"
    )


def _versus_baseline(value: float, baseline: float, metric: str, direction: str) -> str:
    from tuner.verdict import versus

    words = versus(value, baseline, metric, direction == "minimize")
    return f"; the model is {words}" if words else ""


@cli.command()
@storage_option
@format_option("table", "json")
def studies(storage: str, fmt: str) -> None:
    """List the studies in the storage, with their trial counts and best values.

    \b
    Example:
      tuner studies --storage postgresql://tuner@db-host/tuner
    """
    from tuner.study import list_studies

    listed = list_studies(open_storage(storage, must_exist=True))
    rows = [
        {
            "study": s.name,
            "direction": s.direction,
            "metric": s.metric,
            "complete": s.counts.complete,
            "pruned": s.counts.pruned,
            "failed": s.counts.failed - s.counts.retried,
            "running": s.counts.running,
            "waiting": s.counts.waiting,
            "best_trial": s.best_trial,
            "best_value": s.best_value,
        }
        for s in listed
    ]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
    elif not rows:
        click.echo(f"no studies in {mask(storage)}")
    else:
        import pandas as pd

        click.echo(_blank_missing(pd.DataFrame(rows).astype({"best_trial": "Int64"})))


def _blank_missing(frame: Any) -> str:
    """A frame as a text table, with missing values left blank."""
    return str(frame.astype(object).where(frame.notna(), "").to_string(index=False))


@cli.command("delete-study")
@click.argument("name")
@storage_option
@artifacts_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def delete_study(name: str, storage: str, artifacts: Path | None, yes: bool) -> None:
    """Delete a study, its trials, its ablation (`<name>/ablation`) and the files of its
    artifacts (retrained models). There is no undo.

    \b
    Example:
      tuner delete-study nyc-weather-temp --yes
    """
    from tuner.artifacts import artifact_dir
    from tuner.study import delete, load_existing

    opened = open_storage(storage, must_exist=True)
    study = load_existing(name, opened)
    n_trials = len(study.get_trials(deepcopy=False))
    if not yes:
        click.confirm(
            f"Delete study {name!r} and its {n_trials} trials from {mask(storage)}?", abort=True
        )
    removed = delete(study, opened, artifact_dir(storage, artifacts))
    click.echo(f"deleted study {name!r}: {n_trials} trials, {removed} artifact files")


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
