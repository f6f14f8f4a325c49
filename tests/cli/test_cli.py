from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import tuner

from tuner.cli import cli
from tuner.data import datasets

COMMANDS = sorted(cli.commands)


@pytest.fixture
def runner(monkeypatch, study_dir: Path) -> CliRunner:
    monkeypatch.chdir(study_dir)
    monkeypatch.delenv("TUNER_STORAGE", raising=False)
    return CliRunner()


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(runner: CliRunner, command: str) -> None:
    result = runner.invoke(cli, [command, "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output and f"tuner {command}" in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_example_parses_with_the_commands_options(command: str) -> None:
    import shlex

    import click

    examples = [
        line.strip()
        for line in (cli.commands[command].help or "").split("Example:")[1].splitlines()
        if line.strip().startswith("tuner ")
    ]
    assert examples
    for example in examples:
        # What the shell does with the output (`> trials.csv`) is not the command's.
        args = shlex.split(re.split(r"\s[>|]\s", example)[0])[1:]
        # Parsing alone: an option or argument the command lacks raises a usage error.
        with cli.make_context("tuner", args, resilient_parsing=False) as ctx:
            sub = cli.commands[args[0]]
            with sub.make_context(args[0], args[1:], parent=ctx) as inner:
                assert isinstance(inner, click.Context)


def test_the_top_level_help_lists_the_commands(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "worker", "best-trial", "trials"):
        assert command in result.output


def errors_in(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize("command", ["run", "worker", "best-trial", "trials"])
def test_a_bad_study_file_gets_one_line_exit_2_and_writes_nothing(
    runner: CliRunner, write_study, study_dir: Path, command: str
) -> None:
    path = write_study(training="epochs = -1")
    result = runner.invoke(cli, [command, str(path)])
    assert result.exit_code == 2
    assert errors_in(result) == [f"Error: {path}: [training] epochs: must be > 0, got -1"]
    assert not (study_dir / "tuner.db").exists()


def test_bad_data_gets_one_line_before_anything_is_written(
    runner: CliRunner, write_study, study_dir: Path
) -> None:
    path = write_study(data='path = "series.csv"\ntarget = "rain"\nlookback = 4\ndelay = 1')
    result = runner.invoke(cli, ["run", str(path)])
    assert result.exit_code == 2
    assert len(errors_in(result)) == 1
    assert "column 'rain' not found" in result.stderr
    assert not (study_dir / "tuner.db").exists()


def _empty(folder: Path) -> str:
    (folder / "empty.csv").write_text("")
    return 'path = "empty.csv"\ntarget = "temp"\nlookback = 4\ndelay = 1'


def _text_column(folder: Path) -> str:
    frame = pd.read_csv(folder / "series.csv").assign(temp=lambda f: f["temp"].astype(str) + "C")
    frame.to_csv(folder / "text.csv", index=False)
    return 'path = "text.csv"\ntarget = "temp"\nlookback = 4\ndelay = 1'


def _gap(folder: Path) -> str:
    pd.read_csv(folder / "series.csv").drop(index=range(10, 16)).to_csv(
        folder / "gap.csv", index=False
    )
    return (
        'path = "gap.csv"\ntarget = "temp"\ntimestamp = "time"\nfrequency = "1h"\nmax_gap = 2\n'
        "lookback = 4\ndelay = 1"
    )


def _one_class(folder: Path) -> str:
    pd.DataFrame({"text": ["fine", "good", "ok"] * 5, "label": "yes"}).to_csv(
        folder / "one.csv", index=False
    )
    return 'task = "text-classification"\npath = "one.csv"\ntext = "text"\nlabel = "label"'


def _zero_length(folder: Path) -> str:
    np.savez(folder / "seq.npz", values=np.ones(5), lengths=[2, 3, 0], labels=[0, 1, 0])
    return 'task = "sequence-classification"\npath = "seq.npz"'


def _long_lookback(folder: Path) -> str:
    return 'path = "series.csv"\ntarget = "temp"\nlookback = 700\ndelay = 1'


def _jena_offline(folder: Path) -> str:
    return 'dataset = "jena-climate"\ntarget = "T (degC)"\nlookback = 4\ndelay = 1'


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_empty, r"empty.csv: the file is empty"),
        (_text_column, r"text.csv: column 'temp' must be numeric, got dtype"),
        (_gap, r"gap.csv: column 'temp' has a gap of 6 missing rows from .* longer than max_gap"),
        (_one_class, r"one.csv: label column 'label' has one class \('yes'\)"),
        (_zero_length, r"seq.npz: sequence 2 has length 0"),
        (_long_lookback, r"series.csv: one window needs 701 rows .* the series has only 600"),
        (
            _jena_offline,
            r"jena-climate: cannot download http://127.0.0.1:9/j.zip \(.*\); download",
        ),
    ],
)
def test_bad_data_of_every_kind_gets_one_line_exit_2_before_any_trial(
    runner: CliRunner, write_study, study_dir: Path, monkeypatch, data, message
) -> None:
    monkeypatch.setattr(datasets, "JENA_URL", "http://127.0.0.1:9/j.zip")
    monkeypatch.setenv("TUNER_CACHE_DIR", str(study_dir / "cache"))
    path = write_study(study='name = "bad"', data=data(study_dir))
    result = runner.invoke(cli, ["run", str(path)])
    assert result.exit_code == 2
    (line,) = errors_in(result)
    assert re.match(r"Error: .*" + message, line), line
    assert not (study_dir / "tuner.db").exists()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("bogus", "Error: the storage URL is not a SQLAlchemy URL"),
        ("oracle+nope://u@h/d", "Error: storage URL oracle+nope://u@h/d: unknown database"),
        (
            "postgresql://tuner:hunter2@127.0.0.1:1/tuner",
            "Error: storage postgresql://tuner:***@127.0.0.1:1/tuner: ",
        ),
    ],
)
def test_a_bad_storage_url_gets_one_line_without_its_password(
    runner: CliRunner, write_study, url: str, message: str
) -> None:
    result = runner.invoke(cli, ["run", str(write_study()), "--storage", url])
    assert result.exit_code == 2
    (line,) = errors_in(result)
    assert line.startswith(message)
    assert "hunter2" not in result.output + result.stderr


