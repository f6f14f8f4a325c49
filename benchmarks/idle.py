"""Where a worker's time goes between two trials: the gap from one trial's end to the same
worker's next trial's start, split into the worker loop's phases (stale-trial check, queue
refill under the lock, claim, telling the study), and the workers' busy share.

Two worker processes run the worker loop (`tuner.search.worker.run_worker`) on a study in a SQLite
file, with an objective that samples the trial's parameters (the study's own search space and
TPE sampler) and then sleeps `--train` seconds in place of training: the loop's own costs, not a
model's, are what is measured. The busy share is measured as the issue measures it: the trials'
own time (start to end, as the storage records them) over the workers' time from their first
trial's start to their last trial's end.

Usage:
    nice -n 10 python benchmarks/idle.py [--trials 30] [--train 1.0] [--workers 2]
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import study_variant  # noqa: E402


def worker(study_file: str, url: str, index: int, train: float, out: str) -> None:
    import optuna

    import tuner.search.queue
    import tuner.search.worker
    from tuner.config import load_study_config
    from tuner.search.space import suggest
    from tuner.search.study import open_study
    from tuner.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = load_study_config(Path(study_file))
    storage = open_storage(url, config.workers)
    study = open_study(config, storage, lambda: {}, worker_index=index)
    spent: dict[str, float] = collections.Counter()

    def timed(name: str, f):  # type: ignore[no-untyped-def]
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            began = time.perf_counter()
            try:
                return f(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - began

        return wrapper

    optuna.storages.fail_stale_trials = timed(
        "stale-trial check", optuna.storages.fail_stale_trials
    )
    tuner.search.queue.refill = timed("queue refill (under the lock)", tuner.search.queue.refill)
    tuner.search.worker.claim = timed("claim (refill included)", tuner.search.queue.claim)
    optuna.Study.tell = timed("tell", optuna.Study.tell)

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", index)
        began = time.perf_counter()
        suggest(trial, config.space)
        spent["sampling (inside the trial)"] += time.perf_counter() - began
        time.sleep(train)
        return float(trial.number)

    began = time.perf_counter()
    stop = tuner.search.worker.StopRequest()
    tuner.search.worker.run_worker(config, study, storage, objective, stop)
    spent["worker loop, all"] = time.perf_counter() - began
    Path(out).write_text(json.dumps(spent))


def busy_share(url: str, name: str) -> tuple[float, list[float]]:
    import optuna

    study = optuna.load_study(study_name=name, storage=url)
    by_worker = collections.defaultdict(list)
    for t in study.trials:
        if t.datetime_start and t.datetime_complete:
            by_worker[t.user_attrs.get("worker", t.system_attrs.get("pid"))].append(t)
    own = span = 0.0
    gaps: list[float] = []
    for trials in by_worker.values():
        trials.sort(key=lambda t: t.datetime_start)
        own += sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)
        span += (trials[-1].datetime_complete - trials[0].datetime_start).total_seconds()
        gaps += [
            (b.datetime_start - a.datetime_complete).total_seconds()
            for a, b in zip(trials, trials[1:], strict=False)
        ]
    return own / span, gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--train", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = study_variant(folder, "idle", study={"n_trials": args.trials})
        url = f"sqlite:///{folder}/idle.db"
        # Created by one process first, as `tuner run` does before it starts its workers.
        from tuner.config import load_study_config
        from tuner.search.study import open_study
        from tuner.storage import open_storage

        config = load_study_config(path)
        open_study(config, open_storage(url, config.workers), lambda: {})
        processes = [
            multiprocessing.Process(
                target=worker, args=(str(path), url, i, args.train, f"{tmp}/spent-{i}.json")
            )
            for i in range(args.workers)
        ]
        for p in processes:
            p.start()
        for p in processes:
            p.join()
        spent = collections.Counter()
        for i in range(args.workers):
            spent.update(json.loads(Path(f"{tmp}/spent-{i}.json").read_text()))
        share, gaps = busy_share(url, "idle")
    print(f"{args.trials} trials of {args.train} s, {args.workers} workers")
    print(
        f"busy share: {share:.1%}; gaps between a worker's trials: {len(gaps)}, "
        f"median {sorted(gaps)[len(gaps) // 2]:.2f} s, max {max(gaps):.2f} s, "
        f"sum {sum(gaps):.1f} s"
    )
    print("seconds in each phase, all workers together:")
    for name, seconds in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<32} {seconds:8.2f}")


if __name__ == "__main__":
    main()
