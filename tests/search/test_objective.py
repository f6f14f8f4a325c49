from __future__ import annotations

import dataclasses
import re

import optuna
import pandas as pd
import pytest
from conftest import make_series
from optuna.trial import TrialState

from tuner.config import load_study_config
from tuner.data import prepare
from tuner.search.objective import Objective, TrialFailed, training_seed
from tuner.search.study import make_sampler, open_study
from tuner.search.worker import StopRequest, run_worker
from tuner.storage import open_storage

pytestmark = pytest.mark.slow


@pytest.fixture
def config(write_study):
    return load_study_config(write_study())


def test_a_trial_reports_every_epoch_and_records_what_it_did(config) -> None:
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    study.optimize(Objective(config, prepare(config.data)), n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.COMPLETE
    assert sorted(trial.intermediate_values) == list(range(1, trial.user_attrs["epochs"] + 1))
    best_epoch = trial.user_attrs["best_epoch"]
    assert trial.value == min(trial.intermediate_values.values())
    assert trial.intermediate_values[best_epoch] == trial.value
    assert trial.user_attrs["n_params"] > 0
    assert trial.user_attrs["train_seconds"] > 0
    assert ":" in trial.user_attrs["worker"]
    assert trial.user_attrs["patches_off"] == []  # every patch ran


def test_trials_run_without_a_patch_record_it(config, monkeypatch) -> None:
    import keras

    if keras.backend.backend() != "jax":
        pytest.skip("the Philox masks replace JAX's draws only")
    from keras.src.backend.jax import random as module

    from tuner.patches import checks

    monkeypatch.setattr(checks, "_OFF", {})
    draw_seed = module.jax_draw_seed
    # A Keras whose private name takes other parameters: the patch falls back.
    monkeypatch.setattr(module, "jax_draw_seed", lambda seed, *, moved=None: draw_seed(seed))
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    study.optimize(Objective(config, prepare(config.data)), n_trials=2)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert [t.user_attrs["patches_off"] for t in study.trials] == [["dropout"]] * 2


def test_a_trial_trains_the_same_whatever_ran_before_it_and_the_study_repeats(config) -> None:
    """The trial's number and the study's seed decide its weights, dropout and batch order."""
    data = prepare(config.data)
    objective = Objective(config, data)

    def run() -> list[optuna.trial.FrozenTrial]:
        study = optuna.create_study(sampler=make_sampler(config))
        study.optimize(objective, n_trials=2)
        return study.trials

    # The same worker's objective, again: what it trained before does not change the trials.
    first, again = run(), run()
    assert [t.params for t in first] == [t.params for t in again]
    assert [t.intermediate_values for t in first] == [t.intermediate_values for t in again]
    assert [t.user_attrs["training_seed"] for t in first] == [
        training_seed(config.sampler.seed, n) for n in range(2)
    ]
    # Another study seed, same parameters: other weights, other values.
    other = optuna.create_study()
    other.enqueue_trial(first[0].params)
    reseeded = dataclasses.replace(config, sampler=dataclasses.replace(config.sampler, seed=7))
    other.optimize(Objective(reseeded, data), n_trials=1)
    assert other.trials[0].intermediate_values != first[0].intermediate_values


@pytest.mark.parametrize("prune_seeds", [True, False])
def test_the_pruner_stops_seed_configurations_only_when_the_study_file_lets_it(
    write_study, prune_seeds
) -> None:
    pruner = 'name = "median"\n' + ("" if prune_seeds else "prune_seed_configs = false")
    config = load_study_config(write_study(pruner=pruner))
    assert config.pruner.prune_seed_configs is prune_seeds
    # Every value is above 0, so this pruner prunes any trial it is asked about.
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.0))
    params = {
        "cell": "gru",
        "layers": 1,
        "units_1": 8,
        "dropout": 0.0,
        "recurrent_dropout": 0.0,
        "bidirectional": False,
        "activation": "tanh",
        "learning_rate": 0.005,
    }
    study.enqueue_trial(params, user_attrs={"seed_config": "test-seed"})
    study.enqueue_trial(params)
    study.optimize(Objective(config, prepare(config.data)), n_trials=2)
    seed, other = study.trials
    if prune_seeds:
        assert seed.state == TrialState.PRUNED and seed.user_attrs["epochs"] == 1
    else:
        assert seed.state == TrialState.COMPLETE and seed.user_attrs["epochs"] == 3
    assert other.state == TrialState.PRUNED
    assert list(other.intermediate_values) == [1] and other.user_attrs["epochs"] == 1


