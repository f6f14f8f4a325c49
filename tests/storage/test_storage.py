from __future__ import annotations

import sqlite3
from pathlib import Path

import optuna
import pytest
from conftest import copy_study

from tuner.errors import StorageError
from tuner.storage import (
    DEFAULT_URL,
    exclusive,
    hide_password_in_logs,
    mask,
    open_storage,
    resolve_url,
    scrub,
)


def test_the_url_comes_from_the_flag_then_the_environment_then_the_default(monkeypatch) -> None:
    monkeypatch.delenv("TUNER_STORAGE", raising=False)
    assert resolve_url(None) == DEFAULT_URL == "sqlite:///tuner.db"
    monkeypatch.setenv("TUNER_STORAGE", "sqlite:///env.db")
    assert resolve_url(None) == "sqlite:///env.db"
    assert resolve_url("sqlite:///flag.db") == "sqlite:///flag.db"


def test_passwords_are_masked_and_scrubbed() -> None:
    url = "postgresql://tuner:s3cret@db-host:5432/tuner"
    assert mask(url) == "postgresql://tuner:***@db-host:5432/tuner"
    assert "s3cret" not in scrub(f"could not log in to {url} with s3cret", url)
    assert mask("not a url at all") == "<unparseable storage URL>"


def test_sqlite_storage_uses_wal_and_studies_open_in_stock_optuna(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    storage = open_storage(url)
    optuna.create_study(study_name="s", storage=storage).optimize(lambda t: 1.0, n_trials=2)
    with sqlite3.connect(tmp_path / "studies.db") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # Nothing of ours is needed to read it back.
    assert len(optuna.load_study(study_name="s", storage=url).trials) == 2


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nonsense", r"^the storage URL is not a SQLAlchemy URL \(it should look like"),
        (
            "mongodb://host/db",
            r"unknown database 'mongodb' \(use sqlite or postgresql, or grpc://",
        ),
        ("sqlite:///{tmp}/no/such/folder/t.db", r"folder '.*/no/such/folder' does not exist"),
        ("sqlite://", r"an in-memory SQLite database cannot be shared by workers"),
    ],
)
def test_bad_urls_get_one_line_and_write_nothing(tmp_path: Path, url: str, message: str) -> None:
    before = set(tmp_path.rglob("*"))
    with pytest.raises(StorageError, match=message):
        open_storage(url.format(tmp=tmp_path))
    assert set(tmp_path.rglob("*")) == before


def test_reading_commands_do_not_create_a_sqlite_file(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"no such SQLite file"):
        open_storage(f"sqlite:///{tmp_path / 'missing.db'}", must_exist=True)
    assert not (tmp_path / "missing.db").exists()


def test_a_file_that_is_not_sqlite_is_named(tmp_path: Path) -> None:
    (tmp_path / "notes.db").write_text("these are my notes, not a database" * 100)
    with pytest.raises(StorageError, match=r"not a usable SQLite file"):
        open_storage(f"sqlite:///{tmp_path / 'notes.db'}")
    assert (tmp_path / "notes.db").read_text().startswith("these are my notes")


def test_an_unreachable_server_is_named_without_its_password() -> None:
    url = "postgresql://tuner:hunter2@127.0.0.1:1/tuner"
    with pytest.raises(StorageError) as info:
        open_storage(url)
    assert "hunter2" not in str(info.value)
    assert str(info.value).startswith("storage postgresql://tuner:***@127.0.0.1:1/tuner: ")


def test_a_password_is_hidden_in_every_log_line_once_asked() -> None:
    import io
    import logging

    url = "postgresql://tuner:s3cret-pw@db-host/tuner"
    logged = io.StringIO()
    # Like the handlers `tuner` sets up on stderr: the root logger's, and Optuna's own.
    loggers = [logging.getLogger(), logging.getLogger("optuna")]
    handler = logging.StreamHandler(logged)
    for logger in loggers:
        logger.addHandler(handler)
    try:
        hide_password_in_logs(url)
        logging.getLogger("somebody.else").error("could not connect to %s", url)
        try:
            raise RuntimeError(f"failed at {url}")
        except RuntimeError:
            logging.getLogger("tuner").exception("unexpected")
        optuna.logging.get_logger("optuna.storages").warning(f"retrying {url}")
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    assert "s3cret-pw" not in logged.getvalue()
    assert logged.getvalue().count("postgresql://tuner:***@db-host/tuner") == 3


