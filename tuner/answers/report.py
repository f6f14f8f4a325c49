"""`tuner report`: the statistics of `tuner.answers.analysis` written out for people, as one
self-contained HTML page (plotly, with plotly.js inside so it opens offline), PNG figures, and a
markdown summary to paste into an issue."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, replace
from pathlib import Path

from tuner.answers import figures
from tuner.answers.ablation import (
    Ablation,
    effect_text,
    failures_text,
    hiding,
    latest,
    mean_ci_text,
    seed_luck,
    side,
)
from tuner.answers.analysis import (
    BOOTSTRAP_RESAMPLES,
    CONFIDENCE,
    MIN_GROUP,
    RECURRENT_DROPOUT_ON,
    Effect,
    StudyAnalysis,
    analyse,
    compare,
)
from tuner.answers.diagnoses import diagnose
from tuner.answers.inference import ALPHA, SEQUENTIAL
from tuner.answers.results import seed_label
from tuner.answers.verdict import (
    BETTER_AMONG,
    HELPED,
    HURT,
    TOO_FEW,
    UNCLEAR,
    WORSE_AMONG,
    directed,
    directed_interval,
    is_accuracy,
    significant,
    versus,
)
from tuner.config import StudyConfig
from tuner.errors import TunerError
from tuner.search.study import load_existing
from tuner.storage import open_storage

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
    analyses = [
        replace(
            analyse(study),  # raises for a study with no result yet
            ablation=latest(storage, study.study_name, config),
            diagnoses=tuple(diagnose(study, config)),
        )
        for study, config in zip(studies, configs, strict=True)
    ]
    return write_report(analyses, out)


def write_report(analyses: list[StudyAnalysis], out: Path) -> ReportFiles:
    (out / FIGURES).mkdir(parents=True, exist_ok=True)
    rows = compare(analyses)
    names = [a.name for a in analyses]
    stems = _stems(names)
    folder = out / FIGURES
    pngs = [figures.png_effects(rows, names, folder / "associations.png")]
    if any(a.ablation is not None for a in analyses):
        pngs.append(figures.png_ablation(analyses, folder / "ablation.png"))
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
        'Two kinds of evidence, labelled in every cell, and only the first says "helped" or '
        '"hurt". An ablation (`tuner ablate`) trains the best trial as it is and with one '
        "technique changed, on the same fresh training seeds, each run scored on the test "
        "split; the effect is what turning the technique on did, paired by seed, with its "
        f"{CONFIDENCE:.0%} interval. One study's contrasts are one family: a verdict is "
        "helped or hurt only when Holm's correction over them keeps the chance of calling a "
        f"technique that did nothing helped or hurt in that ablation at {ALPHA:.0%} (the "
        "cross-study table holds one family per "
        'study). "Among searched trials": each technique splits the study\'s complete '
        "trials into groups by one parameter, and each group is compared with a reference "
        "group by the difference of their median objective, with a "
        f"{CONFIDENCE:.0%} bootstrap confidence interval ({BOOTSTRAP_RESAMPLES} resamples of "
        "each group), "
        "each interval alone, with no correction for the number of comparisons. Those trials "
        "were chosen by the sampler and let finish by the pruner, so such a difference is an "
        "association, not the effect of the technique: a group did better or worse among "
        "them, which may be down to other parameters. Where complete trials are too few, every "
        "finished trial (pruned ones included) is compared at the pruner's first rung, the "
        f"same epoch for all. Groups of fewer than {MIN_GROUP} trials get no interval and no "
        "verdict; the report says how many more trials they need. Recurrent dropout counts "
        f"as on from a rate of {RECURRENT_DROPOUT_ON}. Effects read in the metric's "
        "direction (better or worse); accuracy differences are in percentage points. "
        '"Not tried": no trial of that kind ran; "tried, all pruned": some ran, none completed. '
        "A group's median gets an exact interval (95% or more) from 6 trials on. No error "
        "rate goes with the rest: each best trial's value, the seed configurations' values "
        "and each group's best are single training runs on the validation split, the best "
        "chosen from many (which flatters it); a naive baseline is one computation on the "
        "same split; and the importances are estimates from the trials the sampler chose."
    )


# markdown


def markdown_summary(
    analyses: list[StudyAnalysis], rows: list[tuple[str, dict[str, Effect]]], stems: list[str]
) -> str:
    names = [a.name for a in analyses]
    lines = [f"# What helps: {', '.join(names)}", "", how_to_read(), "", "## Across studies", ""]
    lines += _md_table(
        ["technique", *names], [[label, *cells] for label, cells, _ in _across(analyses, rows)]
    )
    if any(a.ablation is not None for a in analyses):
        lines += ["", f"![ablation effects]({FIGURES}/ablation.png)"]
    lines += ["", f"![associations among searched trials]({FIGURES}/associations.png)", ""]
    for a, stem in zip(analyses, stems, strict=True):
        b = a.summary["best_trial"]
        lines += [f"## {a.name}", ""]
        lines.append(
            f"{_counted(a)}; {a.metric}, {a.direction}. Best trial {b['number']}"
            + (f" (seed configuration {b['seed_config']})" if b["seed_config"] else "")
            + (f" (paused at epoch {b['paused_at']})" if b.get("paused_at") else "")
            + f": {a.metric} = {b['value']:.4g}."
        )
        lines.append("")
        lines += _md_table(
            ["reference", a.metric, "best trial against it"],
            [[label, f"{value:.4g}", _versus(a, value)] for label, value, _ in _references(a)],
        )
        lines += ["", *(f"- **Note:** {d}." for d in a.diagnoses)] if a.diagnoses else []
        if a.ablation is not None:
            lines += ["", _ablation_title(a.ablation), ""]
            lines += _md_table(ABLATION_HEADER, _ablation_rows(a.ablation))
            if (luck := seed_luck(a.ablation)) is not None:
                lines += ["", f"Note: {luck}."]
        lines += [
            "",
            "| technique | group | trials | best | median | 95% CI of median (6+ trials) "
            "| vs reference |",
        ]
        lines += ["| --- | --- | --- | --- | --- | --- | --- |"]
        for t in a.techniques:
            effects = {e.treatment: e for e in t.effects}
            for g in t.groups:
                e = effects.get(g.label)
                lines.append(
                    f"| {t.spec.name} | {g.label} | {g.n} | {g.best:.4g} | {g.median:.4g} | "
                    f"{_ci(g.median_ci)} | {_verdict(e, a) if e else 'reference'} |"
                )
            lines += _md_rung(a, t)
        if a.importances:
            for evaluator, values in a.importances.items():
                top = ", ".join(f"{p} {v:.2f}" for p, v in list(values.items())[:4])
                lines += ["", f"Importance ({evaluator}): {top}.{_cannot_rank(a, evaluator)}"]
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
            [[label, *cells] for label, cells, _ in _across(analyses, rows)],
            classes=[[None, *css] for _, _, css in _across(analyses, rows)],
        ),
        *(
            [plots.add(figures.plotly_ablation(analyses))]
            if any(a.ablation is not None for a in analyses)
            else []
        ),
        plots.add(figures.plotly_effects(rows, names)),
    ]
    for a in analyses:
        b = a.summary["best_trial"]
        parts += [
            f"<h2>{_e(a.name)}</h2>",
            f"<p>{_e(_counted(a))}; {_e(a.metric)}, {a.direction}. Best trial {b['number']}"
            + (f" (paused at epoch {b['paused_at']})" if b.get("paused_at") else "")
            + f": {_e(a.metric)} = {b['value']:.4g}, "
            f"parameters {_e(_params(b['params']))}.</p>",
            "<h3>Best trial against the references</h3>",
            _html_table(
                ["reference", a.metric, "best trial against it"],
                [[label, f"{value:.4g}", _versus(a, value)] for label, value, _ in _references(a)],
            ),
            plots.add(figures.plotly_references(a)),
            *(f"<p><b>Note:</b> {_e(d)}.</p>" for d in a.diagnoses),
            *(
                [
                    f"<h3>{_e(_ablation_title(a.ablation))}</h3>",
                    _html_table(ABLATION_HEADER, _ablation_rows(a.ablation)),
                    *(
                        [f"<p><b>Note:</b> {_e(luck)}.</p>"]
                        if (luck := seed_luck(a.ablation)) is not None
                        else []
                    ),
                ]
                if a.ablation is not None
                else []
            ),
            "<h3>What each technique did</h3>",
            _technique_table(a),
            plots.add(figures.plotly_techniques(a)),
            "<h3>Hyperparameter importance</h3>",
            plots.add(figures.plotly_importances(a))
            if a.importances
            else f"<p>No importances: {_e(a.importance_note or '')}.</p>",
            *(
                f"<p>{_e(evaluator + ':' + _cannot_rank(a, evaluator))}</p>"
                for evaluator in a.importances
                if _cannot_rank(a, evaluator)
            ),
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
    ".better{background:#eef6ec}.worse{background:#fbeeee}"
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
    tables = [
        table
        for t in a.techniques
        for table in (
            (t.spec.name, t.groups, t.effects),
            (f"{t.spec.name} at epoch {t.rung}", t.rung_groups, t.rung_effects),
        )
    ]
    for name, groups, found in tables:
        effects = {e.treatment: e for e in found}
        for g in groups:
            e = effects.get(g.label)
            rows.append(
                [
                    name,
                    g.label,
                    str(g.n),
                    f"{g.best:.4g}",
                    f"{g.median:.4g}",
                    _ci(g.median_ci),
                    "reference" if e is None else _difference(e),
                    "" if e is None else _verdict(e, a),
                ]
            )
            classes.append([*[None] * 7, _css(e)])
    header = ["technique", "group", "trials", "best", "median", "95% CI of median (6+ trials)"]
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


def _verdict(e: Effect | None, a: StudyAnalysis) -> str:
    """An association in words: which group did better among searched trials, never
    "helped" or "hurt"."""
    if e is None:
        return "not tried"
    if e.verdict == TOO_FEW:
        return f"{TOO_FEW} ({e.needs} more needed)" if e.needs else TOO_FEW
    words = e.verdict if e.verdict == UNCLEAR else f"{e.treatment} {e.verdict}"
    if is_accuracy(a.metric) or e.gain is None:
        text = f"{words} ({directed(e.difference, a.metric, a.minimize)}"
        if e.difference_ci is not None:
            text += f", CI {directed_interval(e.difference_ci, a.metric, a.minimize)}"
        return text + ")"
    text = f"{words} ({_percent(e.gain)}"
    if e.gain_ci is not None:
        text += f", CI {_percent(e.gain_ci[0])} to {_percent(e.gain_ci[1])}"
    return text + ")"


def _percent(gain: float) -> str:
    """A relative gain in words: "3.2% better"."""
    return f"{significant(100 * abs(gain), 2)}% {'better' if gain > 0 else 'worse'}"


def _difference(e: Effect) -> str:
    if e.difference_ci is None:
        return f"{e.difference:+.4g}"
    return f"{e.difference:+.4g} ({e.difference_ci[0]:+.4g} to {e.difference_ci[1]:+.4g})"


def _counted(a: StudyAnalysis) -> str:
    """The trials the analysis counts: complete ones, and with the pruner `pause` the paused
    models too, one trial per model."""
    t = a.summary["trials"]
    if a.summary.get("pauses"):
        return (
            f"{len(a.values)} models, complete or paused (one trial each; {t['pruned']} "
            f"trials pruned or paused, {t['resumed']} resumed, {t['failed']} failed)"
        )
    return f"{len(a.values)} complete trials ({t['pruned']} pruned, {t['failed']} failed)"


def _versus(a: StudyAnalysis, reference: float) -> str:
    """The best trial against a reference, in the words `tuner best-trial` uses."""
    return versus(a.summary["best_trial"]["value"], reference, a.metric, a.minimize)


def _ci(ci: tuple[float, float] | None) -> str:
    return "" if ci is None else f"{ci[0]:.4g} to {ci[1]:.4g}"


def _css(e: Effect | None) -> str | None:
    if e is None:
        return None
    return {BETTER_AMONG: "better", WORSE_AMONG: "worse"}.get(e.verdict)


def _e(text: str) -> str:
    return html.escape(str(text))


def _stems(names: list[str]) -> list[str]:
    """File-name stems for the studies' figures, one each."""
    stems: list[str] = []
    for name in names:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "study"
        stems.append(stem if stem not in stems else f"{stem}-{len(stems) + 1}")
    return stems


