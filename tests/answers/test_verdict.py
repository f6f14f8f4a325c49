from __future__ import annotations

import numpy as np
import pytest

from tuner.answers.verdict import HELPED, HURT, TIE, TOO_FEW_REPEATS, UNCLEAR, paired, versus


def _runs(effect: float, k: int, seed: int) -> list[float]:
    """Paired differences (with minus without) of K seeds whose own spread (1.0) dwarfs the
    technique's effect, as training seeds' spread does: pairing removes it."""
    rng = np.random.default_rng(seed)
    base = rng.normal(3.0, 1.0, k)  # each seed's error without the technique
    with_it = base + effect + rng.normal(0, 0.02, k)
    return list(with_it - base)


@pytest.mark.parametrize(
    ("effect", "minimize", "verdict"),
    [
        (-0.3, True, HELPED),  # lowers an error
        (0.3, True, HURT),  # raises an error
        (0.0, True, UNCLEAR),  # does nothing
        (0.05, False, HELPED),  # raises an accuracy
        (-0.05, False, HURT),
        (0.0, False, UNCLEAR),
    ],
)
def test_a_paired_verdict_finds_a_known_effect(effect: float, minimize: bool, verdict: str):
    result = paired(_runs(effect, 5, seed=1), minimize)
    assert result.verdict == verdict
    assert result.n == 5
    assert result.interval is not None
    low, high = result.interval
    assert low <= result.mean <= high
    assert low <= effect <= high  # the interval covers the true effect


def test_the_interval_is_students_t_on_the_differences():
    result = paired([1.0, 2.0, 3.0], minimize=True)
    # mean 2, sd 1, t(0.975, 2) = 4.303: 2 +- 4.303 / sqrt(3)
    assert result.mean == pytest.approx(2.0)
    assert result.interval == pytest.approx((2 - 2.4843, 2 + 2.4843), abs=1e-3)
    assert result.verdict == UNCLEAR


def test_one_pair_gives_no_interval_and_no_verdict():
    assert paired([0.5], minimize=True).verdict == TOO_FEW_REPEATS
    assert paired([], minimize=True).verdict == TOO_FEW_REPEATS


def test_accuracy_reads_in_points_and_errors_in_percent():
    assert versus(0.78, 0.50, "val_accuracy", minimize=False) == "28.0 points better"
    assert versus(0.50, 0.78, "val_accuracy", minimize=False) == "28.0 points worse"
    assert versus(3.0, 4.0, "val_mae", minimize=True) == "25.0% better"
    assert versus(4.0, 4.0, "val_mae", minimize=True) == TIE
    assert versus(0.7001, 0.7, "val_accuracy", minimize=False) == TIE
