from __future__ import annotations

import io

import optuna
import pytest

from tuner.search.progress import Progress, Running, duration, time_left, trial_line
from tuner.search.queue import Counts


def test_time_left_shares_the_trials_still_to_run_among_the_workers() -> None:
    counts = Counts(complete=4, running=2)
    running = (Running(4, 2, 4, 1.0, 10.0), Running(5, 0, 4, None, 1.0))
    # 10 trials: 6 to run, half of one done, 60 s a trial, two workers.
    assert time_left(counts, 10, 2, [60.0] * 4, running) == pytest.approx(5.5 * 60 / 2)
    # Before any trial finished: from the running trials' pace (10 s for half of one).
    assert time_left(Counts(running=2), 10, 2, [], running) == pytest.approx(9.5 * 20 / 2)
    assert time_left(Counts(running=1), 10, 2, [], (running[1],)) is None


def test_a_running_trial_reads_as_number_epoch_metric_and_time() -> None:
    assert trial_line(Running(7, 2, 10, 3.14159, 75), "val_mae") == (
        "trial 7: epoch 2/10, val_mae 3.142 (1 min 15 s)"
    )
    assert duration(3725) == "1 h 02 min" and duration(None) == "?"


def test_plain_lines_show_each_new_epoch_and_the_running_count() -> None:
    study = optuna.create_study()
    study.set_user_attr("metric", "val_mae")
    trials = [study.ask() for _ in range(2)]
    out = io.StringIO()
    show = Progress(study, 4, out, n_workers=2)
    trials[0].set_user_attr("progress", {"epoch": 1, "epochs": 3, "value": 2.5})
    show()
    show()  # nothing new: nothing printed
    trials[1].set_user_attr("progress", {"epoch": 1, "epochs": 3, "value": 2.0})
    show()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("trial 0: epoch 1/3, val_mae 2.5 (")
    assert lines[1].startswith("trials 0/4: 0 complete, 0 pruned, 0 failed, 2 running")
    assert lines[2].startswith("trial 1: epoch 1/3, val_mae 2 (")


def test_the_best_trial_so_far_is_shown_except_for_an_ablation_s_runs() -> None:
    study = optuna.create_study()
    study.set_user_attr("metric", "val_mae")
    for value in (3.0, 2.5):
        trial = study.ask()
        trial.set_user_attr("val_mae", value)
        study.tell(trial, value)
    shown = {}
    for best in (True, False):
        out = io.StringIO()
        Progress(study, 4, out, best=best)(final=True)
        shown[best] = out.getvalue()
    assert "; best val_mae 2.5 (trial 1)" in shown[True]
    assert "best" not in shown[False] and shown[False].startswith("trials 2/4: 2 complete")
