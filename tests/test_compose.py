"""docker-compose.yml, read as Docker Compose reads it (no Docker engine needed): its services,
the image's entry point, where the storage URL goes, and what it publishes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from tuner.cli import cli

ROOT = Path(__file__).resolve().parent.parent
_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?:(:?)([-?])([^}]*))?\}")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """`value` with ${VAR}, ${VAR:-default} and ${VAR:?error} replaced, as Compose does."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, colon, kind, word = match.groups()
        given = env.get(name)
        missing = given is None or (colon == ":" and given == "")
        if not missing:
            return str(given)
        if kind == "?":
            raise ValueError(f"{name}: {word}")
        return word or ""

    return _VARIABLE.sub(replace, value)


def read_env(path: Path) -> dict[str, str]:
    lines = [line.strip() for line in path.read_text().splitlines()]
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return read_env(ROOT / ".env.example")


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    return interpolate(raw, env)  # type: ignore[no-any-return]


def test_postgres_workers_and_optuna_dashboard(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"postgres", "worker", "optuna-dashboard"}
    postgres = compose["services"]["postgres"]
    assert postgres["image"].startswith("postgres:")
    [volume] = postgres["volumes"]
    name, target = volume.split(":")
    assert target == "/var/lib/postgresql/data" and name in compose["volumes"]
    for service in ("worker", "optuna-dashboard"):
        assert compose["services"][service]["depends_on"]["postgres"] == {
            "condition": "service_healthy"
        }


def test_workers_run_the_image_entry_point_tuner_worker_on_a_mounted_study(
    compose: dict[str, Any],
) -> None:
    worker = compose["services"]["worker"]
    assert worker["build"] == "."
    assert worker["deploy"]["replicas"] >= 1  # and `--scale worker=N` sets any number
    dockerfile = (ROOT / "Dockerfile").read_text()
    [entrypoint] = re.findall(r"^ENTRYPOINT (.*)$", dockerfile, re.MULTILINE)
    assert json.loads(entrypoint) == ["tuner", "worker"]
    assert re.search(r"pip install -c constraints\.txt '\.\[cpu,postgresql,s3,grpc\]'", dockerfile)
    # The command completes a valid `tuner worker` invocation...
    context = cli.commands["worker"].make_context("worker", list(worker["command"]))
    study = context.params["study_file"]
    # ...on a study file the containers see through the mounted folder.
    assert "./studies:/app/studies:ro" in worker["volumes"]
    assert study.parts[0] == "studies" and (ROOT / study).is_file()


def test_the_storage_url_reaches_the_workers_and_the_dashboard(
    compose: dict[str, Any], env: dict[str, str]
) -> None:
    db = compose["services"]["postgres"]["environment"]
    for service in ("worker", "optuna-dashboard"):
        url = make_url(compose["services"][service]["environment"]["TUNER_STORAGE"])
        assert url.get_backend_name() == "postgresql"
        assert (url.host, url.port) == ("postgres", 5432)  # the service, on its own network
        assert (url.username, url.password, url.database) == (
            db["POSTGRES_USER"],
            db["POSTGRES_PASSWORD"],
            db["POSTGRES_DB"],
        )
    assert env["POSTGRES_PASSWORD"] == db["POSTGRES_PASSWORD"]
    # The dashboard is given the URL in its environment, not on its command line.
    dashboard = compose["services"]["optuna-dashboard"]
    code = dashboard["entrypoint"][-1]
    compile(code, "entrypoint", "exec")
    assert 'open_storage(os.environ["TUNER_STORAGE"])' in code
    assert "postgresql://" not in " ".join(dashboard["entrypoint"] + dashboard["command"])


def test_credentials_come_from_the_environment_and_are_required(
    raw: dict[str, Any], env: dict[str, str]
) -> None:
    password = raw["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert password.startswith("${POSTGRES_PASSWORD:?")
    without = {k: v for k, v in env.items() if k != "POSTGRES_PASSWORD"}
    with pytest.raises(ValueError, match="POSTGRES_PASSWORD: set POSTGRES_PASSWORD in .env"):
        interpolate(raw, without)
    # An example is committed; a real .env never is.
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()
    assert ".env" in (ROOT / ".dockerignore").read_text().splitlines()


def test_only_the_dashboard_is_published_and_only_on_localhost(compose: dict[str, Any]) -> None:
    published = {name: s.get("ports", []) for name, s in compose["services"].items()}
    assert published == {"postgres": [], "worker": [], "optuna-dashboard": ["127.0.0.1:8080:8080"]}
    assert all("expose" not in s and "network_mode" not in s for s in compose["services"].values())


def test_workers_and_the_dashboard_share_one_artifact_store(compose: dict[str, Any]) -> None:
    assert "artifacts" in compose["volumes"]
    for name in ("worker", "optuna-dashboard"):
        service = compose["services"][name]
        assert "artifacts:/artifacts" in service["volumes"]
        assert service["environment"]["TUNER_ARTIFACTS"] == "/artifacts"
    code = compose["services"]["optuna-dashboard"]["entrypoint"][-1]
    assert 'artifact_store=FileSystemArtifactStore(os.environ["TUNER_ARTIFACTS"])' in code
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert (
        "chown tuner /artifacts" in dockerfile and "ENV TUNER_ARTIFACTS=/artifacts" in dockerfile
    )
