from __future__ import annotations

import pytest

from tuner.patches import checks


@pytest.fixture(autouse=True)
def no_patch_off(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Each test starts with every patch on, and what it turns off stays in the test."""
    off: dict[str, str] = {}
    monkeypatch.setattr(checks, "_OFF", off)
    return off
