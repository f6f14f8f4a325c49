"""The exported model, for each task: a tiny study is searched and its best trial retrained with
`tuner retrain`; then a fresh Python process that imports only keras and numpy loads the `.keras`
file and predicts on raw windows, sequences or texts. Its predictions equal `tuner predict`'s,
and scored on the test split they give the test score `tuner retrain` reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import FAST_SPACE, reviews, tuner

from tuner.config import load_study_config
from tuner.data import prepare
from tuner.search.objective import Objective
from tuner.search.study import open_study
from tuner.search.worker import StopRequest, run_worker
from tuner.storage import open_storage

pytestmark = pytest.mark.slow

# Run in a process of its own, which must not import tuner.
LOAD_AND_PREDICT = textwrap.dedent(
    """
    import sys

    import keras
    import numpy as np

    model = keras.saving.load_model(sys.argv[1])
    with np.load(sys.argv[2], allow_pickle=False) as archive:
        inputs = archive["inputs"]
    if inputs.dtype.kind == "U":  # texts: Keras takes strings as objects
        inputs = inputs.astype(object)
    np.save(sys.argv[3], model.predict(inputs, verbose=0))
    assert not [m for m in sys.modules if m == "tuner" or m.startswith("tuner.")]
    """
)


def predict_elsewhere(
    model: Path, inputs: np.ndarray, folder: Path, backend: str = "tensorflow"
) -> np.ndarray:
    """What the model predicts on `inputs` in a fresh process with nothing of tuner."""
    np.savez(folder / "inputs.npz", inputs=inputs)
    out = folder / f"predicted-{backend}.npy"
    env = os.environ | {"KERAS_BACKEND": backend}
    done = subprocess.run(
        [sys.executable, "-c", LOAD_AND_PREDICT, str(model), str(folder / "inputs.npz"), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return np.load(out)


def search_and_retrain(path: Path, folder: Path) -> tuple[dict[str, Any], Path]:
    """Run the study of `path` (a worker in this process), retrain its best trial with `tuner
    retrain`, and give back the metrics JSON and the model file that it names."""
    config = load_study_config(path)
    data = prepare(config.data)
    url = f"sqlite:///{folder / 'tuner.db'}"
    storage = open_storage(url, config.workers)
    study = open_study(config, storage, lambda: data.baselines, attrs=lambda: data.study_attrs)
    assert run_worker(config, study, storage, Objective(config, data), StopRequest()).complete
    # Its own process, as a user runs it: a text model is saved on TensorFlow whatever backend
    # this process's Keras runs on.
    output = tuner("retrain", str(path), "--storage", url, cwd=folder).stdout
    model = Path(output.split("model: ")[1].split(" (")[0])
    about = Path(output.split("about it: ")[1].split(" (")[0])
    assert model.suffix == ".keras" and model.is_file() and about.parent == model.parent
    return json.loads(about.read_text()), model


def tuner_predict(path: Path, folder: Path, data_file: Path) -> pd.DataFrame:
    url = f"sqlite:///{folder / 'tuner.db'}"
    out = folder / "predictions.csv"
    result = tuner(
        "predict",
        str(path),
        "--storage",
        url,
        "--data",
        str(data_file),
        "--out",
        str(out),
        cwd=folder,
    )
    assert "retraining" not in result.stdout  # the retrained model is used as it is
    return pd.read_csv(out)


def test_a_forecast_model_takes_raw_rows_and_gives_the_target_in_its_units(
    write_study, study_dir: Path
) -> None:
    path = write_study(
        "forecast",
        study='name = "forecast"\nmetric = "val_mae"\nn_trials = 1\nseed_configs = false',
        space=FAST_SPACE,
        pruner='name = "none"',
    )
    metrics, model = search_and_retrain(path, study_dir)
    about = metrics["model"]
    assert about["input"]["features"] == ["temp", "pressure", "humid"]
    assert (about["input"]["lookback"], about["input"]["step"]) == (12, 2)
    assert about["input"]["delay"] == 3 and about["input"]["timestamp"] == "time"
    assert metrics["metric"] == "val_mae" and metrics["training_seed"] >= 0
    assert set(metrics["versions"]) == {"keras", "backend", "backend_version", "tuner"}

    # The test split's windows, cut from the raw file as a user would.
    arrays = prepare(load_study_config(path).data).arrays
    frame = pd.read_csv(study_dir / "series.csv")
    values = frame[about["input"]["features"]].to_numpy(dtype="float32")
    ends = arrays.window_ends("test")
    offsets = np.arange(-(arrays.timesteps - 1), 1) * arrays.step
    windows = values[ends[:, None] + offsets[None, :]]
    truth = frame["temp"].to_numpy()[ends + arrays.delay]

    predicted = predict_elsewhere(model, windows, study_dir)
    assert predicted.shape == (len(ends), 1)
    assert np.mean(np.abs(predicted[:, 0] - truth)) == pytest.approx(
        metrics["test_value"], rel=1e-4
    )
    # tuner predict forecasts from every window of the file, the first ending at row 10.
    table = tuner_predict(path, study_dir, study_dir / "series.csv")
    assert list(table.columns) == ["window_end", "forecast_for", "temp"]
    assert len(table) == len(frame) - 10
    first = ends - 10
    assert np.allclose(table["temp"].to_numpy()[first], predicted[:, 0], rtol=0, atol=1e-5)
    assert list(table["forecast_for"].iloc[first[:2]]) == [
        str(pd.Timestamp(t, tz="UTC")) for t in frame["time"].iloc[ends[:2] + 3]
    ]
    # The documented example (docs/model.md) forecasts from the file's last window.
    page = (Path(__file__).resolve().parents[2] / "docs" / "model.md").read_text()
    example = page.split("## Using the model")[1].split("```python\n")[1].split("```")[0]
    assert len(example.splitlines()) == 5
    stem = "artifacts/models/nyc-weather-trial-12/nyc-weather-trial-12"
    example = example.replace(f"{stem}.keras", str(model)).replace(
        f"{stem}.json", str(model.with_suffix(".json"))
    )
    shown = subprocess.run(
        [sys.executable, "-c", example.replace("latest.csv", str(study_dir / "series.csv"))],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert shown.returncode == 0, shown.stderr
    value = float(shown.stdout.strip().splitlines()[-1].strip("[] "))
    assert value == pytest.approx(table["temp"].iloc[-1], abs=1e-4)
    # The preprocessing is backend-neutral: the same model gives the same on JAX.
    on_jax = predict_elsewhere(model, windows, study_dir, backend="jax")
    assert np.allclose(on_jax, predicted, rtol=0, atol=1e-5)


def test_a_sequence_model_takes_raw_nan_padded_sequences_and_gives_probabilities(
    write_study, study_dir: Path
) -> None:
    rng = np.random.default_rng(0)
    labels = np.array(["a", "b", "c"])[np.arange(90) % 3]
    seqs = [
        rng.normal(size=(int(rng.integers(2, 8)), 2)) * [1, 50] + [3 * i, 100]
        for i in np.arange(90) % 3
    ]
    file = study_dir / "seq.npz"
    np.savez(file, values=np.concatenate(seqs), lengths=[len(s) for s in seqs], labels=labels)
    path = write_study(
        "seq",
        study='name = "seq"\nn_trials = 1\nseed_configs = false',
        data=f'task = "sequence-classification"\npath = "{file}"',
        space=FAST_SPACE,
        training="epochs = 2\nbatch_size = 16",
        pruner='name = "none"',
    )
    metrics, model = search_and_retrain(path, study_dir)
    assert metrics["model"]["classes"] == ["a", "b", "c"]
    assert metrics["model"]["input"]["shape"] == [None, None, 2]

    part = prepare(load_study_config(path).data).arrays.part
    test = np.flatnonzero(part == 2)
    padded = np.full((len(test), 7, 2), np.nan, dtype="float32")
    for row, i in enumerate(test):
        padded[row, : len(seqs[i])] = seqs[i]
    predicted = predict_elsewhere(model, padded, study_dir)
    assert predicted.shape == (len(test), 3)
    assert np.allclose(predicted.sum(axis=1), 1.0, atol=1e-5)
    truth = np.searchsorted(["a", "b", "c"], labels[test])
    chosen = np.clip(predicted[np.arange(len(test)), truth], 1e-7, 1 - 1e-7)
    assert -np.mean(np.log(chosen)) == pytest.approx(metrics["test_value"], rel=1e-4)

    table = tuner_predict(path, study_dir, file)
    assert list(table.columns) == [
        "sequence",
        "predicted",
        "probability_a",
        "probability_b",
        "probability_c",
    ]
    mine = table[["probability_a", "probability_b", "probability_c"]].to_numpy()[test]
    assert np.allclose(mine, predicted, rtol=0, atol=1e-5)
    assert list(table["predicted"].iloc[test]) == list(np.array(["a", "b", "c"])[mine.argmax(1)])
    on_jax = predict_elsewhere(model, padded, study_dir, backend="jax")
    assert np.allclose(on_jax, predicted, rtol=0, atol=1e-5)


def test_a_text_model_takes_raw_strings_and_gives_probabilities(
    write_study, study_dir: Path
) -> None:
    frame = reviews()
    frame.to_csv(study_dir / "reviews.csv", index=False)
    path = write_study(
        "reviews",
        study='name = "reviews"\nmetric = "val_accuracy"\nn_trials = 1\nseed_configs = false',
        data='task = "text-classification"\npath = "reviews.csv"\ntext = "body"\nlabel = "stars"',
        space=FAST_SPACE + "\nvocabulary_size = 20\nsequence_length = 8\nembedding_dim = 4",
        training="epochs = 3\nbatch_size = 16",
        pruner='name = "none"',
    )
    metrics, model = search_and_retrain(path, study_dir)
    about = metrics["model"]
    assert about["classes"] == ["bad", "good"]
    assert (about["input"]["vocabulary_size"], about["input"]["sequence_length"]) == (20, 8)

    part = prepare(load_study_config(path).data).arrays.part
    test = np.flatnonzero(part == 2)
    texts = frame["body"].to_numpy(dtype=str)[test]
    predicted = predict_elsewhere(model, texts, study_dir)
    assert predicted.shape == (len(test), 2)
    assert np.allclose(predicted.sum(axis=1), 1.0, atol=1e-6)
    truth = (frame["stars"].to_numpy()[test] == "good").astype(int)
    accuracy = np.mean(predicted.argmax(axis=1) == truth)
    assert accuracy == pytest.approx(metrics["test_value"], abs=1e-6)

    table = tuner_predict(path, study_dir, study_dir / "reviews.csv")
    assert list(table.columns) == ["row", "predicted", "probability_bad", "probability_good"]
    mine = table[["probability_bad", "probability_good"]].to_numpy()[test]
    assert np.allclose(mine, predicted, rtol=0, atol=1e-5)
