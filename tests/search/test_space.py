from __future__ import annotations

import optuna
import pytest

from tuner.config import load_study_config
from tuner.search.space import SEED_CONFIGS, seed_fits, suggest
from tuner.training.spec import spec_from_params


@pytest.fixture
def space(write_study):
    return load_study_config(write_study()).space


def test_every_parameter_reaches_the_spec_as_sampled(space) -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen_layers = set()
    for _ in range(30):
        trial = study.ask()
        spec = suggest(trial, space)
        p = trial.params
        assert spec.cell == p["cell"]
        assert len(spec.units) == p["layers"]
        assert spec.units == tuple(p[f"units_{i}"] for i in range(1, p["layers"] + 1))
        assert spec.dropout == p["dropout"]
        assert spec.recurrent_dropout == p["recurrent_dropout"]
        assert spec.bidirectional == p["bidirectional"]
        assert spec.activation == p["activation"]
        assert spec.learning_rate == p["learning_rate"]
        assert spec_from_params(p) == spec
        # Units of layers a trial does not have are not sampled at all.
        assert f"units_{p['layers'] + 1}" not in p
        assert all(4 <= u <= 64 for u in spec.units)
        assert 0 <= spec.dropout <= 0.3
        seen_layers.add(p["layers"])
        study.tell(trial, 0.0)
    assert seen_layers == {1, 2}


def test_units_are_sampled_on_a_log_scale(space) -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    suggest(trial, space)
    distribution = trial.distributions["units_1"]
    assert isinstance(distribution, optuna.distributions.IntDistribution)
    assert distribution.log and (distribution.low, distribution.high) == (4, 64)


def test_a_fixed_parameter_is_recorded_as_a_one_choice_parameter(write_study) -> None:
    space = load_study_config(write_study(space='cell = "lstm"\nlayers = 1\nunits = 8')).space
    study = optuna.create_study()
    trial = study.ask()
    spec = suggest(trial, space)
    assert (spec.cell, spec.units) == ("lstm", (8,))
    assert trial.params["cell"] == "lstm"
    assert trial.distributions["cell"] == optuna.distributions.CategoricalDistribution(["lstm"])


def test_an_enqueued_seed_configuration_is_run_as_written(write_study) -> None:
    space = load_study_config(
        write_study(
            space='activation = ["tanh", "relu"]\nrecurrent_dropout = { low = 0.0, high = 0.5 }'
        )
    ).space
    stacked = next(s for s in SEED_CONFIGS if s.name == "stacked-gru")
    assert seed_fits(stacked, space) is None
    study = optuna.create_study()
    study.enqueue_trial(stacked.params)
    assert suggest(study.ask(), space) == spec_from_params(stacked.params)


def test_seed_configurations_outside_the_space_are_named(write_study) -> None:
    space = load_study_config(write_study(space='cell = "lstm"\nlayers = 1')).space
    reasons = {s.name: seed_fits(s, space) for s in SEED_CONFIGS}
    assert reasons["gru"] == "cell='gru' is outside the search space"
    assert reasons["bidirectional-lstm"] is None


def test_the_seed_configurations_are_the_hand_tuned_models() -> None:
    specs = {s.name: spec_from_params(s.params) for s in SEED_CONFIGS}
    assert specs["gru-dropout"].units == (32,)
    assert (specs["gru-dropout"].dropout, specs["gru-dropout"].recurrent_dropout) == (0.2, 0.2)
    stacked = specs["stacked-gru"]
    assert stacked.units == (32, 64) and stacked.activation == "relu"
    assert (stacked.dropout, stacked.recurrent_dropout) == (0.1, 0.5)
    bidi = specs["bidirectional-lstm"]
    assert (bidi.cell, bidi.units, bidi.bidirectional) == ("lstm", (32,), True)
