"""What `tuner run` shows while its workers run: every running trial's number, epoch and latest
metric, the study's counts and best value, and an estimate of the time left.

The time left comes with a 90% range (`LEVEL`) once `MIN_FINISHED` trials have finished: a
prediction interval for the time the trials still to run take on the workers (with a budget in
epochs: the epochs left over a finished trial's mean epochs), were they to last as those
finished so far did, each drawn independently (`estimate`; its coverage is tested by simulation
in tests/search/test_progress.py). It says nothing of a search whose later trials
last longer or shorter than its first ones, as TPE's may once it finds a region of long,
unpruned trials, so it is shown as a range with that condition, not as a bound.

Workers write each trial's latest epoch to the storage (the trial's user attribute `progress`,
set by the objective after every epoch); this reads it back. On a terminal the display is a
live table redrawn in place (rich); elsewhere (a log file, a pipe, CI) it is plain lines, one
whenever a trial reaches a new epoch or the counts change.
"""

from __future__ import annotations

import datetime
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState
from scipy import stats

from tuner.errors import TunerError
from tuner.search.queue import Counts, count
from tuner.search.schedule import EPOCH_BUDGET_ATTR, epochs_used, trained

PROGRESS_ATTR = "progress"  # as `tuner.search.objective.PROGRESS_ATTR`
# Said once above the values shown: every number printed carries its error rate or says it has
# none, and these have none.
VALUES_NOTE = "(each value shown is one training run, on the validation split: no error rate)"
# The share of cases in which the time left falls in its range (under `estimate`'s assumption),
# and the trials that must have finished before a range is given.
LEVEL = 0.9
MIN_FINISHED = 5


@dataclass(frozen=True)
class Running:
    """A running trial as its worker last reported it."""

    number: int
    epoch: int  # epochs finished
    epochs: int  # epochs planned (early stopping or the pruner may end it sooner)
    value: float | None  # the metric after the latest epoch
    seconds: float  # since it started

    @property
    def done(self) -> float:
        """The share of its planned epochs behind it."""
        return min(1.0, self.epoch / self.epochs) if self.epochs else 0.0


@dataclass(frozen=True)
class Left:
    """An estimate of the seconds left, and its `LEVEL` range (None before `MIN_FINISHED`
    trials have finished, or while the estimate comes from running trials alone), else why it
    has none."""

    seconds: float
    low: float | None = None
    high: float | None = None
    why_none: str = f"no range before {MIN_FINISHED} trials have finished"


@dataclass(frozen=True)
class Snapshot:
    counts: Counts
    n_trials: int
    running: tuple[Running, ...]
    best: str  # "; best val_mae 3.2 (trial 4)", or ""
    left: Left | None  # estimated seconds until the budget is spent
    epochs: tuple[int, int] | None = None  # with a budget in epochs: (trained, budget)


def snapshot(study: optuna.Study, n_trials: int, n_workers: int, best: bool = True) -> Snapshot:
    """Where the study stands now; with `best`, its best trial so far (not for an ablation's
    runs, where the best is one variant's luckiest seed)."""
    counts = count(study)
    trials = study.get_trials(deepcopy=False)
    now = datetime.datetime.now()
    running = tuple(
        _running(t, now) for t in trials if t.state == TrialState.RUNNING and t.datetime_start
    )
    finished = [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        and t.datetime_start
        and t.datetime_complete
    ]
    limit = study.user_attrs.get(EPOCH_BUDGET_ATTR)
    if limit is not None:
        used = epochs_used(trials)
        done = [
            ((t.datetime_complete - t.datetime_start).total_seconds(), trained(t))
            for t in trials
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            and t.datetime_start
            and t.datetime_complete
            and trained(t)
        ]
        # In trials, not epochs: a trial's epochs take alike long, so epochs drawn one by one
        # as if independent gave a range about sqrt(epochs a trial) too narrow.
        left = None
        if done:
            # The epochs left beyond the running trials' planned ones, in trials of the mean
            # epochs so far.
            planned = sum(max(0, r.epochs - r.epoch) for r in running)
            queued = max(0, int(limit) - used - planned) / statistics.fmean(e for _, e in done)
            share = max(1, min(n_workers, len(running) + math.ceil(queued)))
            left = estimate([seconds for seconds, _ in done], queued, share, busy(running))
        return Snapshot(
            counts, n_trials, running, _best(study) if best else "", left, (used, int(limit))
        )
    return Snapshot(
        counts,
        n_trials,
        running,
        _best(study) if best else "",
        time_left(counts, n_trials, n_workers, finished, running),
    )


def time_left(
    counts: Counts,
    n_trials: int,
    n_workers: int,
    finished_s: list[float],
    running: tuple[Running, ...],
) -> Left | None:
    """Seconds until the budget is spent: the running trials' rest, then the trials still to
    start, times the mean trial, dealt to the workers (`estimate`). None until a trial finished
    or a running one has reported an epoch; with no range while only running trials give the
    pace."""
    queued = max(0, n_trials - counts.finished - len(running))
    share = max(1, min(n_workers, n_trials - counts.finished))
    if finished_s:
        return estimate(finished_s, queued, share, busy(running))
    started = [r.seconds / r.done for r in running if r.done > 0]
    if not started:
        return None
    to_run = queued + sum(1 - r.done for r in running)
    return Left(to_run * statistics.fmean(started) / share)


