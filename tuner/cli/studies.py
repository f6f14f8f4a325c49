"""Commands on the studies in a storage: `studies` and `delete-study`."""

from __future__ import annotations

import json
from typing import Any

import click

from tuner.cli.group import cli
from tuner.cli.options import (
    artifacts_option,
    format_option,
    storage_option,
)
from tuner.storage import (
    mask,
    open_storage,
)
from tuner.storage.artifacts import Location


@cli.command()
@storage_option
@format_option("table", "json")
def studies(storage: str, fmt: str) -> None:
    """List the studies in the storage, with their trial counts and best values.

    \b
    Example:
      tuner studies --storage postgresql://tuner@db-host/tuner
    """
    from tuner.search.study import list_studies

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
        click.echo(
            "(best_value: one training run on the validation split, with no error rate; an "
            "ablation's companion study, NAME/ablation, lists none: `tuner ablate` gives its "
            "verdicts)"
        )


def _blank_missing(frame: Any) -> str:
    """A frame as a text table, with missing values left blank."""
    return str(frame.astype(object).where(frame.notna(), "").to_string(index=False))


@cli.command("delete-study")
@click.argument("name")
@storage_option
@artifacts_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def delete_study(name: str, storage: str, artifacts: Location | None, yes: bool) -> None:
    """Delete a study, its trials, its ablation (`<name>/ablation`) and the files of its
    artifacts (retrained models). There is no undo.

    \b
    Example:
      tuner delete-study nyc-weather-temp --yes
    """
    from tuner.search.study import delete, load_existing
    from tuner.storage.artifacts import artifact_dir

    opened = open_storage(storage, must_exist=True)
    study = load_existing(name, opened)
    n_trials = len(study.get_trials(deepcopy=False))
    if not yes:
        click.confirm(
            f"Delete study {name!r} and its {n_trials} trials from {mask(storage)}?", abort=True
        )
    removed = delete(study, opened, artifact_dir(storage, artifacts))
    click.echo(f"deleted study {name!r}: {n_trials} trials, {removed} artifact files")
