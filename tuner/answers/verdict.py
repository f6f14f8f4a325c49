"""The words of a verdict and of a difference of the metric, shared by `tuner ablate`, `tuner
best-trial`, `tuner best-trials` and `tuner report` (the statistics behind an ablation's
verdicts are in `tuner.answers.inference`).

Accuracy differences are given in percentage points (0.50 -> 0.78 is "+28.0 points");
differences of errors and losses in the metric's units and as a percentage of the reference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

CONFIDENCE = 0.95

HELPED = "helped"
HURT = "hurt"
UNCLEAR = "no clear difference"
TOO_FEW = "too few trials"
# An association among searched trials is never "helped" or "hurt": the sampler chose those
# trials and the pruner let them finish, so it says which group did better among them.
BETTER_AMONG = "better among searched trials"
WORSE_AMONG = "worse among searched trials"
TOO_FEW_REPEATS = "too few repeats"
# Closer than this (a fraction of the reference, or accuracy points) reads as a tie.
TIE_FRACTION = 5e-4
TIE_POINTS = 0.05
TIE = "level with it"


def mean_interval(
    values: Sequence[float], bounds: tuple[float, float] = (-math.inf, math.inf)
) -> tuple[float, float]:
    """The 95% t-interval of the mean of two or more values, cut to the `bounds` the metric
    cannot leave (`metric_bounds`): a cut interval holds the true mean whenever the whole one
    did, so its coverage is at least as high (with 2 seeds, t's factor of 12.7 otherwise shows
    an error below 0)."""
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in values) / (n - 1))
    half = float(stats.t.ppf((1 + CONFIDENCE) / 2, n - 1)) * sd / math.sqrt(n)
    return max(bounds[0], mean - half), min(bounds[1], mean + half)


def metric_bounds(metric: str) -> tuple[float, float]:
    """The values a metric can take: an accuracy 0 to 1, an error or loss 0 and up (the losses
    tuner trains with, mse, mae, huber and cross-entropy, are never negative)."""
    return (0.0, 1.0) if is_accuracy(metric) else (0.0, math.inf)


def is_accuracy(metric: str) -> bool:
    return metric.removeprefix("val_").removeprefix("test_") == "accuracy"


def directed(change: float, metric: str, minimize: bool) -> str:
    """A change of the metric read in its direction, to 3 significant digits: "0.312 better"
    (an error that fell), "1.5 points worse" (an accuracy that fell)."""
    better = -change if minimize else change
    word = "better" if better > 0 else "worse" if better < 0 else "no change"
    if word == "no change":
        return word
    if is_accuracy(metric):
        points = significant(100 * abs(change))
        return f"{points} point{'' if points == '1' else 's'} {word}"
    return f"{significant(abs(change))} {word}"


def directed_interval(ci: tuple[float, float], metric: str, minimize: bool) -> str:
    """An interval of a change, read in the metric's direction, the worse end first."""
    ends = sorted(ci, key=lambda x: x if not minimize else -x)
    return " to ".join(_directed_end(x, metric, minimize) for x in ends)


def _directed_end(x: float, metric: str, minimize: bool) -> str:
    if math.isnan(x):
        return "unknown"
    if not math.isfinite(x):
        return "any " + ("worse" if (x > 0) == minimize else "better")
    return directed(x, metric, minimize)


def significant(value: float, digits: int = 3) -> str:
    """`digits` significant digits, without an exponent for ordinary sizes ("200", not
    "2e+02")."""
    text = f"{value:.{digits}g}"
    return f"{float(text):g}" if "e" in text and 1e-4 <= abs(value) < 1e6 else text


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
