"""`tuner report`: the statistics of `tuner.analysis` written out for people, as one
self-contained HTML page (plotly, with plotly.js inside so it opens offline), PNG figures, and a
markdown summary to paste into an issue."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

from tuner import figures
from tuner.analysis import (
    BOOTSTRAP_RESAMPLES,
    CONFIDENCE,
    MIN_GROUP,
    RECURRENT_DROPOUT_ON,
    Effect,
    StudyAnalysis,
    analyse,
    compare,
)
from tuner.config import StudyConfig
from tuner.errors import TunerError
from tuner.results import seed_label
from tuner.storage import open_storage
from tuner.study import load_existing

HTML_FILE = "report.html"
MARKDOWN_FILE = "summary.md"
FIGURES = "figures"


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    markdown: Path
    pngs: tuple[Path, ...]


def make_report(configs: list[StudyConfig], url: str, out: Path) -> ReportFiles:
    """Analyse the studies of `configs` in the storage at `url` and write the report to `out`."""
    names = [c.name for c in configs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise TunerError(f"study {twice[0]!r} is named by more than one study file")
    storage = open_storage(url, must_exist=True)
    studies = [load_existing(name, storage) for name in names]
    analyses = [analyse(study) for study in studies]  # raises for a study with no result yet
    return write_report(analyses, out)


def write_report(analyses: list[StudyAnalysis], out: Path) -> ReportFiles:
    (out / FIGURES).mkdir(parents=True, exist_ok=True)
    rows = compare(analyses)
    names = [a.name for a in analyses]
    stems = _stems(names)
    folder = out / FIGURES
    pngs = [figures.png_effects(rows, names, folder / "effects.png")]
    for a, stem in zip(analyses, stems, strict=True):
        pngs += [
            figures.png_references(a, folder / f"{stem}-references.png"),
            figures.png_importances(a, folder / f"{stem}-importance.png"),
            figures.png_techniques(a, folder / f"{stem}-techniques.png"),
        ]
    page = out / HTML_FILE
    page.write_text(html_page(analyses, rows), encoding="utf-8")
    markdown = out / MARKDOWN_FILE
    markdown.write_text(markdown_summary(analyses, rows, stems), encoding="utf-8")
    return ReportFiles(page, markdown, tuple(pngs))


def how_to_read() -> str:
    return (
        "Each technique splits a study's complete trials (pruned and failed ones are left out) "
        "into groups by one parameter, and each group is compared with a reference group by "
        "the difference of their median objective. A difference is called clear only when its "
        f"{CONFIDENCE:.0%} bootstrap confidence interval ({BOOTSTRAP_RESAMPLES} resamples of "
        "each group) excludes zero: then the technique helped or hurt on that data; otherwise "
        "the difference cannot be told from noise. Groups of fewer than "
        f"{MIN_GROUP} trials get no interval and no verdict. Recurrent dropout counts as on "
        f"from a rate of {RECURRENT_DROPOUT_ON}. Improvements are the change of the median as "
        "a fraction of the reference group's median, positive when better whatever the "
        "study's direction."
    )


# markdown


def markdown_summary(
    analyses: list[StudyAnalysis], rows: list[tuple[str, dict[str, Effect]]], stems: list[str]
) -> str:
    names = [a.name for a in analyses]
    lines = [f"# What helps: {', '.join(names)}", "", how_to_read(), "", "## Across studies", ""]
    lines += _md_table(
        ["technique", *names], [[label, *(_verdict(e.get(n)) for n in names)] for label, e in rows]
    )
    lines += ["", f"![effects]({FIGURES}/effects.png)", ""]
    for a, stem in zip(analyses, stems, strict=True):
        s, b = a.summary, a.summary["best_trial"]
        lines += [f"## {a.name}", ""]
        lines.append(
            f"{len(a.values)} complete trials ({s['trials']['pruned']} pruned, "
            f"{s['trials']['failed']} failed); {a.metric}, {a.direction}. Best trial "
            f"{b['number']}"
            + (f" (seed configuration {b['seed_config']})" if b["seed_config"] else "")
            + f": {a.metric} = {b['value']:.4g}."
        )
        lines.append("")
        lines += _md_table(
            ["reference", a.metric, "best trial against it"],
            [[label, f"{value:.4g}", _versus(gain)] for label, value, gain in _references(a)],
        )
        lines += [
            "",
            "| technique | group | trials | best | median | 95% CI of median | vs reference |",
        ]
        lines += ["| --- | --- | --- | --- | --- | --- | --- |"]
        for t in a.techniques:
            effects = {e.treatment: e for e in t.effects}
            for g in t.groups:
                e = effects.get(g.label)
                lines.append(
                    f"| {t.spec.name} | {g.label} | {g.n} | {g.best:.4g} | {g.median:.4g} | "
                    f"{_ci(g.median_ci)} | {_verdict(e) if e else 'reference'} |"
                )
        if a.importances:
            for evaluator, values in a.importances.items():
                top = ", ".join(f"{p} {v:.2f}" for p, v in list(values.items())[:4])
                lines += ["", f"Importance ({evaluator}): {top}."]
        else:
            lines += ["", f"No importances: {a.importance_note}."]
        lines += [
            "",
            f"![{a.name} techniques]({FIGURES}/{stem}-techniques.png)",
            f"![{a.name} importance]({FIGURES}/{stem}-importance.png)",
            "",
        ]
    return "\n".join(lines)


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [line(header), line(["---"] * len(header)), *(line(r) for r in rows)]


# HTML


def html_page(analyses: list[StudyAnalysis], rows: list[tuple[str, dict[str, Effect]]]) -> str:
    names = [a.name for a in analyses]
    plots = _Plots()
    parts = [
        f"<h1>What helps: {_e(', '.join(names))}</h1>",
        f"<p>{_e(how_to_read())}</p>",
        "<h2>Across studies</h2>",
        _html_table(
            ["technique", *names],
            [[label, *(_verdict(e.get(n)) for n in names)] for label, e in rows],
            classes=[[None, *(_css(e.get(n)) for n in names)] for _, e in rows],
        ),
        plots.add(figures.plotly_effects(rows, names)),
    ]
    for a in analyses:
        b = a.summary["best_trial"]
        parts += [
            f"<h2>{_e(a.name)}</h2>",
            f"<p>{len(a.values)} complete trials ({a.summary['trials']['pruned']} pruned, "
            f"{a.summary['trials']['failed']} failed); {_e(a.metric)}, {a.direction}. "
            f"Best trial {b['number']}: {_e(a.metric)} = {b['value']:.4g}, "
            f"parameters {_e(_params(b['params']))}.</p>",
            "<h3>Best trial against the references</h3>",
            _html_table(
                ["reference", a.metric, "best trial against it"],
                [[label, f"{value:.4g}", _versus(gain)] for label, value, gain in _references(a)],
            ),
            plots.add(figures.plotly_references(a)),
            "<h3>What each technique did</h3>",
            _technique_table(a),
            plots.add(figures.plotly_techniques(a)),
            "<h3>Hyperparameter importance</h3>",
            plots.add(figures.plotly_importances(a))
            if a.importances
            else f"<p>No importances: {_e(a.importance_note or '')}.</p>",
        ]
    body = "\n".join(parts)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>tuner report: {_e(', '.join(names))}</title><style>{STYLE}</style></head>"
        f"<body>\n{body}\n</body></html>\n"
    )


STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
    "text-align:left}.helped{background:#d9f0d3}.hurt{background:#f4cccc}"
)


class _Plots:
    """plotly figures as HTML; plotly.js goes into the page once, with the first figure."""

    def __init__(self) -> None:
        self.first = True

    def add(self, fig: object) -> str:
        text: str = fig.to_html(  # type: ignore[attr-defined]
            full_html=False, include_plotlyjs=self.first, config={"displaylogo": False}
        )
        self.first = False
        return text


def _technique_table(a: StudyAnalysis) -> str:
    rows: list[list[str]] = []
    classes: list[list[str | None]] = []
    for t in a.techniques:
        effects = {e.treatment: e for e in t.effects}
        for g in t.groups:
            e = effects.get(g.label)
            rows.append(
                [
                    t.spec.name,
                    g.label,
                    str(g.n),
                    f"{g.best:.4g}",
                    f"{g.median:.4g}",
                    _ci(g.median_ci),
                    "reference" if e is None else _difference(e),
                    "" if e is None else _verdict(e),
                ]
            )
            classes.append([*[None] * 7, _css(e)])
    header = ["technique", "group", "trials", "best", "median", "95% CI of median"]
    return _html_table(
        [*header, "median minus reference (95% CI)", "verdict"], rows, classes=classes
    )


def _html_table(
    header: list[str], rows: list[list[str]], classes: list[list[str | None]] | None = None
) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        css = classes[i] if classes else [None] * len(row)
        cells = "".join(
            f"<td class='{c}'>{_e(v)}</td>" if c else f"<td>{_e(v)}</td>"
            for v, c in zip(row, css, strict=True)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


# shared wording


def _references(a: StudyAnalysis) -> list[tuple[str, float, float | None]]:
    s = a.summary
    rows = [
        (f"seed configuration {seed_label(name, r)}", r["value"], r["improvement"])
        for name, r in s["seed_configs"].items()
    ]
    rows += [
        (f"baseline {name}", r["value"], r["improvement"]) for name, r in s["baselines"].items()
    ]
    return rows


def _params(params: dict[str, object]) -> str:
    return ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def _verdict(e: Effect | None) -> str:
    if e is None:
        return "not tried"
    if e.gain is None:
        return e.verdict
    text = f"{e.verdict} ({e.gain:+.1%}"
    if e.gain_ci is not None:
        text += f", CI {e.gain_ci[0]:+.1%} to {e.gain_ci[1]:+.1%}"
    return text + ")"


def _difference(e: Effect) -> str:
    if e.difference_ci is None:
        return f"{e.difference:+.4g}"
    return f"{e.difference:+.4g} ({e.difference_ci[0]:+.4g} to {e.difference_ci[1]:+.4g})"


def _versus(gain: float | None) -> str:
    if gain is None:
        return ""
    return f"{abs(gain):.1%} {'better' if gain >= 0 else 'worse'}"


def _ci(ci: tuple[float, float] | None) -> str:
    return "" if ci is None else f"{ci[0]:.4g} to {ci[1]:.4g}"


def _css(e: Effect | None) -> str | None:
    return e.verdict if e is not None and e.verdict in ("helped", "hurt") else None


def _e(text: str) -> str:
    return html.escape(str(text))


def _stems(names: list[str]) -> list[str]:
    """File-name stems for the studies' figures, one each."""
    stems: list[str] = []
    for name in names:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "study"
        stems.append(stem if stem not in stems else f"{stem}-{len(stems) + 1}")
    return stems
