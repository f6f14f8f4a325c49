"""The test suite's own rule: in CI (CI set), a test that skips fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
NEEDS_POSTGRES = "storage/test_reconnect.py::test_a_wrong_request_is_not_retried"


@pytest.mark.slow
@pytest.mark.parametrize(("ci", "outcome"), [("", "1 skipped"), ("1", "1 error")])
def test_a_postgresql_test_without_a_server_skips_outside_ci_and_fails_in_it(
    ci: str, outcome: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TUNER_TEST_POSTGRES_URL")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", NEEDS_POSTGRES],
        cwd=TESTS,
        env=env | {"CI": ci} if ci else env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert outcome in result.stdout, result.stdout
    assert result.returncode == (1 if ci else 0)
    assert "needs a PostgreSQL server: set TUNER_TEST_POSTGRES_URL" in result.stdout
    if ci:
        assert "skipped in CI, where every test must run" in result.stdout
