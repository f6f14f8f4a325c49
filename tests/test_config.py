from __future__ import annotations

from pathlib import Path

import pytest

from tuner.config import load_study_config
from tuner.errors import ConfigError


def test_a_full_study_file_loads_into_frozen_typed_objects(write_study) -> None:
    config = load_study_config(write_study())
    assert config.name == "tiny"
    assert config.direction == "minimize"
    assert config.data.path is not None and config.data.path.name == "series.csv"
    assert config.space.units.kind == "int" and config.space.units.log
    assert config.space.cell.choices == ("gru", "lstm")
    assert config.training.epochs == 3
    with pytest.raises(AttributeError):
        config.name = "other"  # type: ignore[misc]


def test_the_shipped_study_is_valid() -> None:
    root = Path(__file__).parents[1]
    for path in sorted((root / "studies").glob("*.toml")):
        assert load_study_config(path).name


def test_one_value_or_one_choice_fixes_a_parameter(write_study) -> None:
    config = load_study_config(write_study(space='cell = "lstm"\nlayers = [2]\ndropout = 0.1'))
    assert (config.space.cell.kind, config.space.cell.value) == ("fixed", "lstm")
    assert (config.space.layers.kind, config.space.layers.value) == ("fixed", 2)
    assert (config.space.dropout.kind, config.space.dropout.value) == ("fixed", 0.1)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"study": 'name = "x"\ncolour = "red"'},
            r"study.toml: \[study\] colour: unknown key \(allowed: .*name.*\), got 'red'",
        ),
        ({"training": 'epochs = "ten"'}, r"\[training\] epochs: must be of type int, got 'ten'"),
        ({"training": "epochs = 0"}, r"\[training\] epochs: must be > 0, got 0"),
        (
            {"space": "dropout = { low = 0.0, high = 1.0 }"},
            r"\[space\] dropout.high: must be in \[0, 1\), got 1.0",
        ),
        (
            {"space": "recurrent_dropout = -0.1"},
            r"\[space\] recurrent_dropout: must be in \[0, 1\), got -0.1",
        ),
        (
            {"space": "units = { low = 64, high = 8 }"},
            r"\[space\] units: `low <= high` must hold, but got low=64, high=8",
        ),
        (
            {"space": 'cell = ["gru", "rnn"]'},
            r"\[space\] cell: must be one of gru, lstm, got 'rnn'",
        ),
        (
            {"space": "dropout = { low = 0.0, high = 0.1, log = true }"},
            r"\[space\] dropout: a log range needs `low > 0`",
        ),
        (
            {"space": "learning_rate = { low = 0.0, high = 0.1 }"},
            r"\[space\] learning_rate.low: must be in \(0, 1\), got 0.0",
        ),
        ({"space": "bidirectional = 1"}, r"\[space\] bidirectional: must be of type bool, got 1"),
        (
            {"study": 'name = "x"\nmetric = "val_accuracy"'},
            r"\[study\] metric: val_accuracy needs a classification task",
        ),
        (
            {"study": 'name = "x"\ndirection = "maximize"'},
            r"\[study\] direction: val_loss must be minimized, got 'maximize'",
        ),
        (
            {"data": 'target = "temp"\nlookback = 4\ndelay = 1'},
            r"\[data\] path: give exactly one of `path` and `dataset`",
        ),
        (
            {
                "data": 'path = "s.csv"\ntarget = "temp"\nlookback = 4\ndelay = 1\n'
                "split = [0.5, 0.5]"
            },
            r"\[data\] split: must be three positive fractions",
        ),
        (
            {"workers": "heartbeat_interval = 10\ngrace_period = 5"},
            r"\[workers\] grace_period: must be > heartbeat_interval \(10\), got 5",
        ),
    ],
)
def test_a_bad_field_is_named_with_its_rule_and_value(write_study, overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_study_config(write_study(**overrides))


def test_a_missing_required_field_is_named(write_study) -> None:
    with pytest.raises(ConfigError, match=r"\[data\] lookback: is required but missing"):
        load_study_config(write_study(data='path = "s.csv"\ntarget = "temp"\ndelay = 1'))


def test_an_unknown_table_is_named(study_dir: Path) -> None:
    path = study_dir / "bad.toml"
    path.write_text('[study]\nname = "x"\n[serach]\nfoo = 1\n')
    with pytest.raises(ConfigError, match=r"bad.toml: unknown table \[serach\]"):
        load_study_config(path)


def test_a_file_that_is_not_toml_is_named(study_dir: Path) -> None:
    path = study_dir / "bad.toml"
    path.write_text("[study\nname = ")
    with pytest.raises(ConfigError, match=r"bad.toml: not valid TOML"):
        load_study_config(path)


def test_a_missing_study_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope.toml: study file not found"):
        load_study_config(tmp_path / "nope.toml")
