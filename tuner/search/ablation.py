"""Ablation around the winner: the best trial (or a chosen one) trained as it is and with one
technique changed at a time, each on the same K fresh training seeds, to say what each technique
did on this data with an error rate, rather than what the search happened to try.

The variants: recurrent dropout off (or on at 0.2 when it was off), dropout likewise,
bidirectional layers toggled, one layer more (the new top layer repeats the top layer's units)
and one fewer, and GRU <-> LSTM. A variant may lie outside the study's search space (LSTM where
the space allows GRU only, a third layer where it stops at two): ablation asks what a technique
does to this model, not which model the search should find, so such variants run too and are
marked as outside the space.

Every run trains as the search did (the study's epochs, its early stopping on the validation
split, no pruning) from a seed the search never trained the trial with, and is scored on the
test split, which chose nothing: not the winner, its epochs or its stopping
(`tuner.search.objective`). The runs are trials of a companion Optuna study,
`<study name>/ablation`, in the same storage (`tuner.search.companion`): enqueued with fixed
parameters and the user attributes `ablation_of` (the trial), `variant`, `repeat` and `seed`,
so that `tuner worker --ablation` on any machine takes them from the same queue as search
trials, a killed worker's trial is retried the same way, and optuna-dashboard shows them.
`tuner.answers.ablation` reads the verdicts.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.config import AblationConfig, StudyConfig
from tuner.errors import TunerError
from tuner.search.companion import ABLATION_ATTR, open_companion
from tuner.search.queue import budget, count
from tuner.search.space import MAX_LAYERS
from tuner.search.study import load_existing, stored_config
from tuner.search.trials import best_trial, paused
from tuner.storage import locked, opened, queue_lock, study_storage
from tuner.training.seeds import training_seed

DEFAULT_REPEATS = AblationConfig.repeats  # docs/verdicts.md
# `tuner ablate --until-decided` adds seeds up to this many (docs/verdicts.md: at 20 seeds an
# effect of one standard deviation of a paired difference is found about 2 times in 3).
DEFAULT_MAX_REPEATS = 20
# The fewest seeds at which the anytime-valid test can decide the first of 5 or 6 contrasts:
# the largest Bayes factor n pairs can give is (1 + n)^((n - 1) / 2), and Holm's first step
# needs 6 / 0.05 = 120 (tests/answers/test_inference.py).
SEQUENTIAL_MIN_REPEATS = 6
# The design of today's runs (ABLATION_ATTR's "design"): fresh seeds, the study's epochs and
# early stopping, scored on the test split. Design 1 (until tuner 0.1.0's layout) trained the
# winner's best epoch count without early stopping, and paired the search's own seed.
DESIGN = 2
# The companion study's user attribute `sequential:<trial>`: that trial's ablation added seeds
# until decided, so its verdicts are read with anytime-valid intervals.
SEQUENTIAL_ATTR = "sequential:"
# The companion study's user attribute `read_at:<trial>`: the seed counts at which that trial's
# fixed-K ablation had finished, its verdicts printed, before it was read again with more seeds
# or anytime-valid. Each reading may call a technique that did nothing helped or hurt at 5%:
# over them all, at most 5% times the readings (tuner.answers.ablation).
READ_AT_ATTR = "read_at:"
ON = 0.05  # a lower (recurrent) dropout rate counts as off, as in tuner.answers.analysis
ON_RATE = 0.2  # the rate a variant turns (recurrent) dropout on at: the seed configuration's
AS_IS = "as is"
TECHNIQUES = ("recurrent dropout", "dropout", "bidirectional", "depth", "cell")


@dataclass(frozen=True)
class Variant:
    """The trial with one thing changed.

    `with_technique` says which side of the contrast the variant is: True when the variant has
    the technique and the trial as it is lacks it (recurrent dropout turned on, one layer
    more, LSTM for GRU); a verdict is always about the side with it.
    """

    name: str
    technique: str
    contrast: str  # the row of the cross-study table
    params: dict[str, Any]
    with_technique: bool


def variants(params: dict[str, Any]) -> list[Variant]:
    """The variants of a trial with `params`, one technique changed in each."""
    found: list[Variant] = []
    for name, technique in (("recurrent_dropout", "recurrent dropout"), ("dropout", "dropout")):
        on = float(params[name]) >= ON
        found.append(
            Variant(
                f"{technique} {'off' if on else f'on at {ON_RATE}'}",
                technique,
                technique,
                params | {name: 0.0 if on else ON_RATE},
                with_technique=not on,
            )
        )
    bidirectional = bool(params["bidirectional"])
    found.append(
        Variant(
            "one direction" if bidirectional else "bidirectional",
            "bidirectional",
            "bidirectional",
            params | {"bidirectional": not bidirectional},
            with_technique=not bidirectional,
        )
    )
    layers = int(params["layers"])
    if layers < MAX_LAYERS:
        top = params[f"units_{layers}"]
        found.append(
            Variant(
                "one layer more",
                "depth",
                "depth: one layer more",
                params | {"layers": layers + 1, f"units_{layers + 1}": top},
                with_technique=True,
            )
        )
    if layers > 1:
        fewer = {k: v for k, v in params.items() if k != f"units_{layers}"}
        found.append(
            Variant(
                "one layer fewer",
                "depth",
                "depth: one layer fewer",
                fewer | {"layers": layers - 1},
                with_technique=False,
            )
        )
    other = "lstm" if params["cell"] == "gru" else "gru"
    found.append(
        Variant(
            other.upper(),
            "cell",
            "cell: LSTM instead of GRU",
            params | {"cell": other},
            with_technique=other == "lstm",
        )
    )
    return found


def outside_space(params: dict[str, Any], config: StudyConfig) -> bool:
    """Whether the study's search space could not have sampled `params`."""
    space = config.space
    for name, value in params.items():
        param = space.units if name.startswith("units_") else getattr(space, name, None)
        if param is not None and not param.contains(value):
            return True
    return False


