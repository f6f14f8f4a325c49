from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tuner.config import AblationConfig, load_study_config
from tuner.errors import ConfigError


def test_a_full_study_file_loads_into_frozen_typed_objects(write_study) -> None:
    config = load_study_config(write_study())
    assert config.name == "tiny"
    assert config.direction == "minimize"
    assert config.data.path is not None and config.data.path.name == "series.csv"
    assert config.space.units.kind == "int" and config.space.units.log
    assert config.space.cell.choices == ("gru", "lstm")
    assert config.training.epochs == 3
    assert config.training.jit_compile is False
    with pytest.raises(AttributeError):
        config.name = "other"  # type: ignore[misc]


def test_xla_is_chosen_in_the_training_section(write_study) -> None:
    training = "epochs = 3\njit_compile = true"
    assert load_study_config(write_study(training=training)).training.jit_compile is True


def test_the_shipped_study_is_valid() -> None:
    root = Path(__file__).parents[2]
    for path in sorted((root / "studies").glob("*.toml")):
        assert load_study_config(path).name


def test_the_study_file_page_is_valid_and_says_what_the_defaults_are(tmp_path: Path) -> None:
    page = (Path(__file__).parents[2] / "docs" / "study-files.md").read_text()
    text = page.split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "readme.toml").write_text(text)
    config = load_study_config(tmp_path / "readme.toml")
    assert config.name == "nyc-weather-temp" and config.n_trials == 30
    assert config.pruner.prune_seed_configs is True
    assert config.training.jit_compile is False
    # Without the lines the page shows, the defaults are the same.
    kept = [
        line
        for line in text.splitlines()
        if not line.startswith(("prune_seed_configs", "jit_compile", "seed_configs"))
    ]
    (tmp_path / "bare" / "readme.toml").parent.mkdir()
    (tmp_path / "bare" / "readme.toml").write_text("\n".join(kept))
    bare = load_study_config(tmp_path / "bare" / "readme.toml")
    assert dataclasses.replace(bare, path=config.path) == config


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
            {"training": 'jit_compile = "yes"'},
            r"\[training\] jit_compile: must be of type bool, got 'yes'",
        ),
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


TEXT_DATA = 'task = "text-classification"\npath = "reviews.csv"\ntext = "body"\nlabel = "stars"'


def test_a_text_study_searches_its_input_side_and_vectorises_for_the_largest(write_study) -> None:
    space = (
        'cell = "gru"\nvocabulary_size = { low = 500, high = 4000, log = true }\n'
        "sequence_length = [40, 80]\nembedding_dim = 16"
    )
    config = load_study_config(
        write_study(study='name = "t"\nmetric = "val_accuracy"', data=TEXT_DATA, space=space)
    )
    assert config.direction == "maximize"
    assert config.training.loss == "crossentropy" and config.measure == "accuracy"
    assert config.space.vocabulary_size is not None and config.space.vocabulary_size.log
    assert (config.data.text, config.data.label) == ("body", "stars")
    # Texts are vectorised once, with what the largest trial needs.
    assert (config.data.max_vocabulary_size, config.data.max_sequence_length) == (4000, 80)


def test_a_classification_study_measures_its_loss_by_default(write_study) -> None:
    path = write_study(
        study='name = "s"', data='task = "sequence-classification"\npath = "x.npz"\nseed = 3'
    )
    config = load_study_config(path)
    assert (config.metric, config.measure, config.data.seed) == ("val_loss", "crossentropy", 3)
    assert config.space.vocabulary_size is None
    assert config.data.split == (0.5, 0.25, 0.25)


def test_a_forecast_can_ask_for_a_regular_grid(write_study) -> None:
    data = (
        'path = "series.csv"\ntarget = "temp"\ntimestamp = "time"\nfrequency = "1h"\n'
        "max_gap = 4\nlookback = 12\ndelay = 3"
    )
    config = load_study_config(write_study(data=data))
    assert (config.data.frequency, config.data.max_gap) == ("1h", 4)