# the evidence of each kind, side by side


ABLATION = "ablation"
SEARCHED = "among searched trials"


def _across(
    analyses: list[StudyAnalysis], rows: list[tuple[str, dict[str, Effect]]]
) -> list[tuple[str, list[str], list[str | None]]]:
    """The cross-study table: each technique's verdict per study, saying which evidence it
    comes from. Ablation rows first, then the associations among searched trials."""
    table: list[tuple[str, list[str], list[str | None]]] = []
    contrasts: dict[str, None] = {}
    for a in analyses:
        for c in a.ablation.contrasts if a.ablation is not None else ():
            contrasts[c.contrast] = None
    for label in contrasts:
        cells: list[str] = []
        css: list[str | None] = []
        for a in analyses:
            ab = a.ablation
            found = [c for c in ab.contrasts if c.contrast == label] if ab is not None else []
            if ab is None or not found:
                cells.append("not ablated")
                css.append(None)
                continue
            c = found[0]
            cells.append(
                f"{c.verdict} ({effect_text(c, ab, _mean(ab), seeds=False)};"
                f" {ABLATION}, {c.n} seeds, Holm over the study's {c.judged.family_size})"
            )
            css.append(c.verdict if c.verdict in (HELPED, HURT) else None)
        table.append((f"{label} ({ABLATION})", cells, css))
    for label, effects in rows:
        cells, css = [], []
        for a in analyses:
            e = effects.get(a.name)
            if e is None or e.verdict == TOO_FEW:
                e = _at_rung(a, label) or e
            if e is None:
                cells.append(_missing(a, next(iter(effects.values()))))
                css.append(None)
                continue
            rung = next((t.rung for t in a.techniques if e in t.rung_effects), None)
            where = SEARCHED + (f", at epoch {rung}" if rung is not None else "")
            cells.append(f"{_verdict(e, a)}; {where}")
            css.append(_css(e))
        table.append((label, cells, css))
    return table


