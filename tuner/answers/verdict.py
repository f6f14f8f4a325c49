"""Verdicts, and the words for a difference of the metric, shared by `tuner ablate`, `tuner
best-trial`, `tuner best-trials` and `tuner report`.

A paired verdict compares K pairs of runs that differ in one thing only (one technique on or
off, the same training seed in both of a pair): the mean of the K differences with a Student's
t interval. The technique helped (or hurt) when the interval excludes zero; otherwise the data
cannot tell its effect from the noise of training.

Accuracy differences are given in percentage points (0.50 -> 0.78 is "+28.0 points");
differences of errors and losses in the metric's units and as a percentage of the reference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95

HELPED = "helped"
HURT = "hurt"
UNCLEAR = "no clear difference"
TOO_FEW = "too few trials"
TOO_FEW_REPEATS = "too few repeats"
# Closer than this (a fraction of the reference, or accuracy points) reads as a tie.
TIE_FRACTION = 5e-4
TIE_POINTS = 0.05
TIE = "level with it"


@dataclass(frozen=True)
class Paired:
    """The mean of paired differences (with the technique minus without it, in the metric's
    units) and its interval at `CONFIDENCE`; None with fewer than two pairs."""

    n: int
    mean: float
    interval: tuple[float, float] | None
    verdict: str


def paired(differences: Sequence[float], minimize: bool) -> Paired:
    """The verdict on K paired differences `with - without`: helped when the interval excludes
    zero on the better side (below it for a metric to minimize), hurt on the other side."""
    d = [float(x) for x in differences]
    n = len(d)
    if n == 0:
        return Paired(0, math.nan, None, TOO_FEW_REPEATS)
    mean = sum(d) / n
    if n < 2:
        return Paired(n, mean, None, TOO_FEW_REPEATS)
    low, high = mean_interval(d)
    if low > 0 or high < 0:
        better = -mean if minimize else mean
        verdict = HELPED if better > 0 else HURT
    else:
        verdict = UNCLEAR
    return Paired(n, mean, (low, high), verdict)


def mean_interval(values: Sequence[float]) -> tuple[float, float]:
    """The 95% t-interval of the mean of two or more values."""
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in values) / (n - 1))
    half = float(stats.t.ppf((1 + CONFIDENCE) / 2, n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half


def is_accuracy(metric: str) -> bool:
    return metric.removeprefix("val_").removeprefix("test_") == "accuracy"


def difference(value: float, metric: str) -> str:
    """A signed difference in the metric: points for accuracy, the metric's units otherwise."""
    if is_accuracy(metric):
        return f"{100 * value:+.1f} points"
    return f"{value:+.4g}"


def interval(ci: tuple[float, float] | None, metric: str) -> str:
    if ci is None:
        return ""
    if is_accuracy(metric):
        return f"{100 * ci[0]:+.1f} to {100 * ci[1]:+.1f} points"
    return f"{ci[0]:+.4g} to {ci[1]:+.4g}"


def versus(value: float | None, reference: float | None, metric: str, minimize: bool) -> str:
    """How `value` stands against `reference`: "28.0 points better" for accuracy, "12.3%
    worse" for an error or loss, or `TIE`; empty when either is missing."""
    if value is None or reference is None:
        return ""
    gain = (reference - value) if minimize else (value - reference)
    if is_accuracy(metric):
        points = 100 * gain
        if abs(points) < TIE_POINTS:
            return TIE
        return f"{abs(points):.1f} points {'better' if points > 0 else 'worse'}"
    if reference == 0:
        return "" if gain else TIE
    fraction = gain / abs(reference)
    if abs(fraction) < TIE_FRACTION:
        return TIE
    return f"{abs(fraction):.1%} {'better' if fraction > 0 else 'worse'}"
