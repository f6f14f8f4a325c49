"""The README is the front door: its first two code blocks are the two commands, its test
command installs what CI installs, and every relative link of the site's pages leads somewhere.

CI builds the site itself (`mkdocs build --strict` in .ci/run); these checks need no MkDocs.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").rglob("*.md"))
MAIN = (
    "python3 -m venv .venv && .venv/bin/pip install -c constraints.txt -e '.[cpu]' && "
    ".venv/bin/tuner run studies/nyc-weather.toml"
)
TESTS = "bash tests/run"
EXTRAS = re.compile(r"pip install -c constraints\.txt -e '\.\[([^\]]*)\]'")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def code_blocks(text: str) -> list[str]:
    return [block.strip() for block in FENCE.findall(text)]


def prose(text: str) -> str:
    """The text without its code blocks and code spans, where a link is not a link."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings, as GitHub and MkDocs make them."""
    found = set()
    for line in prose(path.read_text()).splitlines():
        if heading := re.match(r"#{1,6}\s+(.*)", line):
            words = re.sub(r"[^\w\- ]", "", heading.group(1).replace("`", "").strip().lower())
            found.add(words.replace(" ", "-"))
    return found


def test_the_first_two_code_blocks_of_the_readme_are_the_two_commands() -> None:
    main, tests = code_blocks(README.read_text())[:2]
    assert main.startswith(MAIN)
    assert tests == TESTS
    assert "\n" not in main


def test_ci_runs_the_readme_test_command_which_installs_every_extra_the_tests_need() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert [line for line in ci.splitlines() if line.strip() == TESTS] == [TESTS]
    assert "pip install" not in ci  # the one install is tests/run's
    script = (ROOT / "tests" / "run").read_text()
    installs = [line for line in script.splitlines() if EXTRAS.search(line)]
    assert len(installs) == 1, installs
    extras = EXTRAS.search(installs[0])
    assert extras is not None
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert set(extras.group(1).split(",")) == set(declared["optional-dependencies"]) - {
        "gpu",
        "gpu-tensorflow",
        "bench",
    }
    assert script.rstrip().endswith('.venv/bin/python -m pytest "$@"')


# The site shows BENCHMARKS.md and studies/README.md too (docs/hooks.py).
SHOWN = [README, ROOT / "BENCHMARKS.md", ROOT / "studies" / "README.md"]


def test_every_relative_link_leads_to_a_file_and_its_heading() -> None:
    broken = []
    for page in [*SHOWN, *PAGES]:
        for target in LINK.findall(prose(page.read_text())):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(ROOT)}: {target}"
            if not file.is_file():
                broken.append(f"{where}: no such file")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                broken.append(f"{where}: no heading with that anchor")
    assert not broken, broken


def test_every_page_is_in_the_site_navigation() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def listed(nav: object) -> set[str]:
        if isinstance(nav, str):
            return {nav}
        items = list(nav.values()) if isinstance(nav, dict) else nav
        assert isinstance(items, list), nav
        return set().union(*(listed(item) for item in items))

    in_nav = listed(config["nav"])
    assert {str(p.relative_to(ROOT / "docs")) for p in PAGES} == in_nav
