from __future__ import annotations

import json
import time
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner

from tuner.cli import cli
from tuner.config import load_study_config
from tuner.errors import StorageError
from tuner.search.study import delete, list_studies, load_existing, make_pruner, open_study
from tuner.storage import open_storage


@pytest.fixture
def storage_url(tmp_path: Path) -> str:
    """Two real studies in a SQLite file: one with results, one with nothing finished yet."""
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    storage = open_storage(url)
    done = optuna.create_study(study_name="done", storage=storage)
    done.set_user_attr("metric", "val_mae")
    done.optimize(lambda t: t.suggest_float("x", 0, 1) + 1, n_trials=3)
    done.enqueue_trial({"x": 0.5})
    optuna.create_study(study_name="empty", storage=storage, direction="maximize")
    return url


def test_studies_lists_counts_and_best_values(storage_url: str) -> None:
    ablation = optuna.create_study(study_name="done/ablation", storage=storage_url)
    ablation.set_user_attr("ablation_for", "done")
    ablation.set_user_attr("metric", "val_mae")
    ablation.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    listed = {s.name: s for s in list_studies(open_storage(storage_url, must_exist=True))}
    done = optuna.load_study(study_name="done", storage=storage_url)
    assert listed["done"].counts.complete == 3 and listed["done"].counts.waiting == 1
    assert (listed["done"].best_trial, listed["done"].best_value) == (
        done.best_trial.number,
        done.best_value,
    )
    assert listed["done"].metric == "val_mae"
    assert listed["empty"].best_value is None and listed["empty"].direction == "maximize"
    # An ablation's runs are test scores of seeds, and the best of them one lucky seed: no best.
    ablation = listed["done/ablation"]
    assert ablation.counts.complete == 2 and ablation.metric == "test mae"
    assert (ablation.best_trial, ablation.best_value) == (None, None)

    result = CliRunner().invoke(cli, ["studies", "--storage", storage_url, "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = {r["study"]: r for r in json.loads(result.output)}
    assert rows["done"]["complete"] == 3 and rows["done"]["best_value"] == done.best_value
    table = CliRunner().invoke(cli, ["studies", "--storage", storage_url]).output
    assert table.splitlines()[0].split()[:3] == ["study", "direction", "metric"]
    assert any(line.split()[0] == "empty" for line in table.splitlines()[1:])
    assert "no error rate" in table.splitlines()[-1]


def test_studies_on_a_missing_file_gets_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["studies", "--storage", f"sqlite:///{tmp_path}/none.db"])
    assert result.exit_code == 2
    assert (
        result.stderr.startswith("Error: storage sqlite:///")
        and "no such SQLite file" in result.stderr
    )
    assert not (tmp_path / "none.db").exists()


def test_delete_study_asks_first_and_removes_the_study_and_its_artifacts(
    storage_url: str, tmp_path: Path
) -> None:
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    model = tmp_path / "model.keras"
    model.write_bytes(b"weights")
    study = optuna.load_study(study_name="done", storage=storage_url)
    store = optuna.artifacts.FileSystemArtifactStore(artifacts)
    artifact = optuna.artifacts.upload_artifact(
        artifact_store=store, file_path=str(model), study_or_trial=study
    )
    # Its ablation, a companion study, goes with it; another study's stays.
    for name in ("done/ablation", "empty/ablation"):
        optuna.create_study(study_name=name, storage=storage_url)
    args = ["delete-study", "done", "--storage", storage_url, "--artifacts", str(artifacts)]

    answer_no = CliRunner().invoke(cli, args, input="n\n")
    assert answer_no.exit_code == 1
    assert "Delete study 'done' and its 4 trials from sqlite:///" in answer_no.output
    assert {"done", "done/ablation"} <= set(optuna.get_all_study_names(storage_url))
    assert (artifacts / artifact).exists()

    answer_yes = CliRunner().invoke(cli, args, input="y\n")
    assert answer_yes.exit_code == 0, answer_yes.output
    assert "deleted study 'done': 4 trials, 1 artifact files" in answer_yes.output
    assert sorted(optuna.get_all_study_names(storage_url)) == ["empty", "empty/ablation"]
    assert not (artifacts / artifact).exists()


def test_delete_study_with_yes_does_not_ask(storage_url: str) -> None:
    result = CliRunner().invoke(cli, ["delete-study", "empty", "--storage", storage_url, "--yes"])
    assert result.exit_code == 0, result.output
    assert "Delete study" not in result.output
    assert optuna.get_all_study_names(storage_url) == ["done"]


def test_deleting_an_unknown_study_gets_one_line_and_exit_2(storage_url: str) -> None:
    result = CliRunner().invoke(cli, ["delete-study", "nobody", "--storage", storage_url, "--yes"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == ["Error: no study named 'nobody' in this storage"]
    storage = open_storage(storage_url, must_exist=True)
    with pytest.raises(StorageError, match=r"^no study named 'nobody' in this storage$"):
        delete(load_existing("nobody", storage), storage, None)
    assert sorted(optuna.get_all_study_names(storage_url)) == ["done", "empty"]


def test_successive_halving_stops_a_trial_below_the_best_at_its_first_rung(write_study) -> None:
    config = load_study_config(
        write_study(pruner='name = "successive-halving"\nmin_resource = 1\nreduction_factor = 2')
    )
    study = optuna.create_study(pruner=make_pruner(config))
    verdicts = []
    for value in (1.0, 0.5, 2.0):  # minimized: the third is the worst at epoch 1
        trial = study.ask()
        trial.report(value, step=1)
        verdicts.append(trial.should_prune())
        study.tell(trial, value)
    assert verdicts == [False, False, True]


# --- a resumed study proposes new parameters ---------------------------------------------------


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_a_resumed_study_does_not_repeat_its_first_runs_parameters(
    write_study, tmp_path: Path, sampler: str
) -> None:
    from tuner.search.queue import claim, set_budget
    from tuner.search.space import suggest
    from tuner.search.study import open_study

    config = load_study_config(
        write_study(
            study='name = "tiny"\nmetric = "val_mae"\nn_trials = 6\nseed_configs = false',
            # TPE's random start-up covers both runs: it is what proposed the same trials again.
            sampler=f'name = "{sampler}"\nseed = 0\nn_startup_trials = 20',
        )
    )
    url = f"sqlite:///{tmp_path / 'tuner.db'}"

    def run(n_trials: int) -> set[tuple[tuple[str, object], ...]]:
        study = open_study(config, open_storage(url, config.workers), dict, n_trials=n_trials)
        set_budget(study, n_trials)
        proposed = set()
        while (trial := claim(study)) is not None:
            suggest(trial, config.space)
            study.tell(trial, 1.0)
            proposed.add(tuple(sorted(trial.params.items())))
        return proposed

    first = run(6)
    second = run(12)
    assert len(first) == len(second) == 6
    assert not first & second


# --- set-up that cannot wedge ------------------------------------------------------------------


class _Died(BaseException):
    """The creator of a study dies here (nothing after it runs, as with SIGKILL)."""


def _writes_until_death(monkeypatch, death: int | None) -> list[str]:
    """Make the `death`-th write of a study's set-up (counting from 0) kill its writer."""
    writes: list[str] = []
    for name in ("set_user_attr", "enqueue_trial", "set_metric_names"):
        real = getattr(optuna.Study, name)

        def write(self, *args, _real=real, _name=name, **kwargs):  # type: ignore[no-untyped-def]
            if death is not None and len(writes) == death:
                raise _Died
            writes.append(_name)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(optuna.Study, name, write)
    return writes


def _outcome(study: optuna.Study) -> tuple[object, ...]:
    attrs = {k: v for k, v in study.user_attrs.items()}
    trials = sorted(
        (t.state.name, str(t.params), str(t.user_attrs)) for t in study.get_trials(deepcopy=False)
    )
    return attrs, trials, study.metric_names


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh storage, once on SQLite and once on PostgreSQL (`storage_url` is taken here)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    return str(request.getfixturevalue("postgres_url"))


def test_a_set_up_cut_short_at_any_write_is_finished_by_whoever_comes_next(
    write_study, fresh_url: str, monkeypatch
) -> None:
    storage_url = fresh_url
    import dataclasses

    from tuner.search.study import open_study

    config = load_study_config(write_study())
    storage = open_storage(storage_url, config.workers)
    with monkeypatch.context() as m:
        writes = _writes_until_death(m, None)
        clean = _outcome(open_study(config, storage, dict))
    assert "enqueue_trial" in writes and len(writes) > 8
    for death in range(len(writes)):
        named = dataclasses.replace(config, name=f"cut-{death}")
        with monkeypatch.context() as m:
            _writes_until_death(m, death)
            with pytest.raises(_Died):
                open_study(named, storage, dict)
        assert (
            optuna.load_study(study_name=named.name, storage=storage).user_attrs.get("ready")
            is None
        )
        started = time.monotonic()
        study = open_study(named, open_storage(storage_url, config.workers), dict)
        assert time.monotonic() - started < 30  # finished, not waited on
        assert _outcome(study) == clean, f"cut short at write {death} ({writes[death]})"


@pytest.mark.parametrize("statement", ["INSERT INTO studies ", "INSERT INTO trials "])
def test_a_set_up_whose_commit_answer_was_lost_is_finished(
    write_study, postgres_url: str, statement: str
) -> None:
    from netfaults import Proxy, lose_commit_answer
    from sqlalchemy.engine import make_url

    from tuner.search.study import open_study

    config = load_study_config(write_study())
    parsed = make_url(postgres_url)
    proxy = Proxy(parsed.host or "127.0.0.1", parsed.port or 5432)
    try:
        url = parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        storage = open_storage(url, config.workers)
        lose_commit_answer(storage.engine, proxy, statement)
        open_study(config, storage, dict)
    finally:
        proxy.down()
    observed = optuna.load_study(study_name="tiny", storage=postgres_url)
    assert observed.user_attrs["ready"] is True
    seeds = [t.user_attrs.get("seed_config") for t in observed.trials]
    queued = set(seeds) - {None}
    assert len(seeds) == 6 and len(queued) == len(observed.user_attrs["seed_configs"]) > 0
    assert optuna.get_all_study_names(postgres_url) == ["tiny"]


_KILLED_CREATOR = """
import os, signal, sys
import optuna
from tuner.config import load_study_config
from tuner.storage import open_storage
from tuner.search import study as tuner_study

config = load_study_config(sys.argv[1])
real = optuna.Study.enqueue_trial

def enqueue_then_die(self, *args, **kwargs):
    real(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)  # holding the set-up lock, one seed queued

optuna.Study.enqueue_trial = enqueue_then_die
tuner_study.open_study(config, open_storage(sys.argv[2], config.workers), dict)
"""


@pytest.mark.slow
def test_a_creator_killed_holding_the_set_up_lock_does_not_wedge_the_study(
    write_study, fresh_url: str, study_dir: Path
) -> None:
    import signal
    import subprocess
    import sys

    from tuner.search.study import open_study

    path = write_study()
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_CREATOR, str(path), fresh_url],
        cwd=study_dir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    [queued] = optuna.load_study(study_name="tiny", storage=fresh_url).trials
    config = load_study_config(path)
    started = time.monotonic()
    study = open_study(config, open_storage(fresh_url, config.workers), dict)
    assert time.monotonic() - started < 60
    assert study.user_attrs["ready"] is True
    seeds = [t.user_attrs.get("seed_config") for t in study.trials]
    assert seeds[0] == queued.user_attrs["seed_config"]
    assert len(seeds) == 6 and len(set(seeds) - {None}) == len(study.user_attrs["seed_configs"])


def test_the_largest_seed_plus_a_large_worker_index_still_makes_a_sampler(write_study) -> None:
    # Each worker's sampler seed is the study's plus the worker's index: it wraps around
    # rather than passing numpy's largest seed, 2**32 - 1.
    path = write_study(sampler="seed = 4294967295")
    config = load_study_config(path)
    from tuner.search.study import make_sampler

    for index in (0, 1, 2**31 - 1):
        study = optuna.create_study(sampler=make_sampler(config, worker_index=index))
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
        assert len(study.trials) == 2


def test_the_budget_is_written_under_the_set_up_lock(write_study, study_dir, monkeypatch) -> None:
    # `tuner run --trials 50` creates a study while a worker on another machine (the file's
    # n_trials, 6) finds it not set up yet: whoever sets it up writes the budget with the rest,
    # under the set-up lock, and the other leaves it alone.
    import threading

    from tuner.search.queue import budget

    config = load_study_config(write_study("race"))
    url = f"sqlite:///{study_dir / 'race.db'}"
    other: list[threading.Thread] = []
    set_user_attr = optuna.Study.set_user_attr

    def meanwhile(study: optuna.Study, key: str, value: object) -> None:
        if key == "ready" and not other:
            # The other worker arrives before the study is marked ready.
            worker = threading.Thread(
                target=open_study, args=(config, open_storage(url, config.workers), dict)
            )
            other.append(worker)
            worker.start()
            worker.join(timeout=3)  # it waits for the lock if this one holds it
        set_user_attr(study, key, value)

    monkeypatch.setattr(optuna.Study, "set_user_attr", meanwhile)
    study = open_study(config, open_storage(url, config.workers), dict, n_trials=50)
    other[0].join(timeout=60)
    assert budget(study) == 50
