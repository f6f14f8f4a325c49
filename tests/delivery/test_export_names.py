"""What an exported model's config.json names of Keras' private modules (`keras.src`): only the
names export.py declares, each found in the installed Keras where its loader looks."""

from __future__ import annotations

import importlib
import json
import zipfile
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from tuner.data.sequences import SequenceArrays
from tuner.delivery.export import KERAS_SRC_NAMES, _sequences


def named(config: Any) -> set[tuple[str, str]]:
    """Every (module, class_name) pair in a Keras config, nested ones included."""
    found: set[tuple[str, str]] = set()
    if isinstance(config, dict):
        if isinstance(config.get("module"), str) and isinstance(config.get("class_name"), str):
            found.add((config["module"], config["class_name"]))
        for value in config.values():
            found |= named(value)
    elif isinstance(config, list):
        for value in config:
            found |= named(value)
    return found


def arrays(masked: bool) -> SequenceArrays:
    n = 6
    return SequenceArrays(
        x=np.zeros((n, 5, 3 if masked else 2), "float32"),
        labels=np.zeros(n, "int32"),
        part=np.zeros(n, "int8"),
        lengths=np.full(n, 5, "int32"),
        classes=("a", "b"),
        masked=masked,
        mean=(1.0, 2.0),
        std=(1.0, 3.0),
    )


@pytest.mark.parametrize("masked", [True, False], ids=["nan-padded", "one-length"])
def test_an_exported_sequence_model_names_only_the_declared_keras_src_names(
    tmp_path: Path, masked: bool
) -> None:
    first, x = _sequences(arrays(masked))
    x = keras.layers.GRU(4)(x)
    path = tmp_path / "model.keras"
    keras.Model(first, keras.layers.Dense(2, activation="softmax")(x)).save(path)
    text = zipfile.ZipFile(path).read("config.json").decode()
    private = {pair for pair in named(json.loads(text)) if pair[0].startswith("keras.src")}
    # Nowhere else either: no `registered_name` or function path of keras.src.
    assert text.count("keras.src") == sum(
        text.count(f'"module": "{module}"') for module in {m for m, _ in private}
    )
    assert private <= KERAS_SRC_NAMES
    if masked:  # all of them are in use: the list says what a new Keras must still have
        assert private == KERAS_SRC_NAMES
    else:
        assert private == {("keras.src.models.functional", "Functional")}


def test_the_declared_keras_src_names_are_where_the_installed_keras_loads_them() -> None:
    for module, name in sorted(KERAS_SRC_NAMES):
        found = vars(importlib.import_module(module)).get(name)
        assert isinstance(found, type), f"Keras {keras.__version__} has no {module}.{name}"


def test_an_exported_nan_padded_sequence_model_loads_and_predicts_as_saved(
    tmp_path: Path,
) -> None:
    first, x = _sequences(arrays(True))
    model = keras.Model(first, keras.layers.GRU(4)(keras.layers.Masking()(x)))
    path = tmp_path / "model.keras"
    model.save(path)
    raw = np.random.default_rng(0).normal(size=(3, 4, 2)).astype("float32")
    raw[1, 2:] = np.nan
    loaded = keras.saving.load_model(path)
    assert np.allclose(loaded.predict(raw, verbose=0), model.predict(raw, verbose=0), atol=1e-6)
    assert np.isfinite(loaded.predict(raw, verbose=0)).all()
