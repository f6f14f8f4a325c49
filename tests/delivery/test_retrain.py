from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
from click.testing import CliRunner
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from tuner.cli import cli
from tuner.config import load_study_config
from tuner.data import prepare
from tuner.delivery.retrain import RetrainError, choose_trial


def test_only_a_complete_trial_can_be_retrained() -> None:
    study = optuna.create_study(study_name="s")
    x = {"x": FloatDistribution(0, 1)}
    study.add_trial(optuna.trial.create_trial(params={"x": 0.1}, distributions=x, value=1.0))
    study.add_trial(
        optuna.trial.create_trial(params={"x": 0.2}, distributions=x, state=TrialState.PRUNED)
    )
    assert choose_trial(study, None).number == 0
    assert choose_trial(study, 0).number == 0
    with pytest.raises(RetrainError, match=r"^trial 1 of study 's' is pruned; only a complete"):
        choose_trial(study, 1)
    with pytest.raises(RetrainError, match=r"^study 's' has no trial 7 \(its trials: 0 to 1\)$"):
        choose_trial(study, 7)


@pytest.mark.slow
def test_a_bad_trial_number_gets_one_line_and_writes_nothing(two_studies, monkeypatch) -> None:
    folder = two_studies["folder"]
    monkeypatch.chdir(folder)
    before = optuna.load_study(study_name="walk", storage=two_studies["url"]).user_attrs
    result = CliRunner().invoke(
        cli,
        ["retrain", str(two_studies["walk"]), "--storage", two_studies["url"], "--trial", "99"],
    )
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "Error: study 'walk' has no trial 99 (its trials: 0 to 5)"
    ]
    assert optuna.load_study(study_name="walk", storage=two_studies["url"]).user_attrs == before


@pytest.mark.slow
def test_retrain_saves_a_model_that_loads_and_predicts_and_consistent_metrics(
    two_studies, tmp_path: Path, monkeypatch
) -> None:
    import keras

    monkeypatch.chdir(tmp_path)  # the artifacts go beside the SQLite file, not here
    url, folder, walk = two_studies["url"], two_studies["folder"], two_studies["walk"]
    study = optuna.load_study(study_name="walk", storage=url)
    best = study.best_trial
    result = CliRunner().invoke(cli, ["retrain", str(walk), "--storage", url])
    assert result.exit_code == 0, result.output + result.stderr
    assert f"retraining trial {best.number} on training + validation data for" in result.output

    study = optuna.load_study(study_name="walk", storage=url)
    record = study.user_attrs[f"retrained:{best.number}"]
    store = folder / "artifacts"
    assert record["artifact_store"] == str(store)
    assert not (tmp_path / "artifacts").exists()
    metas = {m.artifact_id: m for m in optuna.artifacts.get_all_artifact_meta(study)}
    assert metas[record["model_artifact"]].filename == f"walk-trial-{best.number}.keras"
    assert metas[record["metrics_artifact"]].mimetype == "application/json"
    model_file = tmp_path / "model.keras"
    optuna.artifacts.download_artifact(
        artifact_store=optuna.artifacts.FileSystemArtifactStore(store),
        artifact_id=record["model_artifact"],
        file_path=str(model_file),
    )
    metrics = json.loads((store / record["metrics_artifact"]).read_text())

    # The metrics say what was trained, and how.
    assert metrics["trial"] == best.number and metrics["params"] == best.params
    assert metrics["epochs"] == best.user_attrs["best_epoch"]
    assert metrics["trained_on"] == "train+validation"
    assert metrics["validation_value"] == best.value
    assert metrics["test_value"] == metrics["test"]["mae"] == record["test_mae"]
    # ... and the baseline on the test split is the data module's.
    config = load_study_config(walk)
    data = prepare(config.data)
    naive = data.baselines_on("test")["last_value"]["mae"]
    assert metrics["test_baselines"] == {"last_value": pytest.approx(naive)}
    expected = (naive - metrics["test_value"]) / naive
    assert metrics["improvement_on_test"]["last_value"] == pytest.approx(expected)
    assert metrics["error_rate"].startswith("none: one training run on one seed")

    # The saved model loads with nothing of ours and takes raw windows: scored on the test
    # split's, it gives the recorded score.
    model = keras.saving.load_model(model_file)
    assert model.count_params() == metrics["n_params"]
    arrays = data.arrays
    raw = arrays.inputs * np.array(arrays.input_std) + np.array(arrays.input_mean)
    ends = arrays.window_ends("test")
    windows = raw[ends[:, None] + np.arange(-(arrays.timesteps - 1), 1)[None, :] * arrays.step]
    predictions = model.predict(windows.astype("float32"), verbose=0)
    truth = arrays.target[ends + arrays.delay]
    assert predictions.shape == (len(ends), 1)
    assert np.mean(np.abs(predictions[:, 0] - truth)) == pytest.approx(
        metrics["test_value"], rel=1e-4
    )
    # The same model under a readable name, with its JSON beside it.
    named = store / record["model_path"]
    assert named.name == f"walk-trial-{best.number}.keras"
    assert named.read_bytes() == model_file.read_bytes()
    assert json.loads((store / record["metrics_path"]).read_text()) == metrics

    # best-trials points at the retrained model.
    shown = CliRunner().invoke(
        cli, ["best-trials", str(walk), "--storage", url, "--top", "1", "--format", "json"]
    )
    retrained = json.loads(shown.output)["top"][0]["retrained"]
    assert retrained["model"] == str(named)
    assert retrained["test_mae"] == metrics["test_value"]
    text = CliRunner().invoke(cli, ["best-trials", str(walk), "--storage", url]).output
    assert f"trial {best.number} retrained: test mae = {metrics['test_value']:.4g}" in text
    assert f"model {named}" in text
