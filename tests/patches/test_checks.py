from __future__ import annotations

import logging

import pytest

from tuner.errors import TunerError
from tuner.patches import checks
from tuner.patches.checks import PatchError, fall_back, patches_off, version_tuple, within


@pytest.fixture(autouse=True)
def patches_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with every patch on, and what it turns off stays in the test."""
    monkeypatch.setattr(checks, "_OFF", {})


def test_a_patch_that_falls_back_warns_once_and_is_listed_off(caplog) -> None:
    assert patches_off() == []
    with caplog.at_level(logging.WARNING, logger="tuner.patches"):
        fall_back("dropout", "Keras 9.0 has no keras.src.backend.jax.random.dropout")
        fall_back("dropout", "again")
        fall_back("xla", "jaxlib 9.0 is outside")
    assert patches_off() == ["dropout", "xla"]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert "tuner.patches.dropout is off" in lines[0] and "Keras 9.0" in lines[0]


def test_versions_compare_by_their_numbers() -> None:
    assert version_tuple("0.10.2rc1") == (0, 10, 2) and version_tuple("dev") == ()
    assert within("0.10.2", (0, 4, 36), (0, 11))
    assert within("0.4.36", (0, 4, 36), (0, 11))
    assert not within("0.11.0", (0, 4, 36), (0, 11))
    assert not within("0.4.35", (0, 4, 36), (0, 11))
    assert not within("nightly", (0, 4, 36), (0, 11))
    assert issubclass(PatchError, TunerError)  # the CLI's one line and exit code 2
    with pytest.raises(TunerError):
        raise PatchError("x")
