from __future__ import annotations

import json
from io import StringIO

import optuna
import pandas as pd
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from tuner.cli import cli

pytestmark = pytest.mark.slow  # reads a study that real workers ran


def best_trials(finished_study, *args: str):
    result = CliRunner().invoke(
        cli,
        ["best-trials", str(finished_study["study"]), "--storage", finished_study["url"], *args],
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_best_trials_ranks_complete_trials_with_the_references(finished_study) -> None:
    study = optuna.load_study(study_name="finished", storage=finished_study["url"])
    complete = sorted(
        (t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: t.value
    )
    report = json.loads(best_trials(finished_study, "--top", "2", "--format", "json"))
    top = report["top"]
    assert [r["number"] for r in top] == [t.number for t in complete[:2]]
    assert [r["value"] for r in top] == [t.value for t in complete[:2]]
    assert top[0]["params"] == study.best_trial.params
    assert top[0]["epochs"] == study.best_trial.user_attrs["epochs"]
    assert top[0]["train_seconds"] == study.best_trial.user_attrs["train_seconds"] > 0
    assert report["baselines"] == study.user_attrs["baselines"]
    seeds = {
        t.user_attrs["seed_config"]: t
        for t in study.trials
        if "seed_config" in t.user_attrs and t.state == TrialState.COMPLETE
    }
    assert {n: s["number"] for n, s in report["seed_configs"].items()} == {
        n: t.number for n, t in seeds.items()
    }


def test_best_trials_as_csv_and_table(finished_study) -> None:
    study = optuna.load_study(study_name="finished", storage=finished_study["url"])
    frame = pd.read_csv(StringIO(best_trials(finished_study, "--top", "3", "--format", "csv")))
    trials = frame[frame["kind"] == "trial"]
    n_complete = sum(t.state == TrialState.COMPLETE for t in study.trials)
    assert list(trials["rank"]) == list(range(1, min(3, n_complete) + 1))
    assert trials["val_mae"].iloc[0] == pytest.approx(study.best_value)
    assert trials["params_units_1"].iloc[0] == study.best_trial.params["units_1"]
    assert frame[frame["kind"] == "baseline"]["name"].tolist() == ["last_value"]
    assert "seed configuration" in set(frame["kind"])

    text = best_trials(finished_study, "--top", "1")
    lines = text.splitlines()
    assert lines[0].startswith("study finished: the 1 best of ")
    assert lines[2].split()[:3] == ["1", str(study.best_trial.number), f"{study.best_value:.4g}"]
    assert (
        f"baseline last_value: val_mae = {study.user_attrs['baselines']['last_value']:.4g}" in text
    )
