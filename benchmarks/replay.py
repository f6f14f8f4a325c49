"""The same trials on this code: a finished search's trials (every Nth), each trained again with
its parameters for the epochs it trained, one after another in this process, against the time
they took in the search.

    python benchmarks/replay.py sqlite:///old/tuner.db studies/nyc-weather.toml --every 3

    # every 3rd trial as two processes at once, one on each core:
    taskset -c 0 python benchmarks/replay.py URL STUDY --every 6 --cache /tmp/c &
    taskset -c 1 python benchmarks/replay.py URL STUDY --every 6 --offset 3 --cache /tmp/c

Two runs of a search on different code seldom try the same models: each trains with its own
masks and weights, so the sampler follows other values into other parts of the space (one run of
the README's main command spent its time on bidirectional two-layer GRUs, the other on one-layer
GRUs). Replaying one run's trials on the other code compares the two on the same models. A
trial's recorded time is its start to its end in the search (one worker per core); here each
runs as an ablation trial does (fixed parameters and epochs, no pruning, no early stopping) in
a process pinned to one core, after `jax.clear_caches()`, as a worker runs them. Prints one
line per trial and the sums, of whole trials and of `model.fit` alone (a search's trial time
also holds the sampler's and the storage's work).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("storage", help="the finished search's storage URL")
    parser.add_argument("study_file")
    parser.add_argument("--every", type=int, default=1, help="replay every Nth trial")
    parser.add_argument("--offset", type=int, default=0, help="starting at the Nth")
    parser.add_argument(
        "--cache",
        help="tuner's cache folder (JAX's persistent compilation cache in it), as a search's "
        "workers share it; empty at the start for a fresh search. Default: no cache",
    )
    args = parser.parse_args()
    if args.cache:
        os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
        os.environ["TUNER_CACHE_DIR"] = args.cache
        from tuner.training.backend import compilation_cache

        compilation_cache()
    else:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = ""  # every compile a real one

    from tuner.search.worker import place

    place([min(os.sched_getaffinity(0))], 1)
    import optuna

    from tuner.config import load_study_config
    from tuner.data import prepare
    from tuner.patches.quiet import import_keras
    from tuner.search.companion import ABLATION_ATTR
    from tuner.search.objective import Objective

    import_keras()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = load_study_config(args.study_file)
    searched = optuna.load_study(study_name=config.name, storage=args.storage)
    done = [
        t
        for t in searched.trials
        if t.datetime_start and t.datetime_complete and t.user_attrs.get("epochs")
    ][args.offset :: args.every]
    objective = Objective(config, prepare(config.data))
    replay = optuna.create_study(direction=config.direction)
    then = now = fit_then = fit_now = 0.0
    for t in done:
        replay.enqueue_trial(
            t.params, user_attrs={ABLATION_ATTR: {"seed": 1, "epochs": t.user_attrs["epochs"]}}
        )
        trial = replay.ask()
        start = time.perf_counter()
        replay.tell(trial, objective(trial))
        seconds = time.perf_counter() - start
        recorded = (t.datetime_complete - t.datetime_start).total_seconds()
        then, now = then + recorded, now + seconds
        # `model.fit` alone on both sides: the search's time also holds sampling and storage.
        fit = replay.trials[-1].user_attrs["train_seconds"]
        fit_then, fit_now = fit_then + t.user_attrs["train_seconds"], fit_now + fit
        print(
            f"trial {t.number} ({t.user_attrs['epochs']} epochs, {t.params}): "
            f"{recorded:.1f} s in the search ({t.user_attrs['train_seconds']:.1f} s in fit), "
            f"{seconds:.1f} s here ({fit:.1f} s in fit)",
            flush=True,
        )
    print(
        f"{len(done)} trials: {then:.0f} s in the search, {now:.0f} s here "
        f"({now / then:.2f}); in fit {fit_then:.0f} s and {fit_now:.0f} s "
        f"({fit_now / fit_then:.2f})"
    )


if __name__ == "__main__":
    main()
