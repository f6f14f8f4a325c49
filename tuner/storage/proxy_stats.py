"""What the storage proxy spends its time on: the calls it served, by method, and the time
spent in them (`tuner storage-proxy --stats SECONDS`), so that an operator can see which calls
load a busy proxy, and how that changes as the study grows."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


class CallStats:
    """Counts and times every call a gRPC server serves (`interceptor`); `line` reports and
    resets them."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._calls: dict[str, list[float]] = {}  # method -> [count, seconds]
        self._since = clock()

    def add(self, method: str, seconds: float) -> None:
        with self._lock:
            entry = self._calls.setdefault(method, [0, 0.0])
            entry[0] += 1
            entry[1] += seconds

    def line(self, top: int = 6) -> str:
        """The calls since the last line: their number, the time in them as a share of the
        wall time (above 100%: several at once), the `top` methods by time, and the methods
        called most that these leave out (cheap calls made often cost the proxy's process too,
        which the time in them does not show)."""
        with self._lock:
            calls, self._calls = self._calls, {}
            now = self.clock()
            wall, self._since = max(now - self._since, 1e-9), now
        n = sum(int(c) for c, _ in calls.values())
        busy = sum(s for _, s in calls.values())
        ranked = sorted(calls.items(), key=lambda kv: kv[1][1], reverse=True)[:top]
        parts = ", ".join(
            f"{name} {int(c)} x {1000 * s / c:.1f} ms" for name, (c, s) in ranked if c
        )
        shown = {name for name, _ in ranked}
        often = sorted(
            ((name, int(c)) for name, (c, _) in calls.items() if name not in shown),
            key=lambda nc: nc[1],
            reverse=True,
        )[:3]
        also = "; most called of the rest: " + ", ".join(f"{m} {c}" for m, c in often)
        return (
            f"{n} calls in {wall:.0f} s ({n / wall:.0f}/s), {100 * busy / wall:.0f}% of the "
            f"wall time in calls" + (f": {parts}" if parts else "") + (also if often else "")
        )

    def interceptor(self) -> Any:
        """A `grpc.ServerInterceptor` that times every unary call into these counts."""
        import grpc

        stats = self

        class Timed(grpc.ServerInterceptor):  # type: ignore[misc]
            def intercept_service(self, continuation: Any, details: Any) -> Any:
                handler = continuation(details)
                if handler is None or handler.unary_unary is None:
                    return handler
                method = details.method.rsplit("/", 1)[-1]
                inner = handler.unary_unary

                def timed(request: Any, context: Any) -> Any:
                    started = stats.clock()
                    try:
                        return inner(request, context)
                    finally:
                        stats.add(method, stats.clock() - started)

                return grpc.unary_unary_rpc_method_handler(
                    timed,
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )

        return Timed()
