"""Commands that read a study's answers: `best-trial`, `best-trials`, `trials`, `report`
and `dashboard`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from tuner.cli.group import cli
from tuner.cli.options import (
    artifacts_option,
    format_option,
    load,
    parse_artifacts,
    storage_option,
    study_file,
)
from tuner.config import StudyConfig
from tuner.errors import TunerError
from tuner.storage import (
    open_storage,
    opened,
)
from tuner.storage.artifacts import Location


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
    config = load(study_file)
    print_best(config, storage, required=True, fmt=fmt)


def print_best(config: StudyConfig, url: str, required: bool, fmt: str = "text") -> None:
    from tuner.answers.diagnoses import diagnose
    from tuner.answers.results import format_summary, summary
    from tuner.search.study import load_existing

    with opened(url, must_exist=True) as storage:
        study = load_existing(config.name, storage)
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
    from tuner.answers.results import trials_frame
    from tuner.search.study import load_existing

    config = load(study_file)
    frame = trials_frame(load_existing(config.name, open_storage(storage, must_exist=True)))
    if fmt == "csv":
        frame.to_csv(sys.stdout, index=False)
    elif fmt == "json":
        click.echo(frame.to_json(orient="records", date_format="iso", indent=2))
    else:
        click.echo(frame.to_string(index=False))
        click.echo("(each value is one training run on the validation split: no error rate)")


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
def dashboard(storage: str, artifacts: Location | None, port: int, host: str) -> None:
    """Open optuna-dashboard on the storage: every study, its trials, plots and importances,
    and the retrained models (artifacts). Runs until Ctrl-C.

    \b
    Example:
      tuner dashboard --port 8080
      (then open http://127.0.0.1:8080/dashboard/ in a browser)
    """
    from tuner.answers.dashboard import serve
    from tuner.storage.artifacts import artifact_dir

    serve(
        storage,
        host,
        port,
        artifact_dir(storage, artifacts),
        say=click.echo,
        warn=lambda message: click.echo(message, err=True),
    )


@cli.command("best-trials")
@study_file
@storage_option
@click.option(
    "--top", "-k", type=click.IntRange(min=1), default=5, show_default=True, help="How many."
)
@format_option("table", "json", "csv")
@click.option(
    "--artifacts",
    envvar="TUNER_ARTIFACTS",
    show_envvar=True,
    metavar="DIR|s3://BUCKET/PREFIX",
    callback=parse_artifacts,
    help="Show retrained models' paths in this artifact store.  [default: the store each "
    "was saved in]",
)
def best_trials(
    study_file: Path, storage: str, top: int, fmt: str, artifacts: Location | None
) -> None:
    """Show the best complete (or paused) trials (value, parameters, epochs, training time,
    and the retrained model if there is one), then the naive baselines and the seed
    configurations.

    \b
    Example:
      tuner best-trials studies/nyc-weather.toml --top 5 --format csv > best.csv
    """
    from tuner.answers.diagnoses import diagnose
    from tuner.answers.results import best_trials as top_trials
    from tuner.answers.results import best_trials_frame, format_best_trials
    from tuner.search.study import load_existing

    config = load(study_file)
    study = load_existing(config.name, open_storage(storage, must_exist=True))
    report = top_trials(study, top, artifacts)
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
    from tuner.answers.report import make_report

    files = make_report([load(p) for p in study_files], storage, out)
    click.echo(f"wrote {files.html}, {files.markdown} and {len(files.pngs)} figures")
