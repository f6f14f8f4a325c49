"""The part of kustomize that deploy/kubernetes/ uses, for tests on a machine with no kubectl:
`resources`, `components`, `namespace`, `images`, `secretGenerator` and `configMapGenerator`
(with `disableNameSuffixHash`), and `patches` given as RFC 6902 JSON patches (add, remove,
replace, test) or as strategic-merge `$patch: delete`, aimed by kind, name and label selector.

Anything else in a kustomization is refused rather than ignored, so that what renders here is
what `kubectl apply -k` would apply.
"""

from __future__ import annotations

import base64
import copy
import re
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]

KUSTOMIZATION_FIELDS = {
    "apiVersion",
    "kind",
    "namespace",
    "resources",
    "components",
    "images",
    "secretGenerator",
    "configMapGenerator",
    "generatorOptions",
    "patches",
}
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "StorageClass", "ClusterRole"}


class Unsupported(Exception):
    """A kustomization uses something this renderer does not implement."""


def build(folder: Path) -> list[Resource]:
    """The resources `kubectl kustomize folder` prints, in order."""
    return _apply(folder, [], component=False)


def _apply(folder: Path, resources: list[Resource], component: bool) -> list[Resource]:
    k = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(k) - KUSTOMIZATION_FIELDS
    if unknown:
        raise Unsupported(f"{folder}: {sorted(unknown)}")
    kind = "Component" if component else "Kustomization"
    if k.get("kind", "Kustomization") != kind:
        raise Unsupported(f"{folder}: a {k.get('kind')} where a {kind} belongs")
    for entry in k.get("resources", []):
        path = folder / entry
        if path.is_dir():
            resources += build(path)
        else:
            resources += [r for r in yaml.safe_load_all(path.read_text()) if r]
    for entry in k.get("components", []):
        resources = _apply(folder / entry, resources, component=True)
    options = k.get("generatorOptions", {})
    if k.get("secretGenerator") or k.get("configMapGenerator"):
        if options != {"disableNameSuffixHash": True}:
            raise Unsupported(f"{folder}: generated names with a hash suffix")
    for spec in k.get("secretGenerator", []):
        resources.append(_generate("Secret", spec, folder))
    for spec in k.get("configMapGenerator", []):
        resources.append(_generate("ConfigMap", spec, folder))
    for patch in k.get("patches", []):
        resources = _patch(resources, patch, folder)
    if "namespace" in k:
        for r in resources:
            if r["kind"] not in CLUSTER_SCOPED:
                r["metadata"]["namespace"] = k["namespace"]
    for image in k.get("images", []):
        for r in resources:
            for c in containers(r):
                c["image"] = _new_image(c["image"], image)
    return resources


