"""Commands that deliver the model: `retrain` and `predict`."""

from __future__ import annotations

from pathlib import Path

import click

from tuner.cli.group import cli
from tuner.cli.options import (
    artifacts_option,
    load,
    storage_option,
    study_file,
)
from tuner.storage.artifacts import Location


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
def retrain(
    study_file: Path, storage: str, artifacts: Location | None, number: int | None
) -> None:
    """Retrain a complete (or paused) trial's model on the training and validation data for
    its best number of epochs, score it on the held-out test split beside the naive baseline,
    and save the .keras model and its metrics (JSON) as artifacts of the study.

    \b
    Example:
      tuner retrain studies/nyc-weather.toml --trial 12
    """
    from tuner.delivery.retrain import retrain_trial
    from tuner.storage.artifacts import artifact_dir

    config = load(study_file, models=True)
    done = retrain_trial(config, storage, artifact_dir(storage, artifacts), number, say=click.echo)
    m = done.metrics
    key = f"test {config.metric.removeprefix('val_')}"
    click.echo(f"trial {done.trial}: {key} = {m['test_value']:.4g}")
    for name, value in m["test_baselines"].items():
        click.echo(
            f"baseline {name}: {key} = {value:.4g}"
            + _versus_baseline(m["test_value"], value, config.metric, config.direction)
        )
    click.echo(f"(error rate: {m['error_rate']})")
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
    artifacts: Location | None,
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
    from tuner.delivery.predict import predict_file

    config = load(study_file, models=True)
    if not out.absolute().parent.is_dir():
        raise click.BadParameter(f"the folder {out.parent} does not exist", param_hint="--out")
    done = predict_file(config, storage, data_path, number, artifacts, say=click.echo)
    done.frame.to_csv(out, index=False)
    click.echo(
        f"wrote {len(done.frame)} predictions of trial {done.trial} to {out} "
        f"(model {done.model_path})"
    )


def _versus_baseline(value: float, baseline: float, metric: str, direction: str) -> str:
    from tuner.answers.verdict import versus

    words = versus(value, baseline, metric, direction == "minimize")
    return f"; the model is {words}" if words else ""
