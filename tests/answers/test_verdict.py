from __future__ import annotations

import math

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


def test_a_mean_interval_cut_to_the_metrics_bounds_holds_the_mean_exactly_as_often() -> None:
    """Two seeds of an error near 0: t's interval reaches below 0, which no error can; cut at
    0 it holds the true mean in exactly the draws the whole interval did."""
    import numpy as np

    from tuner.answers.verdict import mean_interval, metric_bounds

    assert metric_bounds("val_mae") == (0.0, math.inf)
    assert metric_bounds("test_accuracy") == (0.0, 1.0)
    low, high = mean_interval([0.1, 2.0])
    assert low < 0
    assert mean_interval([0.1, 2.0], metric_bounds("val_mae")) == (0.0, high)
    rng = np.random.default_rng(0)
    mean, held, held_cut = 0.5, 0, 0
    for _ in range(2000):
        values = list(rng.exponential(mean, size=2))
        whole = mean_interval(values)
        cut = mean_interval(values, metric_bounds("val_mae"))
        held += whole[0] <= mean <= whole[1]
        held_cut += cut[0] <= mean <= cut[1]
        assert cut[0] >= 0
    assert held_cut == held
    accuracy = mean_interval([0.97, 0.99], metric_bounds("val_accuracy"))
    assert accuracy[1] == 1.0


def test_sizes_read_without_an_exponent() -> None:
    from tuner.answers.verdict import significant

    assert significant(196.4, 2) == "200"
    assert significant(0.0123, 2) == "0.012"
    assert significant(3.14159) == "3.14"
    assert directed(-1234.5, "val_mae", minimize=True) == "1230 better"