def test_a_password_that_holds_another_is_hidden_whole() -> None:
    import io
    import logging

    logged = io.StringIO()
    handler = logging.StreamHandler(logged)
    logging.getLogger().addHandler(handler)
    try:
        # The shorter first: its filter must not leave the longer one's end showing.
        hide_password_in_logs("postgresql://a:pass@db-host/a")
        hide_password_in_logs("postgresql://b:pass-word-2@db-host/b")
        logging.getLogger("tuner").error("at postgresql://b:pass-word-2@db-host/b, a:pass")
    finally:
        logging.getLogger().removeHandler(handler)
    assert logged.getvalue() == "at postgresql://b:***@db-host/b, a:***\n"


def test_the_queue_lock_of_a_file_storage_lies_beside_its_file(
    tmp_path: Path, monkeypatch
) -> None:
    from optuna.storages.journal import JournalFileBackend

    monkeypatch.chdir(tmp_path)
    (tmp_path / "j").mkdir()
    (tmp_path / "s").mkdir()
    journal = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "j" / "log")))
    sqlite = open_storage(f"sqlite:///{tmp_path / 's' / 'tuner.db'}")
    for storage, lock in ((journal, "j/log-tuner-lock"), (sqlite, "s/tuner.db-tuner-lock")):
        with exclusive(storage, "queue:x"):
            assert (tmp_path / lock).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["j", "s"]  # nothing in the cwd


# --- reading never writes ---------------------------------------------------------------------


def _not_ours(folder: Path, kind: str) -> Path:
    path = folder / "other.db"
    if kind == "empty file":
        path.write_bytes(b"")
    else:  # another application's SQLite file
        with sqlite3.connect(path) as connection:
            connection.execute("CREATE TABLE people (name TEXT)")
            connection.execute("INSERT INTO people VALUES ('ada')")
        connection.close()
    return path


def _reading_commands(study: Path, url: str) -> list[list[str]]:
    return [
        ["studies", "--storage", url],
        ["best-trial", str(study), "--storage", url],
        ["best-trials", str(study), "--storage", url],
        ["trials", str(study), "--storage", url],
        ["report", str(study), "--storage", url, "--out", str(study.parent / "report")],
        ["delete-study", "tiny", "--storage", url, "--yes"],
    ]


@pytest.mark.parametrize("kind", ["another application's file", "empty file"])
def test_reading_commands_leave_a_storage_that_is_not_optunas_as_it_was(
    write_study, study_dir: Path, kind: str
) -> None:
    from click.testing import CliRunner

    from tuner.answers.dashboard import make_dashboard
    from tuner.cli import cli

    study = write_study()
    path = _not_ours(study_dir, kind)
    url = f"sqlite:///{path}"
    before = path.read_bytes()
    files = sorted(study_dir.iterdir())
    for args in _reading_commands(study, url):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, (args, result.output)
        [line] = result.stderr.splitlines()
        assert "is not an Optuna storage, and was left as it was" in line, line
    with pytest.raises(StorageError, match=r"is not an Optuna storage"):
        make_dashboard(url, "127.0.0.1", 0, study_dir / "artifacts")
    assert path.read_bytes() == before
    assert sorted(study_dir.iterdir()) == files


def test_reading_commands_create_no_table_in_an_empty_postgresql_database(
    write_study, postgres_url: str
) -> None:
    import sqlalchemy
    from click.testing import CliRunner
    from sqlalchemy.pool import NullPool

    from tuner.cli import cli

    study = write_study()
    for args in _reading_commands(study, postgres_url):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.splitlines() == [
            f"Error: storage {mask(postgres_url)} is empty: it is not an Optuna storage, "
            "and was left as it was"
        ]
    engine = sqlalchemy.create_engine(postgres_url, poolclass=NullPool)
    assert sqlalchemy.inspect(engine).get_table_names() == []
    engine.dispose()


