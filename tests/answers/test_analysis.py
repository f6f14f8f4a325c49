from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from tuner.answers.analysis import (
    MIN_GROUP,
    analyse,
    bootstrap_medians,
    compare,
    effect,
    median_interval,
)
from tuner.answers.verdict import BETTER_AMONG, TOO_FEW, UNCLEAR, WORSE_AMONG

DISTRIBUTIONS = {
    "cell": CategoricalDistribution(["gru", "lstm"]),
    "layers": IntDistribution(1, 3),
    "units_1": IntDistribution(4, 64, log=True),
    "recurrent_dropout": FloatDistribution(0.0, 0.5),
    "bidirectional": CategoricalDistribution([False, True]),
    "learning_rate": CategoricalDistribution([1e-3]),  # fixed by the study file
    "embedding_dim": IntDistribution(8, 64),  # a parameter the grouping does not know
}


def make_study(
    values_of, n: int = 24, direction: str = "minimize", name: str = "s", seed: int = 0
) -> optuna.Study:
    """A real Optuna study whose trial values follow `values_of(params, rng)`."""
    study = optuna.create_study(direction=direction, study_name=name)
    study.set_user_attr("metric", "val_mae")
    study.set_user_attr("baselines", {"last_value": 10.0})
    rng = np.random.default_rng(seed)
    for i in range(n):
        params = {
            "cell": ["gru", "lstm"][i % 2],
            "layers": 1 + i % 3,
            "units_1": int(rng.integers(4, 65)),
            "recurrent_dropout": [0.0, 0.3][(i // 2) % 2],
            "bidirectional": bool((i // 4) % 2),
            "learning_rate": 1e-3,
            "embedding_dim": int(rng.integers(8, 65)),
        }
        study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions=DISTRIBUTIONS,
                value=float(values_of(params, rng)),
                user_attrs={"seed_config": "gru"} if i == 0 else {},
            )
        )
    # Pruned trials have no value: the grouping leaves them out.
    study.add_trial(
        optuna.trial.create_trial(
            params=params, distributions=DISTRIBUTIONS, state=optuna.trial.TrialState.PRUNED
        )
    )
    return study


def by_label(analysis):
    return {e.label: e for t in analysis.techniques for e in t.effects}


def test_a_technique_that_clearly_helps_and_one_that_clearly_hurts() -> None:
    # LSTM lowers the error a lot; recurrent dropout raises it a lot; the rest is noise.
    def value(p, rng):
        return (
            5.0
            - 2.0 * (p["cell"] == "lstm")
            + 2.0 * (p["recurrent_dropout"] > 0)
            + rng.normal(0, 0.1)
        )

    effects = by_label(analyse(make_study(value)))
    assert effects["cell: LSTM vs GRU"].verdict == BETTER_AMONG
    assert effects["cell: LSTM vs GRU"].difference == pytest.approx(-2.0, abs=0.3)
    assert effects["cell: LSTM vs GRU"].gain > 0  # lower is better here
    assert effects["recurrent dropout: on vs off"].verdict == WORSE_AMONG
    assert effects["recurrent dropout: on vs off"].gain < 0
    low, high = effects["recurrent dropout: on vs off"].difference_ci
    assert 0 < low < 2.0 < high
    assert effects["bidirectional: yes vs no"].verdict == UNCLEAR
    assert (
        effects["bidirectional: yes vs no"].difference_ci[0]
        < 0
        < effects["bidirectional: yes vs no"].difference_ci[1]
    )


def test_when_higher_is_better_a_higher_median_helps() -> None:
    def value(p, rng):
        return 0.5 + 0.3 * (p["bidirectional"] is True) + rng.normal(0, 0.01)

    effects = by_label(analyse(make_study(value, direction="maximize")))
    bidirectional = effects["bidirectional: yes vs no"]
    assert bidirectional.verdict == BETTER_AMONG
    assert bidirectional.difference > 0 and bidirectional.gain > 0


def test_groups_hold_the_complete_trials_of_each_level() -> None:
    study = make_study(lambda p, rng: rng.normal(3, 1))
    analysis = analyse(study)
    complete = [t for t in study.trials if t.value is not None]
    depth = next(t for t in analysis.techniques if t.spec.name == "depth")
    assert [g.label for g in depth.groups] == ["1 layer", "2 layers", "3 layers"]
    assert [e.label for e in depth.effects] == [
        "depth: 2 layers vs 1 layer",
        "depth: 3 layers vs 1 layer",
    ]
    for g, layers in zip(depth.groups, (1, 2, 3), strict=True):
        values = [t.value for t in complete if t.params["layers"] == layers]
        assert g.n == len(values) == 8
        assert g.median == pytest.approx(np.median(values))
        assert g.best == min(values)
        assert g.median_ci[0] <= g.median <= g.median_ci[1]
    # The task's own parameter is not a technique; fixed ones have no importance.
    assert {t.spec.param for t in analysis.techniques} == {
        "recurrent_dropout",
        "layers",
        "bidirectional",
        "cell",
    }
    for importances in analysis.importances.values():
        assert "learning_rate" not in importances
        assert "embedding_dim" in importances
    assert set(analysis.importances) == {"fANOVA", "PED-ANOVA"}
    assert len(analysis.values) == 24  # the pruned trial is left out


def test_small_groups_get_no_interval_and_no_verdict() -> None:
    analysis = analyse(make_study(lambda p, rng: rng.normal(3, 1), n=MIN_GROUP + 2))
    cell = next(t for t in analysis.techniques if t.spec.name == "cell")
    assert min(g.n for g in cell.groups) < MIN_GROUP
    assert cell.effects[0].verdict == TOO_FEW and cell.effects[0].difference_ci is None


def test_one_complete_trial_gets_no_importance_but_a_reason() -> None:
    analysis = analyse(make_study(lambda p, rng: 1.0, n=1))
    assert analysis.importances == {}
    assert "2 complete trials or more" in analysis.importance_note


def test_the_interval_of_a_median_covers_it_as_often_as_it_says() -> None:
    # Exact: at least 95% of the time, whatever the distribution, from 6 values; 5 values
    # cannot give 95% (their widest interval covers 93.75%), so they get none.
    rng = np.random.default_rng(1)
    assert median_interval(rng.normal(size=5)) is None
    # The k-th smallest and largest, k the largest that keeps 95%: 6 values: the extremes
    # (96.9%); 13: the 3rd (97.8%; the 4th gives 90.8%); 30: the 10th (95.7%; the 11th 90.1%).
    for n, k in ((6, 1), (13, 3), (30, 10)):
        x = np.sort(rng.normal(size=n))
        assert median_interval(x[::-1]) == (x[k - 1], x[n - k]), n
    small, large = rng.normal(0, 1, 10), rng.normal(0, 1, 400)
    low_s, high_s = median_interval(small)
    low_l, high_l = median_interval(large)
    assert high_l - low_l < (high_s - low_s) / 2
    assert bootstrap_medians(small[: MIN_GROUP - 1], rng) is None
    reps = 4000
    for n in (6, 8, 13, 30):
        for draw, median in ((rng.normal, 0.0), (rng.lognormal, 1.0)):
            covered = 0
            for _ in range(reps):
                low, high = median_interval(draw(size=n))
                covered += low <= median <= high
            # At least 95%, within 4 standard errors of the simulation.
            assert covered / reps > 0.95 - 4 * np.sqrt(0.95 * 0.05 / reps), (n, draw)


def test_groups_that_do_not_differ_are_called_better_or_worse_at_most_5_percent_of_the_time() -> (
    None
):
    # The error rate of one "better/worse among searched trials" verdict, by simulation: two
    # groups drawn alike (independent draws; trials a sampler chose are not, which the report
    # says), as small as a group with a verdict gets and larger.
    from tuner.answers.analysis import Group

    rng = np.random.default_rng(2)

    def group(values: np.ndarray) -> tuple[Group, np.ndarray | None]:
        g = Group(
            "g",
            tuple(range(len(values))),
            tuple(values),
            float(values.min()),
            float(np.median(values)),
            None,
        )
        return g, bootstrap_medians(values, rng)

    reps = 2000
    for n_a, n_b in ((MIN_GROUP, MIN_GROUP), (MIN_GROUP, 20), (12, 12)):
        called = 0
        for _ in range(reps):
            a, a_medians = group(rng.lognormal(size=n_a))
            b, b_medians = group(rng.lognormal(size=n_b))
            verdict = effect("t", a, b, a_medians, b_medians, minimize=True).verdict
            called += verdict in (BETTER_AMONG, WORSE_AMONG)
        assert called / reps < 0.05 + 3 * np.sqrt(0.05 * 0.95 / reps), (n_a, n_b)


def test_compare_puts_each_effect_of_each_study_side_by_side() -> None:
    def helps(p, rng):
        return 5.0 - 2.0 * (p["cell"] == "lstm") + rng.normal(0, 0.1)

    def hurts(p, rng):
        return 5.0 + 2.0 * (p["cell"] == "lstm") + rng.normal(0, 0.1)

    a = analyse(make_study(helps, name="a"))
    b = analyse(make_study(hurts, name="b", seed=1))
    rows = dict(compare([a, b]))
    assert rows["cell: LSTM vs GRU"]["a"].verdict == BETTER_AMONG
    assert rows["cell: LSTM vs GRU"]["b"].verdict == WORSE_AMONG
    assert list(rows)[0].startswith("recurrent dropout")
