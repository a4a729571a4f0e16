"""Bearer-token authentication for gRPC: `authorization: Bearer <key>` metadata, checked by the same ApiKeys
(constant-time, several keys at once) as the HTTP middleware, with the same message.

Health checking stays open unless DARLING_AUTH_HEALTH is set, as /healthz and /readyz do on HTTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from service.grpc.errors import GrpcError, unauthenticated
from service.ops import metrics
from service.ops.security import ApiKeys

HEALTH_PREFIX = "/grpc.health.v1.Health/"
DENIED = "missing or wrong API key: send `Authorization: Bearer <key>`"


def authorization(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key.lower() == "authorization":
            return str(value)
    return None


def _denied(handler: grpc.RpcMethodHandler[Any, Any], error: GrpcError) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same shape as `handler` that only aborts."""

    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(error.code, error.detail, error.trailers)

    async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        await context.abort(error.code, error.detail, error.trailers)
        yield  # pragma: no cover - makes this an async generator; abort never returns

    de, ser = handler.request_deserializer, handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(stream, de, ser)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary, de, ser)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(stream, de, ser)
    return grpc.unary_unary_rpc_method_handler(unary, de, ser)


class BearerAuth(grpc.aio.ServerInterceptor):
    def __init__(self, keys: ApiKeys, auth_health: bool = False) -> None:
        self.keys = keys
        self.auth_health = auth_health

    def needs_key(self, method: str) -> bool:
        return self.keys.enabled and (self.auth_health or not method.startswith(HEALTH_PREFIX))

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not self.needs_key(method):
            return handler
        if self.keys.check(authorization(handler_call_details.invocation_metadata)):
            return handler
        error = unauthenticated(DENIED)
        metrics.GRPC_REQUESTS.labels(method.rsplit("/", 1)[-1], error.code.name).inc()
        return _denied(handler, error)
