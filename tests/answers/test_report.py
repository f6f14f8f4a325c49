from __future__ import annotations

import dataclasses
import re
import struct
from pathlib import Path

import numpy as np
import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from tuner.cli import cli

pytestmark = pytest.mark.slow  # two real studies, trained by real workers

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report(two_studies, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report"
    result = CliRunner().invoke(
        cli,
        [
            "report",
            str(two_studies["study"]),
            str(two_studies["walk"]),
            "--storage",
            two_studies["url"],
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output + result.stderr
    assert result.output.startswith(f"wrote {out / 'report.html'}, {out / 'summary.md'} and 7 ")
    return out


def complete_trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=name, storage=url)
    return [t for t in study.trials if t.state == TrialState.COMPLETE]


def test_the_figures_are_real_pngs(report: Path) -> None:
    pngs = sorted((report / "figures").glob("*.png"))
    assert [p.name for p in pngs] == [
        "associations.png",
        "finished-importance.png",
        "finished-references.png",
        "finished-techniques.png",
        "walk-importance.png",
        "walk-references.png",
        "walk-techniques.png",
    ]
    for png in pngs:
        data = png.read_bytes()
        assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
        width, height = struct.unpack(">II", data[16:24])
        assert width >= 300 and height >= 150


def test_the_html_page_is_self_contained_and_carries_the_figures(
    report: Path, two_studies
) -> None:
    page = (report / "report.html").read_text()
    assert "<h2>finished</h2>" in page and "<h2>walk</h2>" in page
    # plotly.js is inside the page once, so it opens offline; every figure is drawn with it: the
    # associations, and per study its references, techniques and importances (these only with
    # 2 complete trials or more, which the pruned study's real training does not always leave:
    # then the page says why, in their place).
    without = page.count("<p>No importances: ")
    assert without == 0 or "importances need 2 complete trials or more" in page
    assert len(page) > 1_000_000 and page.count("Plotly.newPlot(") == 1 + 3 * 2 - without
    assert not re.search(r"<script[^>]+src=", page)
    # The associations are labelled as such, apart from any ablation's effects.
    assert "Associations among searched trials, not effects" in page
    for technique in ("recurrent dropout", "depth", "bidirectional", "cell"):
        assert f"<td>{technique}</td>" in page
    for name in ("finished", "walk"):
        best = min(t.value for t in complete_trials(two_studies["url"], name))
        assert f"Best trial {_best(two_studies['url'], name).number}: val_mae = {best:.4g}" in page
        assert f'"{best:.4g}"' in page  # the label of the best trial's bar


def _best(url: str, name: str) -> optuna.trial.FrozenTrial:
    return optuna.load_study(study_name=name, storage=url).best_trial


def test_the_markdown_numbers_are_those_of_the_trials_in_storage(
    report: Path, two_studies
) -> None:
    text = (report / "summary.md").read_text()
    assert text.startswith("# What helps: finished, walk")
    assert "95% bootstrap confidence interval" in text  # says what "clear" means
    # ... and which of its numbers have no error rate.
    assert "No error rate goes with the rest: each best trial's value" in " ".join(text.split())
    across = text.split("## Across studies")[1].split("## finished")[0]
    assert "| technique | finished | walk |" in across
    assert "| cell: LSTM vs GRU |" in across or "| cell: GRU vs LSTM |" in across
    for name in ("finished", "walk"):
        section = text.split(f"\n## {name}\n")[1].split("\n## ")[0]
        trials = complete_trials(two_studies["url"], name)
        assert section.lstrip().startswith(f"{len(trials)} complete trials (")
        rows = re.findall(
            r"^\| (recurrent dropout|depth|bidirectional|cell) \| (.+?) \| (\d+) "
            r"\| (\S+) \| (\S+) \|",
            section,
            flags=re.M,
        )
        assert {r[0] for r in rows} == {"recurrent dropout", "depth", "bidirectional", "cell"}
        level = {
            "recurrent dropout": lambda p: "on" if p["recurrent_dropout"] >= 0.05 else "off",
            "depth": lambda p: f"{p['layers']} layer" + ("s" if p["layers"] > 1 else ""),
            "bidirectional": lambda p: "yes" if p["bidirectional"] else "no",
            "cell": lambda p: p["cell"].upper(),
        }
        for technique, group, n, best, median in rows:
            values = [t.value for t in trials if level[technique](t.params) == group]
            assert int(n) == len(values) > 0
            assert best == f"{min(values):.4g}" and median == f"{np.median(values):.4g}"
        for technique in level:
            assert sum(int(r[2]) for r in rows if r[0] == technique) == len(trials)
    assert "![associations among searched trials](figures/associations.png)" in text
    assert "ablation.png" not in text  # no study here was ablated


def test_a_study_named_twice_gets_one_line(two_studies, tmp_path: Path) -> None:
    study = str(two_studies["walk"])
    result = CliRunner().invoke(
        cli,
        ["report", study, study, "--storage", two_studies["url"], "--out", str(tmp_path / "r")],
    )
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "Error: study 'walk' is named by more than one study file"
    ]
    assert not (tmp_path / "r").exists()


def _made_up(name: str, lstm: str, direction: str = "minimize") -> optuna.Study:
    """A made-up study: 6 GRU trials complete; LSTM trials `complete` (and better), `pruned`
    (6, worse at epoch 1), `few-pruned` (2), or `none`."""
    from optuna.distributions import CategoricalDistribution, IntDistribution
    from optuna.trial import create_trial

    dists = {"cell": CategoricalDistribution(("gru", "lstm")), "units_1": IntDistribution(4, 64)}
    study = optuna.create_study(direction=direction, study_name=name)
    metric = "val_mae" if direction == "minimize" else "val_accuracy"
    study.set_user_attr("metric", metric)
    sign = 1 if direction == "minimize" else -1
    base = 3.0 if direction == "minimize" else 0.5
    for i in range(6):
        value = base + 0.01 * i
        study.add_trial(
            create_trial(
                value=value,
                params={"cell": "gru", "units_1": 8 + i},
                distributions=dists,
                intermediate_values={1: value + 0.1 * sign, 2: value},
            )
        )
    n = {"complete": 6, "pruned": 6, "few-pruned": 2, "none": 0}[lstm]
    for i in range(n):
        if lstm == "complete":
            value = base - 0.2 * sign + 0.01 * i
            study.add_trial(
                create_trial(
                    value=value,
                    params={"cell": "lstm", "units_1": 8 + i},
                    distributions=dists,
                    intermediate_values={1: value, 2: value},
                )
            )
        else:
            study.add_trial(
                create_trial(
                    state=optuna.trial.TrialState.PRUNED,
                    params={"cell": "lstm", "units_1": 8 + i},
                    distributions=dists,
                    intermediate_values={1: base + 1.0 * sign + 0.01 * i},
                )
            )
    return study


def test_the_cross_study_table_says_which_evidence_each_cell_comes_from() -> None:
    from tuner.answers.ablation import Ablation, Contrast
    from tuner.answers.analysis import analyse, compare
    from tuner.answers.inference import judge
    from tuner.answers.report import markdown_summary

    ablation = Ablation(
        study="searched",
        trial=0,
        metric="val_mae",
        direction="minimize",
        epochs=4,
        repeats=3,
        as_is={1: 3.0, 2: 3.1, 3: 3.2},
        contrasts=(
            Contrast(
                "cell",
                "cell: LSTM instead of GRU",
                "LSTM",
                True,
                True,
                judge([[-0.2, -0.25, -0.22]], minimize=True)[0],
            ),
        ),
        params={"cell": "gru", "layers": 1},
    )
    analyses = [
        dataclasses.replace(analyse(_made_up("searched", "complete")), ablation=ablation),
        analyse(_made_up("pruned", "pruned")),
        analyse(_made_up("few", "few-pruned")),
        analyse(_made_up("gru-only", "none")),
        analyse(_made_up("accuracy", "complete", direction="maximize")),
    ]
    text = markdown_summary(analyses, compare(analyses), [a.name for a in analyses])
    across = text.split("## Across studies")[1].split("\n## ")[0]
    [ablated] = [line for line in across.splitlines() if line.startswith("| cell: LSTM instead")]
    cells = [c.strip() for c in ablated.split("|")[2:-1]]
    assert cells[0].startswith("helped (0.223 better (7.2%), 95% CI 0.161 better to 0.286") and (
        "ablation, 3 seeds, Holm over the study's 1" in cells[0]
    )
    assert cells[1:] == ["not ablated"] * 4
    [searched] = [line for line in across.splitlines() if line.startswith("| cell: LSTM vs GRU")]
    cells = [c.strip() for c in searched.split("|")[2:-1]]
    # An association never says helped or hurt: which group did better among the trials.
    assert cells[0].startswith("LSTM better among searched trials (6.") and cells[0].endswith(
        "% better); among searched trials"
    )
    # All LSTM trials pruned: compared with the GRU trials at the first rung, epoch 1.
    assert cells[1].startswith("LSTM worse among searched trials (") and cells[1].endswith(
        "among searched trials, at epoch 1"
    )
    assert cells[2] == "tried, all pruned"
    assert cells[3] == "not tried"
    assert cells[4].startswith("LSTM better among searched trials (20 points better, CI ")
    assert not any(w in searched for w in ("helped", "hurt"))
    # The per-study table shows the ablation, the groups, and the rung's groups.
    section = text.split("\n## searched\n")[1].split("\n## ")[0]
    assert "Ablation of trial 0: 3 fresh seeds, up to 4 epochs with early stopping" in section
    assert "Holm over its 1 contrasts (fixed K), 5% family-wise" in section
    assert "| cell: LSTM instead of GRU | LSTM vs as is | helped |" in section
    assert "outside the search space" in section
    pruned = text.split("\n## pruned\n")[1].split("\n## ")[0]
    assert "| cell at epoch 1 | LSTM | 6 |" in pruned
    few = text.split("\n## few\n")[1].split("\n## ")[0]
    assert "too few trials (3 more needed)" in few


def test_an_ablated_study_gets_the_forest_plot_of_its_effects(tmp_path: Path) -> None:
    from tuner.answers.ablation import Ablation, Contrast
    from tuner.answers.analysis import analyse
    from tuner.answers.inference import judge
    from tuner.answers.report import write_report

    judged = judge([[-0.2, -0.25, -0.22], [0.01, -0.02, 0.03]], minimize=True)
    ablation = Ablation(
        study="searched",
        trial=0,
        metric="val_mae",
        direction="minimize",
        epochs=4,
        repeats=3,
        as_is={1: 3.0, 2: 3.1, 3: 3.2},
        contrasts=(
            Contrast("cell", "cell: LSTM instead of GRU", "LSTM", True, False, judged[0]),
            Contrast("dropout", "dropout", "dropout on at 0.2", True, False, judged[1]),
        ),
        params={"cell": "gru", "layers": 1},
    )
    analyses = [dataclasses.replace(analyse(_made_up("searched", "complete")), ablation=ablation)]
    files = write_report(analyses, tmp_path)
    assert {p.name for p in files.pngs} >= {"ablation.png", "associations.png"}
    assert (tmp_path / "figures" / "ablation.png").read_bytes()[:8] == PNG_SIGNATURE
    page = files.html.read_text()
    assert "What each technique did in the ablation of each study's best trial" in page
    markdown = files.markdown.read_text()
    assert "![ablation effects](figures/ablation.png)" in markdown
    # Its mean as it is comes with its interval, and the family's error rate with the title.
    from tuner.answers.verdict import mean_interval

    low, high = mean_interval([3.0, 3.1, 3.2])
    assert f"test mae = 3.1 (mean of 3 seeds, 95% CI {low:.4g} to {high:.4g})" in markdown
    assert "5% family-wise" in markdown


def test_the_interactive_figure_draws_a_group_too_small_for_an_interval_hollow() -> None:
    # A point with no error bar reads as a precise one: hollow, and its hover says why.
    from tuner.answers.analysis import Effect
    from tuner.answers.figures import plotly_effects
    from tuner.answers.verdict import TOO_FEW, UNCLEAR

    small = Effect("cell", "LSTM", "GRU", 0.1, None, 0.05, None, TOO_FEW, needs=2)
    sized = Effect("depth", "2 layers", "1 layer", 0.2, (0.1, 0.3), 0.1, (-0.02, 0.2), UNCLEAR)
    fig = plotly_effects([("cell", {"s": small}), ("depth", {"s": sized})], ["s"])
    [trace] = fig.data
    assert list(trace.marker.symbol) == ["circle-open", "circle"]
    assert list(trace.text) == [f"{TOO_FEW}: no interval", UNCLEAR]
    assert list(trace.error_x.array) == pytest.approx([0.0, 10.0])


def test_a_model_resumed_over_several_trials_is_counted_once() -> None:
    """With the pruner `pause`, a model paused and resumed spans two trials, both holding its
    early epochs: the report's groups count it once, by the best value it reached."""
    from tuner.answers.analysis import analyse
    from tuner.answers.report import _counted

    study = optuna.create_study()
    study.set_user_attr("metric", "val_mae")
    space = {"recurrent_dropout": optuna.distributions.FloatDistribution(0.0, 0.5)}

    def add(values: list[float], state: TrialState, dropout: float, **attrs: object) -> None:
        study.add_trial(
            optuna.trial.create_trial(
                state=state,
                value=min(values) if state == TrialState.COMPLETE else None,
                params={"recurrent_dropout": dropout},
                distributions=space,
                intermediate_values=dict(enumerate(values, start=1)),
                user_attrs=attrs,
            )
        )

    add([3.0, 2.5], TrialState.COMPLETE, 0.0)
    add([2.9], TrialState.PRUNED, 0.3, paused_at=1)
    add([2.9, 2.0], TrialState.COMPLETE, 0.3, model=1, continues=1)
    a = analyse(study)
    assert a.values == {0: 2.5, 2: 2.0}
    assert _counted(a).startswith("2 models, complete or paused (one trial each; ")
    [dropout] = [t for t in a.techniques if t.spec.param == "recurrent_dropout"]
    assert sum(g.n for g in dropout.groups) == 2
    assert sum(g.n for g in dropout.rung_groups) == 2  # at epoch 1, once per model too
