"""The storage proxy's token: a client gives it with every call, and a proxy started with
$TUNER_PROXY_TOKEN refuses calls without it (gRPC status UNAUTHENTICATED). Over `grpcs://` the
token travels encrypted; over `grpc://` anyone on the network path can read it."""

from __future__ import annotations

import collections
import hmac
from typing import Any

HEADER = "authorization"


def bearer(token: str) -> Any:
    """A `grpc.UnaryUnaryClientInterceptor` that gives `token` with every call."""
    import grpc

    class Details(
        collections.namedtuple(
            "Details",
            ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
        ),
        grpc.ClientCallDetails,  # type: ignore[misc]
    ):
        pass

    class Bearer(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
        def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            metadata = [*(details.metadata or ()), (HEADER, f"Bearer {token}")]
            return continuation(
                Details(
                    details.method,
                    details.timeout,
                    metadata,
                    details.credentials,
                    details.wait_for_ready,
                    details.compression,
                ),
                request,
            )

    return Bearer()


def token_check(token: str) -> Any:
    """A `grpc.ServerInterceptor` that refuses every call that does not give `token`."""
    import grpc

    expected = f"Bearer {token}".encode()

    def refuse(request: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid token is required")

    refused = grpc.unary_unary_rpc_method_handler(refuse)

    class TokenCheck(grpc.ServerInterceptor):  # type: ignore[misc]
        def intercept_service(self, continuation: Any, details: Any) -> Any:
            given = dict(details.invocation_metadata or ()).get(HEADER, "")
            if hmac.compare_digest(str(given).encode(), expected):
                return continuation(details)
            return refused

    return TokenCheck()
