from __future__ import annotations

import collections
import socket
import time
from pathlib import Path

import optuna
import pytest
from conftest import FAST_SPACE, stopped_while_running, tuner, worker_processes
from optuna.trial import TrialState

from tuner.answers.ablation import Ablation, format_ablation, seed_luck
from tuner.config import load_study_config
from tuner.search.ablation import AS_IS, enqueue, outside_space, variants
from tuner.search.companion import open_companion
from tuner.storage import open_storage

WINNER = {
    "cell": "lstm",
    "layers": 2,
    "units_1": 16,
    "units_2": 32,
    "dropout": 0.0,
    "recurrent_dropout": 0.3,
    "bidirectional": True,
    "activation": "tanh",
    "learning_rate": 1e-3,
}


def test_each_variant_changes_one_technique_and_knows_which_side_has_it() -> None:
    found = {v.name: v for v in variants(WINNER)}
    assert set(found) == {
        "recurrent dropout off",
        "dropout on at 0.2",
        "one direction",
        "one layer more",
        "one layer fewer",
        "GRU",
    }
    changed = {
        name: {k for k in v.params.items() if k not in WINNER.items()} for name, v in found.items()
    }
    assert changed["recurrent dropout off"] == {("recurrent_dropout", 0.0)}
    assert changed["dropout on at 0.2"] == {("dropout", 0.2)}
    assert changed["one direction"] == {("bidirectional", False)}
    # The new top layer repeats the top layer's units; one fewer drops the top layer.
    assert changed["one layer more"] == {("layers", 3), ("units_3", 32)}
    assert found["one layer fewer"].params == {
        k: v for k, v in WINNER.items() if k != "units_2"
    } | {"layers": 1}
    assert changed["GRU"] == {("cell", "gru")}
    # A verdict is about the side with the technique, whichever side the winner was on.
    sides = {name: v.with_technique for name, v in found.items()}
    assert sides == {
        "recurrent dropout off": False,
        "dropout on at 0.2": True,
        "one direction": False,
        "one layer more": True,
        "one layer fewer": False,
        "GRU": False,
    }


def test_variants_outside_the_search_space_are_marked(write_study) -> None:
    config = load_study_config(write_study())  # layers 1 to 2, both cells
    found = {v.name: v for v in variants(WINNER)}
    assert outside_space(found["one layer more"].params, config)  # 3 layers
    assert not outside_space(found["GRU"].params, config)


LONG = "epochs = 6\nbatch_size = 16\nsteps_per_epoch = 10\npatience = 6"