def test_the_storage_url_can_come_from_the_environment(runner: CliRunner, write_study) -> None:
    result = runner.invoke(
        cli, ["best-trial", str(write_study())], env={"TUNER_STORAGE": "sqlite:///elsewhere.db"}
    )
    assert result.exit_code == 2
    assert "sqlite:///elsewhere.db: no such SQLite file" in result.stderr


def test_an_unknown_study_is_named(runner: CliRunner, write_study, finished_study) -> None:
    result = runner.invoke(
        cli, ["best-trial", str(write_study("nobody")), "--storage", finished_study["url"]]
    )
    assert result.exit_code == 2
    assert errors_in(result) == ["Error: no study named 'nobody' in this storage"]


def test_a_bad_flag_is_named(runner: CliRunner, write_study) -> None:
    result = runner.invoke(cli, ["run", str(write_study()), "--workers", "0"])
    assert result.exit_code == 2
    assert "--workers" in result.stderr


# The commands against a real study, run once for the session with two worker processes.


def test_run_shows_progress_and_the_best_trial_against_the_baseline(finished_study) -> None:
    out = finished_study["stdout"]
    assert "trials 6/6:" in out
    assert "best trial" in out
    assert "baseline last_value: val_mae = " in out
    assert "seed configuration gru: val_mae = " in out


def test_best_trial_matches_optuna_and_shows_the_baseline(finished_study) -> None:
    study = optuna.load_study(study_name="finished", storage=finished_study["url"])
    result = CliRunner().invoke(
        cli,
        [
            "best-trial",
            str(finished_study["study"]),
            "--storage",
            finished_study["url"],
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    best = summary["best_trial"]
    assert (best["number"], best["value"]) == (study.best_trial.number, study.best_value)
    assert best["params"] == study.best_trial.params
    assert best["epochs"] >= best["best_epoch"] >= 1 and best["train_seconds"] > 0
    baseline = summary["baselines"]["last_value"]
    assert baseline["value"] == study.user_attrs["baselines"]["last_value"] > 0
    expected = (baseline["value"] - study.best_value) / baseline["value"]
    assert baseline["improvement"] == pytest.approx(expected)
    text = (
        CliRunner()
        .invoke(
            cli, ["best-trial", str(finished_study["study"]), "--storage", finished_study["url"]]
        )
        .output
    )
    assert f"best trial {study.best_trial.number}" in text
    assert f"val_mae = {study.best_value:.4g}" in text


@pytest.mark.parametrize("fmt", ["csv", "json", "table"])
def test_trials_lists_every_trial(finished_study, fmt: str) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "trials",
            str(finished_study["study"]),
            "--storage",
            finished_study["url"],
            "--format",
            fmt,
        ],
    )
    assert result.exit_code == 0, result.output
    if fmt == "csv":
        frame = pd.read_csv(StringIO(result.output))
    elif fmt == "json":
        frame = pd.DataFrame(json.loads(result.output))
    else:
        # The value column carries the metric's name (set on the study).
        assert result.output.splitlines()[0].split()[:3] == ["number", "state", "value_val_mae"]
        return
    assert list(frame["number"]) == list(range(6))
    for column in (
        "value_val_mae",
        "params_cell",
        "params_units_1",
        "epochs",
        "train_seconds",
        "n_params",
    ):
        assert column in frame.columns
    assert frame["state"].isin(["COMPLETE", "PRUNED"]).all()


