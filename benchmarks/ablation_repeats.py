"""How the number of training seeds per variant (K) of `tuner ablate` changes the width of the
verdicts' 95% intervals, how many Holm-corrected verdicts are clear, and the cost, on a shipped
study.

Runs the study's search (`tuner run`, optionally at a reduced scale), then one ablation of its
best trial with the largest K (`tuner ablate --repeats K`), and reads the verdicts again from
the first k seeds of every variant for k = 2 .. K: the runs of a smaller K are the first k of
the larger one's, as `tuner ablate` would have trained them (the seeds are the same). The cost
is in epochs trained (each run stops early on its own), beside the search's own.

    python benchmarks/ablation_repeats.py studies/nyc-weather.toml --max-repeats 5
    python benchmarks/ablation_repeats.py studies/nyc-weather.toml --trials 6 --epochs 3 \
        --steps 10 --max-repeats 4      # reduced scale

With `--storage URL`, the study file is used as it is, on that storage: a study already
searched there (by the README's `tuner run`, say) is ablated without searching again, and the
ablation stays in the storage for `tuner report`.
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _copy(study: Path, folder: Path, args: argparse.Namespace) -> Path:
    """The study file with its name made fresh and, if asked, a smaller budget."""
    text = study.read_text()
    text = re.sub(r'(?m)^name = "([^"]+)"', r'name = "\1-bench"', text, count=1)
    for key, value in (("n_trials", args.trials), ("epochs", args.epochs)):
        if value is not None:
            text = re.sub(rf"(?m)^{key} = \d+", f"{key} = {value}", text, count=1)
    if args.steps is not None:
        if re.search(r"(?m)^steps_per_epoch = ", text):
            text = re.sub(r"(?m)^steps_per_epoch = \d+", f"steps_per_epoch = {args.steps}", text)
        else:
            text = text.replace("[training]\n", f"[training]\nsteps_per_epoch = {args.steps}\n")
    path = folder / study.name
    path.write_text(text)
    return path


def _tuner(*command: str, cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tuner", *command], cwd=cwd, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("study", type=Path)
    parser.add_argument("--trials", type=int, help="search budget [default: the study's]")
    parser.add_argument("--epochs", type=int, help="[training] epochs [default: the study's]")
    parser.add_argument("--steps", type=int, help="[training] steps_per_epoch")
    parser.add_argument("--max-repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--storage", help="use the study file as it is on this storage, and keep what runs there"
    )
    args = parser.parse_args()

    import optuna
    from optuna.trial import TrialState

    from tuner.answers.inference import judge, simultaneous_interval
    from tuner.answers.verdict import HELPED, HURT, difference
    from tuner.config import load_study_config
    from tuner.search.ablation import AS_IS, variants

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.storage:
            path, url = args.study.resolve(), args.storage
        else:
            path = _copy(args.study.resolve(), folder, args)
            url = f"sqlite:///{folder / 'bench.db'}"
        config = load_study_config(path)
        os.environ["TUNER_STORAGE"] = url
        workers = ("--workers", str(args.workers))
        search_s = _tuner("run", str(path), *workers, cwd=folder)
        ablate_s = _tuner(
            "ablate", str(path), "--repeats", str(args.max_repeats), *workers, cwd=folder
        )
        study = optuna.load_study(study_name=config.name, storage=url)
        companion = optuna.load_study(study_name=config.name + "/ablation", storage=url)
        search_epochs = sum(int(t.user_attrs.get("epochs") or 0) for t in study.trials)
        runs: dict[str, dict[int, float]] = collections.defaultdict(dict)
        run_epochs: dict[int, int] = collections.defaultdict(int)  # by repeat
        for t in companion.get_trials(states=(TrialState.COMPLETE,)):
            repeat = int(t.user_attrs["repeat"])
            runs[t.user_attrs["variant"]][repeat] = float(t.values[0])
            run_epochs[repeat] += int(t.user_attrs["epochs"])
        best = study.best_trial if len(study.directions) == 1 else None
        params = companion.get_trials(states=(TrialState.COMPLETE,))[0].params
        if best is not None:
            params = best.params
        minimize = config.direction == "minimize"
        print(
            f"\n{config.name}: search {len(study.trials)} trials, {search_epochs} epochs, "
            f"{search_s:.0f} s; ablation of trial {best.number if best else '?'} at K = "
            f"{args.max_repeats}: {sum(len(r) for r in runs.values())} runs, "
            f"{sum(run_epochs.values())} epochs, {ablate_s:.0f} s\n"
        )
        print(
            "| K | runs | epochs | epochs / search's | median 95% CI half-width "
            "| widest | clear verdicts |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- |")
        found = variants(params)
        for k in range(2, args.max_repeats + 1):
            family = []
            for v in found:
                sign = 1.0 if v.with_technique else -1.0
                family.append(
                    [
                        sign * (runs[v.name][r] - runs[AS_IS][r])
                        for r in range(1, k + 1)
                        if r in runs[v.name] and r in runs[AS_IS]
                    ]
                )
            judged = judge(family, minimize)
            widths = [(j.interval[1] - j.interval[0]) / 2 for j in judged if j.interval]
            clear = sum(j.verdict in (HELPED, HURT) for j in judged)
            n_runs = k * (len(found) + 1)
            epochs = sum(run_epochs[r] for r in range(1, k + 1))
            print(
                f"| {k} | {n_runs} | {epochs} | {epochs / search_epochs:.2f} "
                f"| {difference(statistics.median(widths), config.metric).lstrip('+')} "
                f"| {difference(max(widths), config.metric).lstrip('+')} "
                f"| {clear} of {len(found)} |"
            )
        # At the largest K: each contrast's own interval and the uncorrected verdict it gave
        # before Holm, beside the family's simultaneous interval and Holm's verdict.
        print(
            "\n| technique | effect (with - without) | 95% CI | uncorrected | simultaneous 95% "
            "| Holm's adjusted p | verdict |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for v, j in zip(found, judged, strict=True):
            if j.interval is None:
                continue
            low, high = j.interval
            alone = "clear" if low > 0 or high < 0 else "not clear"
            s_low, s_high = simultaneous_interval(j) or (math.nan, math.nan)
            print(
                f"| {v.contrast} | {difference(j.mean, config.metric)} "
                f"| {difference(low, config.metric)} to {difference(high, config.metric)} "
                f"| {alone} | {difference(s_low, config.metric)} to "
                f"{difference(s_high, config.metric)} | {j.adjusted:.2g} | {j.verdict} |"
            )


if __name__ == "__main__":
    main()
