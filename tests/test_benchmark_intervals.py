"""The interval that BENCHMARKS.md gives each scheduler's difference from the default
(`benchmarks/search_efficiency.py`, `shift_interval`) covers the true shift as often as the
confidence it states, by simulation: a published number's error rate, tested like a verdict's."""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
Interval = Callable[..., tuple[float, float, float, float]]


@pytest.fixture(scope="module")
def shift_interval() -> Interval:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(
            "search_efficiency", BENCHMARKS / "search_efficiency.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    found: Interval = module.shift_interval
    return found


def test_three_against_three_reach_ninety_percent_at_most(shift_interval: Interval) -> None:
    a, b = [1.0, 2.0, 3.0], [0.5, 0.25, 0.0]
    estimate, low, high, confidence = shift_interval(a, b, 0.9)
    diffs = sorted(x - y for x in a for y in b)
    # 1 of the 20 ways to rank 3 among 6 gives U = 0, at each end: 1 - 2/20.
    assert confidence == pytest.approx(0.9)
    assert (low, high) == (diffs[0], diffs[-1])
    assert estimate == pytest.approx(float(np.median(diffs)))
    # No finite interval of these samples is 95% sure: it says so, rather than claim 90% as 95%.
    assert shift_interval(a, b, 0.95)[1:] == (-math.inf, math.inf, 1.0)


@pytest.mark.parametrize(
    ("m", "n", "level", "draw"),
    [
        (5, 5, 0.95, "normal"),
        (5, 3, 0.9, "exponential"),
        (3, 3, 0.9, "normal"),
    ],
)
def test_coverage_is_the_stated_confidence(
    shift_interval: Interval, m: int, n: int, level: float, draw: str
) -> None:
    rng = np.random.default_rng(7)
    shift, reps = 0.3, 3000
    covered, confidences = 0, set[Any]()
    for _ in range(reps):
        noise = getattr(rng, draw)
        a = list(noise(size=m) + shift)
        b = list(noise(size=n))
        _, low, high, confidence = shift_interval(a, b, level)
        covered += low <= shift <= high
        confidences.add(round(confidence, 9))
    (confidence,) = confidences  # fixed by m, n and the level, not by the data
    assert confidence >= level
    se = math.sqrt(confidence * (1 - confidence) / reps)
    # Exact, not merely conservative: the rate of misses is the one stated, within 4 standard
    # errors of the simulation.
    assert abs(covered / reps - confidence) < 4 * se