def test_stock_optuna_reads_the_study_with_nothing_of_ours(finished_study) -> None:
    code = (
        "import optuna, sys\n"
        "assert 'tuner' not in sys.modules\n"
        f"s = optuna.load_study(study_name='finished', storage={finished_study['url']!r})\n"
        "print(len(s.trials), sorted(s.best_trial.params))\n"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, cwd="/"
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("6 [")
    assert "'cell'" in out and "'units_1'" in out
    optuna_cli = Path(sys.executable).parent / "optuna"
    listing = subprocess.run(
        [str(optuna_cli), "studies", "--storage", finished_study["url"]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "finished" in listing


def test_the_tuner_command_runs_as_a_subprocess(tmp_path: Path) -> None:
    result = tuner("--help", cwd=tmp_path)
    assert "Usage: tuner" in result.stdout


# --- Bad inputs found by trying the tool as a new user would (issue 15) ------------------------


def _no_word(folder: Path) -> str:
    texts = ["!!!", "...", "  ", "?!", "-- --", "<>"] * 5
    pd.DataFrame({"text": texts, "label": ["a", "b"] * 15}).to_csv(
        folder / "noword.csv", index=False
    )
    return 'task = "text-classification"\npath = "noword.csv"\ntext = "text"\nlabel = "label"'


def _sparse(folder: Path) -> str:
    with open(folder / "sparse.csv", "wb") as f:
        f.truncate(2 * 2**30)  # 2 GB of holes: no disk used, nothing but NUL bytes to read
    return 'path = "sparse.csv"\ntarget = "temp"\nlookback = 4\ndelay = 1'


def _binary(folder: Path) -> str:
    (folder / "binary.csv").write_bytes(b"time,temp\n" + bytes(range(256)) * 100)
    return 'path = "binary.csv"\ntarget = "temp"\nlookback = 4\ndelay = 1'


def _one_long_line(folder: Path) -> str:
    (folder / "long.csv").write_bytes(b"x" * (5 * 2**20))
    return 'path = "long.csv"\ntarget = "temp"\nlookback = 4\ndelay = 1'


def _symlink_loop(folder: Path) -> str:
    (folder / "a.csv").symlink_to(folder / "b.csv")
    (folder / "b.csv").symlink_to(folder / "a.csv")
    return 'path = "a.csv"\ntarget = "temp"\nlookback = 4\ndelay = 1'


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sampler": "seed = -1"}, r"\[sampler\] seed: must be in \[0, 4294967295\], got -1$"),
        ({"sampler": "seed = 4294967296"}, r"\[sampler\] seed: must be in \[0, 4294967295\]"),
        (
            {"space": "dropout = { low = 0.0, high = 0.5, step = nan }"},
            r"\[space\] dropout.step: must be a finite number, got nan$",
        ),
        (
            {"training": "batch_size = 99999999999999999999999"},
            r"\[training\] batch_size: must be a 64-bit integer",
        ),
        ({"training": "batch_size = 10000000000"}, r"\[training\] batch_size: must be in "),
        ({"study": f'name = "{"n" * 10_000}"'}, r"\[study\] name: must be at most 512 char"),
        ({"data": _symlink_loop}, r"\[data\] path: cannot be followed \(.*loop"),
        (
            {"study": 'name = "t"', "data": _no_word},
            r"noword.csv: text column 'text': no training text has a word",
        ),
        ({"data": _sparse}, r"sparse.csv: not a text table: .*NUL bytes"),
        ({"data": _binary}, r"binary.csv: not a text table: .*NUL bytes"),
        ({"data": _one_long_line}, r"long.csv: not a text table: no line break in its first 4"),
    ],
)
def test_each_bad_input_gets_one_line_exit_2_and_writes_nothing(
    runner: CliRunner, write_study, study_dir: Path, monkeypatch, overrides, message
) -> None:
    monkeypatch.setenv("TUNER_CACHE_DIR", str(study_dir / "cache"))
    overrides = {k: v(study_dir) if callable(v) else v for k, v in overrides.items()}
    path = write_study(**overrides)
    started = time.monotonic()
    result = runner.invoke(cli, ["run", str(path)])
    assert result.exit_code == 2, result.output
    (line,) = errors_in(result)
    assert re.search(message, line), line
    assert time.monotonic() - started < 30  # the 2 GB sparse file: read 4 MB of it, not 2 GB
    assert not (study_dir / "tuner.db").exists()
    assert not (study_dir / "cache").exists() or not any((study_dir / "cache").iterdir())


def test_a_study_name_too_long_for_postgresql_creates_no_table(
    runner: CliRunner, write_study, postgres_url: str
) -> None:
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    path = write_study(study=f'name = "{"n" * 10_000}"')
    result = runner.invoke(cli, ["run", str(path), "--storage", postgres_url])
    assert result.exit_code == 2
    assert len(errors_in(result)) == 1
    engine = sqlalchemy.create_engine(postgres_url, poolclass=NullPool)
    assert sqlalchemy.inspect(engine).get_table_names() == []
    engine.dispose()


def test_a_study_file_that_is_a_folder_gets_one_line(runner: CliRunner, study_dir: Path) -> None:
    result = runner.invoke(cli, ["run", str(study_dir)])
    assert result.exit_code == 2
    assert errors_in(result) == [f"Error: {study_dir}: is a folder, not a study file"]


def test_an_unreadable_study_file_gets_one_line(write_study, tmp_path_factory) -> None:
    folder = tmp_path_factory.mktemp("unreadable")
    path = folder / "study.toml"
    path.write_text(write_study().read_text())
    path.chmod(0o000)
    command = [sys.executable, "-m", "tuner", "trials", str(path)]
    if os.geteuid() == 0:  # root reads any file, unless it gives up the right to
        caps = "-dac_override,-dac_read_search"
        command = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", *command]
    result = subprocess.run(command, capture_output=True, text=True, cwd=folder, timeout=120)
    assert result.returncode == 2
    assert errors_in(result) == [f"Error: {path}: cannot be read: Permission denied"]


def test_an_empty_storage_url_gets_one_line(runner: CliRunner, write_study, study_dir) -> None:
    result = runner.invoke(cli, ["run", str(write_study()), "--storage", ""])
    assert result.exit_code == 2
    assert errors_in(result) == [
        "Error: --storage: the storage URL is empty; give one (such as sqlite:///tuner.db), or "
        "leave --storage out for the default"
    ]
    assert not (study_dir / "tuner.db").exists()


def test_cpus_this_process_cannot_use_get_one_line(runner: CliRunner, write_study) -> None:
    result = runner.invoke(cli, ["worker", str(write_study()), "--cpus", "99"])
    assert result.exit_code == 2
    (line,) = errors_in(result)
    assert line.startswith("Error: --cpus: core 99 is not one this process may use (usable: ")


def test_workers_are_capped_at_the_cores_and_the_budget_left() -> None:
    from tuner.search.launcher import workers_to_start

    said: list[str] = []
    assert workers_to_start(10_000, 50, said.append, cores=2) == 2
    assert workers_to_start(8, 3, said.append, cores=16) == 3
    assert workers_to_start(2, 40, said.append, cores=2) == 2
    assert said == [
        "Warning: --workers 10000 capped at 2: this machine has 2 usable cores",
        "Warning: --workers 8 capped at 3: the study has 3 trials left in its budget",
    ]


def test_run_starts_no_worker_when_the_budget_is_spent(finished_study) -> None:
    before = len(optuna.load_study(study_name="finished", storage=finished_study["url"]).trials)
    result = tuner(
        "run",
        str(finished_study["study"]),
        "--workers",
        "10000",
        "--storage",
        str(finished_study["url"]),
        cwd=finished_study["folder"],
    )
    assert "budget is spent: no worker started" in result.stdout
    assert "worker 0" not in result.stdout + result.stderr
    after = optuna.load_study(study_name="finished", storage=finished_study["url"]).trials
    assert len(after) == before


def test_trials_into_a_closed_pipe_shows_no_traceback(finished_study) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tuner", "trials", str(finished_study["study"]), "--format", "csv"],
        env=os.environ | {"TUNER_STORAGE": str(finished_study["url"])},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    process.stdout.close()  # as `| head -0`: the reader is gone before the first line
    err = process.communicate(timeout=120)[1]
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert process.returncode == 1


def test_a_dashboard_refused_its_port_says_so_alone(finished_study, tmp_path) -> None:
    # The warning about other machines comes once the dashboard listens (test_dashboard.py):
    # a dashboard that cannot listen warns of nothing.
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            cli,
            [
                "dashboard",
                "--storage",
                str(finished_study["url"]),
                "--artifacts",
                str(tmp_path / "store"),
                "--host",
                "0.0.0.0",
                "--port",
                str(port),
            ],
        )
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"Error: port {port} on 0.0.0.0 is in use; choose another with --port"
    ]
    assert not (tmp_path / "store").exists()  # refused: no empty artifact store left behind


