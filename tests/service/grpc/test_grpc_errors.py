"""Every service error leaves gRPC with its status code and HTTP's message, and the client turns it back into
the exception the HTTP transport raises for the same error."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest
from darling_client import AsyncRewardClient
from darling_client.client import RetryPolicy
from darling_client.errors import ConnectionFailed, InvalidRequest, error_from_response
from darling_client.grpc_transport import GrpcTransport, error_from_rpc
from darling_client.schemas import ErrorBody

from service.assembly.assembler import GroupIncomplete
from service.engine.engine import Engine
from service.errors import Conflict, DeadlineExceeded, NotReady, RequestError, ServiceOverloaded, TooLarge
from service.grpc.errors import TooManyRequests, internal, to_grpc
from service.grpc.server import GrpcServer
from service.settings import Settings
from tests.conftest import free_port

CASES: list[tuple[RequestError, grpc.StatusCode, str | None]] = [
    (RequestError("groups[0].quality: bad", ["groups[0].quality"]), grpc.StatusCode.INVALID_ARGUMENT, None),
    (TooLarge("too many", ["groups"]), grpc.StatusCode.RESOURCE_EXHAUSTED, None),
    (NotReady("loading", retry_after_s=2.0), grpc.StatusCode.UNAVAILABLE, "2"),
    (ServiceOverloaded("queue full", retry_after_s=0.2), grpc.StatusCode.UNAVAILABLE, "1"),
    (TooManyRequests("busy"), grpc.StatusCode.RESOURCE_EXHAUSTED, "1"),
    (DeadlineExceeded("late", ["options.deadline_ms"]), grpc.StatusCode.DEADLINE_EXCEEDED, None),
    (Conflict("index 3 twice", ["rollouts[0].index"]), grpc.StatusCode.ALREADY_EXISTS, None),
    (GroupIncomplete("missing 1, 2", ["rollouts"]), grpc.StatusCode.DEADLINE_EXCEEDED, None),
]


def _rpc_error(code: grpc.StatusCode, detail: str, trailers: tuple[tuple[str, str], ...]) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailers), detail)


@pytest.mark.parametrize(("exc", "code", "retry_after"), CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_status_codes_and_client_exceptions(exc: RequestError, code: grpc.StatusCode, retry_after: str | None) -> None:
    out = to_grpc(exc)
    assert out.code == code and out.detail == exc.detail
    assert dict(out.trailers).get("retry-after") == retry_after
    client_side = error_from_rpc(_rpc_error(out.code, out.detail, out.trailers))
    body = ErrorBody(error=exc.code, detail=exc.detail, fields=exc.fields).model_dump_json().encode()
    over_http = error_from_response(exc.status, body, {"retry-after": retry_after} if retry_after else {})
    assert type(client_side) is type(over_http)
    assert vars(client_side) == vars(over_http)


def test_internal_error_names_only_the_type() -> None:
    out = internal(KeyError("secret detail"))
    assert out.code == grpc.StatusCode.INTERNAL and out.detail == "internal error: KeyError"


def test_bare_transport_failures_are_connection_failures() -> None:
    """UNAVAILABLE without the service's metadata is the channel failing, which the client retries."""
    err = error_from_rpc(_rpc_error(grpc.StatusCode.UNAVAILABLE, "failed to connect", ()))
    assert isinstance(err, ConnectionFailed)


async def test_client_reports_a_closed_port_as_connection_failed() -> None:
    transport = GrpcTransport(f"127.0.0.1:{free_port()}")
    async with AsyncRewardClient(transport=transport, retry=RetryPolicy(max_retries=1, backoff_base_s=0.01)) as c:
        with pytest.raises(ConnectionFailed):
            await c.score([{"prompt": "p", "responses": ["a"], "quality": [1]}])
        assert c.retries == 1


async def test_body_limit_applies_to_grpc_messages() -> None:
    """DARLING_MAX_BODY_BYTES bounds a gRPC message as it bounds an HTTP body; the client sees a 413."""
    settings = Settings(grpc_port=0, max_body_bytes=2_000)
    server = GrpcServer(settings, Engine(settings))
    port = await server.start()
    try:
        async with AsyncRewardClient(transport=GrpcTransport(f"127.0.0.1:{port}")) as client:
            with pytest.raises(InvalidRequest) as info:
                await client.score([{"prompt": "p", "responses": ["x" * 3_000], "quality": [1]}])
        assert info.value.status == 413
    finally:
        await server.stop(grace_s=1)
