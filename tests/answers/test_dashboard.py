from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import copy_study

from tuner.cli import cli

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"  # kept, and gitignored
CHROMIUM = "/usr/bin/chromium"  # Debian's; Playwright's own browser download needs a network
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def wait_until_up(process: subprocess.Popen[str], url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the dashboard exited: {process.communicate()}")
        try:
            get_json(url)
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the dashboard did not answer {url} in {timeout} s")


@pytest.mark.slow
def test_the_dashboard_shows_the_studies_in_a_real_browser(two_studies, tmp_path: Path) -> None:
    import optuna
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.skip(f"needs Debian's Chromium at {CHROMIUM}: `bash tests/run` installs it")

    # An artifact in the store beside the SQLite file, where `tuner retrain` puts models.
    note = tmp_path / "dashboard-check.txt"
    note.write_text("artifacts show in the dashboard")
    store = two_studies["folder"] / "artifacts"
    store.mkdir(exist_ok=True)
    optuna.artifacts.upload_artifact(
        artifact_store=optuna.artifacts.FileSystemArtifactStore(store),
        file_path=str(note),
        study_or_trial=optuna.load_study(study_name="walk", storage=two_studies["url"]),
    )
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tuner",
            "dashboard",
            "--storage",
            two_studies["url"],
            "--port",
            str(port),
        ],
        cwd=two_studies["folder"],
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_up(process, f"{base}/api/meta")
        meta = get_json(f"{base}/api/meta")
        assert isinstance(meta, dict) and meta["artifact_is_available"] is True
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(f"{base}/dashboard/", timeout=120_000)
                for name in ("finished", "walk"):
                    # The study list shows "<study id>. <name>".
                    title = re.compile(rf"^\d+\. {re.escape(name)}$")
                    page.get_by_text(title).first.wait_for(timeout=120_000)
                ARTIFACTS.mkdir(exist_ok=True)
                shot = ARTIFACTS / "dashboard-studies.png"
                page.screenshot(path=str(shot), full_page=True)
                studies = get_json(f"{base}/api/studies")["study_summaries"]  # type: ignore[index]
                walk = next(s["study_id"] for s in studies if s["study_name"] == "walk")
                page.goto(f"{base}/dashboard/studies/{walk}", timeout=120_000)
                page.get_by_text("dashboard-check.txt").wait_for(timeout=120_000)
                page.screenshot(path=str(ARTIFACTS / "dashboard-walk.png"), full_page=True)
            finally:
                browser.close()
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert f"on http://127.0.0.1:{port}/dashboard/" in out
    assert str(two_studies["folder"] / "artifacts") in out


def test_a_port_in_use_gets_one_line(finished_study) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            cli, ["dashboard", "--storage", finished_study["url"], "--port", str(port)]
        )
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"Error: port {port} on 127.0.0.1 is in use; choose another with --port"
    ]


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("256.1.1.1", r"--host 256\.1\.1\.1: not an address of this machine, nor a name that "),
        ("no-such-host.invalid", r"--host no-such-host\.invalid: not an address of this machine"),
        ("", r"--host is empty: give an address to listen on, such as 127\.0\.0\.1"),
        ("10.255.255.254", r"cannot listen on 10\.255\.255\.254:\d+: Cannot assign requested"),
    ],
)
def test_a_bad_host_gets_one_line_and_no_warning(finished_study, host: str, message: str) -> None:
    folder = finished_study["folder"]
    assert isinstance(folder, Path)
    files = sorted(folder.iterdir())
    result = CliRunner().invoke(
        cli, ["dashboard", "--storage", finished_study["url"], "--host", host, "--port", "0"]
    )
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    assert re.match(f"^Error: {message}", line), line
    assert sorted(folder.iterdir()) == files


def test_another_machine_is_warned_of_once_the_dashboard_listens(
    finished_study, monkeypatch
) -> None:
    from wsgiref.simple_server import WSGIServer

    monkeypatch.setattr(WSGIServer, "serve_forever", lambda self: None)
    result = CliRunner().invoke(
        cli, ["dashboard", "--storage", finished_study["url"], "--host", "0.0.0.0", "--port", "0"]
    )
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "Warning: --host 0.0.0.0 lets other machines open the dashboard, which has no login: "
        "anyone who can reach this port can read and delete your studies"
    ]
    assert re.match(r"^optuna-dashboard for .* on http://0\.0\.0\.0:\d+/dashboard/", result.stdout)


def test_the_dashboard_listens_on_an_ipv6_address(finished_study, tmp_path: Path) -> None:
    import socket as sockets

    from tuner.answers.dashboard import make_dashboard

    try:
        with sockets.socket(sockets.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    server = make_dashboard(str(finished_study["url"]), "::1", 0, tmp_path / "artifacts")
    try:
        assert server.socket.family == sockets.AF_INET6
    finally:
        server.server_close()


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_the_dashboard_writes_nothing_beside_a_storage_it_reads(
    finished_study, tmp_path: Path, journal: str
) -> None:
    import threading

    from tuner.answers.dashboard import make_dashboard
    from tuner.storage.artifacts import artifact_dir

    # A copy of a study, without an artifact folder beside it.
    path = tmp_path / "copy.db"
    url = copy_study(str(finished_study["url"]), path, journal)
    before, files = path.read_bytes(), sorted(tmp_path.iterdir())
    server = make_dashboard(url, "127.0.0.1", 0, artifact_dir(url, None))
    serving = threading.Thread(target=server.serve_forever)
    serving.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}/api"
        assert get_json(f"{base}/meta")["artifact_is_available"] is True  # type: ignore[index]
        studies = get_json(f"{base}/studies")["study_summaries"]  # type: ignore[index]
        # The shared study's file may hold other tests' studies too.
        assert "finished" in [s["study_name"] for s in studies]
    finally:
        server.shutdown()
        serving.join()
        server.server_close()
    assert sorted(tmp_path.iterdir()) == files
    assert path.read_bytes() == before