def _no_workers(monkeypatch) -> None:
    """`tuner run` as it is, up to the workers, which start no process."""
    from tuner.search import launcher

    monkeypatch.setattr(launcher, "start_workers", lambda *args, **kwargs: [])


def test_a_refused_run_prints_its_error_alone(
    runner: CliRunner, write_study, study_dir: Path, monkeypatch
) -> None:
    _no_workers(monkeypatch)
    path = write_study()
    assert runner.invoke(cli, ["run", str(path)]).exit_code == 0
    stored = optuna.load_study(study_name="tiny", storage="sqlite:///tuner.db")
    before = (len(stored.trials), stored.user_attrs)
    path.write_text(path.read_text().replace("high = 64", "high = 48"))  # the space drifted
    result = runner.invoke(cli, ["run", str(path)])
    assert result.exit_code == 2
    (line,) = errors_in(result)
    assert line.startswith("Error: ") and "was created with space" in line
    assert result.stdout == ""  # no "study 'tiny' in ..., 2 worker(s)": nothing was run
    stored = optuna.load_study(study_name="tiny", storage="sqlite:///tuner.db")
    assert (len(stored.trials), stored.user_attrs) == before


def test_run_says_how_many_workers_it_starts_and_warns_on_stderr(
    runner: CliRunner, write_study, monkeypatch
) -> None:
    _no_workers(monkeypatch)
    result = runner.invoke(cli, ["run", str(write_study()), "--workers", "10000"])
    assert result.exit_code == 0, result.output
    n = min(len(os.sched_getaffinity(0)), 6)  # the cores, or the budget of 6 trials
    assert result.stdout.splitlines()[0] == f"study 'tiny' in sqlite:///tuner.db, {n} worker(s)"
    assert "10000" not in result.stdout
    assert errors_in(result) == [
        f"Warning: --workers 10000 capped at {n}: this machine has {n} usable cores"
    ]


