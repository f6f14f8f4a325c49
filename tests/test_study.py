from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner

from tuner.cli import cli
from tuner.config import load_study_config
from tuner.errors import StorageError
from tuner.storage import open_storage
from tuner.study import delete, list_studies, load_existing, make_pruner


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
    listed = {s.name: s for s in list_studies(open_storage(storage_url, must_exist=True))}
    done = optuna.load_study(study_name="done", storage=storage_url)
    assert listed["done"].counts.complete == 3 and listed["done"].counts.waiting == 1
    assert (listed["done"].best_trial, listed["done"].best_value) == (
        done.best_trial.number,
        done.best_value,
    )
    assert listed["done"].metric == "val_mae"
    assert listed["empty"].best_value is None and listed["empty"].direction == "maximize"

    result = CliRunner().invoke(cli, ["studies", "--storage", storage_url, "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = {r["study"]: r for r in json.loads(result.output)}
    assert rows["done"]["complete"] == 3 and rows["done"]["best_value"] == done.best_value
    table = CliRunner().invoke(cli, ["studies", "--storage", storage_url]).output
    assert table.splitlines()[0].split()[:3] == ["study", "direction", "metric"]
    assert any(line.split()[0] == "empty" for line in table.splitlines()[1:])


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
    args = ["delete-study", "done", "--storage", storage_url, "--artifacts", str(artifacts)]

    answer_no = CliRunner().invoke(cli, args, input="n\n")
    assert answer_no.exit_code == 1
    assert "Delete study 'done' and its 4 trials from sqlite:///" in answer_no.output
    assert "done" in optuna.get_all_study_names(storage_url)
    assert (artifacts / artifact).exists()

    answer_yes = CliRunner().invoke(cli, args, input="y\n")
    assert answer_yes.exit_code == 0, answer_yes.output
    assert "deleted study 'done': 4 trials, 1 artifact files" in answer_yes.output
    assert optuna.get_all_study_names(storage_url) == ["empty"]
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


def test_the_largest_seed_plus_a_large_worker_index_still_makes_a_sampler(write_study) -> None:
    # Each worker's sampler seed is the study's plus the worker's index: it wraps around
    # rather than passing numpy's largest seed, 2**32 - 1.
    path = write_study(sampler="seed = 4294967295")
    config = load_study_config(path)
    from tuner.study import make_sampler

    for index in (0, 1, 2**31 - 1):
        study = optuna.create_study(sampler=make_sampler(config, worker_index=index))
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
        assert len(study.trials) == 2