FORECAST = 'path = "s.csv"\ntarget = "temp"\nlookback = 4\ndelay = 1\n'


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"data": 'task = "text-classification"\npath = "r.csv"\nlabel = "stars"'},
            r"\[data\] text: is required but missing",
        ),
        (
            {
                "data": 'task = "text-classification"\ndataset = "amazon-reviews"\nlookback = 4',
                "study": 'name = "x"',
            },
            r"\[data\] lookback: unknown key \(allowed: .*label.*\), got 4",
        ),
        (
            {
                "data": 'task = "sequence-classification"\npath = "x.npz"',
                "study": 'name = "x"\nmetric = "val_mae"',
            },
            r'\[study\] metric: val_mae needs task = "forecast", got \'val_mae\'',
        ),
        (
            {
                "data": 'task = "sequence-classification"\npath = "x.npz"',
                "training": 'loss = "mse"',
                "study": 'name = "x"',
            },
            r"\[training\] loss: must be one of crossentropy for task sequence-classification, "
            r"got 'mse'",
        ),
        (
            {"space": "vocabulary_size = 1000"},
            r'\[space\] vocabulary_size: is only for task = "text-classification", got 1000',
        ),
        (
            {"data": TEXT_DATA, "space": "vocabulary_size = 2", "study": 'name = "x"'},
            r"\[space\] vocabulary_size: must be in \[3, 1000000\]",
        ),
        (
            {"data": FORECAST + 'frequency = "1h"'},
            r"\[data\] frequency: needs a `timestamp` column to put on the grid, got '1h'",
        ),
        (
            {"data": FORECAST + 'timestamp = "time"\nfrequency = "hourly"'},
            r'\[data\] frequency: must be a pandas frequency such as "10min" or "1h", '
            r"got 'hourly'",
        ),
        (
            {"data": FORECAST + "max_gap = 3"},
            r"\[data\] max_gap: needs a `frequency` \(gaps are missing rows of a regular grid\)",
        ),
        (
            {"data": 'task = "regression"\npath = "s.csv"'},
            r"\[data\] task: must be one of forecast, sequence-classification, "
            r"text-classification, got 'regression'",
        ),
    ],
)
def test_a_field_that_does_not_fit_the_task_is_named(write_study, overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_study_config(write_study(**overrides))


# --- Bounds: every number finite and within what numpy, Optuna and the storage can hold --------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sampler": "seed = -1"}, r"\[sampler\] seed: must be in \[0, 4294967295\], got -1$"),
        (
            {"sampler": "seed = 4294967296"},
            r"\[sampler\] seed: must be in \[0, 4294967295\], got 4294967296$",
        ),
        (
            {"space": "dropout = { low = 0.0, high = 0.5, step = nan }"},
            r"\[space\] dropout.step: must be a finite number, got nan$",
        ),
        (
            {"space": "learning_rate = { low = 1e-4, high = inf, log = true }"},
            r"\[space\] learning_rate.high: must be a finite number, got inf$",
        ),
        ({"space": "dropout = [0.1, -nan]"}, r"\[space\] dropout: must be a finite number"),
        (
            {"training": "batch_size = 99999999999999999999999"},
            r"\[training\] batch_size: must be a 64-bit integer .*, got 99999999999999999999999$",
        ),
        (
            {"training": "batch_size = 1000000000000"},
            r"\[training\] batch_size: must be in \[1, 1048576\], got 1000000000000$",
        ),
        ({"training": "epochs = 10000000"}, r"\[training\] epochs: must be in \[1, 100000\]"),
        (
            {"study": 'name = "x"\nmetric = "val_mae"\nn_trials = 9223372036854775807'},
            r"\[study\] n_trials: must be in \[1, 1000000\], got 9223372036854775807$",
        ),
        (
            {"study": f'name = "{"n" * 10_000}"'},
            r"\[study\] name: must be at most 512 characters \(Optuna's column\), got 10000 ",
        ),
        (
            {"workers": "heartbeat_interval = 2\nmax_memory_mb = -1"},
            r"\[workers\] max_memory_mb: must be >= 0 \(0: no limit\), got -1$",
        ),
    ],
)
def test_a_number_out_of_bounds_is_named(write_study, overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_study_config(write_study(**overrides))


def test_a_data_path_that_is_a_symlink_loop_is_named(write_study, study_dir: Path) -> None:
    (study_dir / "a.csv").symlink_to(study_dir / "b.csv")
    (study_dir / "b.csv").symlink_to(study_dir / "a.csv")
    path = write_study(data='path = "a.csv"\ntarget = "temp"\nlookback = 4\ndelay = 1')
    with pytest.raises(ConfigError, match=r"\[data\] path: cannot be followed \(.*loop.*\)"):
        load_study_config(path)


def test_a_study_file_that_is_a_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r": is a folder, not a study file$"):
        load_study_config(tmp_path)


def test_a_worker_restarts_by_default_on_tensorflow_alone_and_can_be_told_otherwise(
    write_study,
) -> None:
    from tuner.search.process import trials_per_process

    default = load_study_config(write_study()).workers
    assert trials_per_process(default, "tensorflow") == 20
    assert trials_per_process(default, "jax") == 0
    assert default.max_memory_mb > 0
    workers = "heartbeat_interval = 2\nmax_trials_per_process = 0\nmax_memory_mb = 0"
    config = load_study_config(write_study(workers=workers))
    assert trials_per_process(config.workers, "tensorflow") == 0
    assert config.workers.max_memory_mb == 0
    config = load_study_config(write_study(workers="max_trials_per_process = 5"))
    assert trials_per_process(config.workers, "jax") == 5


def test_the_ablation_table(write_study) -> None:
    assert load_study_config(write_study()).ablation == AblationConfig(enabled=False, repeats=5)
    config = load_study_config(write_study(ablation="enabled = true\nrepeats = 5"))
    assert config.ablation == AblationConfig(enabled=True, repeats=5)
    with pytest.raises(ConfigError, match=r"\[ablation\] repeats: must be >= 2 .*, got 1"):
        load_study_config(write_study(ablation="repeats = 1"))
