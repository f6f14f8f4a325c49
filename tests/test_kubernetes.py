"""deploy/kubernetes/, read as `kubectl apply -k` reads it (no cluster needed): every overlay
rendered by the part of kustomize it uses (tests/kustomize.py), validated against the
Kubernetes API's own schema, its references followed, and its containers' commands and
environment resolved as the kubelet resolves them, then run as local processes against the
local PostgreSQL server."""

from __future__ import annotations

import base64
import math
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kustomize import Resource, build, containers, pod_spec, read_env_file
from sqlalchemy.engine import make_url

from tuner.cli import cli
from tuner.config.study_file import load_study_config
from tuner.search.launcher import GPU_SHARING_ENV

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kubernetes"
OVERLAYS = sorted(p.name for p in (DEPLOY / "overlays").iterdir())
# Every component in one overlay, in an order that their patches allow (docs/kubernetes.md).
EVERYTHING = ["storage-proxy", "external-postgres", "gpu", "shared-volume", "own-study"]
VERSIONS = sorted({"1.35.0", kubernetes_validate.latest_version()})
IMAGE = "registry.example.com/tuner"  # the overlays' placeholder for the user's image


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/kubernetes/ as a user has it before `kubectl apply -k`: each overlay's tuner.env
    made from its example, and one more overlay, `everything`, with every component."""
    tree = tmp_path_factory.mktemp("deploy") / "kubernetes"
    shutil.copytree(DEPLOY, tree)
    everything = tree / "overlays" / "everything"
    shutil.copytree(tree / "overlays" / "own-study", everything)
    shutil.copy(tree / "overlays" / "external-postgres" / "tuner.env.example", everything)
    k = yaml.safe_load((everything / "kustomization.yaml").read_text())
    k["components"] = [f"../../components/{c}" for c in EVERYTHING]
    (everything / "kustomization.yaml").write_text(yaml.safe_dump(k))
    for example in tree.glob("overlays/*/tuner.env.example"):
        shutil.copy(example, example.with_suffix(""))
    return tree


@pytest.fixture(scope="module")
def rendered(tree: Path) -> dict[str, list[Resource]]:
    return {name: build(tree / "overlays" / name) for name in [*OVERLAYS, "everything"]}


def one(resources: list[Resource], kind: str, name: str) -> Resource:
    [found] = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    return found


def tuner_containers(resources: list[Resource]) -> list[dict[str, Any]]:
    return [c for r in resources for c in containers(r) if c["image"].startswith(IMAGE)]


# --- The kubelet's view of a container: its environment and command line ----------------------

_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """`$(VAR)` replaced by VAR's value where VAR is defined, `$$` by `$`, as Kubernetes does in
    env values, commands and args (an undefined reference stays as it is)."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _REFERENCE.sub(replace, text)


