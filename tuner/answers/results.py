"""Reading a study's results: the best trial beside the baselines and seed configurations, and
every trial as a pandas frame."""

from __future__ import annotations

from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from tuner.answers.verdict import versus
from tuner.search.queue import count
from tuner.search.trials import (
    best_trial,
    minimizes,
    paused,
    ranked,
    reached,
    seed_trials,
    train_seconds,
)
from tuner.storage.artifacts import Location, parse_location, retrained_models, where


def seed_label(name: str, row: dict[str, Any]) -> str:
    """A seed configuration's name, saying when the pruner stopped it."""
    stopped = "paused" if row.get("paused") else "pruned"
    return name + (f" ({stopped} at epoch {row['pruned_at']})" if row.get("pruned_at") else "")


def pareto_front(study: optuna.Study) -> list[dict[str, Any]]:
    """With a cost objective, the trials no other trial beats on both metric and cost, cheapest
    first; empty for a single-objective study."""
    if len(study.directions) < 2:
        return []
    front = sorted(study.best_trials, key=lambda t: (t.values[1], t.number))
    return [
        {"number": t.number, "value": t.values[0], "cost": t.values[1], "params": t.params}
        for t in front
    ]


def summary(study: optuna.Study) -> dict[str, Any]:
    """The best trial, what it is measured against, and where the study stands."""
    best = best_trial(study)
    minimize = minimizes(study)
    value = reached(best, minimize)
    metric = study.user_attrs.get("metric", "value")
    baselines = study.user_attrs.get("baselines", {})
    seeds = {name: (t, reached(t, minimize)) for name, t in seed_trials(study).items()}
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
            "resumed": counts.resumed,
        },
        "best_trial": {
            "number": best.number,
            "value": value,
            "params": best.params,
            "epochs": best.user_attrs.get("epochs"),
            "best_epoch": best.user_attrs.get("best_epoch"),
            "train_seconds": train_seconds(study, best),
            "n_params": best.user_attrs.get("n_params"),
            "seed_config": best.user_attrs.get("seed_config"),
            "paused_at": _paused_at(best),
        },
        "baselines": {
            name: {"value": v, "improvement": improvement(value, v, minimize)}
            for name, v in baselines.items()
        },
        "seed_configs": {
            name: {
                "number": t.number,
                "value": v,
                "improvement": improvement(value, v, minimize),
                "pruned_at": t.user_attrs.get("epochs") if t.state == TrialState.PRUNED else None,
                "paused": paused(t),
            }
            for name, (t, v) in seeds.items()
        },
        # With the pruner `pause`, whether a model waits paused (and is ranked beside the
        # complete ones).
        "pauses": any(paused(t) for t in study.get_trials(deepcopy=False)),
        "cost_objective": _cost_name(study),
        "pareto_front": pareto_front(study),
        "error_rate": no_error_rate(counts.complete + counts.pruned),
    }


def _paused_at(trial: optuna.trial.FrozenTrial) -> int | None:
    """The epoch a paused trial's model waits at (its checkpoint), None for any other trial."""
    return int(trial.user_attrs["paused_at"]) if paused(trial) else None


def _cost_name(study: optuna.Study) -> str | None:
    if len(study.directions) < 2:
        return None
    names = study.metric_names
    return names[1] if names else "cost"


def improvement(best: float | None, reference: float | None, minimize: bool) -> float | None:
    """How much better `best` is than `reference`, as a fraction of `reference`."""
    if best is None or reference is None or reference == 0:
        return None
    gain = (reference - best) if minimize else (best - reference)
    return gain / abs(reference)


def format_diagnoses(found: list[str]) -> list[str]:
    """Diagnoses (tuner.answers.diagnoses) as lines for a terminal."""
    return [f"note: {text}" for text in found]


