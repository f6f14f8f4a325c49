from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tuner.training.backend import choose as choose_backend

# Tests train tiny models: one thread each keeps parallel test processes from fighting.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.pop("TUNER_STORAGE", None)
# The backend of $TUNER_BACKEND (else tuner's default), before any test module imports Keras:
# `TUNER_BACKEND=jax python -m pytest ...` runs the tests on JAX.
os.environ["KERAS_BACKEND"] = choose_backend()


@pytest.fixture(scope="session", autouse=True)
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Downloads and prepared data go to a folder of the test session, never the user's."""
    folder = tmp_path_factory.mktemp("cache")
    os.environ["TUNER_CACHE_DIR"] = str(folder)
    return folder


TINY_SPACE = """
[space]
cell = ["gru", "lstm"]
layers = { low = 1, high = 2 }
units = { low = 4, high = 64, log = true }
dropout = { low = 0.0, high = 0.3 }
recurrent_dropout = { low = 0.0, high = 0.3 }
bidirectional = [false, true]
activation = ["tanh", "relu"]
learning_rate = { low = 1e-3, high = 1e-2, log = true }
"""


def make_series(rows: int = 600, seed: int = 0) -> pd.DataFrame:
    """A daily-cycle series with noise: a target that windows can learn something about."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    temp = 10 + 5 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 0.5, rows)
    pressure = 1000 + np.cumsum(rng.normal(0, 0.3, rows))
    humid = 60 + 10 * np.cos(2 * np.pi * t / 24) + rng.normal(0, 1, rows)
    return pd.DataFrame(
        {
            "time": pd.date_range("2020-01-01", periods=rows, freq="h").astype(str),
            "temp": temp,
            "pressure": pressure,
            "humid": humid,
        }
    )


def study_text(name: str = "tiny", data_file: str = "series.csv", **overrides: str) -> str:
    """A tiny study file: a few seconds per trial on one core."""
    sections = {
        "study": f'name = "{name}"\nmetric = "val_mae"\nn_trials = 6',
        "sampler": "seed = 0\nn_startup_trials = 3",
        "pruner": 'name = "median"\nn_startup_trials = 1\nn_warmup_steps = 0',
        "data": f'path = "{data_file}"\ntarget = "temp"\ntimestamp = "time"\n'
        "lookback = 12\nstep = 2\ndelay = 3",
        "training": "epochs = 3\nbatch_size = 16\nsteps_per_epoch = 3\npatience = 2",
        "workers": "heartbeat_interval = 2\ngrace_period = 6",
    }
    sections |= overrides
    body = "\n".join(f"[{k}]\n{v}\n" for k, v in sections.items())
    if "space" not in overrides:
        body += TINY_SPACE
    return textwrap.dedent(body)


@pytest.fixture
def study_dir(tmp_path: Path) -> Path:
    make_series().to_csv(tmp_path / "series.csv", index=False)
    return tmp_path


@pytest.fixture
def write_study(study_dir: Path):
    def write(name: str = "tiny", filename: str = "study.toml", **overrides: str) -> Path:
        path = study_dir / filename
        path.write_text(study_text(name, **overrides))
        return path

    return write


def tuner(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 600,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """The real `tuner` command in a subprocess."""
    result = subprocess.run(
        [sys.executable, "-m", "tuner", *args],
        cwd=cwd,
        env=os.environ | (env or {}),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"tuner {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def finished_study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | str]:
    """A real study run once for the session: `tuner run` with 2 worker processes on SQLite."""
    folder = tmp_path_factory.mktemp("finished")
    make_series().to_csv(folder / "series.csv", index=False)
    study = folder / "study.toml"
    study.write_text(study_text("finished"))
    url = f"sqlite:///{folder / 'tuner.db'}"
    result = tuner("run", str(study), "--workers", "2", "--storage", url, cwd=folder)
    return {
        "folder": folder,
        "study": study,
        "url": url,
        "stdout": result.stdout,
        "stderr": result.stderr,
    }


@pytest.fixture(scope="session")
def two_studies(finished_study) -> dict[str, Path | str]:
    """A second real study, on another dataset (a random walk, not a daily cycle), run into the
    storage of `finished_study`, for the commands that read results side by side."""
    folder = finished_study["folder"]
    assert isinstance(folder, Path)
    make_series(rows=500, seed=1).to_csv(folder / "walk.csv", index=False)
    walk = folder / "walk.toml"
    walk.write_text(
        study_text("walk", data_file="walk.csv", pruner='name = "none"').replace(
            'target = "temp"', 'target = "pressure"'
        )
    )
    tuner("run", str(walk), "--workers", "2", "--storage", str(finished_study["url"]), cwd=folder)
    return finished_study | {"walk": walk}


# --- PostgreSQL -------------------------------------------------------------------------------
# Tests that need the server take its URL from the environment (`tests/run` sets it); without it
# they skip, except in CI, where every skip is a failure.

POSTGRES_ENV = "TUNER_TEST_POSTGRES_URL"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every test must run: {reason}"


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The URL of a PostgreSQL server the tests may create databases on."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"needs a PostgreSQL server: set {POSTGRES_ENV}, as tests/run does")
    return url


@pytest.fixture
def postgres_url(postgres_server: str):
    """A fresh, empty database on the test server, dropped afterwards."""
    import secrets

    import sqlalchemy
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    name = f"tuner_test_{secrets.token_hex(6)}"
    # No pool: a test may restart the server, and the drop needs a connection made after that.
    admin = sqlalchemy.create_engine(
        postgres_server, isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    yield make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest, study_dir: Path) -> str:
    """The storage URL of a fresh storage, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{study_dir / 'tuner.db'}"
    return str(request.getfixturevalue("postgres_url"))