def environment(
    container: dict[str, Any], resources: list[Resource], added: dict[str, str] | None = None
) -> dict[str, str]:
    """The container's environment: envFrom first, then env in order, each value expanded
    against what came before; then what the Job controller adds (JOB_COMPLETION_INDEX)."""

    def data(kind: str, name: str) -> dict[str, str]:
        found = one(resources, kind, name)["data"]
        if kind == "Secret":
            return {k: base64.b64decode(v).decode() for k, v in found.items()}
        return dict(found)

    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "secretRef" in source:
            env |= data("Secret", source["secretRef"]["name"])
        else:
            env |= data("ConfigMap", source["configMapRef"]["name"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = expand(var["value"], env)
            continue
        source = var["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[var["name"]] = data("Secret", ref["name"])[ref["key"]]
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[var["name"]] = data("ConfigMap", ref["name"])[ref["key"]]
        else:
            field = source["resourceFieldRef"]
            assert field["resource"] == "requests.cpu" and field["divisor"] == "1"
            env[var["name"]] = str(math.ceil(cpus(container["resources"]["requests"]["cpu"])))
    return env | (added or {})


def command_line(container: dict[str, Any], env: dict[str, str]) -> list[str]:
    return [expand(part, env) for part in container.get("command", []) + container.get("args", [])]


def cpus(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def job_env(resource: Resource, index: int = 0) -> dict[str, str]:
    """What the Job controller adds to the containers of an Indexed Job's pod `index`."""
    if resource["kind"] == "Job" and resource["spec"].get("completionMode") == "Indexed":
        return {"JOB_COMPLETION_INDEX": str(index)}
    return {}


# --- Rendered, validated, cross-referenced -----------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("overlay", [*OVERLAYS, "everything"])
def test_every_overlay_renders_and_validates_strictly(
    rendered: dict[str, list[Resource]], overlay: str, version: str
) -> None:
    resources = rendered[overlay]
    assert len({(r["kind"], r["metadata"]["name"]) for r in resources}) == len(resources)
    for r in resources:
        try:
            kubernetes_validate.validate(r, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            raise AssertionError(f"{overlay}: {r['kind']} {r['metadata']['name']}: {e}") from None
        assert r["metadata"]["namespace"] == "tuner"


@pytest.mark.parametrize("overlay", [*OVERLAYS, "everything"])
def test_every_reference_names_something_defined(
    rendered: dict[str, list[Resource]], overlay: str
) -> None:
    resources = rendered[overlay]
    names = Counter((r["kind"], r["metadata"]["name"]) for r in resources)
    workloads = [r for r in resources if pod_spec(r) is not None]
    for service in (r for r in resources if r["kind"] == "Service"):
        selector = service["spec"]["selector"].items()
        pods = [
            w for w in workloads if selector <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert pods, f"{overlay}: Service {service['metadata']['name']} selects no pod"
        for port in service["spec"]["ports"]:
            for pod in pods:
                named = {p.get("name") for c in containers(pod) for p in c.get("ports", [])}
                assert port["targetPort"] in named
    for w in workloads:
        labels = w["spec"]["template"]["metadata"]["labels"].items()
        if w["kind"] != "Job":  # a Job's selector is made by the API server
            assert w["spec"]["selector"]["matchLabels"].items() <= labels
        if w["kind"] == "StatefulSet":
            headless = one(resources, "Service", w["spec"]["serviceName"])
            assert headless["spec"]["clusterIP"] == "None"
        spec = pod_spec(w)
        assert spec is not None
        claims = {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])}
        volumes = {v["name"] for v in spec.get("volumes", [])} | claims
        for v in spec.get("volumes", []):
            if "persistentVolumeClaim" in v:
                assert names["PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"]]
            if "configMap" in v:
                assert names["ConfigMap", v["configMap"]["name"]]
            if "secret" in v:
                assert names["Secret", v["secret"]["secretName"]]
        for c in containers(w):
            assert {m["name"] for m in c.get("volumeMounts", [])} <= volumes
            # Every Secret, ConfigMap and key named exists (else KeyError), and every $(VAR)
            # in the environment and on the command line is defined: an undefined one would
            # reach the program as it is.
            env = environment(c, resources, job_env(w))
            for value in [*env.values(), *command_line(c, env)]:
                assert "$(" not in value, f"{overlay}: {c['name']}: {value}"


def tuner_args(container: dict[str, Any], env: dict[str, str]) -> tuple[str, list[str]]:
    line = command_line(container, env)
    assert line[0] == "tuner", line  # the image's `tuner` command (pyproject's script)
    return line[1], line[2:]


@pytest.mark.parametrize("overlay", [*OVERLAYS, "everything"])
def test_tuner_pods_get_the_storage_url_and_the_artifact_store_from_their_environment(
    rendered: dict[str, list[Resource]], overlay: str
) -> None:
    resources = rendered[overlay]
    for w in (r for r in resources if pod_spec(r) is not None):
        for c in containers(w):
            if not c["image"].startswith(IMAGE):
                continue
            env = environment(c, resources, job_env(w))
            url = make_url(env["TUNER_STORAGE"])
            # Never on a command line, where `ps` and `kubectl describe` show it.
            assert not any("://" in part for part in command_line(c, env))
            if url.drivername == "grpc":
                proxy = one(resources, "Service", str(url.host))
                assert url.port in [p["port"] for p in proxy["spec"]["ports"]]
                assert one(resources, "Deployment", str(url.host))["spec"]["replicas"] >= 1
                assert w["metadata"]["labels"]["tuner/storage"] == "grpc"
            else:
                assert url.drivername == "postgresql"
                assert w["metadata"]["labels"]["tuner/storage"] == "postgresql"
            if url.host == "tuner-postgres":
                # The StatefulSet's server, user, database and password.
                service = one(resources, "Service", "tuner-postgres")
                assert url.port == service["spec"]["ports"][0]["port"]
                server = one(resources, "StatefulSet", "tuner-postgres")
                db = environment(server["spec"]["template"]["spec"]["containers"][0], resources)
                assert (url.username, url.password, url.database) == (
                    db["POSTGRES_USER"],
                    db["POSTGRES_PASSWORD"],
                    db["POSTGRES_DB"],
                )
            if c["name"] in ("worker", "dashboard"):
                # An object store, or a folder on a mounted volume.
                artifacts = env["TUNER_ARTIFACTS"]
                mounts = [m["mountPath"] for m in c["volumeMounts"]]
                assert artifacts.startswith("s3://") or artifacts in mounts


@pytest.mark.parametrize("overlay", [*OVERLAYS, "everything"])
def test_the_containers_run_tuner_commands_on_study_files_they_can_read(
    rendered: dict[str, list[Resource]], overlay: str, tmp_path: Path
) -> None:
    resources = rendered[overlay]
    workers = one(resources, "Job", "tuner-workers")
    worker = workers["spec"]["template"]["spec"]["containers"][0]
    command, args = tuner_args(worker, environment(worker, resources, job_env(workers, 3)))
    assert command == "worker"
    params = cli.commands["worker"].make_context("worker", args).params
    assert params["worker_index"] == 3
    assert params["threads"] == math.ceil(cpus(worker["resources"]["requests"]["cpu"]))
    study = params["study_file"]
    if study.parts[0] == "studies":  # the image's copy of studies/
        load_study_config(ROOT / study)
    else:  # a file of a mounted ConfigMap
        mount = next(m for m in worker["volumeMounts"] if study.parent == Path(m["mountPath"]))
        volume = next(
            v for v in workers["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]
        )
        text = one(resources, "ConfigMap", volume["configMap"]["name"])["data"][study.name]
        (tmp_path / study.name).write_text(text)
        load_study_config(tmp_path / study.name)
    dashboard = one(resources, "Deployment", "tuner-dashboard")["spec"]["template"]["spec"]
    command, args = tuner_args(dashboard["containers"][0], {})
    params = cli.commands[command].make_context(command, args).params
    assert (params["host"], params["port"]) == ("0.0.0.0", 8080)
    assert dashboard["containers"][0]["ports"][0]["containerPort"] == 8080
    proxy = one(resources, "Deployment", "tuner-storage-proxy")["spec"]["template"]["spec"]
    command, args = tuner_args(proxy["containers"][0], {})
    assert command == "storage-proxy" and args == ["--host", "0.0.0.0", "--port", "50051"]
    if "storage-proxy" in cli.commands:  # being written on another branch
        cli.commands[command].make_context(command, args)


@pytest.mark.parametrize("overlay", [*OVERLAYS, "everything"])
def test_workers_are_an_indexed_job_that_restarts_a_failed_pod_and_stops_gracefully(
    rendered: dict[str, list[Resource]], overlay: str
) -> None:
    job = one(rendered[overlay], "Job", "tuner-workers")["spec"]
    assert job["completionMode"] == "Indexed"
    assert job["completions"] == job["parallelism"] >= 1
    assert job["backoffLimit"] >= job["parallelism"]
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "OnFailure"
    # A stopped worker finishes its batch and queues its trial again before SIGKILL.
    assert pod["terminationGracePeriodSeconds"] >= 30
    [worker] = pod["containers"]
    requests, limits = worker["resources"]["requests"], worker["resources"]["limits"]
    assert cpus(requests["cpu"]) <= cpus(limits["cpu"]) and requests["memory"]
    assert limits["memory"]
    [wait] = pod["initContainers"]
    assert wait["command"][-1].startswith("until tuner studies")


def test_gpu_workers_ask_for_a_gpu_and_share_it_as_tuner_run_does(
    rendered: dict[str, list[Resource]],
) -> None:
    for overlay in ("gpu", "everything"):
        resources = rendered[overlay]
        job = one(resources, "Job", "tuner-workers")
        worker = job["spec"]["template"]["spec"]["containers"][0]
        assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert GPU_SHARING_ENV.items() <= environment(worker, resources).items()
    cpu = one(rendered["cpu"], "Job", "tuner-workers")["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in cpu["containers"][0]["resources"]["limits"]


def test_an_external_server_takes_the_url_from_the_secret(
    rendered: dict[str, list[Resource]],
) -> None:
    for overlay in ("external-postgres", "everything"):
        resources = rendered[overlay]
        assert not [r for r in resources if r["kind"] == "StatefulSet"]
        assert not [r for r in resources if r["metadata"]["name"] == "tuner-postgres"]
        for w in (r for r in resources if pod_spec(r) is not None):
            for c in containers(w):
                storage = next(e for e in c["env"] if e["name"] == "TUNER_STORAGE")
                if w["metadata"]["labels"]["tuner/storage"] == "postgresql":
                    assert storage["valueFrom"]["secretKeyRef"]["key"] == "TUNER_STORAGE"
                else:
                    assert storage["value"] == "grpc://tuner-storage-proxy:50051"


@pytest.mark.parametrize("overlay", [*OVERLAYS, "everything"])
def test_every_pod_runs_unprivileged_on_a_read_only_root_filesystem(
    rendered: dict[str, list[Resource]], overlay: str
) -> None:
    resources = rendered[overlay]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--uid 1000" in dockerfile and "USER tuner" in dockerfile
    for w in (r for r in resources if pod_spec(r) is not None):
        pod = pod_spec(w)
        assert pod is not None and pod["securityContext"]["runAsNonRoot"] is True
        for c in containers(w):
            assert c["securityContext"] == {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            }
            if not c["image"].startswith(IMAGE):
                continue
            assert pod["securityContext"]["runAsUser"] == 1000  # the image's user
            # What tuner, Keras, JAX and Matplotlib write goes to a mounted volume.
            env = environment(c, resources)
            mounts = [m["mountPath"] for m in c["volumeMounts"]]
            for var in ("HOME", "XDG_CACHE_HOME", "TUNER_CACHE_DIR", "KERAS_HOME", "MPLCONFIGDIR"):
                if var in env:
                    assert any(env[var].startswith(m + "/") for m in mounts), (c["name"], var)
            assert "HOME" in env
            if c["name"] == "worker":
                assert {"TUNER_CACHE_DIR", "KERAS_HOME", "MPLCONFIGDIR"} <= env.keys()


def test_only_cluster_internal_services(rendered: dict[str, list[Resource]]) -> None:
    for resources in rendered.values():
        kinds = {r["kind"] for r in resources}
        assert kinds <= {
            "Service",
            "StatefulSet",
            "Deployment",
            "Job",
            "Secret",
            "ConfigMap",
            "PersistentVolumeClaim",
        }
        for service in (r for r in resources if r["kind"] == "Service"):
            assert service["spec"].get("type", "ClusterIP") == "ClusterIP"


def test_passwords_come_from_a_file_the_user_makes_and_never_commits() -> None:
    assert "tuner.env" in (DEPLOY / ".gitignore").read_text().splitlines()
    committed = subprocess.run(
        ["git", "ls-files", str(DEPLOY)], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.split()
    assert committed and not [f for f in committed if f.endswith("/tuner.env")]
    for overlay in OVERLAYS:
        k = yaml.safe_load((DEPLOY / "overlays" / overlay / "kustomization.yaml").read_text())
        assert k["secretGenerator"] == [{"name": "tuner", "envs": ["tuner.env"]}]
        example = read_env_file(DEPLOY / "overlays" / overlay / "tuner.env.example")
        for key, value in example.items():
            if key.endswith(("PASSWORD", "SECRET_ACCESS_KEY")):
                assert value == "change-me"
        # No password in any committed manifest: every one comes from the Secret.
        for f in (DEPLOY / "overlays" / overlay).parent.parent.rglob("*.yaml"):
            assert "change-me" not in f.read_text()
