"""What one run of a search did, read from its storage: the row BENCHMARKS.md quotes for the
README's main command run with two versions of the code side by side.

    python benchmarks/search_run.py sqlite:///old/tuner.db sqlite:///new/tuner.db

Per study: wall time (the first trial's start to the last trial's end), complete and pruned
trials, epochs trained, the median first epoch and later epoch (`first_epoch_seconds`,
`seconds_per_epoch`), the median trial time outside `model.fit` (building the model, sampling,
the storage), the workers' busy share (their trials' own time over each worker's span), and the
best value. Reads with Optuna alone, so it reads studies written by any version of tuner.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from idle import busy_share  # noqa: E402


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def describe(url: str) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for summary in optuna.get_all_study_summaries(url):
        study = optuna.load_study(study_name=summary.study_name, storage=url)
        done = [t for t in study.trials if t.datetime_start and t.datetime_complete]
        if not done:
            continue
        wall = (
            max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)
        ).total_seconds()
        states = [t.state.name for t in done]
        attrs = [t.user_attrs for t in done]
        first = [a["first_epoch_seconds"] for a in attrs if "first_epoch_seconds" in a]
        later = [a["seconds_per_epoch"] for a in attrs if a.get("epochs", 0) > 1]
        outside = [
            (t.datetime_complete - t.datetime_start).total_seconds() - a["train_seconds"]
            for t, a in zip(done, attrs, strict=True)
            if "train_seconds" in a
        ]
        share, gaps = busy_share(url, summary.study_name)
        best = study.best_value if states.count("COMPLETE") else float("nan")
        print(
            f"{url} {summary.study_name}: wall {wall:.0f} s, "
            f"{states.count('COMPLETE')} complete / {states.count('PRUNED')} pruned / "
            f"{states.count('FAIL')} failed, {sum(a.get('epochs', 0) for a in attrs)} epochs, "
            f"first epoch median {median(first):.2f} s, "
            f"later epoch median {median(later):.2f} s, "
            f"outside fit median {median(outside):.2f} s, busy {share:.1%}, "
            f"gaps sum {sum(gaps):.0f} s, best {best:.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("urls", nargs="+", help="storage URLs, one per run")
    for url in parser.parse_args().urls:
        describe(url)


if __name__ == "__main__":
    main()
