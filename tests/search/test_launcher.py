from __future__ import annotations

from tuner.search.launcher import GPU_SHARING_ENV, Placement, gpus, on_gpus


def test_workers_share_the_gpus_round_robin() -> None:
    placed = on_gpus([Placement((0,), 1), Placement((1,), 1), Placement((0,), 1)], ["0", "1"])
    assert [p.gpu for p in placed] == ["0", "1", "0"]
    assert on_gpus([Placement(None, 2)], []) == [Placement(None, 2)]
    # Several workers on one card: neither backend may preallocate it.
    assert GPU_SHARING_ENV["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert GPU_SHARING_ENV["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"


def test_cuda_visible_devices_says_which_gpus_workers_use(monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 3")
    assert gpus() == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpus() == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert gpus() == []