def _at_rung(a: StudyAnalysis, label: str) -> Effect | None:
    """The same comparison at the first rung, when it has a verdict there."""
    for t in a.techniques:
        for r in t.rung_effects:
            if r.label == label and r.verdict != TOO_FEW:
                return r
    return None


def _missing(a: StudyAnalysis, like: Effect) -> str:
    """Why a study has no such comparison: no trial of the kind ran, or all were pruned."""
    for t in a.techniques:
        if t.spec.name == like.technique and (
            like.treatment in t.pruned_levels or like.reference in t.pruned_levels
        ):
            return "tried, all pruned"
    return "not tried"


def _md_rung(a: StudyAnalysis, t: object) -> list[str]:
    from tuner.answers.analysis import Technique

    assert isinstance(t, Technique)
    if t.rung is None:
        return []
    effects = {e.treatment: e for e in t.rung_effects}
    return [
        f"| {t.spec.name} at epoch {t.rung} | {g.label} | {g.n} | {g.best:.4g} | "
        f"{g.median:.4g} | {_ci(g.median_ci)} | "
        f"{_verdict(effects[g.label], a) if g.label in effects else 'reference'} |"
        for g in t.rung_groups
    ]


def _mean(ab: Ablation) -> float | None:
    return sum(ab.as_is.values()) / len(ab.as_is) if ab.as_is else None


