"""MkDocs hook: the repository's Markdown files outside docs/ as pages of the site.

README.md, BENCHMARKS.md and studies/README.md stay where GitHub shows them; the site shows
them as pages (`index.md`, `benchmarks.md`, `studies.md`), whose files in docs/ only point at
them. Links are written for GitHub, relative to the file they are in (`../BENCHMARKS.md` from
a page, `docs/running.md` from the README); this hook points each at the page that shows its
target, so the same Markdown reads right in both places and `mkdocs build --strict` still
checks every link. A link to any other file outside docs/ is left as it is, and fails the build.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# The page in docs/ -> the file at the repository root that it shows.
SHOWN = {
    "index.md": "README.md",
    "benchmarks.md": "BENCHMARKS.md",
    "studies.md": "studies/README.md",
}
PAGE_OF = {ROOT / source: DOCS / page for page, source in SHOWN.items()}
# An inline link's target: [text](target#anchor "title").
LINK = re.compile(r"(\]\()([^)\s#]+)(#[^)\s]*)?((?:\s+\"[^\"]*\")?\))")


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    uri = page.file.src_uri
    origin = ROOT / SHOWN[uri] if uri in SHOWN else DOCS / uri
    if uri in SHOWN:
        markdown = origin.read_text(encoding="utf-8")
    here = (DOCS / uri).parent

    def point(link: re.Match[str]) -> str:
        target = link.group(2)
        if ":" in target or target.startswith("/"):
            return link.group(0)  # a URL, or an absolute path
        resolved = (origin.parent / target).resolve()
        if resolved in PAGE_OF:
            resolved = PAGE_OF[resolved]
        elif not resolved.is_relative_to(DOCS):
            return link.group(0)
        new = posixpath.relpath(resolved.as_posix(), here.as_posix())
        return f"{link.group(1)}{new}{link.group(3) or ''}{link.group(4)}"

    return LINK.sub(point, markdown)
