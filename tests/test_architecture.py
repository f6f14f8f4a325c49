"""The tree shows the architecture: packages in layers, imports flowing one way, no circle.

Each package's docstring names its layer and what it may import ("May import: tuner.errors,
tuner.config."); this test reads those lines and every import of every module, function-level
imports included, and fails on an import against them or on an import circle.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import tuner

ROOT = Path(tuner.__file__).parent
# Modules beside the packages: the package's version, `python -m tuner`, the error base class.
TOP_LEVEL = {"tuner", "tuner.__main__", "tuner.errors"}


def module_name(path: Path, root: Path) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The modules of the project that the module at `path` imports, wherever in it."""
    top = name.split(".")[0]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import module` imports the module; `from pkg import name` the package.
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        else:
            continue
        found.update(t for t in targets if t == top or t.startswith(top + "."))
    found.discard(name)
    return found


def graph(root: Path) -> dict[str, set[str]]:
    found = modules(root)
    known = set(found)
    return {name: imports(path, name, known) for name, path in found.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle (one per strongly connected group of modules), by Tarjan's method."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def allowed(root: Path) -> dict[str, set[str]]:
    """Each package's "May import:" line from its docstring."""
    rules = {}
    for init in sorted(root.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        match = re.search(r"May import:(.*?)(?:\.\s*$|\.\n|$)", doc, re.S)
        names = match.group(1) if match else ""
        rules[f"{root.name}.{init.parent.name}"] = {
            n for n in re.split(r"[,\s]+", names.replace("every package of tuner", "*")) if n
        }
    return rules


def violations(root: Path) -> list[str]:
    """Imports against the stated layers, and packages that state none."""
    edges = graph(root)
    rules = allowed(root)
    found = [f"{p} states no 'May import:' line" for p, names in rules.items() if not names]
    for name, targets in edges.items():
        own = ".".join(name.split(".")[:2])
        for target in targets:
            other = ".".join(target.split(".")[:2])
            if other == own or target == root.name:
                continue
            if own in TOP_LEVEL and own != "tuner.__main__":
                found.append(f"{name} imports {target}: a top-level module imports no package")
            elif own in rules and "*" not in rules[own] and other not in rules[own]:
                found.append(f"{name} imports {target}, which {own} may not import")
    return found


def test_the_packages_import_one_way() -> None:
    assert violations(ROOT) == []


def test_no_module_imports_itself_back_through_others() -> None:
    assert circles(graph(ROOT)) == []


def test_few_modules_stand_beside_the_packages() -> None:
    top = {module_name(p, ROOT) for p in ROOT.glob("*.py")}
    assert top <= TOP_LEVEL


def test_every_package_says_its_job_and_layer() -> None:
    for init in ROOT.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert re.search(r"Layer \d+ of tuner", doc), init


@pytest.fixture
def made_up(tmp_path: Path) -> Path:
    """A small tree in tuner's form: `low` below `high`."""
    root = tmp_path / "pkg"
    for package, doc in (("low", "May import: pkg.errors."), ("high", "May import: pkg.low.")):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text(f'"""Job.\n\nLayer 1 of tuner. {doc}\n"""\n')
    (root / "__init__.py").write_text("")
    (root / "low" / "a.py").write_text("X = 1\n")
    (root / "high" / "b.py").write_text("from pkg.low.a import X\n")
    return root


def test_the_check_finds_a_made_up_circle(made_up: Path) -> None:
    assert circles(graph(made_up)) == []
    # One import inside a function, as the circle ablation -> launcher -> study -> ablation had.
    (made_up / "high" / "c.py").write_text("def f():\n    from pkg.high import b\n")
    (made_up / "high" / "b.py").write_text("from pkg.low.a import X\nfrom pkg.high.c import f\n")
    assert circles(graph(made_up)) == [["pkg.high.b", "pkg.high.c"]]


def test_the_check_finds_an_import_against_the_layers(made_up: Path) -> None:
    assert violations(made_up) == []
    (made_up / "low" / "a.py").write_text("def f():\n    from pkg.high.b import X\n")
    assert violations(made_up) == ["pkg.low.a imports pkg.high.b, which pkg.low may not import"]
