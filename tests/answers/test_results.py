from __future__ import annotations

import json
from io import StringIO

import optuna
import pandas as pd
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from tuner.answers.results import format_summary, summary
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
    # JSON says it too: its values have no error rate.
    assert report["error_rate"].startswith("no error rate: every value")
    assert [r["number"] for r in top] == [t.number for t in complete[:2]]
    assert [r["value"] for r in top] == [t.value for t in complete[:2]]
    assert top[0]["params"] == study.best_trial.params
    assert top[0]["epochs"] == study.best_trial.user_attrs["epochs"]
    assert top[0]["train_seconds"] == study.best_trial.user_attrs["train_seconds"] > 0
    assert report["baselines"] == study.user_attrs["baselines"]
    seeds = {
        t.user_attrs["seed_config"]: t
        for t in study.trials
        if "seed_config" in t.user_attrs and t.state in (TrialState.COMPLETE, TrialState.PRUNED)
    }
    assert {n: s["number"] for n, s in report["seed_configs"].items()} == {
        n: t.number for n, t in seeds.items()
    }
    for name, t in seeds.items():
        row = report["seed_configs"][name]
        assert row["value"] == min(t.intermediate_values.values())
        pruned = t.state == TrialState.PRUNED
        assert row["pruned_at"] == (t.user_attrs["epochs"] if pruned else None)


def test_a_pruned_seed_configuration_is_shown_with_the_epoch_it_stopped_at(tmp_path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'seeds.db'}", study_name="s")
    study.set_user_attr("metric", "val_mae")
    study.enqueue_trial({"x": 1.0}, user_attrs={"seed_config": "gru"})
    study.enqueue_trial({"x": 2.0}, user_attrs={"seed_config": "stacked-gru"})
    for epochs, state in ((3, TrialState.COMPLETE), (2, TrialState.PRUNED)):
        trial = study.ask()
        trial.suggest_float("x", 0.0, 3.0)
        values = [5.0 - epochs + e * 0.5 for e in range(epochs)]  # the first epoch is the best
        for step, value in enumerate(values, start=1):
            trial.report(value, step)
        attrs = {"epochs": epochs, "best_epoch": 1, "train_seconds": 1.0, "n_params": 100}
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        study.tell(trial, min(values) if state == TrialState.COMPLETE else None, state=state)
    assert study.trials[1].value == 3.5  # Optuna gives a pruned trial its last value

    s = summary(study)
    assert s["seed_configs"]["stacked-gru"] == {
        "number": 1,
        "value": 3.0,
        "improvement": pytest.approx((3.0 - 2.0) / 3.0),
        "pruned_at": 2,
    }
    assert s["seed_configs"]["gru"]["pruned_at"] is None
    text = format_summary(s)
    assert "seed configuration stacked-gru (pruned at epoch 2): val_mae = 3;" in text
    assert "seed configuration gru: val_mae = 2; the best trial is level with it" in text
    # A comparison printed says it has no error rate, and why.
    [caveat] = [line for line in text.splitlines() if "no error rate" in line]
    assert f"the best of {s['trials']['complete'] + s['trials']['pruned']} trials" in caveat


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


def test_a_study_made_by_stock_optuna_is_summarised_without_what_workers_record() -> None:
    study = optuna.create_study()
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    lines = format_summary(summary(study)).splitlines()
    assert lines[1].startswith("best trial ")
    assert lines[3] == (
        "  (no epochs, time or size recorded: the trial was not run by a tuner worker)"
    )


def test_every_listing_of_values_says_they_have_no_error_rate(finished_study) -> None:
    study, url = str(finished_study["study"]), finished_study["url"]
    for args in (["trials", study], ["best-trials", study], ["best-trial", study]):
        result = CliRunner().invoke(cli, [*args, "--storage", url])
        assert result.exit_code == 0, result.output
        assert "no error rate" in result.output.splitlines()[-1], args