def test_a_non_finite_loss_fails_the_trial_and_the_worker_goes_on(write_study, study_dir) -> None:
    frame = pd.read_csv(study_dir / "series.csv")
    frame["temp"] *= 1e30  # squared errors overflow float32
    frame.to_csv(study_dir / "huge.csv", index=False)
    path = write_study(
        "huge",
        data='path = "huge.csv"\ntarget = "temp"\nlookback = 12\nstep = 2\ndelay = 3',
        study='name = "huge"\nmetric = "val_mae"\nn_trials = 2\nseed_configs = false',
        workers="max_consecutive_failures = 5",
    )
    config = load_study_config(path)
    data = prepare(config.data)
    storage = open_storage(f"sqlite:///{study_dir / 'huge.db'}", config.workers)
    study = open_study(config, storage, lambda: data.baselines)
    result = run_worker(config, study, storage, Objective(config, data), StopRequest())
    assert result.failed == 2  # both trials ran: a failure does not stop the worker
    for trial in study.trials:
        assert trial.state == TrialState.FAIL
        assert re.fullmatch(r"loss became (nan|inf) at epoch 1", trial.user_attrs["fail_reason"])


def test_trial_failed_carries_its_reason() -> None:
    assert str(TrialFailed("loss became nan at epoch 2")) == "loss became nan at epoch 2"


def test_a_jax_trial_starts_with_what_jax_compiled_before_it_forgotten(config) -> None:
    """JAX keeps every function it compiled in memory; each trial clears that, or a worker
    grows with every model it ever built (BENCHMARKS.md)."""
    import keras

    if keras.backend.backend() != "jax":
        pytest.skip("JAX only; CI runs the whole suite on JAX, the default")
    import jax
    import jax.numpy as jnp

    earlier = jax.jit(lambda x: x * 2.0)
    earlier(jnp.ones(3))
    assert earlier._cache_size() == 1
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    study.optimize(Objective(config, prepare(config.data)), n_trials=1)
    assert study.trials[0].state == TrialState.COMPLETE
    assert earlier._cache_size() == 0


def test_a_jax_trial_compiles_its_training_and_validation_steps_once(
    write_study, study_dir, caplog
) -> None:
    """Every new batch shape is one more XLA compile of the whole step, the largest cost of a
    short trial: training batches are all full, even where a step budget runs on past the end
    of a pass over the rows, and a validation split that fits is one batch."""
    import keras

    if keras.backend.backend() != "jax":
        pytest.skip("JAX only; CI runs the whole suite on JAX, the default")
    import jax

    # 6,000 hours: 2,987 training windows (186 batches of 16, and 11 rows more) and 1,487
    # validation windows (two batches, of 1,024 and 463, before).
    make_series(6000).to_csv(study_dir / "series.csv", index=False)
    config = load_study_config(
        write_study(training="epochs = 2\nbatch_size = 16\nsteps_per_epoch = 100\npatience = 5")
    )
    data = prepare(config.data)
    assert len(data.split("validation", 16).rows) > 1024
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    jax.config.update("jax_log_compiles", True)
    try:
        with caplog.at_level("WARNING"):
            study.optimize(Objective(config, data), n_trials=1)
    finally:
        jax.config.update("jax_log_compiles", False)
    assert study.trials[0].user_attrs["epochs"] == 2  # 200 steps: past the first pass
    compiled = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Compiling")]
    assert sum("jit(train_step)" in m for m in compiled) == 1, compiled
    assert sum("jit(test_step)" in m for m in compiled) == 1, compiled


def test_a_trial_queued_again_trains_from_the_seed_of_the_run_it_repeats(config) -> None:
    # A retry carries the user attributes of the trial it repeats (tuner.storage.retry).
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    study.enqueue_trial({}, user_attrs={"training_seed": 12345})
    study.optimize(Objective(config, prepare(config.data)), n_trials=1)
    assert study.trials[0].user_attrs["training_seed"] == 12345
