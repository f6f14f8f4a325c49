"""`tuner predict`: bad data and a trial without a model get one line and exit code 2 before
anything is retrained or written; a trial without a retrained model is retrained first, in the
artifact folder that TUNER_ARTIFACTS names, and best-trials shows the model there."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import keras
import optuna
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import FAST_SPACE, copy_study, make_series, study_text
from optuna.trial import TrialState

from tuner.cli import cli
from tuner.config import load_study_config
from tuner.data import prepare
from tuner.search.objective import Objective
from tuner.search.study import open_study
from tuner.search.worker import StopRequest, run_worker
from tuner.storage import open_storage

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A forecast study with one complete trial (0) and one pruned trial (1), not retrained."""
    folder = tmp_path_factory.mktemp("predict")
    make_series(300).to_csv(folder / "series.csv", index=False)
    path = folder / "study.toml"
    path.write_text(
        study_text(
            "walk",
            study='name = "walk"\nmetric = "val_mae"\nn_trials = 1\nseed_configs = false',
            space=FAST_SPACE,
            pruner='name = "none"',
        )
    )
    config = load_study_config(path)
    data = prepare(config.data)
    url = f"sqlite:///{folder / 'tuner.db'}"
    storage = open_storage(url, config.workers)
    study = open_study(config, storage, lambda: data.baselines)
    assert run_worker(config, study, storage, Objective(config, data), StopRequest()).complete
    done = study.trials[0]
    study.add_trial(
        optuna.trial.create_trial(
            params=done.params, distributions=done.distributions, state=TrialState.PRUNED
        )
    )
    return {"folder": folder, "study": path, "url": url}


def predict(searched: dict[str, Any], *args: str, env: dict[str, str] | None = None) -> Any:
    out = searched["folder"] / "predictions.csv"
    out.unlink(missing_ok=True)
    return CliRunner().invoke(
        cli,
        ["predict", str(searched["study"]), "--storage", searched["url"], "--out", str(out)]
        + list(args),
        env=env,
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda frame: frame.drop(columns="humid"),
            r"{file}: column 'humid' not found \(columns: \['temp', 'pressure'\]\)",
        ),
        (
            lambda frame: frame.head(10),
            r"{file}: one window needs 11 rows \(lookback 12, step 2\) but the file has only 10",
        ),
    ],
)
def test_bad_data_gets_one_line_and_nothing_is_retrained_or_written(
    searched: dict[str, Any], change, message: str
) -> None:
    file = searched["folder"] / "new.csv"
    change(make_series(50)).to_csv(file, index=False)
    result = predict(searched, "--data", str(file))
    assert result.exit_code == 2, result.output + result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert re.fullmatch(f"Error: {message.format(file=re.escape(str(file)))}\n", result.stderr)
    assert not (searched["folder"] / "predictions.csv").exists()
    study = optuna.load_study(study_name="walk", storage=searched["url"])
    assert not [k for k in study.user_attrs if k.startswith("retrained:")]


def test_a_pruned_trial_gets_one_line(searched: dict[str, Any]) -> None:
    result = predict(searched, "--data", str(searched["folder"] / "series.csv"), "--trial", "1")
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: trial 1 of study 'walk' is pruned; only a complete or paused trial has a model to "
        "retrain or to predict with\n"
    )
    assert not (searched["folder"] / "predictions.csv").exists()


