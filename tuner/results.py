"""Reading a study's results: the best trial beside the baselines and seed configurations, and
every trial as a pandas frame."""

from __future__ import annotations

from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from tuner.errors import TunerError
from tuner.study import count


def best_trial(study: optuna.Study) -> FrozenTrial:
    try:
        return study.best_trial
    except ValueError:
        raise TunerError(f"study {study.study_name!r} has no complete trial yet") from None


def summary(study: optuna.Study) -> dict[str, Any]:
    """The best trial, what it is measured against, and where the study stands."""
    best = best_trial(study)
    metric = study.user_attrs.get("metric", "value")
    minimize = study.direction == optuna.study.StudyDirection.MINIMIZE
    baselines = study.user_attrs.get("baselines", {})
    seeds = {
        t.user_attrs["seed_config"]: t.value
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if "seed_config" in t.user_attrs
    }
    counts = count(study)
    return {
        "study": study.study_name,
        "metric": metric,
        "direction": "minimize" if minimize else "maximize",
        "trials": {
            "finished": counts.finished,
            "complete": counts.complete,
            "pruned": counts.pruned,
            "failed": counts.failed - counts.retried,
            "running": counts.running,
            "waiting": counts.waiting,
        },
        "best_trial": {
            "number": best.number,
            "value": best.value,
            "params": best.params,
            "epochs": best.user_attrs.get("epochs"),
            "best_epoch": best.user_attrs.get("best_epoch"),
            "train_seconds": best.user_attrs.get("train_seconds"),
            "n_params": best.user_attrs.get("n_params"),
            "seed_config": best.user_attrs.get("seed_config"),
        },
        "baselines": {
            name: {"value": value, "improvement": improvement(best.value, value, minimize)}
            for name, value in baselines.items()
        },
        "seed_configs": {
            name: {"value": value, "improvement": improvement(best.value, value, minimize)}
            for name, value in seeds.items()
        },
    }


def improvement(best: float | None, reference: float | None, minimize: bool) -> float | None:
    """How much better `best` is than `reference`, as a fraction of `reference`."""
    if best is None or reference is None or reference == 0:
        return None
    gain = (reference - best) if minimize else (best - reference)
    return gain / abs(reference)


def format_summary(s: dict[str, Any]) -> str:
    t, b = s["trials"], s["best_trial"]
    lines = [
        f"study {s['study']}: {t['finished']} trials finished ({t['complete']} complete, "
        f"{t['pruned']} pruned, {t['failed']} failed)"
        + (f", {t['running']} running" if t["running"] else "")
        + (f", {t['waiting']} queued" if t["waiting"] else ""),
        f"best trial {b['number']}"
        + (f" (seed configuration {b['seed_config']})" if b["seed_config"] else "")
        + f": {s['metric']} = {b['value']:.4g}",
        "  " + " ".join(f"{k}={_short(v)}" for k, v in b["params"].items()),
        f"  {b['epochs']} epochs (best at {b['best_epoch']}), trained {b['train_seconds']} s, "
        f"{b['n_params']:,} parameters",
    ]
    for title, rows in (("baseline", s["baselines"]), ("seed configuration", s["seed_configs"])):
        for name, row in rows.items():
            lines.append(
                f"{title} {name}: {s['metric']} = {row['value']:.4g}" + _versus(row["improvement"])
            )
    return "\n".join(lines)


def _versus(gain: float | None) -> str:
    if gain is None:
        return ""
    if abs(gain) < 5e-4:
        return "; the best trial is level with it"
    word = "better" if gain > 0 else "worse"
    return f"; the best trial is {abs(gain):.1%} {word}"


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """Every trial, one row each: number, state, value, params, and what the worker recorded."""
    frame = study.trials_dataframe(attrs=("number", "state", "value", "params", "user_attrs"))
    return frame.rename(columns=lambda c: c.removeprefix("user_attrs_"))
