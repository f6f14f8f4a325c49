from __future__ import annotations

import optuna
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from tuner.answers.diagnoses import diagnose
from tuner.config import load_study_config

DISTRIBUTIONS = {
    "cell": CategoricalDistribution(("gru", "lstm")),
    "layers": IntDistribution(1, 2),
    "bidirectional": CategoricalDistribution((False, True)),
    "units_1": IntDistribution(4, 64),
}


def _params(cell: str = "gru", layers: int = 1, bidirectional: bool = False) -> dict:
    return {"cell": cell, "layers": layers, "bidirectional": bidirectional, "units_1": 8}


def _study(baseline: float = 3.0, best_epoch: int = 2) -> optuna.Study:
    """A made-up finished study: val_mae, minimized; the best trial (2.0) is a 1-layer GRU."""
    study = optuna.create_study(direction="minimize")
    study.set_user_attr("metric", "val_mae")
    study.set_user_attr("baselines", {"last_value": baseline})
    for value, epoch in ((2.0, best_epoch), (2.5, 3)):
        study.add_trial(
            create_trial(
                value=value,
                params=_params(cell="gru" if value == 2.0 else "lstm"),
                distributions=DISTRIBUTIONS,
                user_attrs={"epochs": 3, "best_epoch": epoch, "train_seconds": 1.0, "n_params": 9},
                intermediate_values={1: value + 1, 2: value + 0.5, 3: value},
            )
        )
    return study


def _pruned(study: optuna.Study, n: int, **family: object) -> None:
    for i in range(n):
        study.add_trial(
            create_trial(
                state=TrialState.PRUNED,
                params=_params(**family),  # type: ignore[arg-type]
                distributions=DISTRIBUTIONS,
                user_attrs={"epochs": 1},
                intermediate_values={1: 4.0 + i},
            )
        )


def test_a_healthy_study_gets_no_diagnosis() -> None:
    study = _study()
    _pruned(study, 3, cell="lstm", layers=2)  # pruned early, but not the winning family
    _pruned(study, 1)
    assert diagnose(study) == []


def test_a_baseline_that_beats_the_best_trial_is_said_plainly() -> None:
    [text] = diagnose(_study(baseline=1.5))
    assert text.startswith("the naive baseline last_value (val_mae = 1.5) beats the best trial 0")


def test_a_forecast_window_shorter_than_the_period_is_named_as_the_cause(write_study) -> None:
    config = load_study_config(
        write_study(
            data='path = "series.csv"\ntarget = "temp"\nlookback = 12\ndelay = 3\nperiod = 24'
        )
    )
    [text] = diagnose(_study(baseline=1.5), config)
    assert "`lookback` = 12 rows) is shorter than the period (`period` = 24 rows)" in text
    healthy = load_study_config(
        write_study(
            data='path = "series.csv"\ntarget = "temp"\nlookback = 48\ndelay = 3\nperiod = 24'
        )
    )
    [text] = diagnose(_study(baseline=1.5), healthy)
    assert "period" not in text


def test_a_best_trial_still_improving_at_its_last_epoch_asks_for_more_epochs() -> None:
    [text] = diagnose(_study(best_epoch=3))
    assert "still improving at its last epoch (3 of 3)" in text
    assert "`[training] epochs` is probably too small" in text


def test_a_winner_that_trailed_at_the_first_rung_questions_min_resource() -> None:
    study = optuna.create_study(direction="minimize")
    study.set_user_attr("metric", "val_mae")
    for value, first in ((2.0, 5.5), (2.5, 3.5)):  # the winner started slowly
        study.add_trial(
            create_trial(
                value=value,
                params=_params(cell="gru" if value == 2.0 else "lstm"),
                distributions=DISTRIBUTIONS,
                user_attrs={"epochs": 3, "best_epoch": 2, "train_seconds": 1.0, "n_params": 9},
                intermediate_values={1: first, 2: value + 0.5, 3: value},
            )
        )
    _pruned(study, 3)  # GRU, 1 layer: the winner's family, at 4.0, 5.0, 6.0
    [text] = diagnose(study)
    assert text.startswith("the best trial 0 was behind 3 of the 5 trials at epoch 1, the ")
    assert "where 3 trials of its family (GRU, 1 layer) were pruned" in text
    assert "`min_resource` may be too small" in text


def test_a_winner_that_led_at_the_first_rung_says_nothing_against_min_resource() -> None:
    study = _study()  # the winner's first epoch, 3.0, was the best there
    _pruned(study, 5)  # however many of its family were pruned there
    assert diagnose(study) == []


def test_best_trial_and_best_trials_print_the_diagnoses_as_notes() -> None:
    from tuner.answers.results import best_trials, format_best_trials, format_summary, summary

    study = _study(best_epoch=3)
    found = diagnose(study)
    s = summary(study) | {"diagnoses": found}
    assert f"note: {found[0]}" in format_summary(s).splitlines()
    report = best_trials(study, 1) | {"diagnoses": found}
    assert f"note: {found[0]}" in format_best_trials(report).splitlines()
    assert "note:" not in format_summary(summary(_study()) | {"diagnoses": diagnose(_study())})