def busy(running: tuple[Running, ...]) -> list[float | None]:
    """Each running trial's seconds still to run, at its own pace so far to its planned last
    epoch; None for one that has reported no epoch yet (a trial drawn afresh)."""
    return [r.seconds * (1 - r.done) / r.done if r.done > 0 else None for r in running]


def estimate(
    durations: list[float], queued: float, share: int, running: Sequence[float | None] = ()
) -> Left | None:
    """The seconds until the last of `share` workers is done with the trials `running` now
    (their seconds still to run, or None for one to draw afresh) and `queued` more trials, if
    each trial drawn lasts as a draw from the distribution that the `durations` seen so far
    were drawn from; with a `LEVEL` prediction interval once `MIN_FINISHED` durations are known
    (None if none is).

    The total of n drawn trials, with the mean and variance both estimated from k seen, has
    mean n·m and, about, variance s²·(n + n²/k) (the draws' own spread and the mean's error);
    the range for its share, (known rest + total) / `share`, is Student's t of k - 1 degrees of
    freedom on it, cut at 0. The workers end when the last of them does, later than that share
    by the trials that do not divide evenly: that lag (`_lag`, simulated: the running trials'
    rests on their workers, then draws of the durations seen dealt to the worker free first) is
    added to the estimate and to each end of its range. Near a search's end, with a trial or
    two left per worker, a range without it held the time left in as few as 43% of cases. It
    covers the time left in about `LEVEL` of cases when the draws are alike and independent;
    with few, skewed durations, somewhat fewer (the test's simulation says how many)."""
    if not durations:
        return None
    known = [r for r in running if r is not None]
    n, k = max(0.0, queued) + sum(r is None for r in running), len(durations)
    mean = statistics.fmean(durations)
    seconds = (sum(known) + n * mean) / share
    lags = _lag(durations, max(0.0, queued), share, running)
    if k < MIN_FINISHED:
        return Left(seconds + float(np.mean(lags)))
    if n == 0:
        # Only the running trials' rest, at their own pace: a guess with no error rate.
        return Left(seconds + float(np.mean(lags)), why_none=NO_RANGE_AT_END)
    spread = statistics.stdev(durations) * math.sqrt(n + n * n / k)
    half = float(stats.t.ppf(0.5 + LEVEL / 2, k - 1)) * spread / share
    low, high = np.quantile(lags, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return Left(
        seconds + float(np.mean(lags)),
        max(0.0, seconds - half + float(low)),
        seconds + half + float(high),
    )


NO_RANGE_AT_END = "no range: only the running trials are left, at their own pace so far"
# The lag's simulation: runs, and the most trials dealt in each (its end is what lags): 50 a
# worker up to 8 workers, then 400 in all but at least 5 a worker (each trial dealt costs a
# step over every run and worker; 64 workers at 50 each took 67 to 142 ms a poll, BENCHMARKS.md).
LAG_RUNS = 400
LAG_TRIALS = 400
LAG_TRIALS_PER_WORKER = 5


def _lag(
    durations: list[float], queued: float, share: int, running: Sequence[float | None] = ()
) -> np.ndarray:
    """Simulated lags of the last of `share` workers behind the work's total / `share`: the
    `running` trials' rests on workers of their own (a draw where None), then `queued` draws
    (the last one a fraction, where it is not whole) from the `durations` seen, each dealt to
    the worker free first, `LAG_RUNS` times (seeded: the same answer for the same durations,
    so the display does not jitter). Zero for one worker. Only the last
    `LAG_TRIALS` trials, or `LAG_TRIALS_PER_WORKER` a worker if more, are dealt: a lag comes from
    a schedule's end."""
    if share <= 1 or (queued <= 0 and not running):
        return np.zeros(1)
    rng = np.random.default_rng(0)
    seen = np.asarray(durations, dtype=float)
    loads = np.zeros((LAG_RUNS, share))
    rows = np.arange(LAG_RUNS)
    for i, rest in enumerate(running):
        load = rng.choice(seen, size=LAG_RUNS) if rest is None else np.full(LAG_RUNS, rest)
        if i < share:
            loads[:, i] += load
        else:  # more running than workers counted: the worker free first takes it
            loads[rows, loads.argmin(axis=1)] += load
    whole = min(math.ceil(queued), max(LAG_TRIALS, LAG_TRIALS_PER_WORKER * share))
    draws = rng.choice(seen, size=(LAG_RUNS, whole))
    if whole == math.ceil(queued) and queued % 1:
        draws[:, -1] *= queued % 1
    for j in range(whole):
        loads[rows, loads.argmin(axis=1)] += draws[:, j]
    lags: np.ndarray = loads.max(axis=1) - loads.sum(axis=1) / share
    return lags


def _running(trial: FrozenTrial, now: datetime.datetime) -> Running:
    report: dict[str, Any] = trial.user_attrs.get(PROGRESS_ATTR) or {}
    assert trial.datetime_start is not None
    return Running(
        number=trial.number,
        epoch=int(report.get("epoch", 0)),
        epochs=int(report.get("epochs", 0)),
        value=report.get("value"),
        seconds=(now - trial.datetime_start).total_seconds(),
    )


def _best(study: optuna.Study) -> str:
    from tuner.search.trials import best_trial, minimizes, reached

    try:
        best = best_trial(study)
    except TunerError:
        return ""
    metric = study.user_attrs.get("metric", "value")
    return f"; best {metric} {reached(best, minimizes(study)):.4g} (trial {best.number})"


def duration(seconds: float | None) -> str:
    """ "1 h 05 min", "4 min 10 s", "35 s"; "?" when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


def summary(shot: Snapshot) -> str:
    c = shot.counts
    going = c.finished < shot.n_trials
    # With paused trials, a model's resumptions are trials of their own: counted apart.
    resumed = f" and {c.resumed} resumed" if c.resumed else ""
    line = (
        f"trials {c.finished}/{shot.n_trials}{resumed}: {c.complete} complete, {c.pruned} "
        f"pruned{' or paused' if resumed else ''}, {c.failed - c.retried} failed, "
        f"{len(shot.running)} running{shot.best}"
    )
    if shot.epochs is not None:
        used, limit = shot.epochs
        going = used < limit
        line = (
            f"epochs {used}/{limit}, trials {c.finished}{resumed}: {c.complete} complete, "
            f"{c.pruned} pruned or paused, {c.failed - c.retried} failed, "
            f"{len(shot.running)} running{shot.best}"
        )
    if going and shot.left is not None:
        left = shot.left
        line += f"; about {duration(left.seconds)} left"
        if left.low is not None and left.high is not None:
            line += f" ({duration(left.low)} to {duration(left.high)}, {LEVEL:.0%} range)"
        else:
            line += f" ({left.why_none})"
    return line


def trial_line(r: Running, metric: str) -> str:
    value = f", {metric} {r.value:.4g}" if r.value is not None else ""
    epochs = f"/{r.epochs}" if r.epochs else ""
    return f"trial {r.number}: epoch {r.epoch}{epochs}{value} ({duration(r.seconds)})"


class Progress:
    """Shows a study's progress on `out`, redrawn on a terminal, as plain lines elsewhere.

    Call it every few seconds, and once more with `final=True` at the end. `best`: show the
    best trial so far (`snapshot`).
    """

    def __init__(
        self,
        study: optuna.Study,
        n_trials: int,
        out: TextIO,
        n_workers: int = 1,
        best: bool = True,
    ):
        self.study, self.n_trials, self.out, self.n_workers = study, n_trials, out, n_workers
        self.best = best
        self.metric = str(study.user_attrs.get("metric", "value"))
        self.live: Any = None
        if out.isatty():
            from rich.console import Console
            from rich.live import Live

            self.console = Console(file=out)
            self.live = Live(console=self.console, auto_refresh=False, transient=False)
            self.live.start()
        self._epochs: dict[int, int] = {}
        self._last = ""
        self._noted = False

    def __call__(self, final: bool = False) -> None:
        shot = snapshot(self.study, self.n_trials, self.n_workers, self.best)
        if self.live is not None:
            self.live.update(self._table(shot), refresh=True)
            if final:
                self.live.stop()
            return
        if not self._noted:
            self.out.write(VALUES_NOTE + "\n")
            self._noted = True
        for r in shot.running:
            if r.epoch and self._epochs.get(r.number) != r.epoch:
                self.out.write(trial_line(r, self.metric) + "\n")
            self._epochs[r.number] = r.epoch
        line = summary(shot)
        # The estimate changes every poll: a new line only when something else did.
        key = line.split("; about")[0]
        if key != self._last:
            self.out.write(line + "\n")
            self._last = key
        self.out.flush()

    def echo(self, message: str) -> None:
        """A worker's line of stderr: above the live display, else on stderr."""
        if self.live is not None:
            self.console.print(message, markup=False, highlight=False)
        else:
            print(message, file=sys.stderr, flush=True)

    def _table(self, shot: Snapshot) -> Any:
        from rich.console import Group
        from rich.table import Table

        table = Table(box=None, pad_edge=False)
        for column in ("trial", "epoch", self.metric, "time"):
            table.add_column(column, justify="right")
        for r in sorted(shot.running, key=lambda r: r.number):
            table.add_row(
                str(r.number),
                f"{r.epoch}/{r.epochs}" if r.epochs else str(r.epoch),
                f"{r.value:.4g}" if r.value is not None else "",
                duration(r.seconds),
            )
        if shot.running:
            return Group(summary(shot), table, VALUES_NOTE)
        return Group(summary(shot), VALUES_NOTE)