def _generate(kind: str, spec: dict[str, Any], folder: Path) -> Resource:
    unknown = set(spec) - {"name", "envs", "files", "literals"}
    if unknown:
        raise Unsupported(f"{kind} generator: {sorted(unknown)}")
    data: dict[str, str] = {}
    for env in spec.get("envs", []):
        data |= read_env_file(folder / env)
    for file in spec.get("files", []):
        key, _, path = file.rpartition("=") if "=" in file else (Path(file).name, "", file)
        data[key] = (folder / path).read_text()
    for literal in spec.get("literals", []):
        key, value = literal.split("=", 1)
        data[key] = value
    resource: Resource = {"apiVersion": "v1", "kind": kind, "metadata": {"name": spec["name"]}}
    if kind == "Secret":
        resource["type"] = "Opaque"
        resource["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    else:
        resource["data"] = data
    return resource


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines, as kustomize's `envs` reads them: blank lines and # comments skipped."""
    lines = [line.strip() for line in path.read_text().splitlines()]
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def _patch(resources: list[Resource], entry: dict[str, Any], folder: Path) -> list[Resource]:
    unknown = set(entry) - {"path", "target"}
    if unknown:
        raise Unsupported(f"patch: {sorted(unknown)}")
    docs = [d for d in yaml.safe_load_all((folder / entry["path"]).read_text()) if d is not None]
    target = entry.get("target")
    if len(docs) == 1 and isinstance(docs[0], list):  # RFC 6902
        if target is None:
            raise Unsupported(f"{entry['path']}: a JSON patch needs a target")
        return [json_patch(r, docs[0]) if matches(r, target) else r for r in resources]
    [doc] = docs
    if target is not None or doc.get("$patch") != "delete":
        raise Unsupported(f"{entry['path']}: only strategic-merge `$patch: delete` is rendered")
    aimed = {"kind": doc["kind"], "name": doc["metadata"]["name"]}
    kept = [r for r in resources if not matches(r, aimed)]
    if len(kept) != len(resources) - 1:
        raise ValueError(f"{entry['path']}: no single {aimed} to delete")
    return kept


def matches(resource: Resource, target: dict[str, Any]) -> bool:
    """Whether kustomize's patch `target` selects `resource` (kind, name as an anchored regular
    expression, and an equality label selector)."""
    unknown = set(target) - {"kind", "name", "labelSelector"}
    if unknown:
        raise Unsupported(f"target: {sorted(unknown)}")
    if "kind" in target and resource["kind"] != target["kind"]:
        return False
    if "name" in target and not re.fullmatch(target["name"], resource["metadata"]["name"]):
        return False
    labels = resource["metadata"].get("labels", {})
    for term in filter(None, target.get("labelSelector", "").split(",")):
        key, value = term.split("=")
        if labels.get(key) != value:
            return False
    return True


def json_patch(document: Resource, operations: list[dict[str, Any]]) -> Resource:
    """`document` with the RFC 6902 `operations` applied (add, remove, replace, test)."""
    document = copy.deepcopy(document)
    for op in operations:
        *parents, last = [
            p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]
        ]
        node: Any = document
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if op["op"] == "test":
            found = node[int(last)] if isinstance(node, list) else node[last]
            if found != op["value"]:
                raise ValueError(f"test of {op['path']}: {found!r} != {op['value']!r}")
        elif op["op"] == "add" and isinstance(node, list):
            node.insert(len(node) if last == "-" else int(last), copy.deepcopy(op["value"]))
        elif op["op"] in ("add", "replace"):
            if op["op"] == "replace" and (
                int(last) >= len(node) if isinstance(node, list) else last not in node
            ):
                raise ValueError(f"replace of {op['path']}: nothing there")
            node[int(last) if isinstance(node, list) else last] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            del node[int(last) if isinstance(node, list) else last]
        else:
            raise Unsupported(f"JSON patch operation {op['op']!r}")
    return document


def _new_image(image: str, entry: dict[str, Any]) -> str:
    name, tag = _split_image(image)
    if name != entry["name"]:
        return image
    new_tag = entry.get("newTag")
    return entry.get("newName", name) + (f":{new_tag}" if new_tag else tag)


def _split_image(image: str) -> tuple[str, str]:
    """("registry:5000/name", ":tag") from "registry:5000/name:tag" (or "@digest")."""
    if "@" in image:
        name, digest = image.split("@", 1)
        return name, "@" + digest
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = image.rsplit(":", 1)
        return name, ":" + tag
    return image, ""


def pod_spec(resource: Resource) -> dict[str, Any] | None:
    """The pod template's spec of a Deployment, StatefulSet or Job; None for anything else."""
    if resource["kind"] in ("Deployment", "StatefulSet", "Job"):
        return resource["spec"]["template"]["spec"]  # type: ignore[no-any-return]
    return None


def containers(resource: Resource) -> list[dict[str, Any]]:
    """The init containers and containers of a workload's pod template."""
    spec = pod_spec(resource)
    if spec is None:
        return []
    return [*spec.get("initContainers", []), *spec["containers"]]