def test_an_s3_bucket_holds_the_retrained_model_for_predict_best_trials_and_delete(
    searched: dict[str, Any], s3_server: dict[str, str], tmp_path: Path
) -> None:
    import boto3

    # A copy of the study (its WAL included): this test deletes it at the end.
    url = copy_study(searched["url"], tmp_path / "tuner.db")
    env = s3_server | {"TUNER_ARTIFACTS": "s3://models/team/walk"}
    bucket = boto3.client("s3", endpoint_url=s3_server["AWS_ENDPOINT_URL"], **_keys(s3_server))
    bucket.create_bucket(Bucket="models")
    study, data = str(searched["study"]), str(searched["folder"] / "series.csv")

    # A bucket that is not there, and a scheme tuner does not know: one line, nothing trained.
    for store, message in (
        ("s3://absent/x", "artifact store s3://absent/x: no such bucket or object"),
        ("gs://models/x", "artifact store 'gs://models/x': unknown scheme gs://"),
    ):
        refused = CliRunner().invoke(
            cli, ["retrain", study, "--storage", url, "--artifacts", store], env=env
        )
        assert refused.exit_code == 2 and refused.stderr.startswith(f"Error: {message}")
        assert len(refused.stderr.splitlines()) == 1
    assert not optuna.load_study(study_name="walk", storage=url).user_attrs.keys() & {
        "retrained:0"
    }

    first = CliRunner().invoke(cli, ["retrain", study, "--storage", url], env=env)
    assert first.exit_code == 0, first.output + first.stderr
    model = "s3://models/team/walk/models/walk-trial-0/walk-trial-0.keras"
    assert f"model: {model} " in first.output
    keys = {o["Key"] for o in bucket.list_objects_v2(Bucket="models")["Contents"]}
    named = {
        "team/walk/models/walk-trial-0/walk-trial-0.keras",
        "team/walk/models/walk-trial-0/walk-trial-0.json",
    }
    assert named < keys and len(keys) == 4 and all(k.startswith("team/walk/") for k in keys)

    # predict downloads the model from the bucket: no retraining, and its rows.
    out = tmp_path / "predictions.csv"
    done = CliRunner().invoke(
        cli, ["predict", study, "--storage", url, "--data", data, "--out", str(out)], env=env
    )
    assert done.exit_code == 0, done.output + done.stderr
    assert "retraining" not in done.output and done.output.rstrip().endswith(f"(model {model})")
    assert len(pd.read_csv(out)) == 290

    shown = CliRunner().invoke(
        cli, ["best-trials", study, "--storage", url, "--format", "json"], env=env
    )
    assert json.loads(shown.output)["top"][0]["retrained"]["model"] == model

    gone = CliRunner().invoke(cli, ["delete-study", "walk", "--storage", url, "--yes"], env=env)
    assert gone.exit_code == 0 and "2 artifact files" in gone.output, gone.output + gone.stderr
    assert "Contents" not in bucket.list_objects_v2(Bucket="models")


def _keys(env: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "region_name": env["AWS_DEFAULT_REGION"],
    }


def test_a_trial_without_a_model_is_retrained_first_into_the_artifacts_folder(
    searched: dict[str, Any], tmp_path: Path
) -> None:
    env = {"TUNER_ARTIFACTS": str(tmp_path / "shared")}
    data = searched["folder"] / "series.csv"
    first = predict(searched, "--data", str(data), env=env)
    assert first.exit_code == 0, first.output + first.stderr
    lines = first.output.splitlines()
    assert lines[0] == "trial 0's retrained model is not there yet: retraining it first"
    assert lines[1].startswith("retraining trial 0 on training + validation data for")
    model = tmp_path / "shared" / "models" / "walk-trial-0" / "walk-trial-0.keras"
    assert lines[-1] == (
        f"wrote 290 predictions of trial 0 to {searched['folder'] / 'predictions.csv'} "
        f"(model {model})"
    )
    table = pd.read_csv(searched["folder"] / "predictions.csv")
    assert list(table.columns) == ["window_end", "forecast_for", "temp"] and len(table) == 290
    assert keras.saving.load_model(model).count_params() > 0

    # The second time, the model is there: no retraining, the same predictions.
    again = predict(searched, "--data", str(data), env=env)
    assert again.exit_code == 0 and "retraining" not in again.output
    assert pd.read_csv(searched["folder"] / "predictions.csv").equals(table)

    # best-trials shows the model where TUNER_ARTIFACTS says, and a path keras loads as is.
    shown = CliRunner().invoke(
        cli,
        ["best-trials", str(searched["study"]), "--storage", searched["url"], "--format", "json"],
        env=env,
    )
    assert json.loads(shown.output)["top"][0]["retrained"]["model"] == str(model)
    # ... and delete-study removes the named copies with the artifacts.
    gone = CliRunner().invoke(
        cli, ["delete-study", "walk", "--storage", searched["url"], "--yes"], env=env
    )
    assert gone.exit_code == 0, gone.output + gone.stderr
    assert "2 artifact files" in gone.output
    assert not (tmp_path / "shared" / "models" / "walk-trial-0").exists()
