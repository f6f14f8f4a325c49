"""The statistics behind an ablation's verdicts, each with the error rate it keeps.

A family is one ablation's contrasts: K paired differences each, `with the technique - without
it` on the same fresh training seed, all sharing the runs of the trial as it is. Two designs:

- **fixed** (`tuner ablate`, K seeds chosen in advance): a paired t-test per contrast, Holm's
  step-down correction over the family (statsmodels), so that with no real effect the chance of
  any "helped" or "hurt" in an ablation is at most `ALPHA`. Each contrast also gets its 95%
  t-interval, and, when it is undecided, the smallest effect the ablation would have found
  (`detectable`, at `POWER` and the family's strictest level).
- **sequential** (`tuner ablate --until-decided`, seeds added until decided): an e-process per
  contrast, the Bayes factor of the one-sample t-test with a normal prior on the standardised
  effect and the scale-invariant prior on the spread (Rouder et al. 2009 at a fixed `G`; a
  nonnegative martingale under no effect, Pérez-Ortiz et al. 2024), so by Ville's inequality
  `1 / max BF` is a p-value valid however often it is looked at; Holm over the family as above.
  Each contrast's interval is the confidence sequence that inverts the same test: it covers the
  true effect at every K at once with probability 95%.

Both assume the paired differences of one contrast are independent and roughly normal; the
tests in tests/answers/test_inference.py check the error rates by simulation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from tuner.answers.verdict import HELPED, HURT, TOO_FEW_REPEATS, UNCLEAR

ALPHA = 0.05  # the family-wise error rate of an ablation's verdicts
CONFIDENCE = 1 - ALPHA  # each contrast's interval, and the seed-luck prediction bound
POWER = 0.8  # the chance with which `detectable` is found
G = 1.0  # the prior variance of the standardised effect in the sequential test
FIXED = "fixed"
SEQUENTIAL = "sequential"


@dataclass(frozen=True)
class Judged:
    """One contrast's paired differences, judged within its family.

    `interval` is this contrast's own 95% interval (a t-interval, or a confidence sequence);
    `p` its own p-value and `adjusted` Holm's over the family of `family_size` tested
    contrasts, which the verdict rests on.
    """

    n: int
    mean: float
    interval: tuple[float, float] | None
    p: float | None
    adjusted: float | None
    verdict: str
    family_size: int = 0
    sd: float | None = None  # of the paired differences


def judge(family: Sequence[Sequence[float]], minimize: bool, design: str = FIXED) -> list[Judged]:
    """The verdicts on a family of contrasts, each a list of paired differences `with -
    without`: helped when Holm's adjusted p-value is below `ALPHA` and the effect lies on the
    better side (below zero for a metric to minimize), hurt on the other side. The side is
    the interval's (a sequential interval is the running intersection, which excludes zero
    whenever the anytime p-value is below `ALPHA`), else the mean's."""
    tests = [_test(d, design) for d in family]
    ps = [t[2] for t in tests if t[2] is not None]
    adjusted = iter(holm(ps))
    judged = []
    for d, (mean, interval, p) in zip(family, tests, strict=True):
        if p is None:
            judged.append(Judged(len(d), mean, None, None, None, TOO_FEW_REPEATS, len(ps)))
            continue
        adj = float(next(adjusted))
        verdict = UNCLEAR
        side = _side(mean, interval)
        if adj < ALPHA and side != 0:
            verdict = HELPED if (side < 0) == minimize else HURT
        sd = float(np.std(d, ddof=1))
        judged.append(Judged(len(d), mean, interval, p, adj, verdict, len(ps), sd))
    return judged


def _test(
    d: Sequence[float], design: str
) -> tuple[float, tuple[float, float] | None, float | None]:
    """One contrast's mean, interval and p-value. Pairs of no spread at all (the same
    difference on every seed) give no test unless that difference is zero."""
    n = len(d)
    mean = float(np.mean(d)) if n else math.nan
    # No spread, up to rounding: (0.1 + 0.1 + 0.1) / 3 is not quite 0.1.
    if n >= 2 and float(np.std(d, ddof=1)) <= 1e-9 * abs(mean):
        return (mean, (0.0, 0.0), 1.0) if mean == 0 else (mean, None, None)
    return (_sequential if design == SEQUENTIAL else _fixed)(d)


def _side(mean: float, interval: tuple[float, float] | None) -> int:
    """Which side of zero the effect is on: the interval's when it excludes zero."""
    if interval is not None and (interval[0] > 0 or interval[1] < 0):
        return 1 if interval[0] > 0 else -1
    return (mean > 0) - (mean < 0)


