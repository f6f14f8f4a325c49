from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from tuner.patches import checks, xla
from tuner.patches.checks import patches_off


@pytest.fixture(autouse=True)
def patches_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with every patch on, and what it turns off stays in the test."""
    monkeypatch.setattr(checks, "_OFF", {})


RUN_JAX = "import jax.numpy as jnp; print(float(jnp.ones(3).sum()))"


def jax_with(flags: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, "-c", RUN_JAX], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def jax_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x --xla_cpu_multi_thread_eigen=true")


def test_a_known_jaxlib_gets_the_thread_flags(jax_backend) -> None:
    assert xla.check("jax") is None
    xla.size_thread_pool(1)
    assert os.environ["XLA_FLAGS"].split() == [
        "--xla_dump_to=/tmp/x",
        "--xla_cpu_multi_thread_eigen=false",
        "intra_op_parallelism_threads=1",
    ]
    assert patches_off() == []


@pytest.mark.parametrize("version", ["0.11.0", "0.4.30", "1.0.0.dev20270101"])
def test_a_jaxlib_outside_the_known_range_is_left_without_them_and_says_so(
    jax_backend, monkeypatch, caplog, version
) -> None:
    monkeypatch.setattr(xla, "installed_version", lambda distributions: version)
    with caplog.at_level(logging.WARNING, logger="tuner.patches"):
        xla.size_thread_pool(1)
        xla.size_thread_pool(2)
    assert os.environ["XLA_FLAGS"] == "--xla_dump_to=/tmp/x"  # the user's own flag stays
    assert patches_off() == ["xla"]
    [line] = [r.getMessage() for r in caplog.records]
    assert f"jaxlib {version} is outside the versions tried" in line


def test_no_flag_left_means_no_xla_flags(monkeypatch) -> None:
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")
    monkeypatch.setattr(xla, "installed_version", lambda distributions: "3.0.0")
    xla.size_thread_pool(4)
    # Not even a lone `intra_op_parallelism_threads`, which XLA would read as a file name.
    assert "XLA_FLAGS" not in os.environ
    assert xla.check("tensorflow") is not None and xla.check("torch") is None


def test_the_installed_xla_takes_the_flags_and_aborts_on_an_unknown_one(jax_backend) -> None:
    """The contract: within the known range the flags run; an unknown `--xla_` flag is fatal,
    which is why the range is checked at all."""
    pytest.importorskip("jax")
    xla.size_thread_pool(1)
    ran = jax_with(os.environ["XLA_FLAGS"])
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "3.0"
    aborted = jax_with("--xla_no_such_flag_in_any_xla=true")
    assert aborted.returncode != 0
    assert "Unknown flag in XLA_FLAGS" in aborted.stderr
