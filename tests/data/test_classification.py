"""Both classification tasks end to end: a study created with its class names and baselines,
real trials trained by a worker on SQLite, and the best trial read against the baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
from conftest import reviews
from optuna.trial import TrialState

from tuner.answers.results import format_summary, summary
from tuner.config import load_study_config
from tuner.data import prepare
from tuner.search.objective import Objective
from tuner.search.study import open_study
from tuner.search.worker import StopRequest, run_worker
from tuner.storage import open_storage

pytestmark = pytest.mark.slow

SPACE = """
cell = ["gru", "lstm"]
layers = 1
units = { low = 4, high = 8 }
dropout = 0.0
recurrent_dropout = 0.0
bidirectional = [false, true]
learning_rate = 0.01
"""


def test_a_text_study_records_its_classes_and_is_read_against_the_majority_class(
    write_study, study_dir: Path
) -> None:
    reviews().to_csv(study_dir / "reviews.csv", index=False)
    path = write_study(
        "reviews",
        study='name = "reviews"\nmetric = "val_accuracy"\nn_trials = 2\nseed_configs = false',
        data='task = "text-classification"\npath = "reviews.csv"\ntext = "body"\nlabel = "stars"',
        space=SPACE + "vocabulary_size = [20, 45]\nsequence_length = 16\nembedding_dim = 4",
        training="epochs = 3\nbatch_size = 16",
        pruner='name = "none"',
    )
    config = load_study_config(path)
    data = prepare(config.data)
    storage = open_storage(f"sqlite:///{study_dir / 'tuner.db'}", config.workers)
    study = open_study(config, storage, lambda: data.baselines, attrs=lambda: data.study_attrs)
    result = run_worker(config, study, storage, Objective(config, data), StopRequest())
    assert result.complete == 2
    assert study.user_attrs["classes"] == ["bad", "good"]
    assert study.user_attrs["baselines"] == {"majority_class": pytest.approx(2 / 3)}
    for trial in study.trials:
        assert 0.0 <= trial.value <= 1.0 and trial.params["vocabulary_size"] in (20, 45)
    text = format_summary(summary(study))
    assert "baseline majority_class: val_accuracy = 0.6667" in text


def test_a_sequence_trial_reports_its_loss_and_accuracy(tmp_path: Path, write_study) -> None:
    rng = np.random.default_rng(0)
    labels = np.arange(90) % 3
    seqs = [rng.normal(size=(int(rng.integers(2, 8)), 2)) + label for label in labels]
    np.savez(
        tmp_path / "seq.npz",
        values=np.concatenate(seqs),
        lengths=[len(s) for s in seqs],
        labels=labels,
    )
    path = write_study(
        "seq",
        study='name = "seq"\nn_trials = 1',
        data=f'task = "sequence-classification"\npath = "{tmp_path / "seq.npz"}"',
        space=SPACE,
        training="epochs = 2\nbatch_size = 16",
    )
    config = load_study_config(path)
    data = prepare(config.data)
    assert data.inputs.masked and data.head.units == 3
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    study.optimize(Objective(config, data), n_trials=1)
    (trial,) = study.trials
    assert trial.state == TrialState.COMPLETE
    assert trial.value == min(trial.intermediate_values.values())
    assert 0 < trial.value < 5  # the cross-entropy of a 3-class guess is about 1.1
    assert (
        config.measure == "crossentropy" and "crossentropy" in data.baselines["class_frequencies"]
    )
