from __future__ import annotations

import os
import threading

from tuner.search.launcher import GPU_SHARING_ENV, Placement, _pass_on, gpus, on_gpus


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


def test_a_workers_stderr_is_drained_when_the_launchers_own_output_breaks() -> None:
    # A worker blocked writing to a full pipe keeps its trial alive by its heartbeat, and the
    # launcher would wait for it for ever: the drain must go on reading whatever echo does.
    read_fd, write_fd = os.pipe()
    reader = os.fdopen(read_fd, "rb")

    def broken_echo(line: str) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    drain = threading.Thread(target=_pass_on, args=(reader, broken_echo), daemon=True)
    drain.start()

    def worker() -> None:
        with os.fdopen(write_fd, "wb") as stderr:
            for i in range(4_000):  # about 300 KiB, several times a pipe's buffer
                stderr.write(f"WARNING: line {i} of a chatty worker {'.' * 50}\n".encode())

    writer = threading.Thread(target=worker, daemon=True)
    writer.start()
    writer.join(timeout=10)
    blocked = writer.is_alive()
    if blocked:
        reader.close()  # unblocks the writer, which then fails
    assert not blocked, "the worker blocked writing its stderr"
    drain.join(timeout=10)
    assert not drain.is_alive()