# The smallest models, for tests about workers rather than models: a second or two per trial.
FAST_SPACE = """cell = "gru"
layers = 1
units = { low = 4, high = 8 }
dropout = 0.0
recurrent_dropout = 0.0
bidirectional = false
activation = "tanh"
learning_rate = { low = 1e-3, high = 1e-2, log = true }"""


def reviews(n: int = 120, seed: int = 0) -> pd.DataFrame:
    """Short texts of words w0..w39 (w0 the most frequent), and a label that says whether the
    text holds "good"."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, 41)
    words = [f"w{i}" for i in range(40)]
    texts, labels = [], []
    for i in range(n):
        text = list(rng.choice(words, size=int(rng.integers(3, 15)), p=weights / weights.sum()))
        good = i % 3 == 0
        texts.append(" ".join(text + (["good"] if good else ["Bad!"])))
        labels.append("good" if good else "bad")
    return pd.DataFrame({"body": texts, "stars": labels, "id": np.arange(n)})


# --- S3 ---------------------------------------------------------------------------------------
# The S3 artifact store is tested against moto's S3 server: a real HTTP endpoint on this
# machine, reached through boto3 as AWS would be (no AWS account, no mock object in the code).


@pytest.fixture(scope="session")
def s3_server() -> Iterator[dict[str, str]]:
    """A local S3 endpoint; yields the environment that points boto3 at it."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "tuner-test",
            "AWS_SECRET_ACCESS_KEY": "tuner-test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    finally:
        server.stop()


def copy_study(url: str, path: Path, journal: str | None = None) -> str:
    """A copy of the SQLite storage at `url` (its WAL included) in the file `path`, in the
    journal mode `journal` if given; returns the copy's URL."""
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as source:
        with closing(sqlite3.connect(path)) as copy:
            source.backup(copy)
            if journal is not None:
                copy.execute(f"PRAGMA journal_mode={journal}")
    return f"sqlite:///{path}"


def stopped_while_running(process: subprocess.Popen[str], url: str, trial_id: int) -> bool:
    """Stop `process` (SIGSTOP) and tell whether trial `trial_id` is still RUNNING then: if so it
    stays stopped, to be killed in the middle of the trial; if not it goes on (SIGCONT).

    The state is read outside Optuna's storage: a worker stopped inside a SQLite write
    transaction keeps the file's write lock, which a storage's `BEGIN IMMEDIATE` would wait on
    until it gives up; a plain read of the WAL file does not wait."""
    import signal
    import sqlite3
    from contextlib import closing

    import sqlalchemy

    process.send_signal(signal.SIGSTOP)
    query = "SELECT state FROM trials WHERE trial_id = :id"
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
            (state,) = connection.execute(query, {"id": trial_id}).fetchone()
    else:
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        with engine.connect() as connection:
            state = connection.execute(sqlalchemy.text(query), {"id": trial_id}).scalar()
        engine.dispose()
    if state == "RUNNING":
        return True
    process.send_signal(signal.SIGCONT)
    return False


def worker_processes(
    study_file: Path, url: str, cwd: Path, n: int = 2, *options: str
) -> list[subprocess.Popen[str]]:
    """`n` `tuner worker` processes of `study_file` on the storage `url` (from the environment,
    as `tuner run` passes it), worker indexes 0 to n - 1, their output piped."""
    env = os.environ | {"TUNER_STORAGE": url}
    return [
        subprocess.Popen(
            [sys.executable, "-m", "tuner", "worker", str(study_file), *options]
            + ["--worker-index", str(i)],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]
