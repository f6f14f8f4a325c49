"""Paused trials that resume (the pruner `pause`) and budgets in epochs: real Keras training,
real worker processes, a real storage and artifact store."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import numpy as np
import optuna
import pytest
from conftest import FAST_SPACE, stopped_while_running, tuner, worker_processes
from optuna.trial import FrozenTrial, TrialState

from tuner.config import load_study_config
from tuner.errors import ConfigError
from tuner.search.definition import DefinitionError, check, definition
from tuner.search.queue import count
from tuner.search.schedule import (
    CHECKPOINT,
    PROMOTED_PREFIX,
    SPACE_ATTR,
    START_EPOCH,
    epochs_used,
    promotable,
    rungs,
)
from tuner.search.trials import CONTINUES

PAUSE = 'name = "pause"\nmin_resource = 1\nreduction_factor = 2'


def _study(write_study, name: str, budget: str = "n_trials = 6", epochs: int = 4, **more: str):
    budget_line = budget if budget.startswith("n_trials") else ""
    overrides = {
        "study": f'name = "{name}"\nmetric = "val_mae"\nseed_configs = false\n{budget_line}',
        "pruner": PAUSE,
        "training": f"epochs = {epochs}\nbatch_size = 16\nsteps_per_epoch = 3\npatience = 30",
        "space": FAST_SPACE,
    } | more
    if not budget.startswith("n_trials"):
        overrides["budget"] = budget
    return write_study(name, **overrides)


def _trials(url: str, name: str) -> list[FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).trials


def _resumed_from(trial: FrozenTrial, paused: FrozenTrial) -> None:
    """`trial` continues `paused` from its checkpoint: its curve is the paused one's, then goes
    on; the restored model scores what the paused one scored at its last epoch."""
    epoch = paused.user_attrs[CHECKPOINT]["epoch"]
    assert trial.user_attrs[START_EPOCH] == epoch > 0
    assert epoch in trial.user_attrs["resumed_at"]
    for step in range(1, epoch + 1):
        assert trial.intermediate_values[step] == pytest.approx(paused.intermediate_values[step])
    # The weights at resume are the checkpoint's: the same validation score, not a fresh model's.
    assert trial.user_attrs["resumed_value"] == pytest.approx(
        paused.intermediate_values[epoch], rel=1e-5
    )
    assert max(trial.intermediate_values) > epoch  # it trained on, from epoch + 1


# --- Fast -----------------------------------------------------------------------------------


def test_rungs_are_min_resource_times_powers_of_the_reduction_factor(write_study) -> None:
    config = load_study_config(_study(write_study, "r", epochs=20))
    assert rungs(config) == [1, 2, 4, 8, 16]
    assert rungs(config, epochs=4) == [1, 2]


def test_a_budget_is_in_trials_or_in_epochs_not_both(write_study) -> None:
    config = load_study_config(_study(write_study, "b", budget="epochs = 50"))
    assert config.budget_epochs == 50
    both = write_study(
        "b",
        study='name = "b"\nn_trials = 5',
        budget="epochs = 50",
    )
    with pytest.raises(ConfigError, match=r"\[budget\] epochs: give one budget.*got 50$"):
        load_study_config(both)


def test_after_the_epochs_grow_the_best_model_that_trained_to_them_resumes_first(
    write_study,
) -> None:
    """Raised to 8 epochs, a study whose one model trained to its old 2 resumes it, although
    ASHA's rule gives a rung reached by fewer than `reduction_factor` models no place in its
    top; a complete trial that early stopping ended is never resumed, even at a higher epoch."""
    config = load_study_config(_study(write_study, "few", epochs=8))  # rungs 1, 2 and 4
    study = optuna.create_study()

    def add(values: list[float], planned: int, paused_at: int | None = None) -> None:
        state = TrialState.COMPLETE if paused_at is None else TrialState.PRUNED
        attrs: dict[str, object] = {
            "progress": {"epoch": len(values), "epochs": planned, "value": values[-1]},
            CHECKPOINT: {"artifact_id": "a", "epoch": len(values), "values": values, "bytes": 1},
        } | ({"paused_at": paused_at} if paused_at else {})
        study.add_trial(
            optuna.trial.create_trial(
                state=state,
                value=min(values) if paused_at is None else None,
                intermediate_values=dict(enumerate(values, start=1)),
                user_attrs=attrs,
            )
        )

    add([3.0, 2.5], planned=2)  # trained to the study's old epochs, the only one at epoch 2
    add([3.5], planned=2, paused_at=1)
    assert promotable(study, study.get_trials(), config).number == 0

    add([3.1, 2.9, 2.0, 1.3], planned=8)  # early stopping ended it at epoch 4, a rung
    assert promotable(study, study.get_trials(), config).number == 0

    # Two models reached epoch 2, the early-stopped one the better there: no place for either.
    study = optuna.create_study()
    add([3.0, 2.5], planned=2)
    add([3.1, 2.4, 2.0, 1.3], planned=8)
    add([3.5], planned=2, paused_at=1)
    assert promotable(study, study.get_trials(), config) is None


def test_only_the_pause_pruner_lets_a_studys_epochs_grow(write_study) -> None:
    stored = definition(load_study_config(_study(write_study, "g", epochs=4)))
    check(stored, load_study_config(_study(write_study, "g", epochs=8)))  # grows: allowed
    with pytest.raises(DefinitionError, match="training.epochs = 4, but the file now gives 2"):
        check(stored, load_study_config(_study(write_study, "g", epochs=2)))
    median = _study(write_study, "g", epochs=8, pruner='name = "median"')
    with pytest.raises(DefinitionError, match="may grow with the pruner `pause`"):
        check(stored, load_study_config(median))


def test_workers_that_pause_and_workers_that_stop_cannot_share_a_study(write_study) -> None:
    # The two hand out work and count the budget differently (continuations are not models).
    paused = definition(load_study_config(_study(write_study, "p")))
    hyperband = _study(write_study, "p", pruner='name = "hyperband"\nmin_resource = 1')
    with pytest.raises(
        DefinitionError,
        match=r"created with \[pruner\] name = \"pause\".*"
        r"now names 'hyperband'.*give it a new \[study\] name$",
    ):
        check(paused, load_study_config(hyperband))
    stopped = definition(load_study_config(hyperband))
    with pytest.raises(DefinitionError, match=r"created without paused trials"):
        check(stopped, load_study_config(_study(write_study, "p")))
    check(stopped, load_study_config(_study(write_study, "p", pruner='name = "median"')))
    # A study stored before `pauses` (and `rungs`) was part of the definition takes the file's
    # choice.
    older = {k: v for k, v in paused.items() if k not in ("pauses", "rungs")}
    check(older, load_study_config(hyperband))


def test_workers_of_a_paused_study_pause_at_the_same_rungs(write_study) -> None:
    # Where trials pause and which resume: workers that disagreed would pause at other epochs
    # and promote by another share of the models.
    paused = definition(load_study_config(_study(write_study, "r")))
    assert paused["rungs"] == {"min_resource": 1, "reduction_factor": 2}
    other = _study(
        write_study, "r", pruner='name = "pause"\nmin_resource = 1\nreduction_factor = 3'
    )
    with pytest.raises(
        DefinitionError, match=r"rungs\.reduction_factor = 2, but the file now gives 3"
    ):
        check(paused, load_study_config(other))
    # Optuna's pruners stop trials for good: their settings may change between runs.
    hyperband = _study(write_study, "h", pruner='name = "hyperband"\nreduction_factor = 3')
    assert "rungs" not in definition(load_study_config(hyperband))


def test_a_checkpoint_restores_weights_and_optimizer_state(tmp_path: Path) -> None:
    from optuna.artifacts import FileSystemArtifactStore

    from tuner.search import checkpoint

    def model() -> keras.Model:
        m = keras.Sequential([keras.Input((4, 3)), keras.layers.GRU(4), keras.layers.Dense(1)])
        m.compile(optimizer="rmsprop", loss="mse")
        return m

    x, y = np.random.default_rng(0).random((32, 4, 3)), np.random.default_rng(1).random((32, 1))
    trained = model()
    trained.fit(x, y, epochs=2, verbose=0)
    study = optuna.create_study()
    store = FileSystemArtifactStore(tmp_path)
    artifact_id, size = checkpoint.save(trained, store, study.ask())
    assert size > 0
    restored = model()
    checkpoint.restore(restored, store, artifact_id)
    for a, b in zip(trained.optimizer.variables, restored.optimizer.variables, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    # Trained on alike, they stay alike: the optimizer's slots came back too.
    trained.fit(x, y, epochs=1, verbose=0, shuffle=False)
    restored.fit(x, y, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(trained.get_weights(), restored.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert checkpoint.remove(store, artifact_id) and not checkpoint.remove(store, artifact_id)


_CLAIM = textwrap.dedent(
    """
    import sys, time
    import optuna
    from tuner.config import load_study_config
    from tuner.search.schedule import Scheduler
    from tuner.storage import open_storage
    config = load_study_config(sys.argv[1])
    storage = open_storage(sys.argv[2], config.workers)
    study = optuna.load_study(study_name=config.name, storage=storage)
    time.sleep(max(0.0, float(sys.argv[3]) - time.time()))
    trial = Scheduler(config, None).claim(study)
    print(trial.number if trial is not None else "none")
    """
)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_workers_racing_for_a_promotion_resume_it_once(
    write_study, study_dir: Path, database: str, request: pytest.FixtureRequest
) -> None:
    """Four processes claim at the same instant from a study with one promotable paused trial
    and no budget left for new trials: exactly one continuation is made, by one of them. On
    SQLite and on PostgreSQL, whose queue locks differ."""
    path = _study(write_study, "race", budget="n_trials = 3")
    config = load_study_config(path)
    url = (
        f"sqlite:///{study_dir / 'race.db'}"
        if database == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    study = optuna.create_study(study_name="race", storage=url)
    study.set_user_attr("n_trials", 3)
    for number, value in enumerate((1.0, 2.0, 3.0)):
        study.add_trial(
            optuna.trial.create_trial(
                params={},
                distributions={},
                value=value,
                state=TrialState.PRUNED,
                intermediate_values={1: value},
                user_attrs={
                    "model": number,
                    "training_seed": 7 + number,
                    CHECKPOINT: {"artifact_id": f"a{number}", "epoch": 1, "values": [value]},
                },
            )
        )
    at = time.time() + 8  # after every process has imported tuner
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _CLAIM, str(path), url, str(at)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ | {"PYTHONPATH": str(Path(__file__).parents[2])},
        )
        for _ in range(4)
    ]
    said = [p.communicate(timeout=120) for p in racers]
    assert all(p.returncode == 0 for p in racers), said
    claimed = [out.strip() for out, _ in said]
    assert sorted(claimed) == ["3", "none", "none", "none"]
    study = optuna.load_study(study_name="race", storage=url)
    [continuation] = [t for t in study.trials if CONTINUES in t.user_attrs]
    # The best of the three (minimized): the top 3 // 2 = 1 at epoch 1.
    assert continuation.user_attrs[CONTINUES] == 0
    assert continuation.user_attrs["training_seed"] == 7
    assert study.user_attrs[f"{PROMOTED_PREFIX}0"] == continuation.number
    assert continuation.state == TrialState.RUNNING
    assert config.pruner.name == "pause"


# --- Real workers ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_paused_trial_resumes_from_its_checkpoint(
    write_study, study_dir: Path, database: str, request: pytest.FixtureRequest
) -> None:
    path = _study(write_study, "pause")
    url = (
        f"sqlite:///{study_dir / 'pause.db'}"
        if database == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    shown = tuner("run", str(path), "--workers", "2", "--storage", url, cwd=study_dir, timeout=300)
    trials = _trials(url, "pause")
    by_number = {t.number: t for t in trials}
    paused = [t for t in trials if "paused_at" in t.user_attrs]
    assert paused and all(t.state == TrialState.PRUNED for t in paused)
    continuations = [t for t in trials if CONTINUES in t.user_attrs]
    assert continuations, "no paused trial was promoted"
    for c in continuations:
        _resumed_from(c, by_number[c.user_attrs[CONTINUES]])
    # Each promotion resumed once, two workers notwithstanding; six models in all.
    study = optuna.load_study(study_name="pause", storage=url)
    promoted = {k: v for k, v in study.user_attrs.items() if k.startswith(PROMOTED_PREFIX)}
    assert sorted(promoted.values()) == sorted(c.number for c in continuations)
    assert sorted(int(k.removeprefix(PROMOTED_PREFIX)) for k in promoted) == sorted(
        c.user_attrs[CONTINUES] for c in continuations
    )
    assert len({t.user_attrs["model"] for t in trials}) == 6
    # The budget counts models: resumptions are shown apart, not as trials of the budget.
    counts = count(study)
    assert counts.finished == 6 and counts.resumed == len(continuations)
    assert f"trials 6/6 and {len(continuations)} resumed: " in shown.stdout + shown.stderr
    # Once the study is done, only the checkpoints a larger budget would resume first are left.
    space = study.user_attrs[SPACE_ATTR]
    files = [f for f in (study_dir / "artifacts").iterdir() if f.is_file()]
    assert len(files) == space["kept"] >= 1 and space["deleted_bytes"] > 0
    assert sum(f.stat().st_size for f in files) == space["kept_bytes"]


@pytest.mark.slow
def test_a_killed_workers_resumed_trial_resumes_from_its_last_checkpoint(
    write_study, study_dir: Path
) -> None:
    # Rungs at 5, 10 and 20 epochs: a resumed trial trains 5 epochs before its next one.
    path = _study(
        write_study,
        "killed",
        budget="n_trials = 10",
        training="epochs = 40\nbatch_size = 16\nsteps_per_epoch = 60\npatience = 40",
        pruner='name = "pause"\nmin_resource = 5\nreduction_factor = 2',
        workers="heartbeat_interval = 1\ngrace_period = 3",
    )
    url = f"sqlite:///{study_dir / 'killed.db'}"
    workers = worker_processes(path, url, study_dir)
    pids = {f"{os.uname().nodename}:{p.pid}": p for p in workers}
    storage = optuna.storages.RDBStorage(url)
    victim: FrozenTrial | None = None
    try:
        deadline = time.monotonic() + 240
        while victim is None:
            assert time.monotonic() < deadline, "no resumed trial was caught training"
            assert all(p.poll() is None for p in workers), "the study ended before a kill"
            time.sleep(0.1)
            try:
                study = optuna.load_study(study_name="killed", storage=storage)
            except KeyError:
                continue
            for t in study.get_trials(states=(TrialState.RUNNING,)):
                # A resumed trial that trained on from its checkpoint.
                resumed = t.user_attrs.get(START_EPOCH, 0)
                if CONTINUES in t.user_attrs and resumed > 0:
                    if max(t.intermediate_values, default=0) > resumed:
                        worker = pids[t.user_attrs["worker"]]
                        if stopped_while_running(worker, url, t._trial_id):
                            worker.kill()
                            victim, killed = storage.get_trial(t._trial_id), worker
                            break
        [survivor] = [p for p in workers if p is not killed]
        out, err = survivor.communicate(timeout=240)
        assert survivor.returncode == 0, err
    finally:
        for p in workers:
            if p.poll() is None:
                p.kill()
            p.communicate()
    trials = _trials(url, "killed")
    failed = next(t for t in trials if t.number == victim.number)
    assert failed.state == TrialState.FAIL
    [retry] = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    saved = victim.user_attrs[CHECKPOINT]
    # Not from epoch 0: from its model's last checkpoint (where it resumed, or a later one).
    assert retry.user_attrs[START_EPOCH] == saved["epoch"] >= victim.user_attrs[START_EPOCH] > 0
    assert retry.user_attrs["resumed_value"] == pytest.approx(saved["values"][-1], rel=1e-5)
    assert retry.params == victim.params
    assert retry.user_attrs["training_seed"] == victim.user_attrs["training_seed"]
    # The epochs since its last checkpoint, at most a rung's worth: none when the kill came
    # just after it saved one at a rung (CI once caught it there).
    lost = max(victim.intermediate_values) - saved["epoch"]
    assert 0 <= lost <= 5
    assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED)


@pytest.mark.slow
def test_raising_a_finished_studys_epoch_budget_resumes_its_best_paused_trials(
    write_study, study_dir: Path
) -> None:
    url = f"sqlite:///{study_dir / 'raise.db'}"
    first = _study(write_study, "raise", budget="epochs = 12")
    # One worker with a fixed sampler seed: the same models every run, so that the first run
    # leaves paused trials the promotion rule ranks in the top of their rung.
    tuner(
        "worker", str(first), "--storage", url, "--worker-index", "0", cwd=study_dir, timeout=300
    )
    before = _trials(url, "raise")
    used = epochs_used(before)
    assert 12 <= used < 12 + 4  # spent, overshooting by less than one trial's epochs
    study = optuna.load_study(study_name="raise", storage=url)
    assert study.user_attrs["budget_epochs"] == 12
    kept = {t.number for t in before if CHECKPOINT in t.user_attrs} - set(
        study.user_attrs.get("deleted_checkpoints", [])
    )
    assert kept, "a finished study kept no checkpoint to resume"

    second = _study(write_study, "raise", budget="epochs = 36")
    tuner(
        "worker", str(second), "--storage", url, "--worker-index", "0", cwd=study_dir, timeout=300
    )
    after = _trials(url, "raise")
    by_number = {t.number: t for t in after}
    new = [t for t in after if t.number >= len(before)]
    resumed = [t for t in new if t.user_attrs.get(CONTINUES, math.inf) < len(before)]
    assert resumed, "no trial of the first run was resumed"
    for c in resumed:
        paused = by_number[c.user_attrs[CONTINUES]]
        assert paused.number in kept
        _resumed_from(c, paused)
        # One of the best paused at its epoch: no better one of the first run was left behind.
        epoch = paused.user_attrs[CHECKPOINT]["epoch"]
        others = [
            t.user_attrs[CHECKPOINT]["values"][-1]
            for t in before
            if t.user_attrs.get("paused_at") == epoch and t.number in kept
        ]
        assert paused.intermediate_values[epoch] <= min(others)
    assert 36 <= epochs_used(after) < 36 + 4


@pytest.mark.slow
def test_raising_a_finished_studys_epochs_trains_its_best_model_on_to_them(
    write_study, study_dir: Path
) -> None:
    """The study's `[training] epochs` raised from 2 to 8: its best complete model resumes from
    its last checkpoint and trains on to 8, although it is alone at each new rung (ASHA alone
    would pause it at the first, for want of others there, and spend the budget on new models)."""
    url = f"sqlite:///{study_dir / 'grow.db'}"
    first = _study(write_study, "grow", budget="epochs = 6", epochs=2)
    tuner(
        "worker", str(first), "--storage", url, "--worker-index", "0", cwd=study_dir, timeout=300
    )
    before = _trials(url, "grow")
    complete = [t for t in before if t.state == TrialState.COMPLETE]
    assert complete, "the first run completed no trial"
    best = min(complete, key=lambda t: t.intermediate_values[2])

    # Budget for one more epoch: the first piece of new work is all the second run does.
    used = epochs_used(before)
    second = _study(write_study, "grow", budget=f"epochs = {used + 1}", epochs=8)
    tuner(
        "worker", str(second), "--storage", url, "--worker-index", "0", cwd=study_dir, timeout=300
    )
    after = _trials(url, "grow")
    [resumed] = after[len(before) :]
    assert resumed.user_attrs[CONTINUES] == best.number
    assert resumed.user_attrs["extends"] == 2
    _resumed_from(resumed, best)
    assert resumed.state == TrialState.COMPLETE
    assert max(resumed.intermediate_values) == 8  # not paused at the new rung, 4
    assert "paused_at" not in resumed.user_attrs