def repeat_seeds(config: StudyConfig, trial: FrozenTrial, repeats: int) -> list[int]:
    """K fresh training seeds, the seeds of repeats 1 to K, drawn from the study's seed and the
    trial's number; never the seed the search trained the trial with, so that the search's
    lucky run enters no pair."""
    own = int(
        trial.user_attrs.get("training_seed", training_seed(config.sampler.seed, trial.number))
    )
    seeds: list[int] = []
    draw = 1
    while len(seeds) < repeats:
        state = np.random.SeedSequence([config.sampler.seed, trial.number, draw]).generate_state(1)
        seed = int(state[0]) >> 1
        draw += 1
        if seed != own and seed not in seeds:
            seeds.append(seed)
    return seeds


def chosen_trial(study: optuna.Study, number: int | None) -> FrozenTrial:
    """The best complete or paused trial, or the trial `number`, complete or paused."""
    if number is None:
        return best_trial(study)
    trials = study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        raise TunerError(f"study {study.study_name!r} has no trial {number}")
    trial = trials[number]
    if trial.state != TrialState.COMPLETE and not paused(trial):
        raise TunerError(
            f"trial {number} of study {study.study_name!r} is {trial.state.name.lower()}; "
            "only a complete or paused trial can be ablated"
        )
    return trial


def enqueue(companion: optuna.Study, config: StudyConfig, trial: FrozenTrial, repeats: int) -> int:
    """Queue the runs of `trial`'s ablation on `repeats` seeds that are not queued, running or
    done yet; returns how many runs the ablation has in all."""
    seeds = repeat_seeds(config, trial, repeats)
    runs = [(AS_IS, dict(trial.params))] + [(v.name, v.params) for v in variants(trial.params)]

    def queue_missing() -> None:
        alive = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
        have = {
            (t.user_attrs.get("variant"), t.user_attrs.get("repeat"))
            for t in companion.get_trials(deepcopy=False, states=alive)
            if t.user_attrs.get("ablation_of") == trial.number and is_current(t)
        }
        # A run that failed for good (its loss diverged, say) would fail again: it counts.
        have |= {
            (t.user_attrs.get("variant"), t.user_attrs.get("repeat"))
            for t in companion.get_trials(deepcopy=False, states=(TrialState.FAIL,))
            if t.user_attrs.get("ablation_of") == trial.number and failed_for_good(t)
        }
        for repeat, seed in enumerate(seeds, start=1):
            for name, params in runs:
                if (name, repeat) in have:
                    continue
                companion.enqueue_trial(
                    params,
                    user_attrs={
                        "ablation_of": trial.number,
                        "variant": name,
                        "repeat": repeat,
                        "seed": seed,
                        ABLATION_ATTR: {"seed": seed, "design": DESIGN},
                    },
                )
        companion.set_user_attr("ablation_of", trial.number)
        companion.set_user_attr("repeats", repeats)

    locked(study_storage(companion), queue_lock(companion.study_name), queue_missing)
    return len(seeds) * len(runs)


def failed_for_good(trial: FrozenTrial) -> bool:
    """Whether an ablation run failed in its own training (a non-finite loss, an error), not
    because its worker was stopped or died: those are queued again and run elsewhere."""
    reason = trial.user_attrs.get("fail_reason")
    return (
        trial.state == TrialState.FAIL
        and is_current(trial)
        and isinstance(reason, str)
        and not reason.startswith("interrupted")
    )


def is_current(trial: FrozenTrial) -> bool:
    """Whether an ablation run is of today's design (fresh seeds, early stopping, scored on the
    test split); runs of earlier tuners are neither counted nor paired."""
    attr = trial.user_attrs.get(ABLATION_ATTR)
    return isinstance(attr, dict) and attr.get("design") == DESIGN


