"""deploy/kubernetes/, read as `kubectl apply -k` reads it (no cluster needed): every overlay
rendered by the part of kustomize it uses (tests/kustomize.py), validated against the
Kubernetes API's own schema, its references followed, and its containers' commands and
environment resolved as the kubelet resolves them, then run as local processes against the
local PostgreSQL server."""

from __future__ import annotations

import base64
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import kubernetes_validate
import optuna
import pytest
import yaml
from conftest import FAST_SPACE, study_text
from kustomize import Resource, build, containers, pod_spec, read_env_file
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from tuner.cli import cli
from tuner.config.study_file import load_study_config
from tuner.search.launcher import GPU_SHARING_ENV

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kubernetes"
OVERLAYS = sorted(p.name for p in (DEPLOY / "overlays").iterdir())
# Every component in one overlay, in an order that their patches allow (docs/kubernetes.md).
EVERYTHING = ["storage-proxy", "external-postgres", "gpu", "shared-volume", "own-study"]
# The local run below puts components/storage-proxy in when `tuner storage-proxy` exists (it
# does: the run goes through the proxy).
PROXY = "storage-proxy" in cli.commands
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
    # What the local run applies: the artifact store on a volume (s3:// stores are tested
    # against moto's server elsewhere), and the storage proxy.
    local = tree / "overlays" / "local-run"
    shutil.copytree(tree / "overlays" / "shared-volume", local)
    k = yaml.safe_load((local / "kustomization.yaml").read_text())
    k["components"] += ["../../components/storage-proxy"] if PROXY else []
    (local / "kustomization.yaml").write_text(yaml.safe_dump(k))
    for example in tree.glob("overlays/*/tuner.env.example"):
        shutil.copy(example, example.with_suffix(""))
    if PROXY:  # with the proxy, the token its overlay's tuner.env holds
        token = read_env_file(tree / "overlays" / "storage-proxy" / "tuner.env")
        with (local / "tuner.env").open("a") as env:
            env.write(f"TUNER_PROXY_TOKEN={token['TUNER_PROXY_TOKEN']}\n")
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
    # A failed pod is replaced; a stopped one (SIGTERM: exit 143; or a drained node) is replaced
    # without counting as a failure, rather than counting its index as done.
    assert pod["restartPolicy"] == "Never"  # as podFailurePolicy requires
    [worker] = pod["containers"]
    command, args = tuner_args(worker, {})
    assert command == "worker"
    code = args[args.index("--stopped-exit-code") + 1]
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]} in job[
        "podFailurePolicy"
    ]["rules"]
    assert {
        "action": "Ignore",
        "onExitCodes": {"containerName": worker["name"], "operator": "In", "values": [int(code)]},
    } in job["podFailurePolicy"]["rules"]
    # A stopped worker finishes its batch and queues its trial again before SIGKILL.
    assert pod["terminationGracePeriodSeconds"] >= 30
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
            "NetworkPolicy",
        }
        for service in (r for r in resources if r["kind"] == "Service"):
            assert service["spec"].get("type", "ClusterIP") == "ClusterIP"


