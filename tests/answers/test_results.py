from __future__ import annotations

import json
from io import StringIO

import optuna
import pandas as pd
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from tuner.answers import results
from tuner.answers.diagnoses import diagnose
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
        "paused": False,
    }
    assert s["seed_configs"]["gru"]["pruned_at"] is None
    text = format_summary(s)
    assert "seed configuration stacked-gru (pruned at epoch 2): val_mae = 3;" in text
    assert "seed configuration gru: val_mae = 2; the best trial is level with it" in text
    # A comparison printed says it has no error rate, and why.
    [caveat] = [line for line in text.splitlines() if "no error rate" in line]
    assert f"the best of {s['trials']['complete'] + s['trials']['pruned']} trials" in caveat


def _add(study: optuna.Study, values: list[float], state: TrialState, **attrs: object) -> None:
    """A trial with `values` by epoch, finished in `state`, with the user attributes a worker
    records (its epochs, best epoch, size and seconds) and `attrs`."""
    trial = study.ask()
    trial.suggest_float("x", 0.0, 3.0)
    for step, value in enumerate(values, start=1):
        trial.report(value, step)
    best = min(values)
    recorded = {"epochs": len(values), "best_epoch": values.index(best) + 1, "n_params": 10}
    for key, value in (recorded | {"train_seconds": 1.0} | attrs).items():
        trial.set_user_attr(key, value)
    study.tell(trial, best if state == TrialState.COMPLETE else None, state=state)


def _study_of(path, *runs: tuple[list[float], TrialState, dict[str, object]]) -> optuna.Study:
    study = optuna.create_study(storage=f"sqlite:///{path}", study_name="p")
    study.set_user_attr("metric", "val_mae")
    for values, state, attrs in runs:
        _add(study, values, state, **attrs)
    return study


def test_a_paused_model_counts_among_the_best_and_a_stopped_one_does_not(tmp_path) -> None:
    """With the pruner `pause`, a paused trial's model waits at its checkpoint for a larger
    budget: it is one of the study's models, and the best when it reached the best value (its
    best epoch's, not Optuna's last-epoch value). A trial a pruner stopped is not."""
    saved = {"checkpoint": {"artifact_id": "a", "epoch": 1, "values": [], "bytes": 1}}
    study = _study_of(
        tmp_path / "paused.db",
        ([3.5, 3.2, 3.1, 3.0], TrialState.COMPLETE, saved),
        ([1.0], TrialState.PRUNED, {}),  # stopped by the pruner after one lucky epoch
        ([2.6, 2.4, 2.7], TrialState.PRUNED, saved | {"paused_at": 3}),  # best at epoch 2
        ([2.9, 2.8], TrialState.PRUNED, saved | {"paused_at": 2}),
    )
    assert study.trials[2].value == 2.7  # Optuna's value for it: its last epoch's

    s = summary(study)
    assert s["best_trial"]["number"] == 2
    assert s["best_trial"]["value"] == 2.4
    assert s["best_trial"]["paused_at"] == 3
    assert "best trial 2 (paused at epoch 3): val_mae = 2.4" in format_summary(s)
    assert diagnose(study) == []  # best at its second epoch of three: not still improving

    listed = results.best_trials(study, top=5)
    top = [(row["number"], row["value"], row["paused_at"]) for row in listed["top"]]
    assert top == [(2, 2.4, 3), (3, 2.8, 2), (0, 3.0, None)]
    lines = results.format_best_trials(listed).splitlines()
    assert lines[0] == (
        "study p: the 3 best of 3 models (complete or paused trials) by val_mae (minimize)"
    )
    assert lines[2].endswith("(paused at epoch 3)")

    # Trial 2's model resumed and trained on: it is ranked once, as its later trial, whose
    # training time is the model's.
    _add(study, [2.6, 2.4, 2.7, 2.5, 2.2], TrialState.COMPLETE, model=2, continues=2, **saved)
    listed = results.best_trials(study, top=5)
    top = [(row["number"], row["value"], row["paused_at"]) for row in listed["top"]]
    assert top == [(4, 2.2, None), (3, 2.8, 2), (0, 3.0, None)]
    assert listed["top"][0]["train_seconds"] == 2.0
    assert summary(study)["best_trial"]["train_seconds"] == 2.0

    # A model resumed that learned nothing more is its latest trial too, complete, not paused.
    _add(study, [2.9, 2.8, 3.0, 3.1], TrialState.COMPLETE, model=3, continues=3, **saved)
    listed = results.best_trials(study, top=5)
    top = [(row["number"], row["value"], row["paused_at"]) for row in listed["top"]]
    assert top == [(4, 2.2, None), (5, 2.8, None), (0, 3.0, None)]


def test_a_best_model_paused_while_improving_is_said_to_resume_with_a_larger_budget(
    tmp_path,
) -> None:
    study = _study_of(
        tmp_path / "improving.db",
        ([3.5, 3.2, 3.1, 3.0], TrialState.COMPLETE, {}),
        ([2.9, 2.8], TrialState.PRUNED, {"paused_at": 2}),
    )
    assert diagnose(study) == [
        "the best trial 1 was still improving when it was paused (epoch 2 of 4): a larger "
        "budget (`[budget] epochs` or `n_trials`) may resume it from its checkpoint, if it is "
        "in the top of its rung"
    ]


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