def holm(ps: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, as statsmodels' `multipletests(ps, method="holm")`
    gives them (tests/answers/test_inference.py checks), without the `gc.collect()` it runs on
    every call (50 ms, too slow to simulate error rates with)."""
    order = np.argsort(ps, kind="stable")
    m = len(ps)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(ps[i])))
        adjusted[i] = running
    return [float(a) for a in adjusted]


def _fixed(d: Sequence[float]) -> tuple[float, tuple[float, float] | None, float | None]:
    """The mean, the 95% t-interval and the two-sided p-value of the paired t-test."""
    x = np.asarray(d, dtype=float)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    if n < 2:
        return mean, None, None
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(1 - ALPHA / 2, n - 1)) * sd / math.sqrt(n)
    p = float(2 * stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))
    return mean, (mean - half, mean + half), p


def _sequential(d: Sequence[float]) -> tuple[float, tuple[float, float] | None, float | None]:
    """The mean, the running intersection of the 95% confidence sequence over every prefix of
    the pairs (in the order they were run; valid, as each is, and never wider than the last),
    and the anytime-valid p-value `1 / max BF` over the same prefixes."""
    x = np.asarray(d, dtype=float)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    if n < 2:
        return mean, None, None
    best = float(np.max(bayes_factors(x)))
    p = min(1.0, 1.0 / best) if best > 0 else 1.0
    low, high = -math.inf, math.inf
    last = (-math.inf, math.inf)
    for k in range(2, n + 1):
        prefix = x[:k]
        spread = float(prefix.std(ddof=1))
        if spread == 0:
            continue
        half = confidence_sequence_t(k) * spread / math.sqrt(k)
        if math.isfinite(half):
            last = (float(prefix.mean()) - half, float(prefix.mean()) + half)
            low, high = max(low, last[0]), min(high, last[1])
    if low > high:  # the intervals missed each other (the data are far from normal): the last
        return mean, last, p
    return mean, (low, high), p


def bayes_factors(x: np.ndarray) -> np.ndarray:
    """The t-test's Bayes factor of some effect against none after each of the pairs from the
    second on: `(1 + n g)^-1/2 ((1 + t^2 / v) / (1 + t^2 / ((1 + n g) v)))^((v + 1) / 2)`,
    v = n - 1, t the paired t-statistic of the first n differences."""
    n = np.arange(1, len(x) + 1, dtype=float)
    mean = np.cumsum(x) / n
    squares = np.cumsum(x * x) - n * mean * mean
    n, mean, squares = n[1:], mean[1:], np.maximum(squares[1:], 0.0)
    v = n - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        t2 = np.where(squares > 0, mean * mean * n * v / squares, np.where(mean != 0, np.inf, 0))
        c = 1 + n * G
        log = -0.5 * np.log(c) + (v + 1) / 2 * (np.log1p(t2 / v) - np.log1p(t2 / (c * v)))
        log = np.where(np.isinf(t2), (v + 1) / 2 * np.log(c) - 0.5 * np.log(c), log)
    return np.exp(np.minimum(log, 700.0))


def confidence_sequence_t(n: int, alpha: float = ALPHA) -> float:
    """The t-statistic at which the Bayes factor reaches `1 / alpha` after n pairs: the
    half-width of the confidence sequence in standard errors (infinite while too few pairs can
    reach it)."""
    v = n - 1
    c = 1 + n * G
    r = (math.sqrt(c) / alpha) ** (2 / (v + 1))
    if r >= c:
        return math.inf
    return math.sqrt(v * (r - 1) / (1 - r / c))


def simultaneous_interval(j: Judged, design: str = FIXED) -> tuple[float, float] | None:
    """The contrast's interval at level `ALPHA / family_size` (Bonferroni): the family's
    intervals cover all their effects at once with probability 95%. Holm's verdicts may
    reject a little more often than these intervals exclude zero, never less."""
    if j.sd is None or j.n < 2 or j.family_size < 1:
        return None
    alpha = ALPHA / j.family_size
    if design == SEQUENTIAL:
        scale = confidence_sequence_t(j.n, alpha)
    else:
        scale = float(stats.t.ppf(1 - alpha / 2, j.n - 1))
    half = scale * j.sd / math.sqrt(j.n)
    return j.mean - half, j.mean + half


def detectable_effect(sd: float, n: int, m: int) -> float | None:
    """The smallest true effect that a paired t-test on n pairs of standard deviation `sd`
    finds with probability `POWER` at the strictest Holm level of a family of m, `ALPHA / m`
    (statsmodels' power of the t-test)."""
    from statsmodels.stats.power import TTestPower

    if n < 2 or not sd > 0:
        return None
    try:
        size = TTestPower().solve_power(
            nobs=n, alpha=ALPHA / max(m, 1), power=POWER, alternative="two-sided"
        )
    except (ValueError, RuntimeError):
        return None
    size = float(np.asarray(size).ravel()[0])
    return size * sd if math.isfinite(size) else None


def prediction_bound(values: Sequence[float], minimize: bool) -> float | None:
    """The one-sided 95% prediction bound for one more run from `values` (runs of one model on
    fresh seeds): a new run is better than it with probability 5% (normal runs)."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n < 2:
        return None
    half = float(stats.t.ppf(CONFIDENCE, n - 1)) * float(x.std(ddof=1)) * math.sqrt(1 + 1 / n)
    return float(x.mean()) - half if minimize else float(x.mean()) + half
