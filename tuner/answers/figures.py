"""The report's figures, each drawn twice: with plotly for the HTML page (interactive) and with
matplotlib as a PNG file (for an issue, a slide, or a reader without a browser)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.answers.ablation import detectable
from tuner.answers.analysis import Effect, StudyAnalysis
from tuner.answers.inference import ALPHA, simultaneous_interval
from tuner.answers.results import seed_label
from tuner.answers.verdict import BETTER_AMONG, HELPED, HURT, TOO_FEW, WORSE_AMONG, is_accuracy

if TYPE_CHECKING:
    import plotly.graph_objects as go

COLOURS = {HELPED: "#1a9850", HURT: "#d73027"}
# Associations are drawn in muted colours, never those of a verdict.
ASSOCIATION_COLOURS = {BETTER_AMONG: "#7fa6c9", WORSE_AMONG: "#c9a27f"}
NEUTRAL = "#7f7f7f"
ASSOCIATIONS_TITLE = (
    "Associations among searched trials, not effects: each group's median against its "
    "reference group (95% bootstrap interval, uncorrected)"
)


def ablation_points(analyses: list[StudyAnalysis]) -> list[dict[str, Any]]:
    """The forest plot's rows: each ablated study's contrasts, read as improvements (positive:
    turning the technique on did better), in % of the trial as it is for errors and losses and
    in points for accuracy; with the contrast's own 95% interval, the family's simultaneous
    interval and, for an undecided fixed-K contrast, the effect it would have found."""
    rows = []
    for a in analyses:
        ab = a.ablation
        if ab is None or not ab.as_is:
            continue
        reference = sum(ab.as_is.values()) / len(ab.as_is)
        if is_accuracy(ab.metric):
            scale = 100.0
        elif reference:
            scale = 100.0 / abs(reference)
        else:
            continue
        sign = -scale if ab.minimize else scale
        for c in ab.contrasts:
            j = c.judged
            if j.n == 0:
                continue

            size = detectable(ab, c)
            rows.append(
                {
                    "study": a.name,
                    "label": f"{c.contrast} ({a.name})",
                    "effect": sign * j.mean,
                    "interval": _scaled(j.interval, sign),
                    "family": _scaled(simultaneous_interval(j, ab.design), sign),
                    "detectable": None if size is None else abs(sign) * size,
                    "verdict": c.verdict,
                }
            )
    return rows


ABLATION_AXIS = "better (+) or worse (-) with the technique on: % of the trial as it is, or points"
ABLATION_TITLE = (
    "What each technique did in the ablation of each study's best trial (thin: 95% interval; "
    f"thick: the family's simultaneous {1 - ALPHA:.0%}; band: the effect it would have found)"
)


def _axis(rows: list[dict[str, Any]]) -> tuple[float, float]:
    """The forest plot's x range: twice the largest finite effect or interval end, either way;
    an interval with no finite end is drawn to the edge."""
    span = max(
        (abs(x) for r in rows for x in (r["effect"], *(r["interval"] or ())) if math.isfinite(x)),
        default=1.0,
    )
    return -2 * span, 2 * span


def _scaled(ci: tuple[float, float] | None, by: float) -> tuple[float, float] | None:
    if ci is None:
        return None
    return (min(by * ci[0], by * ci[1]), max(by * ci[0], by * ci[1]))


def _finite(ci: tuple[float, float] | None, lo: float, hi: float) -> tuple[float, float] | None:
    if ci is None:
        return None
    return (ci[0] if math.isfinite(ci[0]) else lo, ci[1] if math.isfinite(ci[1]) else hi)


def references(a: StudyAnalysis) -> list[tuple[str, float]]:
    """The best trial, the seed configurations and the baselines: (label, value), best first."""
    s = a.summary
    rows = [(f"best trial {s['best_trial']['number']}", float(s["best_trial"]["value"]))]
    seeds = s["seed_configs"].items()
    rows += [(f"seed {seed_label(name, r)}", float(r["value"])) for name, r in seeds]
    rows += [(f"baseline {name}", float(r["value"])) for name, r in s["baselines"].items()]
    return rows


# plotly, for the HTML page


def plotly_references(a: StudyAnalysis) -> go.Figure:
    import plotly.graph_objects as go

    rows = references(a)
    fig = go.Figure(
        go.Bar(
            x=[v for _, v in rows],
            y=[label for label, _ in rows],
            orientation="h",
            marker_color=["#4575b4"] + [NEUTRAL] * (len(rows) - 1),
            text=[f"{v:.4g}" for _, v in rows],
            textposition="auto",
        )
    )
    fig.update_layout(
        title=f"{a.name}: best trial against the references",
        xaxis_title=f"{a.metric} ({a.direction})",
        yaxis={"autorange": "reversed"},
        height=120 + 40 * len(rows),
    )
    return fig


def plotly_importances(a: StudyAnalysis) -> go.Figure:
    import plotly.graph_objects as go

    fig = go.Figure()
    for evaluator, values in a.importances.items():
        fig.add_trace(
            go.Bar(x=list(values.values()), y=list(values), orientation="h", name=evaluator)
        )
    fig.update_layout(
        title=f"{a.name}: hyperparameter importance",
        xaxis_title="importance (sums to 1 per evaluator)",
        yaxis={"autorange": "reversed"},
        barmode="group",
        height=200 + 30 * max((len(v) for v in a.importances.values()), default=1),
    )
    return fig


def plotly_techniques(a: StudyAnalysis) -> go.Figure:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    techniques = a.techniques
    fig = make_subplots(
        rows=1, cols=max(len(techniques), 1), subplot_titles=[t.spec.name for t in techniques]
    )
    for col, t in enumerate(techniques, start=1):
        for g in t.groups:
            fig.add_trace(
                go.Box(
                    y=list(g.values),
                    name=f"{g.label} ({g.n})",
                    boxpoints="all",
                    pointpos=0,
                    jitter=0.3,
                    text=[f"trial {n}" for n in g.numbers],
                    marker_color=NEUTRAL,
                    showlegend=False,
                ),
                row=1,
                col=col,
            )
    fig.update_yaxes(title_text=a.metric, row=1, col=1)
    fig.update_layout(title=f"{a.name}: {a.metric} of complete trials by technique", height=450)
    return fig


def plotly_effects(rows: list[tuple[str, dict[str, Effect]]], studies: list[str]) -> go.Figure:
    import plotly.graph_objects as go

    fig = go.Figure()
    for study in studies:
        points = [
            (label, e[study]) for label, e in rows if study in e and e[study].gain is not None
        ]
        fig.add_trace(
            go.Scatter(
                x=[100 * e.gain for _, e in points],  # type: ignore[operator]
                y=[label for label, _ in points],
                mode="markers",
                name=study,
                # Hollow where a group is too small for an interval, as in the PNG: a point
                # with no bar would read as a precise one.
                marker={
                    "size": 11,
                    "symbol": [
                        "circle-open" if e.verdict == TOO_FEW else "circle" for _, e in points
                    ],
                },
                error_x=_plotly_errors([e for _, e in points]),
                text=[
                    f"{e.verdict}: no interval" if e.verdict == TOO_FEW else e.verdict
                    for _, e in points
                ],
                hovertemplate="%{y}: %{x:+.1f}% (%{text})<extra>" + study + "</extra>",
            )
        )
    fig.add_vline(x=0, line_dash="dash", line_color=NEUTRAL)
    fig.update_layout(
        title=ASSOCIATIONS_TITLE,
        xaxis_title="the group's median against the reference's (%): + better, - worse",
        yaxis={"autorange": "reversed"},
        height=200 + 45 * max(len(rows), 1),
    )
    return fig


def plotly_ablation(analyses: list[StudyAnalysis]) -> go.Figure:
    import plotly.graph_objects as go

    rows = ablation_points(analyses)
    fig = go.Figure()
    lo, hi = _axis(rows)
    for i, r in enumerate(rows):
        colour = COLOURS.get(r["verdict"], NEUTRAL)
        if r["detectable"] is not None:
            d = r["detectable"]
            fig.add_shape(
                type="rect",
                x0=-d,
                x1=d,
                y0=i - 0.3,
                y1=i + 0.3,
                fillcolor="#dddddd",
                line_width=0,
                layer="below",
            )
        for key, width in (("family", 7), ("interval", 2)):
            ci = _finite(r[key], lo, hi)
            if ci is not None:
                fig.add_trace(
                    go.Scatter(
                        x=list(ci),
                        y=[i, i],
                        mode="lines",
                        showlegend=False,
                        line={"color": colour, "width": width},
                        opacity=0.45 if key == "family" else 1.0,
                        hoverinfo="skip",
                    )
                )
        fig.add_trace(
            go.Scatter(
                x=[r["effect"]],
                y=[i],
                mode="markers",
                showlegend=False,
                marker={"size": 10, "color": colour},
                hovertemplate=f"{r['label']}: %{{x:+.2g}} ({r['verdict']})<extra></extra>",
            )
        )
    fig.add_vline(x=0, line_dash="dash", line_color=NEUTRAL)
    fig.update_layout(
        title=ABLATION_TITLE,
        xaxis_title=ABLATION_AXIS,
        yaxis={
            "tickmode": "array",
            "tickvals": list(range(len(rows))),
            "ticktext": [r["label"] for r in rows],
            "autorange": "reversed",
        },
        height=200 + 40 * max(len(rows), 1),
    )
    return fig


def _plotly_errors(effects: list[Effect]) -> dict[str, Any]:
    gains = [e.gain or 0.0 for e in effects]
    cis = [e.gain_ci or (g, g) for e, g in zip(effects, gains, strict=True)]
    return {
        "type": "data",
        "symmetric": False,
        "array": [100 * (hi - g) for (_, hi), g in zip(cis, gains, strict=True)],
        "arrayminus": [100 * (g - lo) for (lo, _), g in zip(cis, gains, strict=True)],
    }


# matplotlib, for PNG files


def png_references(a: StudyAnalysis, path: Path) -> Path:
    plt = _pyplot()
    rows = references(a)
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.45 * len(rows)))
    ax.barh(
        [label for label, _ in rows],
        [v for _, v in rows],
        color=["#4575b4"] + [NEUTRAL] * (len(rows) - 1),
    )
    for i, (_, v) in enumerate(rows):
        ax.annotate(f" {v:.4g}", (v, i), va="center", fontsize=8)
    ax.margins(x=0.15)  # room for the numbers
    ax.invert_yaxis()
    ax.set_xlabel(f"{a.metric} ({a.direction})")
    ax.set_title(f"{a.name}: best trial against the references")
    return _save(fig, path)


def png_importances(a: StudyAnalysis, path: Path) -> Path:
    plt = _pyplot()
    params = sorted({p for values in a.importances.values() for p in values})
    fig, ax = plt.subplots(figsize=(7, 1.5 + 0.35 * max(len(params), 1)))
    height = 0.8 / max(len(a.importances), 1)
    for i, (evaluator, values) in enumerate(a.importances.items()):
        ax.barh(
            [k + i * height for k in range(len(params))],
            [values.get(p, 0.0) for p in params],
            height=height,
            label=evaluator,
        )
    ax.set_yticks([k + 0.4 - height / 2 for k in range(len(params))], params)
    ax.invert_yaxis()
    ax.set_xlabel("importance (sums to 1 per evaluator)")
    ax.set_title(f"{a.name}: hyperparameter importance")
    if a.importances:
        ax.legend()
    else:
        ax.text(0.5, 0.5, a.importance_note or "no importances", ha="center", wrap=True)
    return _save(fig, path)


def png_techniques(a: StudyAnalysis, path: Path) -> Path:
    plt = _pyplot()
    n = max(len(a.techniques), 1)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.8), sharey=True, squeeze=False)
    for ax, t in zip(axes[0], a.techniques, strict=False):
        for i, g in enumerate(t.groups):
            ax.scatter([i] * g.n, g.values, color=NEUTRAL, alpha=0.7, s=18)
            ax.hlines(g.median, i - 0.3, i + 0.3, color="black")
            if g.median_ci is not None:
                ax.vlines(i + 0.35, *g.median_ci, color="black", linewidth=3)
        ax.set_xticks(range(len(t.groups)), [f"{g.label}\n({g.n})" for g in t.groups])
        ax.set_xlim(-0.6, len(t.groups) - 0.4)
        ax.set_title(t.spec.name)
    axes[0][0].set_ylabel(a.metric)
    fig.suptitle(f"{a.name}: trials by technique (bar: median, with its 95% interval)")
    return _save(fig, path)


def png_effects(rows: list[tuple[str, dict[str, Effect]]], studies: list[str], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 1.5 + 0.55 * max(len(rows), 1)))
    offset = 0.6 / max(len(studies), 1)
    markers = "osD^v<>"
    for j, study in enumerate(studies):
        label: str | None = study  # once per study, in the legend
        for i, (_, effects) in enumerate(rows):
            e = effects.get(study)
            if e is None or e.gain is None:
                continue
            y = i + (j - (len(studies) - 1) / 2) * offset
            lo, hi = e.gain_ci or (e.gain, e.gain)
            colour = ASSOCIATION_COLOURS.get(e.verdict, NEUTRAL)
            ax.plot([100 * lo, 100 * hi], [y, y], color=colour, linewidth=2)
            ax.plot(
                100 * e.gain,
                y,
                markers[j % len(markers)],
                color=colour,
                markerfacecolor="none" if e.verdict == TOO_FEW else colour,
                label=label,
            )
            label = None
    ax.axvline(0, color=NEUTRAL, linestyle="--")
    ax.set_yticks(range(len(rows)), [label for label, _ in rows])
    ax.invert_yaxis()
    ax.set_xlabel("the group's median against the reference's (%): + better, - worse")
    ax.set_title(
        "Associations among searched trials, not effects (95% bootstrap interval, uncorrected)\n"
        "(blue: did better among them, brown: worse, grey: no clear difference, hollow: too "
        "few trials)",
        fontsize=9,
    )
    if rows:
        ax.legend(title="study", fontsize=8)
    return _save(fig, path)


def png_ablation(analyses: list[StudyAnalysis], path: Path) -> Path:
    plt = _pyplot()
    rows = ablation_points(analyses)
    fig, ax = plt.subplots(figsize=(8, 1.8 + 0.45 * max(len(rows), 1)))
    lo, hi = _axis(rows)
    for i, r in enumerate(rows):
        colour = COLOURS.get(r["verdict"], NEUTRAL)
        if r["detectable"] is not None:
            d = r["detectable"]
            ax.fill_betweenx([i - 0.3, i + 0.3], -d, d, color="#f0f0f0", zorder=0)
        family = _finite(r["family"], lo, hi)
        if family is not None:
            ax.plot(family, [i, i], color=colour, linewidth=6, alpha=0.35, solid_capstyle="butt")
        own = _finite(r["interval"], lo, hi)
        if own is not None:
            ax.plot(own, [i, i], color=colour, linewidth=1.5)
        ax.plot(r["effect"], i, "o", color=colour)
    ax.axvline(0, color=NEUTRAL, linestyle="--")
    ax.set_yticks(range(len(rows)), [r["label"] for r in rows], fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlim(lo, hi)
    ax.set_xlabel(ABLATION_AXIS, fontsize=8)
    ax.set_title(
        "Ablation: what each technique did\n(green: helped, red: hurt, grey: no clear "
        "difference; thin: 95% interval,\nthick: the family's simultaneous 95%, pale band: "
        "the effect it would have found)",
        fontsize=9,
    )
    return _save(fig, path)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path