def format_summary(s: dict[str, Any]) -> str:
    t, b = s["trials"], s["best_trial"]
    lines = [
        f"study {s['study']}: {t['finished']} trials finished"
        + (f" and {t['resumed']} resumed" if t.get("resumed") else "")
        + f" ({t['complete']} complete, {t['pruned']} pruned"
        + (" or paused" if t.get("resumed") else "")
        + f", {t['failed']} failed)"
        + (f", {t['running']} running" if t["running"] else "")
        + (f", {t['waiting']} queued" if t["waiting"] else ""),
        f"best trial {b['number']}"
        + (f" (seed configuration {b['seed_config']})" if b["seed_config"] else "")
        + (f" (paused at epoch {b['paused_at']})" if b.get("paused_at") else "")
        + f": {s['metric']} = {b['value']:.4g}",
        "  " + " ".join(f"{k}={_short(v)}" for k, v in b["params"].items()),
        _recorded(b),
    ]
    compared = 0
    for title, rows in (("baseline", s["baselines"]), ("seed configuration", s["seed_configs"])):
        for name, row in rows.items():
            versus = _versus(b["value"], row["value"], s)
            compared += bool(versus)
            lines.append(
                f"{title} {seed_label(name, row)}: {s['metric']} = {row['value']:.4g}{versus}"
            )
    if s["pareto_front"]:
        cost = s["cost_objective"]
        lines.append(f"Pareto front of {s['metric']} against {cost}, cheapest first:")
        for front in s["pareto_front"]:
            lines.append(
                f"  trial {front['number']}: {s['metric']} = {front['value']:.4g}, "
                f"{cost} = {front['cost']:.4g}"
            )
    lines += format_diagnoses(s.get("diagnoses", []))
    lines.append(f"({s['error_rate']})")
    return "\n".join(lines)


def no_error_rate(n: int) -> str:
    """What answers say of their values' error rate (`error_rate`; the terminal's listings
    print it in brackets as their last line)."""
    return NO_ERROR_RATE.format(n=n).strip("()")


# Every number printed carries its error rate or says it has none: these values, and the
# comparisons and notes made from them, have none.
NO_ERROR_RATE = (
    "(no error rate: every value, comparison and note here rests on single training runs, and "
    "the validation split chose the best of {n} trials, which flatters the best; `tuner "
    "ablate` retrains it on fresh seeds and gives its test score an interval)"
)


def _versus(best: float | None, reference: float | None, s: dict[str, Any]) -> str:
    words = versus(best, reference, s["metric"], s["direction"] == "minimize")
    return f"; the best trial is {words}" if words else ""


def _recorded(b: dict[str, Any]) -> str:
    """What the worker recorded of the best trial; a trial made by other tools records none."""
    if b["epochs"] is None and b["n_params"] is None:
        return "  (no epochs, time or size recorded: the trial was not run by a tuner worker)"
    n_params = f"{b['n_params']:,}" if b["n_params"] is not None else "?"
    return (
        f"  {b['epochs']} epochs (best at {b['best_epoch']}), trained {b['train_seconds']} s, "
        f"{n_params} parameters"
    )


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """Every trial, one row each: number, state, value, params, and what the worker recorded."""
    frame = study.trials_dataframe(attrs=("number", "state", "value", "params", "user_attrs"))
    return frame.rename(columns=lambda c: c.removeprefix("user_attrs_"))


def best_trials(
    study: optuna.Study, top: int, artifacts: Location | None = None
) -> dict[str, Any]:
    """The `top` best complete or paused trials (`tuner.search.trials.ranked`), with the naive
    baselines, the seed configurations and any retrained model for reference (in the artifact
    folder `artifacts`, default: where it was saved)."""
    s = summary(study)
    minimize = s["direction"] == "minimize"
    retrained = retrained_models(study)
    found = ranked(study)
    return {
        "study": s["study"],
        "metric": s["metric"],
        "direction": s["direction"],
        "trials": s["trials"],
        "error_rate": s["error_rate"],
        "ranked_of": len(found),
        # With the pruner `pause`: every model past its first rung has a checkpoint.
        "pauses": any("checkpoint" in t.user_attrs for t in found),
        "top": [
            {
                "rank": rank,
                "number": t.number,
                "value": reached(t, minimize),
                "params": t.params,
                "epochs": t.user_attrs.get("epochs"),
                "best_epoch": t.user_attrs.get("best_epoch"),
                "train_seconds": train_seconds(study, t),
                "n_params": t.user_attrs.get("n_params"),
                "seed_config": t.user_attrs.get("seed_config"),
                "paused_at": _paused_at(t),
                "retrained": _retrained(retrained.get(t.number), artifacts),
            }
            for rank, t in enumerate(found[:top], start=1)
        ],
        "baselines": {name: row["value"] for name, row in s["baselines"].items()},
        "seed_configs": {
            name: {k: row[k] for k in ("number", "value", "pruned_at", "paused")}
            for name, row in s["seed_configs"].items()
        },
    }


