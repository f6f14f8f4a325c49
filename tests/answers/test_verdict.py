from __future__ import annotations

from tuner.answers.verdict import TIE, directed, directed_interval, versus


def test_accuracy_reads_in_points_and_errors_in_percent():
    assert versus(0.78, 0.50, "val_accuracy", minimize=False) == "28.0 points better"
    assert versus(0.50, 0.78, "val_accuracy", minimize=False) == "28.0 points worse"
    assert versus(3.0, 4.0, "val_mae", minimize=True) == "25.0% better"
    assert versus(4.0, 4.0, "val_mae", minimize=True) == TIE
    assert versus(0.7001, 0.7, "val_accuracy", minimize=False) == TIE


def test_a_change_reads_in_the_metrics_direction_to_three_significant_digits():
    assert directed(-0.31234, "val_mae", minimize=True) == "0.312 better"
    assert directed(0.31234, "val_mae", minimize=True) == "0.312 worse"
    assert directed(-0.015, "val_accuracy", minimize=False) == "1.5 points worse"
    assert directed(0.01, "val_accuracy", minimize=False) == "1 point better"
    assert directed(0.0, "val_loss", minimize=True) == "no change"
    # The worse end first, whichever the sign of the metric's better side.
    assert directed_interval((-0.5, 0.1), "val_mae", minimize=True) == "0.1 worse to 0.5 better"
    assert directed_interval((-0.02, 0.01), "val_accuracy", minimize=False) == (
        "2 points worse to 1 point better"
    )
    inf = float("inf")
    assert directed_interval((-inf, inf), "val_mae", minimize=True) == "any worse to any better"
