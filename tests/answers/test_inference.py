"""The verdicts' error rates, held by simulation (no training): what `tuner ablate` claims.

Each simulated ablation has the shape of a real one: six contrasts (recurrent dropout, dropout,
bidirectional, one layer more, one fewer, the cell) whose variants share the runs of the trial
as it is, on K fresh seeds whose own spread is larger than the noise of a pair (pairing
removes it). A paired difference then has standard deviation sqrt(2).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from tuner.answers.inference import (
    ALPHA,
    SEQUENTIAL,
    bayes_factors,
    confidence_sequence_t,
    detectable_effect,
    holm,
    judge,
    prediction_bound,
)
from tuner.answers.verdict import HELPED, HURT, TOO_FEW_REPEATS, UNCLEAR

CONTRASTS = 6
PAIR_SD = math.sqrt(2)


def ablation(rng: np.random.Generator, k: int, effects: list[float] | None = None) -> np.ndarray:
    """Paired differences `with - without`, one row per contrast, of one simulated ablation."""
    seeds = rng.normal(0, 3, k)  # what a seed does to every model alike
    as_is = seeds + rng.normal(0, 1, k)
    variants = seeds + rng.normal(0, 1, (CONTRASTS, k)) + np.array(effects or [0.0] * 6)[:, None]
    return variants - as_is


def any_verdict(family: np.ndarray, design: str = "fixed") -> bool:
    return any(j.verdict in (HELPED, HURT) for j in judge(list(family), True, design))


def within_mc_error(rate: float, nominal: float, n: int) -> bool:
    """At most `nominal`, give or take three Monte-Carlo standard errors."""
    return rate <= nominal + 3 * math.sqrt(nominal * (1 - nominal) / n)


@pytest.mark.parametrize("k", [5, 10])
def test_with_no_real_effect_an_ablation_says_helped_or_hurt_at_most_5_percent(k: int) -> None:
    rng = np.random.default_rng(k)
    n = 3000
    rate = sum(any_verdict(ablation(rng, k)) for _ in range(n)) / n
    assert within_mc_error(rate, ALPHA, n), rate
    # Uncorrected, the same ablations would say it far more often: the correction does work.
    uncorrected = (
        sum(
            any(j.p is not None and j.p < ALPHA for j in judge(list(ablation(rng, k)), True))
            for _ in range(n)
        )
        / n
    )
    assert uncorrected > 0.12, uncorrected


# The share of ablations that find an effect of one standard deviation of a paired difference
# on one technique (README and docs/verdicts.md state these).
POWER_AT = {5: 0.09, 10: 0.43, 20: 0.89}  # measured: 0.11, 0.47, 0.92


@pytest.mark.parametrize("k", sorted(POWER_AT))
def test_an_effect_of_one_standard_deviation_is_found_in_the_stated_share(k: int) -> None:
    rng = np.random.default_rng(100 + k)
    n = 1500
    found = sum(
        judge(list(ablation(rng, k, [PAIR_SD] + [0.0] * 5)), True)[0].verdict == HURT
        for _ in range(n)
    )
    assert found / n >= POWER_AT[k], found / n


def test_until_decided_keeps_5_percent_at_its_largest_number_of_seeds() -> None:
    # The anytime p-value only falls as pairs are added, and Holm's adjustment with it, so an
    # ablation that said "helped" or "hurt" after any number of pairs says it after the last:
    # the rate at the largest N bounds the rate of looking after every pair.
    rng = np.random.default_rng(7)
    n = 3000
    rate = sum(any_verdict(ablation(rng, 20), SEQUENTIAL) for _ in range(n)) / n
    assert within_mc_error(rate, ALPHA, n), rate


def test_until_decided_finds_a_large_effect_before_its_largest_number_of_seeds() -> None:
    rng = np.random.default_rng(8)
    n, found, pairs = 500, 0, []
    for _ in range(n):
        family = ablation(rng, 20, [2 * PAIR_SD] + [0.0] * 5)
        for k in range(2, 21):
            if judge(list(family[:, :k]), True, SEQUENTIAL)[0].verdict == HURT:
                found += 1
                pairs.append(k)
                break
    assert found / n >= 0.9, found / n
    assert np.median(pairs) <= 10, np.median(pairs)


def test_a_sequential_verdict_agrees_with_its_interval() -> None:
    # A small effect found late: the verdict, the side and the interval say the same thing.
    rng = np.random.default_rng(14)
    verdicts = 0
    for _ in range(300):
        x = list(rng.normal(0.25, 1, 40))
        [j] = judge([x], minimize=True, design=SEQUENTIAL)
        assert j.interval is not None
        if j.verdict == HURT:
            verdicts += 1
            assert j.interval[0] > 0
        elif j.verdict == HELPED:
            verdicts += 1
            assert j.interval[1] < 0
        else:
            assert j.interval[0] <= 0 <= j.interval[1]
    assert verdicts > 30


def test_pairs_without_spread_get_no_verdict_unless_they_show_no_difference() -> None:
    same, none = judge([[0.3, 0.3, 0.3], [0.0, 0.0, 0.0]], minimize=True)
    assert same.verdict == TOO_FEW_REPEATS and same.adjusted is None
    assert none.verdict == UNCLEAR and none.interval == (0.0, 0.0)
    for design in ("fixed", SEQUENTIAL):
        [j] = judge([[0.1, 0.1, 0.1, 0.1, 0.1, 0.1]], minimize=True, design=design)
        assert j.verdict == TOO_FEW_REPEATS


def test_until_decided_needs_six_seeds_to_decide_any_of_six_techniques() -> None:
    from tuner.search.ablation import SEQUENTIAL_MIN_REPEATS

    rng = np.random.default_rng(15)
    family = [list(-10 + rng.normal(0, 0.01, 8)) for _ in range(CONTRASTS)]
    short = judge([d[: SEQUENTIAL_MIN_REPEATS - 1] for d in family], True, SEQUENTIAL)
    assert all(j.verdict == UNCLEAR for j in short)
    enough = judge([d[:SEQUENTIAL_MIN_REPEATS] for d in family], True, SEQUENTIAL)
    assert any(j.verdict == HELPED for j in enough)


def test_the_confidence_sequence_covers_the_effect_at_every_number_of_seeds_at_once() -> None:
    rng = np.random.default_rng(9)
    n, missed = 2000, 0
    for _ in range(n):
        x = rng.normal(0.7, 1.3, 30)
        for k in range(2, 31):
            half = confidence_sequence_t(k) * x[:k].std(ddof=1) / math.sqrt(k)
            if abs(x[:k].mean() - 0.7) > half:
                missed += 1
                break
    assert within_mc_error(missed / n, ALPHA, n), missed / n


def test_the_seed_luck_note_fires_at_most_at_its_nominal_rate_with_no_luck() -> None:
    rng = np.random.default_rng(10)
    n, fired = 4000, 0
    for _ in range(n):
        runs = rng.normal(3.0, 0.2, 6)  # the search's own run and five fresh seeds, alike
        bound = prediction_bound(runs[1:], minimize=True)
        assert bound is not None
        fired += runs[0] < bound
    assert within_mc_error(fired / n, ALPHA, n), fired / n


def test_the_seed_luck_note_fires_when_the_search_picked_a_lucky_seed() -> None:
    rng = np.random.default_rng(11)
    n, fired = 1000, 0
    for _ in range(n):
        runs = rng.normal(3.0, 0.2, 5)
        bound = prediction_bound(runs, minimize=True)
        assert bound is not None
        fired += 3.0 - 3 * 0.2 < bound  # the search's run three spreads better than the model
    assert fired / n > 0.6


def test_holm_is_statsmodels_holm() -> None:
    rng = np.random.default_rng(12)
    for m in (1, 2, 6):
        ps = list(rng.uniform(0, 0.2, m))
        assert holm(ps) == pytest.approx(list(multipletests(ps, method="holm")[1]))


@pytest.mark.parametrize(
    ("effect", "minimize", "verdict"),
    [
        (-0.3, True, HELPED),  # lowers an error
        (0.3, True, HURT),  # raises an error
        (0.0, True, UNCLEAR),
        (0.05, False, HELPED),  # raises an accuracy
        (-0.05, False, HURT),
    ],
)
def test_a_verdict_reads_in_the_metrics_direction(
    effect: float, minimize: bool, verdict: str
) -> None:
    d = list(effect + np.random.default_rng(1).normal(0, 0.02, 5))
    [judged] = judge([d], minimize)
    assert judged.verdict == verdict
    assert judged.interval is not None
    assert judged.interval[0] <= effect <= judged.interval[1]


def test_the_fixed_interval_is_students_t_on_the_differences() -> None:
    [judged] = judge([[1.0, 2.0, 3.0]], minimize=True)
    # mean 2, sd 1, t(0.975, 2) = 4.303: 2 +- 4.303 / sqrt(3)
    assert judged.interval == pytest.approx((2 - 2.4843, 2 + 2.4843), abs=1e-3)
    assert judged.verdict == UNCLEAR


def test_one_pair_gives_no_interval_and_no_verdict_and_stays_out_of_the_family() -> None:
    judged = judge([[0.5], [-3.0, -3.1, -2.9]], minimize=True)
    assert judged[0].verdict == TOO_FEW_REPEATS and judged[0].interval is None
    assert judged[1].family_size == 1


def test_the_bayes_factors_are_the_t_tests_at_each_number_of_pairs() -> None:
    x = np.random.default_rng(1).normal(0.5, 1, 8)
    for k in range(2, 9):
        n, v = k, k - 1
        t2 = (x[:k].mean() / (x[:k].std(ddof=1) / math.sqrt(n))) ** 2
        c = 1 + n
        expected = c**-0.5 * ((1 + t2 / v) / (1 + t2 / (c * v))) ** ((v + 1) / 2)
        assert bayes_factors(x)[k - 2] == pytest.approx(expected)


def test_the_detectable_effect_is_found_with_the_stated_power() -> None:
    rng = np.random.default_rng(13)
    sd = 0.7
    size = detectable_effect(sd, 10, CONTRASTS)
    assert size is not None and 1.0 < size / sd < 2.5
    # Simulated at that effect and spread, a t-test at the family's strictest level finds it
    # in about 80% of ablations.
    from scipy import stats

    hits = 0
    for _ in range(2000):
        x = rng.normal(size, sd, 10)
        p = 2 * stats.t.sf(abs(x.mean()) / (x.std(ddof=1) / math.sqrt(10)), 9)
        hits += p < ALPHA / CONTRASTS
    assert abs(hits / 2000 - 0.8) < 0.05