def test_a_read_only_copy_of_a_study_can_be_read(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tuner.cli import cli

    (tmp_path / "w").mkdir()
    url = f"sqlite:///{tmp_path / 'w' / 'studies.db'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    (tmp_path / "ro").mkdir()
    copy = tmp_path / "ro" / "studies.db"
    with sqlite3.connect(tmp_path / "w" / "studies.db") as source, sqlite3.connect(copy) as to:
        source.backup(to)
    source.close(), to.close()
    copy.chmod(0o444)
    before = copy.read_bytes()
    result = CliRunner().invoke(cli, ["studies", "--storage", f"sqlite:///{copy}"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1].split()[:4] == ["s", "minimize", "value", "3"]
    storage = open_storage(f"sqlite:///{copy}", must_exist=True)
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 3
    assert copy.read_bytes() == before
    assert [p.name for p in (tmp_path / "ro").iterdir()] == ["studies.db"]


# --- a failed trial is retried once ------------------------------------------------------------

RACING = 4


def _fail_stale_and_retry(url: str, start, done) -> None:  # type: ignore[no-untyped-def]
    """One worker finding the study's trials stale, at the same moment as the others; then, as
    a worker that lost the answer to its own "fail" and cannot tell whether it won, queuing a
    retry of each failed trial."""
    import warnings

    from optuna.trial import TrialState

    from tuner.config import WorkersConfig

    warnings.simplefilter("ignore")
    storage = open_storage(url, WorkersConfig(heartbeat_interval=1, grace_period=2))
    study = optuna.load_study(study_name="r", storage=storage)
    retry = storage.get_heartbeat_stale_trial_callback()
    start.wait()
    optuna.storages.fail_stale_trials(study)
    for trial in study.get_trials(states=(TrialState.FAIL,)):
        retry(study, trial)
    done.put(True)


@pytest.mark.slow
def test_a_failed_trial_is_retried_once_however_many_workers_find_it_stale(
    storage_url: str,
) -> None:
    import multiprocessing as mp
    import time
    from collections import Counter

    from optuna.trial import TrialState

    from tuner.config import WorkersConfig
    from tuner.search.queue import claim
    from tuner.storage import RETRY_OF

    storage = open_storage(storage_url, WorkersConfig(heartbeat_interval=1, grace_period=2))
    study = optuna.create_study(study_name="r", storage=storage)
    for x in (1.0, 2.0, 3.0):
        study.enqueue_trial({"x": x})
    while claim(study) is not None:  # their workers die: no heartbeat after the claim
        pass
    time.sleep(3)
    context = mp.get_context("spawn")
    start, done = context.Barrier(RACING), context.Queue()
    racers = [
        context.Process(target=_fail_stale_and_retry, args=(storage_url, start, done))
        for _ in range(RACING)
    ]
    for p in racers:
        p.start()
    assert [done.get(timeout=300) for _ in racers] == [True] * RACING
    for p in racers:
        p.join(timeout=60)
    trials = optuna.load_study(study_name="r", storage=storage_url).trials
    assert Counter(t.state for t in trials) == {TrialState.FAIL: 3, TrialState.WAITING: 3}
    retries = [t for t in trials if t.state == TrialState.WAITING]
    assert sorted(t.user_attrs[RETRY_OF] for t in retries) == [0, 1, 2]
    assert sorted(t.system_attrs["fixed_params"]["x"] for t in retries) == [1.0, 2.0, 3.0]


# --- a corrupt SQLite file ---------------------------------------------------------------------


def _corrupt_study(folder: Path, pages: str) -> Path:
    """A real study file of 5 trials, then garbage written over some of its pages: every page
    after the first ("2..n"), only the pages of the tables that hold the studies and trials
    ("data": Optuna's own check of the file's version passes, and the corruption shows on the
    first read), or none."""
    import random

    folder.mkdir(exist_ok=True)
    path = folder / "corrupt.db"
    study = optuna.create_study(study_name="tiny", storage=f"sqlite:///{path}")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=5)
    del study
    with sqlite3.connect(path) as connection:
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
        roots = dict(connection.execute("SELECT name, rootpage FROM sqlite_master"))
    connection.close()
    data = bytearray(path.read_bytes())
    n_pages = len(data) // page_size
    numbers = {
        "2..n": range(2, n_pages + 1),
        "data": [roots[t] for t in ("studies", "trials", "trial_params", "trial_values")],
        "none": [],
    }[pages]
    garbage = random.Random(0)
    for number in numbers:
        start = (number - 1) * page_size
        data[start : start + page_size] = garbage.randbytes(page_size)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("pages", ["2..n", "data"])
def test_a_corrupt_sqlite_file_gets_one_line_and_is_left_as_it_was(
    write_study, study_dir: Path, pages: str
) -> None:
    import os

    from click.testing import CliRunner

    from tuner.answers.dashboard import make_dashboard
    from tuner.cli import cli

    study = write_study()
    path = _corrupt_study(study_dir, pages)
    url = f"sqlite:///{path}"
    before, mtime = path.read_bytes(), os.stat(path).st_mtime_ns
    files = sorted(study_dir.iterdir())
    for args in [*_reading_commands(study, url), ["run", str(study), "--storage", url]]:
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.splitlines() == [
            f"Error: storage {url}: the SQLite file {str(path)!r} is corrupt (database disk "
            "image is malformed); it was left as it was: restore it from a backup, or save what "
            f"is left with `sqlite3 {path} .recover`"
        ], args
    with pytest.raises(StorageError, match=r"is corrupt \(database disk image is malformed\)"):
        make_dashboard(url, "127.0.0.1", 0, study_dir / "artifacts")
    assert path.read_bytes() == before
    assert os.stat(path).st_mtime_ns == mtime
    assert sorted(study_dir.iterdir()) == files


def test_a_file_damaged_after_it_was_opened_is_named_on_the_next_read(tmp_path: Path) -> None:
    good = _corrupt_study(tmp_path, pages="none")
    storage = open_storage(f"sqlite:///{good}", must_exist=True)
    damaged = _corrupt_study(tmp_path / "damaged", pages="data")
    good.write_bytes(damaged.read_bytes())
    storage.engine.dispose()  # no page of the good file kept in a pooled connection's cache
    with pytest.raises(StorageError, match=r"corrupt\.db' is corrupt \(database disk image"):
        storage.get_all_studies()


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_reading_commands_leave_nothing_beside_the_file(
    finished_study, tmp_path: Path, journal: str
) -> None:
    import gc

    from click.testing import CliRunner

    from tuner.cli import cli

    path = tmp_path / "copy.db"
    url = copy_study(str(finished_study["url"]), path, journal)
    before, files = path.read_bytes(), sorted(tmp_path.iterdir())
    for args in _reading_commands(Path(finished_study["study"]), url)[:4]:
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, (args, result.output)
        gc.collect()  # the storage's connections closed, as when the command's process ends
        assert sorted(tmp_path.iterdir()) == files, args
    assert path.read_bytes() == before


def assert_lock_skipped_while_held(holder: optuna.storages.BaseStorage, other: object) -> None:
    """While a thread holds the lock through `holder`, `locked_if_free` through `other` (another
    client of the same storage) answers None at once without running its block; once the lock
    is released, it runs it."""
    import threading
    import time

    from tuner.storage import exclusive, locked_if_free

    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with exclusive(holder, "queue:x"):
            held.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    ran: list[int] = []
    try:
        assert held.wait(10)
        started = time.monotonic()
        assert locked_if_free(other, "queue:x", lambda: ran.append(1) or 1) is None  # type: ignore[arg-type]
        assert time.monotonic() - started < 5 and not ran
    finally:
        release.set()
        thread.join()
    assert locked_if_free(other, "queue:x", lambda: ran.append(2) or 2) == 2  # type: ignore[arg-type]
    assert ran == [2]


def test_a_lock_held_elsewhere_is_not_waited_for_when_asked(storage_url: str) -> None:
    assert_lock_skipped_while_held(open_storage(storage_url), open_storage(storage_url))