def _retrained(record: dict[str, Any] | None, artifacts: Location | None) -> dict[str, Any] | None:
    if record is None:
        return None
    store = artifacts or parse_location(record["artifact_store"])
    tests = {k: v for k, v in record.items() if k.startswith("test_") and k != "test_baselines"}
    return {
        **tests,
        "test_baselines": record.get("test_baselines", {}),
        # Older records have no readable name: the file named by its artifact id.
        "model": where(store, record.get("model_path", record["model_artifact"])),
        "model_artifact": record["model_artifact"],
        "metrics_artifact": record["metrics_artifact"],
    }


def best_trials_frame(report: dict[str, Any]) -> pd.DataFrame:
    """`best_trials` as one table (for CSV): the top trials, one column per parameter, then the
    baselines and seed configurations."""
    rows: list[dict[str, Any]] = []
    for t in report["top"]:
        row: dict[str, Any] = {
            "kind": "trial",
            "rank": t["rank"],
            "trial": t["number"],
            "name": t["seed_config"] or "",
            "value": t["value"],
            "epochs": t["epochs"],
            "best_epoch": t["best_epoch"],
            "train_seconds": t["train_seconds"],
            "paused_at": t["paused_at"],
        }
        row |= {f"params_{k}": v for k, v in t["params"].items()}
        retrained = t["retrained"] or {}
        for key, value in retrained.items():
            if key.startswith("test_") and key != "test_baselines":
                row[key] = value
        row["model"] = retrained.get("model", "")
        rows.append(row)
    for name, value in report["baselines"].items():
        rows.append({"kind": "baseline", "name": name, "value": value})
    for name, seed in report["seed_configs"].items():
        rows.append(
            {
                "kind": "seed configuration",
                "trial": seed["number"],
                "name": name,
                "value": seed["value"],
                "pruned_at": seed["pruned_at"],
                "paused": seed["paused"],
            }
        )
    frame = pd.DataFrame(rows)
    for column in frame.columns:
        present = [row[column] for row in rows if row.get(column) is not None]
        if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
            frame[column] = frame[column].astype("Int64")  # not 2.0 beside a missing value
    return frame.rename(columns={"value": report["metric"]})


def format_best_trials(report: dict[str, Any]) -> str:
    """`best_trials` as text for a terminal."""
    metric = report["metric"]
    lines = [
        f"study {report['study']}: the {len(report['top'])} best of {report['ranked_of']} "
        + ("models (complete or paused trials)" if report["pauses"] else "complete trials")
        + f" by {metric} ({report['direction']})",
        f"{'rank':>4} {'trial':>5} {metric:>10} {'epochs':>7} {'train s':>8}  parameters",
    ]
    retrained = []
    for row in report["top"]:
        epochs = f"{row['best_epoch']}/{row['epochs']}" if row["epochs"] else ""
        seconds = "" if row["train_seconds"] is None else f"{row['train_seconds']:.1f}"
        seed = f" (seed configuration {row['seed_config']})" if row["seed_config"] else ""
        seed += f" (paused at epoch {row['paused_at']})" if row["paused_at"] else ""
        lines.append(
            f"{row['rank']:>4} {row['number']:>5} {row['value']:>10.4g} {epochs:>7} "
            f"{seconds:>8}  "
            + " ".join(f"{k}={_short(v)}" for k, v in row["params"].items())
            + seed
        )
        if row["retrained"]:
            retrained.append((row["number"], row["retrained"]))
    lines.append("epochs: best/run")
    for name, value in report["baselines"].items():
        lines.append(f"baseline {name}: {metric} = {value:.4g}")
    for name, seed in report["seed_configs"].items():
        lines.append(
            f"seed configuration {seed_label(name, seed)}, trial {seed['number']}: "
            f"{metric} = {seed['value']:.4g}"
        )
    for number, r in retrained:
        tests = ", ".join(
            f"{k.replace('_', ' ')} = {v:.4g}"
            for k, v in r.items()
            if k.startswith("test_") and isinstance(v, float)
        )
        lines.append(f"trial {number} retrained: {tests}; model {r['model']}")
    lines += format_diagnoses(report.get("diagnoses", []))
    lines.append(f"({report['error_rate']})")
    return "\n".join(lines)