_RAN = {
    "epochs": 1,
    "best_epoch": 1,
    "train_seconds": 0.1,
    "seconds_per_epoch": 0.1,
    "n_params": 99,
}


def _workers_in_process(monkeypatch) -> None:
    """`tuner run`'s workers as one in-process loop that scores trials at random, on
    connections it closes as it goes (no pool)."""
    from sqlalchemy.pool import NullPool

    from tuner.config import load_study_config
    from tuner.search import launcher
    from tuner.search.companion import companion_name
    from tuner.search.queue import claim
    from tuner.search.space import suggest

    def start_workers(study_file, storage_url, placements, seed_offset=0, options=()):
        config = load_study_config(study_file)
        name = companion_name(config.name) if "--ablation" in options else config.name
        storage = optuna.storages.RDBStorage(storage_url, engine_kwargs={"poolclass": NullPool})
        study = optuna.load_study(study_name=name, storage=storage)
        rng = np.random.default_rng(0)
        while (trial := claim(study)) is not None:
            if "--ablation" not in options:
                suggest(trial, config.space)
            for key, value in _RAN.items():
                trial.set_user_attr(key, value)
            study.tell(trial, float(rng.normal(1.0, 0.1)))
        return []

    monkeypatch.setattr(launcher, "start_workers", start_workers)


def test_run_with_an_ablation_closes_every_storage_it_opens(
    runner: CliRunner, write_study, monkeypatch
) -> None:
    import sqlalchemy

    _workers_in_process(monkeypatch)
    opened, closed = [], []

    def on_connect(connection, record) -> None:
        opened.append(connection)

    def on_close(connection, record) -> None:
        closed.append(connection)

    sqlalchemy.event.listen(sqlalchemy.pool.Pool, "connect", on_connect)
    sqlalchemy.event.listen(sqlalchemy.pool.Pool, "close", on_close)
    try:
        path = write_study(
            study='name = "tiny"\nmetric = "val_mae"\nn_trials = 3\nseed_configs = false',
            ablation="enabled = true\nrepeats = 2",
        )
        result = runner.invoke(cli, ["run", str(path)])
    finally:
        sqlalchemy.event.remove(sqlalchemy.pool.Pool, "connect", on_connect)
        sqlalchemy.event.remove(sqlalchemy.pool.Pool, "close", on_close)
    assert result.exit_code == 0, result.output
    assert "ablation of trial" in result.stdout
    assert len(opened) > 4
    assert len(closed) == len(opened)  # every storage closed: none left for the process's end
