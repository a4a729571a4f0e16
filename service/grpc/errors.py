"""Service errors -> gRPC status codes, with the HTTP message and the same field paths.

The status message is the HTTP `detail`; the trailing metadata carries the rest of the HTTP error body:
`darling-error` (the error code), one `darling-field` per field at fault, `darling-http-status`, and
`retry-after` (seconds, as the HTTP header) when a retry can succeed.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from darling_client.protoconv import ERROR_KEY, FIELD_KEY, HTTP_STATUS_KEY, RETRY_AFTER_KEY

from service.errors import RequestError

# 413 is RESOURCE_EXHAUSTED, as gRPC itself answers for an oversized message; no retry-after is sent with it,
# because the same request can never succeed.
STATUS_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,  # group assembly: the rest of the group did not arrive in time
    409: grpc.StatusCode.ALREADY_EXISTS,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


class TooManyRequests(RequestError):
    """The in-flight bound of DARLING_MAX_INFLIGHT_REQUESTS, as the HTTP middleware's 429."""

    status = 429
    code = "too_many_requests"

    def __init__(self, detail: str, retry_after_s: float = 1.0) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class NotServed(RequestError):
    """A method this server does not serve in its configuration (a GrpcServer built without an assembler).
    UNIMPLEMENTED, not INVALID_ARGUMENT (nothing in the request is wrong) nor FAILED_PRECONDITION (no state of
    this server will change it): clients treat it as "not here", never retried, as for an unknown method."""

    status = 501
    code = "not_served"


@dataclass(frozen=True)
class GrpcError:
    code: grpc.StatusCode
    detail: str
    trailers: tuple[tuple[str, str], ...]


def to_grpc(exc: RequestError) -> GrpcError:
    trailers = [(ERROR_KEY, exc.code), (HTTP_STATUS_KEY, str(exc.status))]
    trailers += [(FIELD_KEY, f) for f in exc.fields]
    retry_after = getattr(exc, "retry_after_s", None)  # NotReady, ServiceOverloaded, TooManyRequests
    if retry_after is not None:
        trailers.append((RETRY_AFTER_KEY, str(max(1, round(float(retry_after))))))
    code = STATUS_CODES.get(exc.status, grpc.StatusCode.INTERNAL if exc.status >= 500 else grpc.StatusCode.UNKNOWN)
    return GrpcError(code, exc.detail, tuple(trailers))


def unauthenticated(detail: str) -> GrpcError:
    return GrpcError(grpc.StatusCode.UNAUTHENTICATED, detail, ((ERROR_KEY, "unauthorized"), (HTTP_STATUS_KEY, "401")))


def internal(exc: BaseException) -> GrpcError:
    return GrpcError(
        grpc.StatusCode.INTERNAL,
        f"internal error: {type(exc).__name__}",
        ((ERROR_KEY, "internal_error"), (HTTP_STATUS_KEY, "500")),
    )
