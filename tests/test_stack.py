"""The stack cannot shift under the results: `constraints.txt` locks every package, the locked
versions lie within `pyproject.toml`'s bounds, every install the project documents uses the
lock, and the environment the tests run in is the locked one (`tests/run` installs it)."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "constraints.txt"
# The libraries whose behaviour tuner changes (tuner/patches, tuner/storage/optuna_internals.py):
# bounded from above at the series that was tested.
PATCHED = {"keras", "jax", "tensorflow", "tensorflow-cpu", "optuna"}


def locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not NAME==VERSION"
            pins[canonicalize_name(name)] = version
    return pins


def requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        lines += extra
    return [Requirement(line) for line in lines]


def test_the_lock_holds_the_patched_libraries_and_their_neighbours() -> None:
    pins = locked()
    for name in ("keras", "jax", "jaxlib", "tensorflow-cpu", "optuna", "numpy", "ml-dtypes"):
        assert name in pins, name


def test_every_locked_version_lies_within_the_bounds_of_pyproject() -> None:
    pins = locked()
    outside = [
        f"{req} locked at {pins[canonicalize_name(req.name)]}"
        for req in requirements()
        if canonicalize_name(req.name) in pins
        and not req.specifier.contains(pins[canonicalize_name(req.name)], prereleases=True)
    ]
    assert not outside


def test_the_patched_libraries_are_bounded_from_above() -> None:
    unbounded = [
        str(req)
        for req in requirements()
        if canonicalize_name(req.name) in PATCHED
        and not any(s.operator in ("<", "<=", "==", "~=") for s in req.specifier)
    ]
    assert not unbounded
    assert {canonicalize_name(r.name) for r in requirements()} >= PATCHED


def test_this_environment_is_the_locked_stack() -> None:
    pins = locked()
    installed = {
        canonicalize_name(d.metadata["Name"]): d.version
        for d in metadata.distributions()
        if d.metadata["Name"]
    }
    checked = {name: version for name, version in installed.items() if name in pins}
    assert {"keras", "jax", "optuna", "numpy"} <= set(checked)
    differ = {
        name: f"{version} installed, {pins[name]} locked"
        for name, version in checked.items()
        if version != pins[name]
    }
    assert not differ, "install with `pip install -c constraints.txt` (bash tests/run does)"


INSTALL = re.compile(r"pip install [^\n&]*'\.\[[^\]]*\]'")


def test_every_documented_install_of_the_project_uses_the_lock() -> None:
    files = [
        ROOT / "README.md",
        ROOT / "Dockerfile",
        ROOT / "tests" / "run",
        *sorted((ROOT / "docs").rglob("*.md")),
    ]
    installs = [(f, m.group(0)) for f in files for m in INSTALL.finditer(f.read_text())]
    assert len(installs) >= 4
    unlocked = [
        f"{f.relative_to(ROOT)}: {cmd}" for f, cmd in installs if "-c constraints.txt" not in cmd
    ]
    assert not unlocked