def ablate(
    config: StudyConfig,
    storage_url: str,
    *,
    number: int | None = None,
    repeats: int = DEFAULT_REPEATS,
    n_workers: int = 1,
    pin: bool = True,
    until: Callable[[int], bool] | None = None,
    max_repeats: int = DEFAULT_MAX_REPEATS,
    out: TextIO = sys.stdout,
    say: Callable[[str], None] = print,
) -> int:
    """Queue the ablation of the best trial (or trial `number`) on `repeats` seeds in the
    companion study and run `n_workers` worker processes on it until its runs are done; with
    `until`, add one seed at a time, up to `max_repeats`, until `until(trial number)` says the
    ablation is decided. Returns the ablated trial's number (`tuner.answers.ablation` reads the
    verdicts)."""
    with opened(storage_url, config.workers, must_exist=True) as storage:
        study = load_existing(config.name, storage)
        # The study as it was run; a study file that no longer matches it is refused here.
        config = stored_config(study, config)
        trial = chosen_trial(study, number)
        companion = open_companion(config, storage)
        read_at = finished_fixed(companion, trial.number)
        if until is not None:
            # Read with the anytime-valid intervals from now on, whatever ran before.
            companion.set_user_attr(f"{SEQUENTIAL_ATTR}{trial.number}", True)
            repeats = max(
                repeats,
                companion.user_attrs.get("repeats", 0)
                if companion.user_attrs.get("ablation_of") == trial.number
                else 0,
            )
        if read_at is not None and (repeats > read_at or until is not None):
            # Seeds added to a finished fixed-K ablation, whose verdicts were printed then (or
            # the same seeds read again, anytime-valid, before any is added).
            key = f"{READ_AT_ATTR}{trial.number}"
            readings = list(companion.user_attrs.get(key, []))
            if read_at not in readings:
                companion.set_user_attr(key, [*readings, read_at])
        while True:
            total = enqueue(companion, config, trial, repeats)
            say(
                f"ablation of trial {trial.number}: {total} runs ({repeats} seeds each) in study "
                f"{companion.study_name!r}"
            )
            _run(companion, config, storage_url, trial.number, total, n_workers, pin, out, say)
            if (
                until is None
                or repeats >= max_repeats
                or _left(companion, trial.number, total) > 0
            ):
                # A stopped run (Ctrl-C) leaves runs to do: run the command again to resume.
                return trial.number
            if until(trial.number):
                return trial.number
            repeats += 1


def finished_fixed(companion: optuna.Study, number: int) -> int | None:
    """The seeds of trial `number`'s fixed-K ablation when every run of it has finished, so
    that its verdicts were printed (`tuner ablate` prints them at its end); None if it has no
    runs, has runs left, or is read anytime-valid (whose intervals hold at every seed count)."""
    if companion.user_attrs.get(f"{SEQUENTIAL_ATTR}{number}"):
        return None
    runs = [
        t
        for t in companion.get_trials(deepcopy=False)
        if t.user_attrs.get("ablation_of") == number and is_current(t)
    ]
    keys = {(t.user_attrs.get("variant"), int(t.user_attrs["repeat"])) for t in runs}
    done = {
        (t.user_attrs.get("variant"), int(t.user_attrs["repeat"]))
        for t in runs
        if t.state == TrialState.COMPLETE or failed_for_good(t)
    }
    if not keys or keys - done:  # (a run stopped with its worker is retried under a new trial)
        return None
    return max(repeat for _, repeat in keys)


def _run(
    companion: optuna.Study,
    config: StudyConfig,
    storage_url: str,
    number: int,
    total: int,
    n_workers: int,
    pin: bool,
    out: TextIO,
    say: Callable[[str], None],
) -> None:
    """Run worker processes on the companion study until trial `number`'s runs are done."""
    from tuner.search.launcher import (
        gpus,
        on_gpus,
        plan,
        start_workers,
        supervise,
        workers_to_start,
    )

    left = _left(companion, number, total)
    n_workers = workers_to_start(n_workers, left, say) if left > 0 else 0
    placements = on_gpus(plan(n_workers, pin), gpus()) if n_workers else []
    processes = start_workers(config.path, storage_url, placements, options=("--ablation",))
    finished = count(companion).finished
    codes = supervise(processes, companion, finished + left, out, best=False) if processes else []
    failed = [f"worker {i} exited with code {c}" for i, c in enumerate(codes) if c]
    if failed:
        raise TunerError("; ".join(failed))


def _left(companion: optuna.Study, number: int, total: int) -> int:
    """How many of trial `number`'s `total` ablation runs are neither complete nor failed for
    good."""
    done = sum(
        1
        for t in companion.get_trials(deepcopy=False)
        if t.user_attrs.get("ablation_of") == number
        and is_current(t)
        and (t.state == TrialState.COMPLETE or failed_for_good(t))
    )
    return total - done


def search_finished(config: StudyConfig, storage_url: str) -> bool:
    """Whether the search of the study in `config` has spent its budget (`tuner run` ablates
    only then, not after a search stopped by Ctrl-C)."""
    with opened(storage_url, config.workers, must_exist=True) as storage:
        study = load_existing(config.name, storage)
        return count(study).finished >= budget(study)
