from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from conftest import tuner

from tuner.errors import ConfigError
from tuner.training.backend import ENV_VAR, choose, for_models


def test_the_study_file_wins_then_the_environment_then_the_default(monkeypatch) -> None:
    monkeypatch.setenv(ENV_VAR, "jax")
    assert choose("tensorflow") == "tensorflow"
    assert choose(None) == "jax"
    monkeypatch.delenv(ENV_VAR)
    assert choose(None) in ("jax", "tensorflow")
    monkeypatch.setenv(ENV_VAR, "torch")
    with pytest.raises(
        ConfigError, match=r"TUNER_BACKEND='torch': must be one of jax, tensorflow"
    ):
        choose(None)


def test_models_that_take_strings_are_saved_and_loaded_on_tensorflow() -> None:
    assert for_models("jax", "text-classification") == "tensorflow"
    assert for_models(None, "text-classification") == "tensorflow"
    assert for_models("jax", "forecast") == "jax"
    assert for_models(None, "sequence-classification") is None


def test_a_bad_backend_in_the_study_file_is_named(write_study) -> None:
    from tuner.config import load_study_config

    path = write_study(training='epochs = 2\nbackend = "torch"')
    with pytest.raises(ConfigError, match=r"\[training\] backend.*must be one of jax, tensorflow"):
        load_study_config(path)


@pytest.mark.slow
def test_reading_the_study_file_sets_its_backend_before_keras_is_imported(write_study) -> None:
    path = write_study(training='epochs = 2\nbackend = "jax"')
    code = (
        "import sys; from tuner.cli.options import load; "
        f"assert 'keras' not in sys.modules; load(__import__('pathlib').Path({str(path)!r})); "
        "import keras; print(keras.backend.backend())"
    )
    env = os.environ | {ENV_VAR: "tensorflow", "KERAS_BACKEND": "tensorflow"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "jax"


@pytest.mark.slow
@pytest.mark.backend_smoke
def test_a_tiny_study_runs_end_to_end_and_retrains_on_the_chosen_backend(
    write_study, study_dir: Path
) -> None:
    """`tuner run` (not on a terminal: plain progress lines), then `tuner retrain`, on the
    backend of $TUNER_BACKEND (CI runs this on each backend)."""
    path = write_study(
        study='name = "smoke"\nmetric = "val_mae"\nn_trials = 2',
        pruner='name = "none"',
        training="epochs = 3\nbatch_size = 16\nsteps_per_epoch = 4\npatience = 3",
    )
    # As a user has it: no TF_CPP_MIN_LOG_LEVEL of its own (the tests' conftest sets one).
    quiet_unset = {"TF_CPP_MIN_LOG_LEVEL": ""}
    run = tuner("run", str(path), "--workers", "2", cwd=study_dir, env=quiet_unset)
    out = run.stdout + run.stderr
    # Each trial's epochs, and the study's counts, as plain lines.
    assert "trials 2/2: " in run.stdout
    for noise in ("E0000", "oneDNN", "cpu_feature_guard", "rebuild TensorFlow"):
        assert noise not in out
    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{study_dir}/tuner.db")
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 2
    assert {t.user_attrs["backend"] for t in trials} == {choose()}
    assert all(t.user_attrs["progress"]["epochs"] == 3 for t in trials)
    retrained = tuner("retrain", str(path), cwd=study_dir, env=quiet_unset)
    assert "test mae = " in retrained.stdout
    for noise in ("E0000", "oneDNN", "cpu_feature_guard", "rebuild TensorFlow"):
        assert noise not in retrained.stdout + retrained.stderr
    model = re.search(r"^model: (\S+)", retrained.stdout, re.M)
    assert model is not None and Path(model.group(1)).is_file()
    predicted = tuner("predict", str(path), "--data", "series.csv", cwd=study_dir)
    assert "predictions of trial" in predicted.stdout
    rows = (study_dir / "predictions.csv").read_text().splitlines()
    assert rows[0].endswith(",temp") and len(rows) > 100


@pytest.mark.slow
def test_keras_on_jax_leaves_tensorflow_out_until_tuner_imports_it(tmp_path: Path) -> None:
    """Keras asks whether TensorFlow (installed here) is there when seeding, configuring a
    Bidirectional layer and saving, and imports it to find out."""
    code = f"""
import sys, numpy as np
from tuner.patches.quiet import import_keras, import_tensorflow
import_keras()
import keras
from tuner.training.model import Head, build_model
from tuner.training.spec import ModelSpec
def draws(seed):
    keras.utils.set_random_seed(seed)
    return np.random.rand(), float(keras.random.uniform(()))
assert draws(7) == draws(7) != draws(8)
spec = ModelSpec("gru", (4,), 0.1, 0.1, True, "tanh", 1e-3)
model = build_model(spec, (5, 2), Head())
model.fit(np.zeros((8, 5, 2)), np.zeros(8), epochs=1, verbose=0)
model.save({str(tmp_path / "m.keras")!r})
keras.saving.load_model({str(tmp_path / "m.keras")!r})
print("tensorflow" in sys.modules)
import_tensorflow()  # as a text study's preparing does: Keras then finds it
keras.layers.TextVectorization(max_tokens=10)
print("tensorflow" in sys.modules)
"""
    env = os.environ | {"KERAS_BACKEND": "jax"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "True"]
    assert "oneDNN" not in result.stderr


def test_a_worker_bounds_xla_threads_as_tensorflow_threads(monkeypatch) -> None:
    from tuner.search.worker import place

    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x --xla_cpu_multi_thread_eigen=true")
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "")
    place(None, 1)
    flags = os.environ["XLA_FLAGS"].split()
    assert flags == [
        "--xla_dump_to=/tmp/x",
        "--xla_cpu_multi_thread_eigen=false",
        "intra_op_parallelism_threads=1",
    ]
    assert os.environ["TF_NUM_INTRAOP_THREADS"] == "1"


def test_jax_keeps_what_it_compiles_in_tuners_cache_folder(tmp_path: Path) -> None:
    """A second process that compiles the same computation reads it from `<cache>/jax`."""
    code = (
        "import tuner.training.backend as b; b.use('jax'); import os, jax, jax.numpy as jnp; "
        "print(os.environ['JAX_COMPILATION_CACHE_DIR']); "
        "print(jax.jit(lambda x: jnp.tanh(x) @ x.T)(jnp.ones((7, 5))).sum())"
    )
    env = os.environ | {"TUNER_CACHE_DIR": str(tmp_path)}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    for var in ("KERAS_BACKEND", ENV_VAR):
        env.pop(var, None)
    first = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert first.stdout.splitlines()[0] == str(tmp_path / "jax")
    entries = {p.name for p in (tmp_path / "jax").iterdir()}
    assert any(name.startswith("jit__lambda") for name in entries)
    assert "Error reading persistent compilation cache" not in first.stderr
    again = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert again.stdout == first.stdout
    assert {p.name for p in (tmp_path / "jax").iterdir()} == entries  # read, not compiled anew
    # A cache folder the environment names is left as it is.
    elsewhere = tmp_path / "mine"
    named = subprocess.run(
        [sys.executable, "-c", code],
        env=env | {"JAX_COMPILATION_CACHE_DIR": str(elsewhere)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert named.stdout.splitlines()[0] == str(elsewhere)