ABLATION_HEADER = ["technique", "compared", "verdict", "what turning it on did", "note"]


def _ablation_title(ab: Ablation) -> str:
    mean = _mean(ab)
    rule = "anytime-valid, seeds added until decided" if ab.design == SEQUENTIAL else "fixed K"
    return (
        f"Ablation of trial {ab.trial}: {ab.repeats} fresh seeds, up to {ab.epochs} epochs "
        f"with early stopping, scored on the test split; Holm over its "
        f"{max((c.judged.family_size for c in ab.contrasts), default=0)} contrasts ({rule}), "
        f"{ab.false_call_text()} family-wise"
        + (
            f"; as it is, {ab.measure} = {mean:.4g} (mean of {len(ab.as_is)} seeds"
            f"{mean_ci_text(ab)})"
            if mean is not None
            else ""
        )
    )


def _ablation_rows(ab: Ablation) -> list[list[str]]:
    return [
        [
            c.contrast,
            side(c, ab.params),
            c.verdict,
            effect_text(c, ab, _mean(ab)),
            "; ".join(
                n
                for n in (
                    failures_text(c),
                    hiding(ab, c),
                    "outside the search space" if c.outside_space else "",
                )
                if n
            ),
        ]
        for c in ab.contrasts
    ]


def _cannot_rank(a: StudyAnalysis, evaluator: str) -> str:
    """The searched parameters an evaluator left out: PED-ANOVA ranks numeric ones only."""
    ranked = a.importances.get(evaluator, {})
    searched = {p for values in a.importances.values() for p in values}
    missing = sorted(searched - set(ranked))
    if not missing:
        return ""
    return f" It cannot rank {', '.join(missing)} (not unimportant: left out)."