@pytest.mark.parametrize("overlay", [*OVERLAYS, "everything"])
def test_only_tuners_own_pods_may_reach_the_proxy_and_postgres(
    rendered: dict[str, list[Resource]], overlay: str
) -> None:
    # The proxy has no login, and PostgreSQL's password is in every tuner pod: a policy must
    # select each of their pods and let in only tuner's pods of this namespace, on their ports.
    resources = rendered[overlay]
    workloads = [r for r in resources if pod_spec(r) is not None]
    policies = [r for r in resources if r["kind"] == "NetworkPolicy"]

    def labels(w: Resource) -> dict[str, str]:
        return dict(w["spec"]["template"]["metadata"]["labels"])

    def selected(policy: Resource) -> list[Resource]:
        wanted = policy["spec"]["podSelector"]["matchLabels"].items()
        return [w for w in workloads if wanted <= labels(w).items()]

    for policy in policies:
        pods = selected(policy)
        assert pods, f"{overlay}: NetworkPolicy {policy['metadata']['name']} selects no pod"
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        for rule in policy["spec"]["ingress"]:
            for source in rule["from"]:
                assert source.keys() == {"podSelector"}  # this namespace only, no ipBlock
                assert source["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "tuner"}
            named = {p["name"] for w in pods for c in containers(w) for p in c.get("ports", [])}
            assert {port["port"] for port in rule["ports"]} <= named
    guarded = {"storage-proxy", "postgres"}
    for w in workloads:
        if labels(w)["app.kubernetes.io/component"] in guarded:
            assert any(w in selected(p) for p in policies), f"{overlay}: {w['metadata']['name']}"
        # Every pod that talks to them is one of tuner's (else the policies shut it out).
        assert labels(w)["app.kubernetes.io/name"] == "tuner"


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
            if key.endswith(("PASSWORD", "SECRET_ACCESS_KEY", "TOKEN")):
                assert value == "change-me"
        # No password in any committed manifest: every one comes from the Secret.
        for f in (DEPLOY / "overlays" / overlay).parent.parent.rglob("*.yaml"):
            assert "change-me" not in f.read_text()


# --- The manifests' own containers, run as local processes -------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def image_env() -> dict[str, str]:
    """The Dockerfile's ENV lines: the environment every container starts from."""
    env: dict[str, str] = {}
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("ENV "):
            env |= dict(word.split("=", 1) for word in line.split()[1:])
    return env


class Pod(threading.Thread):
    """One pod of a workload as local processes: its init containers one after the other, then
    its container, started again after a failure as its restartPolicy says (OnFailure: unless
    it exits 0; Always: whatever the exit; Never, in a Job: a new pod, init containers
    first, unless it exits 0), with its volumes as local folders.

    In-cluster names become local ones: the PostgreSQL Service's URL becomes the test's
    database, `tuner-storage-proxy:50051` and the dashboard's port become free local ports,
    the image's study file becomes `study`; `tuner`, `python` and `sh` come from this
    virtual environment's PATH."""

    def __init__(
        self,
        workload: Resource,
        resources: list[Resource],
        folder: Path,
        *,
        index: int = 0,
        database: str,
        study: Path,
        ports: dict[str, int],
    ) -> None:
        super().__init__(daemon=True)
        self.workload, self.resources, self.index = workload, resources, index
        self.database, self.study, self.ports = database, study, ports
        self.folder = folder / f"{workload['metadata']['name']}-{index}"
        self.app = self.folder / "app"  # the image's WORKDIR: read-only, nothing written here
        self.app.mkdir(parents=True)
        self.process: subprocess.Popen[str] | None = None
        self.started_main = threading.Event()
        self.exits: list[int] = []
        self.stopping = False

    def run(self) -> None:
        spec = pod_spec(self.workload)
        assert spec is not None
        restart = spec.get("restartPolicy", "Always")
        while not self.stopping:
            for init in spec.get("initContainers", []):
                if self._run(init) != 0:
                    return
            self.started_main.set()
            while not self.stopping:
                code = self._run(spec["containers"][0])
                self.exits.append(code)
                if restart != "Always" and code == 0:
                    return
                if restart == "Never":
                    break  # the Job makes a new pod

    def _run(self, container: dict[str, Any]) -> int:
        env = environment(container, self.resources, job_env(self.workload, self.index))
        line = [self._local(part) for part in command_line(container, env)]
        env = {k: self._local(v) for k, v in (image_env() | env).items()}
        env["TMPDIR"] = self._local("/tmp")
        env["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
        env["PYTHONPATH"] = str(ROOT)
        log = (self.folder / f"{container['name']}.log").open("a")
        self.process = subprocess.Popen(
            line, env=env, cwd=self.app, stdout=log, stderr=subprocess.STDOUT, text=True
        )
        return self.process.wait()

    def _local(self, value: str) -> str:
        if "://" in value:
            url = make_url(value)
            if url.host == "tuner-postgres" or url.drivername == "postgresql":
                local = make_url(self.database)
                return url.set(
                    host=local.host, port=local.port, username=local.username,
                    database=local.database,
                ).render_as_string(hide_password=False)  # fmt: skip
            return f"grpc://127.0.0.1:{self.ports[str(url.host)]}"
        if value.startswith("studies/"):
            return str(self.study)
        if value in ("8080", "50051"):
            return str(
                self.ports[{"8080": "tuner-dashboard", "50051": "tuner-storage-proxy"}[value]]
            )
        if value == "0.0.0.0":
            return "127.0.0.1"
        for c in containers(self.workload):
            for mount in c.get("volumeMounts", []):
                path = mount["mountPath"]
                if value == path or value.startswith(path + "/"):
                    return str(self._volume(mount["name"])) + value[len(path) :]
        return value

    def _volume(self, name: str) -> Path:
        spec = pod_spec(self.workload)
        assert spec is not None
        [volume] = [v for v in spec["volumes"] if v["name"] == name]
        if "persistentVolumeClaim" in volume:  # shared by every pod
            folder = self.folder.parent / volume["persistentVolumeClaim"]["claimName"]
        else:
            assert "emptyDir" in volume
            folder = self.folder / name
        folder.mkdir(exist_ok=True)
        return folder

    def kill(self) -> None:
        """SIGKILL, as a node that dies or a container out of memory."""
        assert self.process is not None
        self.process.kill()

    def stop(self) -> None:
        """SIGTERM, as `kubectl delete pod`, then SIGKILL after the grace period."""
        self.stopping = True
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if self.ident is not None:  # started as a thread (the set-up Job's pod runs in place)
            self.join(timeout=30)

    def log(self) -> str:
        return "\n".join(f.read_text() for f in sorted(self.folder.glob("*.log")))


@pytest.mark.slow
def test_the_manifests_containers_run_a_study_to_its_budget_and_a_killed_pod_restarts(
    rendered: dict[str, list[Resource]],
    tree: Path,
    postgres_url: str,
    study_dir: Path,
    tmp_path: Path,
) -> None:
    resources = build(tree / "overlays" / "local-run")
    (study_dir / "study.toml").write_text(
        study_text(
            "k8s",
            study='name = "k8s"\nmetric = "val_mae"\nn_trials = 6\nseed_configs = false',
            pruner='name = "none"',
            # Long enough that a worker is caught in the middle of a trial.
            training="epochs = 40\nbatch_size = 16\nsteps_per_epoch = 10\npatience = 40",
            workers="heartbeat_interval = 1\ngrace_period = 3",
            space=FAST_SPACE,
        )
    )
    ports = {"tuner-dashboard": free_port(), "tuner-storage-proxy": free_port()}

    def pod(kind: str, name: str, index: int = 0) -> Pod:
        return Pod(
            one(resources, kind, name),
            resources,
            tmp_path,
            index=index,
            database=postgres_url,
            study=study_dir / "study.toml",
            ports=ports,
        )

    # Three workers, whose init containers wait for the set-up Job.
    workers = [pod("Job", "tuner-workers", i) for i in range(3)]
    pods = list(workers)
    try:
        for w in workers:
            w.start()
        time.sleep(3)
        assert not any(w.started_main.is_set() for w in workers)
        setup = pod("Job", "tuner-setup")
        pods.append(setup)
        setup.run()
        assert setup.exits == [0], setup.log()
        assert "the storage holds Optuna's tables" in setup.log()
        if PROXY:
            proxy = pod("Deployment", "tuner-storage-proxy")
            pods.append(proxy)
            proxy.start()
        dashboard = pod("Deployment", "tuner-dashboard")
        pods.append(dashboard)
        dashboard.start()

        if PROXY:  # the proxy asks for the token the workers give
            deadline = time.monotonic() + 60
            while "serving storage" not in proxy.log() and time.monotonic() < deadline:
                time.sleep(0.5)
            assert "giving $TUNER_PROXY_TOKEN)" in proxy.log(), proxy.log()

        # Kill worker 0 in the middle of a trial, once another trial has finished.
        storage = optuna.storages.RDBStorage(postgres_url)
        deadline = time.monotonic() + 300
        victim = None
        while victim is None:
            assert time.monotonic() < deadline, "worker 0 never got to the middle of a trial"
            assert not workers[0].exits, workers[0].log()
            process = workers[0].process
            if workers[0].started_main.is_set() and process is not None:
                running = _trial_in_the_middle(storage, f"{socket.gethostname()}:{process.pid}")
                if running is not None:
                    process.send_signal(signal.SIGSTOP)  # the trial cannot end before the kill
                    trial = storage.get_trial(running._trial_id)
                    if trial.state == TrialState.RUNNING:
                        workers[0].kill()
                        victim = running
                    else:
                        process.send_signal(signal.SIGCONT)
            time.sleep(0.2)

        # Delete worker 1's pod in the middle of a trial (SIGTERM): the Job makes a new one.
        deadline = time.monotonic() + 300
        stopped = None
        while stopped is None:
            assert time.monotonic() < deadline, "worker 1 never got to the middle of a trial"
            process = workers[1].process
            if process is not None and process.poll() is None:
                stopped = _trial_in_the_middle(storage, f"{socket.gethostname()}:{process.pid}")
                if stopped is not None:
                    process.send_signal(signal.SIGTERM)
            time.sleep(0.2)

        for w in workers:
            w.join(timeout=600)
        assert [w.exits for w in workers] == [[-signal.SIGKILL, 0], [143, 0], [0]], [
            w.log() for w in workers
        ]
        # The dashboard answers (as its readinessProbe asks) on what the workers wrote.
        probe = one(resources, "Deployment", "tuner-dashboard")["spec"]["template"]["spec"]
        path = probe["containers"][0]["readinessProbe"]["httpGet"]["path"]
        assert _ready(f"http://127.0.0.1:{ports['tuner-dashboard']}{path}"), dashboard.log()
    finally:
        for p in pods:
            p.stop()

    trials = optuna.load_study(study_name="k8s", storage=postgres_url).trials
    # The budget exactly: six complete trials; the killed one and the stopped one each failed
    # once and ran again.
    assert Counter(t.state for t in trials) == {TrialState.COMPLETE: 6, TrialState.FAIL: 2}
    failed = {t.number for t in trials if t.state == TrialState.FAIL}
    assert failed == {victim.number, stopped.number}
    for lost in (victim, stopped):
        [retry] = [t for t in trials if t.system_attrs.get("failed_trial") == lost.number]
        assert retry.state == TrialState.COMPLETE and retry.params == lost.params
    # Nothing was written outside the pods' volumes.
    assert not any(any(p.app.iterdir()) for p in pods)
    assert any((tmp_path / "tuner-workers-0" / "scratch" / "cache" / "tuner").iterdir())


def _ready(url: str, timeout: float = 120) -> bool:
    """Whether `url` answers 200 within `timeout` seconds, asked as a readiness probe asks."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(1)
    return False


def _trial_in_the_middle(
    storage: optuna.storages.BaseStorage, worker: str
) -> optuna.trial.FrozenTrial | None:
    """`worker`'s running trial once it has reported an epoch and another trial has finished."""
    try:
        study = optuna.load_study(study_name="k8s", storage=storage)
    except KeyError:
        return None
    trials = study.get_trials(deepcopy=False)
    if not any(t.state == TrialState.COMPLETE for t in trials):
        return None
    for t in trials:
        if t.state == TrialState.RUNNING and t.user_attrs.get("worker") == worker:
            if t.intermediate_values:
                return t
    return None