@pytest.mark.slow
def test_ablation_trials_survive_a_killed_worker_and_ablate_gives_every_verdict(
    write_study, study_dir: Path
) -> None:
    path = write_study(
        "abl",
        study='name = "abl"\nmetric = "val_mae"\nn_trials = 2\nseed_configs = false',
        pruner='name = "none"',
        training=LONG,
        workers="heartbeat_interval = 1\ngrace_period = 3",
        space=FAST_SPACE,
    )
    url = f"sqlite:///{study_dir / 'abl.db'}"
    tuner("run", str(path), "--storage", url, cwd=study_dir)
    config = load_study_config(path)
    storage = open_storage(url, config.workers)
    best = optuna.load_study(study_name="abl", storage=storage).best_trial
    companion = open_companion(config, storage)
    runs = enqueue(companion, config, best, repeats=2)
    assert runs == 2 * 6  # as is, recurrent dropout, dropout, bidirectional, deeper, LSTM

    a, b = worker_processes(path, url, study_dir, 2, "--ablation")
    a_name = f"{socket.gethostname()}:{a.pid}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert time.monotonic() < deadline, "worker A never got to run a trial"
            assert a.poll() is None, "worker A ran out of trials before it could be killed"
            trials = companion.get_trials()
            # Any trial worker A is running: with one compile a trial, a trial's epochs pass
            # too fast to wait for one of them to be reported.
            victim = next(
                (
                    t
                    for t in trials
                    if t.state == TrialState.RUNNING and t.user_attrs.get("worker") == a_name
                ),
                None,
            )
            if victim is not None and any(t.state == TrialState.COMPLETE for t in trials):
                if stopped_while_running(a, url, victim._trial_id):
                    a.kill()
                    break
            time.sleep(0.2)
        _, b_err = b.communicate(timeout=600)
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
        a.communicate()
    assert b.returncode == 0, b_err

    trials = optuna.load_study(study_name="abl/ablation", storage=url).trials
    failed = next(t for t in trials if t.number == victim.number)
    assert failed.state == TrialState.FAIL
    [retry] = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert retry.state == TrialState.COMPLETE
    assert retry.params == failed.params
    for key in ("variant", "repeat", "seed", "ablation_of"):
        assert retry.user_attrs[key] == failed.user_attrs[key]
    assert collections.Counter(t.state for t in trials) == {
        TrialState.COMPLETE: 12,
        TrialState.FAIL: 1,
    }
    # Paired runs: every variant trained on the same two fresh seeds, none of them the seed
    # the search trained the trial with, as the search would (at most the study's epochs,
    # stopped early), and scored on the test split.
    seeds = collections.defaultdict(set)
    for t in trials:
        if t.state == TrialState.COMPLETE:
            seeds[t.user_attrs["variant"]].add(t.user_attrs["seed"])
            assert 1 <= t.user_attrs["epochs"] <= 6 and t.user_attrs["scored_on"] == "test"
            assert t.user_attrs["repeat"] in (1, 2)
    assert len({frozenset(s) for s in seeds.values()}) == 1 and len(seeds[AS_IS]) == 2
    assert best.user_attrs["training_seed"] not in seeds[AS_IS]

    # `tuner ablate` resumes: nothing left to queue, so it reads out the verdicts.
    result = tuner("ablate", str(path), "--storage", url, "--repeats", "2", cwd=study_dir)
    out = result.stdout
    assert f"ablation of trial {best.number} of study 'abl': 2 fresh seeds" in out
    for contrast in (
        "recurrent dropout (",
        "dropout (",
        "bidirectional (",
        "depth: one layer more (2 vs 1 layers)",
        "cell: LSTM instead of GRU (",
    ):
        line = next(line for line in out.splitlines() if line.strip().startswith(contrast))
        assert any(v in line for v in ("helped;", "hurt;", "no clear difference;")), line
        assert "95% CI" in line and "2 seeds" in line and "adjusted p = " in line
    assert "Holm over the contrasts of this ablation" in out
    assert "did nothing helped or hurt at 5%;" in out
    companion = optuna.load_study(study_name="abl/ablation", storage=url)
    assert len(companion.trials) == 13
    assert f"read_at:{best.number}" not in companion.user_attrs  # no seed added: one reading

    # Seeds until decided: one more seed at a time up to --max-repeats (six contrasts are not
    # all decided on three seeds), read with anytime-valid intervals from then on.
    result = tuner(
        "ablate",
        str(path),
        "--storage",
        url,
        "--repeats",
        "2",
        "--until-decided",
        "--max-repeats",
        "3",
        cwd=study_dir,
    )
    out = result.stdout
    assert "12 runs (2 seeds each)" in out and "18 runs (3 seeds each)" in out
    assert f"ablation of trial {best.number} of study 'abl': 3 fresh seeds" in out
    assert "anytime-valid (seeds added until decided)" in out
    contrasts = [line for line in out.splitlines() if "adjusted p = " in line]
    assert contrasts and all("95% confidence sequence " in line for line in contrasts)
    companion = optuna.load_study(study_name="abl/ablation", storage=url)
    assert companion.user_attrs[f"sequential:{best.number}"] is True
    # Its fixed-K verdicts were printed at 2 seeds before seeds were added: two readings, so a
    # false "helped" or "hurt" is at most 10%, and the verdicts say so.
    assert companion.user_attrs[f"read_at:{best.number}"] == [2]
    said = "10% (not 5%: its verdicts were also printed before, read as a fixed-K ablation of 2"
    assert said + " seeds)" in " ".join(out.split())
    complete = [t for t in companion.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 18 and {t.user_attrs["repeat"] for t in complete} == {1, 2, 3}


def test_ablate_refuses_a_trial_that_is_not_complete_in_one_line(
    write_study, study_dir: Path
) -> None:
    from click.testing import CliRunner
    from optuna.distributions import IntDistribution
    from optuna.trial import create_trial

    from tuner.cli import cli

    path = write_study("refuse")
    url = f"sqlite:///{study_dir / 'refuse.db'}"
    study = optuna.create_study(study_name="refuse", storage=url)
    for state, value in ((TrialState.COMPLETE, 1.0), (TrialState.PRUNED, None)):
        study.add_trial(
            create_trial(
                state=state,
                value=value,
                params={"units_1": 8},
                distributions={"units_1": IntDistribution(4, 64)},
            )
        )
    runner = CliRunner()
    for trial, message in (
        (
            "1",
            "Error: trial 1 of study 'refuse' is pruned; only a complete or paused trial can "
            "be ablated",
        ),
        ("7", "Error: study 'refuse' has no trial 7"),
    ):
        result = runner.invoke(cli, ["ablate", str(path), "--storage", url, "--trial", trial])
        assert result.exit_code == 2
        assert result.stderr.splitlines() == [message]
    assert optuna.get_all_study_names(url) == ["refuse"]  # no companion study was made
    missing = f"sqlite:///{study_dir / 'missing.db'}"
    result = runner.invoke(cli, ["ablate", str(path), "--storage", missing])
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1
    assert not (study_dir / "missing.db").exists()


@pytest.mark.slow
def test_an_ablation_run_trains_as_the_search_would_and_is_scored_on_the_test_split(
    write_study, study_dir: Path
) -> None:
    from conftest import make_series

    from tuner.data import prepare
    from tuner.search.objective import Objective

    # The last tenth of the series (inside the test split, the last quarter) jumps by 1000
    # degrees: a run scored on the test split is off by about that much, one scored on
    # validation is not.
    series = make_series()
    series.loc[len(series) - 60 :, "temp"] += 1000.0
    series.to_csv(study_dir / "jump.csv", index=False)
    config = load_study_config(
        write_study(
            data='path = "jump.csv"\ntarget = "temp"\ntimestamp = "time"\n'
            "lookback = 12\nstep = 2\ndelay = 3",
            training="epochs = 4\nbatch_size = 16\nsteps_per_epoch = 3\npatience = 1",
        )
    )
    objective = Objective(config, prepare(config.data))
    params = WINNER | {"layers": 3, "units_1": 4, "units_2": 4, "units_3": 4, "cell": "gru"}
    values = []
    for _ in range(2):
        study = optuna.create_study(direction="minimize")
        study.enqueue_trial(params, user_attrs={"ablation": {"seed": 7, "design": 2}})
        trial = study.ask()
        values.append(objective(trial))
        study.tell(trial, values[-1])
        [done] = study.trials
        assert done.params == params  # recorded as they were, outside the space
        assert done.user_attrs["training_seed"] == 7 and done.user_attrs["scored_on"] == "test"
        # The study's epochs at most, with its early stopping (patience 1), never pruned.
        assert 1 <= done.user_attrs["epochs"] <= 4
        best = min(done.intermediate_values.values())
        assert done.user_attrs["validation_value"] == pytest.approx(best)
        assert best < 100 < values[-1]  # validation knows nothing of the jump; test does
    assert values[0] == values[1]  # the same seed trains the same model


def _ablation(fresh: dict[int, float], search: float, baselines: dict[str, float]) -> Ablation:
    return Ablation(
        study="s",
        trial=7,
        metric="val_mae",
        direction="minimize",
        epochs=4,
        repeats=len(fresh),
        as_is=fresh,
        contrasts=(),
        search_value=search,
        as_is_validation=fresh,
        baselines=baselines,
    )


def test_a_winner_whose_own_seed_was_lucky_is_said_to_be_and_a_steady_one_is_not() -> None:
    # The search's value (3.53, its own seed) beats what one more run of the same model on a
    # fresh seed would do 95 times in 100.
    fresh = {2: 3.76, 3: 3.95, 4: 3.85, 5: 3.86, 6: 3.80}
    lucky = _ablation(fresh, 3.53, {"last_value": 3.82})
    note = seed_luck(lucky)
    assert note is not None
    assert "trial 7 (val_mae = 3.53, its own seed)" in note
    assert "better than 95% of new runs of the same model would be (bound 3.6" in note
    assert "its own seed was lucky" in note
    assert "mean 3.844 over 5 fresh seeds" in note
    assert "not clearly better than the naive baseline last_value (3.82)" in note
    assert "note: the search's value" in format_ablation(lucky)
    # Far from the baseline: the seed is still named, the baseline is not.
    assert "naive baseline" not in (seed_luck(_ablation(fresh, 3.53, {"last_value": 9.0})) or "")
    # Within what a fresh seed does: nothing to say.
    steady = _ablation(fresh, 3.74, {"last_value": 3.70})
    assert seed_luck(steady) is None
    assert "note:" not in format_ablation(steady)
    # Too few fresh seeds for a bound.
    assert seed_luck(_ablation({2: 3.0}, 1.0, {})) is None


def test_a_side_that_failed_on_a_seed_never_wins() -> None:
    from tuner.answers.ablation import Contrast, hiding
    from tuner.answers.inference import judge
    from tuner.answers.verdict import HELPED, HURT, UNCLEAR

    better = judge([[-0.3, -0.31, -0.29, -0.3, -0.32]], minimize=True)[0]
    assert better.verdict == HELPED

    def contrast(failed_with: int, failed_without: int) -> Contrast:
        return Contrast("cell", "cell", "LSTM", True, False, better, failed_with, failed_without)

    # The runs with the technique failed on a seed: it is not said to have helped.
    assert contrast(1, 0).verdict == UNCLEAR
    assert "helped withheld" in hiding(_ablation({1: 3.0}, 3.0, {}), contrast(1, 0))
    # Only the runs without it failed: its help stands.
    assert contrast(0, 2).verdict == HELPED
    worse = judge([[0.3, 0.31, 0.29, 0.3, 0.32]], minimize=True)[0]
    assert worse.verdict == HURT
    hurt = Contrast("cell", "cell", "LSTM", True, False, worse, 0, 1)
    assert hurt.verdict == UNCLEAR  # its absence failed: it is not said to have hurt


def test_no_fresh_seed_is_the_seed_the_search_trained_the_trial_with(write_study) -> None:
    from optuna.trial import create_trial

    from tuner.search.ablation import repeat_seeds

    config = load_study_config(write_study())
    for number in range(50):
        plain = create_trial(value=1.0)
        plain.number = number
        drawn = repeat_seeds(config, plain, 3)
        # A trial whose search seed happens to be one the draw gives: it is skipped.
        trial = create_trial(value=1.0, user_attrs={"training_seed": drawn[1]})
        trial.number = number
        seeds = repeat_seeds(config, trial, 10)
        assert drawn[1] not in seeds and len(set(seeds)) == 10
        assert seeds[:3] == repeat_seeds(config, trial, 3)  # more seeds extend the same list
