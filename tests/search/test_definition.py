from __future__ import annotations

import dataclasses
import signal
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from conftest import TINY_SPACE, make_series

from tuner.cli import cli
from tuner.config import load_study_config
from tuner.search.definition import DEFINITION_ATTR, EXECUTION_DETAILS, DefinitionError, definition
from tuner.search.study import open_study, stored_config
from tuner.storage import open_storage


def _create(path: Path, url: str) -> optuna.Study:
    config = load_study_config(path)
    return open_study(config, open_storage(url, config.workers), lambda: {})


def _state(url: str) -> tuple[dict[str, object], list[tuple[int, str, dict[str, object]]]]:
    study = optuna.load_study(study_name="tiny", storage=url)
    return study.user_attrs, [(t.number, t.state.name, t.params) for t in study.trials]


CHANGES = {
    "data file": (
        {"data_file": "other.csv"},
        r"data\.file\.(bytes|sha256) = \"?\w+\"?, but the file now gives \"?\w+\"?",
    ),
    "metric": (
        {"study": 'name = "tiny"\nmetric = "val_mse"'},
        r'metric = "val_mae", but the file now gives "val_mse"',
    ),
    "space": (
        {"space": TINY_SPACE.replace("high = 64", "high = 32").replace("[space]", "")},
        r"space\.units\.high = 64, but the file now gives 32",
    ),
    "training": (
        {"training": "epochs = 4\nbatch_size = 16\nsteps_per_epoch = 3\npatience = 2"},
        r"training\.epochs = 3, but the file now gives 4",
    ),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_changed_study_file_is_refused_naming_the_field_and_nothing_is_written(
    write_study, study_dir: Path, storage_url: str, change: str
) -> None:
    (make_series(seed=1).assign(temp=lambda f: f.temp * 1000)).to_csv(
        study_dir / "other.csv", index=False
    )
    _create(write_study(), storage_url)
    before = _state(storage_url)
    overrides, message = CHANGES[change]
    changed = write_study(filename="changed.toml", **overrides)
    with pytest.raises(DefinitionError, match=message) as info:
        _create(changed, storage_url)
    assert str(info.value).startswith(f"{changed}: study 'tiny' was created with ")
    assert str(info.value).endswith("to run the changed file, give it a new [study] name")
    handlers = {
        sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    commands = (
        ["run", str(changed)],
        ["worker", str(changed)],
        ["retrain", str(changed)],
        ["predict", str(changed), "--data", str(study_dir / "series.csv")],
        ["ablate", str(changed)],
        ["worker", str(changed), "--ablation"],
    )
    for command in commands:
        result = CliRunner().invoke(cli, [*command, "--storage", storage_url])
        for sig, handler in handlers.items():  # `tuner worker` turns signals into a stop flag
            signal.signal(sig, handler)
        assert result.exit_code == 2, result.output
        assert len(result.stderr.splitlines()) == 1 and "give it a new [study] name" in (
            result.stderr
        )
    assert _state(storage_url) == before


def test_how_a_study_runs_may_change_between_runs(write_study, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    first = _create(write_study(), url)
    stored = first.user_attrs[DEFINITION_ATTR]
    again = write_study(
        filename="again.toml",
        study='name = "tiny"\nmetric = "val_mae"\nn_trials = 40',
        sampler='name = "random"\nseed = 7',
        pruner='name = "none"',
        training="epochs = 3\nbatch_size = 16\nsteps_per_epoch = 3\npatience = 2\n"
        "jit_compile = true",
        workers="heartbeat_interval = 3\ngrace_period = 10\nmax_retry = 1",
    )
    study = _create(again, url)
    assert study.user_attrs[DEFINITION_ATTR] == stored
    # Models are built from the stored definition, run with the file's execution details.
    built = stored_config(study, load_study_config(again))
    assert built.training.jit_compile is True
    assert built.space == load_study_config(again).space
    assert built.data == load_study_config(again).data
    assert "jit_compile" in EXECUTION_DETAILS and "jit_compile" not in stored["training"]


def test_the_stored_definition_rebuilds_the_configuration(write_study, tmp_path: Path) -> None:
    config = load_study_config(write_study())
    study = _create(config.path, f"sqlite:///{tmp_path / 'tuner.db'}")
    assert stored_config(study, config) == config
    assert definition(config) == study.user_attrs[DEFINITION_ATTR]


def test_a_study_made_before_definitions_were_stored_takes_the_file_once(
    write_study, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    config = load_study_config(write_study())
    old = optuna.create_study(study_name="tiny", storage=url)
    old.set_user_attr("ready", True)
    said: list[str] = []
    study = open_study(config, open_storage(url, config.workers), dict, on_skip=said.append)
    assert study.user_attrs[DEFINITION_ATTR] == definition(config)
    assert said == [
        f"study 'tiny' was created before tuner stored study definitions: {config.path} is "
        "stored as its definition now, and later runs must match it"
    ]
    changed = dataclasses.replace(config, metric="val_mse")
    with pytest.raises(DefinitionError, match=r'metric = "val_mae"'):
        open_study(changed, open_storage(url, config.workers), dict)


def test_a_field_added_to_the_definition_later_takes_the_files_value(
    write_study, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    config = load_study_config(write_study())
    study = _create(config.path, url)
    older = dict(study.user_attrs[DEFINITION_ATTR])
    older["training"] = {k: v for k, v in older["training"].items() if k != "patience"}
    study.set_user_attr(DEFINITION_ATTR, older)
    again = _create(config.path, url)  # a definition stored before `patience` was in it
    assert stored_config(again, config).training.patience == config.training.patience
