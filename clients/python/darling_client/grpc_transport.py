"""The gRPC transport: the same RewardClient / AsyncRewardClient API over protos/darling/v1/reward.proto.

    from darling_client import RewardClient
    from darling_client.grpc_transport import GrpcTransport

    client = RewardClient(transport=GrpcTransport("127.0.0.1:50051", api_key="..."))
    client.score(groups, {"partition": "greedy"})  # -> RewardResponse, as over HTTP

Errors arrive as the same darling_client.errors exceptions (status, code, detail, fields, retry_after), rebuilt
from the trailing metadata the server sends, so the client's retries behave the same on both wires.
Every operation of the client but `openrlhf` (OpenRLHF's own HTTP protocol) has a gRPC method.
`score_stream` is gRPC only: one (index, GroupReward) per group as soon as the server has scored it.
Needs the `grpc` extra: pip install 'darling-reward-client[grpc]'.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2

from darling_client.errors import DarlingError, NotFound, RequestNotSent, ResponseLost, Unavailable, error_from_response
from darling_client.proto import reward_pb2, reward_pb2_grpc
from darling_client.protoconv import (
    ERROR_KEY,
    FIELD_KEY,
    HTTP_STATUS_KEY,
    RETRY_AFTER_KEY,
    group_from_proto,
    to_dict,
    to_proto,
)
from darling_client.schemas import (
    ErrorBody,
    GroupReward,
    RewardOptions,
    RewardRequest,
    RewardResponse,
    RolloutGroup,
    RolloutsResponse,
)
from darling_client.transport import Operation

SERVICE_NAME: str = reward_pb2.DESCRIPTOR.services_by_name["RewardService"].full_name

# gRPC codes the service itself never sends without darling-http-status: the channel's own failures. Only a
# channel that could not connect at all (gRPC core's "failed to connect to all addresses") proves the call was
# never sent; any other such failure may have reached the server: a lost response.
_TRANSPORT_FAILURES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
# The HTTP status a bare gRPC code stands for (e.g. the channel's own message-size limit).
_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 422,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.UNIMPLEMENTED: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
}


def error_from_rpc(exc: grpc.aio.AioRpcError) -> DarlingError:
    """The darling_client.errors exception HTTP would have raised for the same failure."""
    code = exc.code()
    pairs = [(k, str(v)) for k, v in (exc.trailing_metadata() or ())]
    meta: dict[str, list[str]] = {}
    for k, v in pairs:
        meta.setdefault(k, []).append(v)
    detail = exc.details() or code.name
    status_s = meta.get(HTTP_STATUS_KEY, [None])[0]
    if status_s is None and code in _TRANSPORT_FAILURES:
        never_sent = code == grpc.StatusCode.UNAVAILABLE and "failed to connect" in detail.lower()
        return (RequestNotSent if never_sent else ResponseLost)(f"gRPC {code.name}: {detail}")
    status = int(status_s) if status_s and status_s.isdigit() else _HTTP_STATUS.get(code, 500)
    body = ErrorBody(error=meta.get(ERROR_KEY, [code.name.lower()])[0], detail=detail, fields=meta.get(FIELD_KEY, []))
    headers = {"retry-after": meta[RETRY_AFTER_KEY][0]} if RETRY_AFTER_KEY in meta else {}
    return error_from_response(status, body.model_dump_json().encode(), headers)


class GrpcTransport:
    """A darling_client.transport.Transport over gRPC. The channel opens on the first call, in the event loop
    that makes it (RewardClient runs its own loop thread, so construct this anywhere)."""

    def __init__(
        self,
        target: str,
        api_key: str | None = None,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        max_message_bytes: int = 256 * 1024 * 1024,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        """`target`: host:port (a `grpc://` prefix is accepted). `credentials`: TLS (grpc.ssl_channel_credentials()),
        unset = plaintext, as the service serves it."""
        self.target = target.removeprefix("grpc://")
        self.metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self.credentials = credentials
        self.options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            *options,
        ]
        self._channel: grpc.aio.Channel | None = None
        self._stub: reward_pb2_grpc.RewardServiceAsyncStub | None = None
        self._health: (
            grpc.aio.UnaryUnaryMultiCallable[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse] | None
        ) = None

    def _open(self) -> reward_pb2_grpc.RewardServiceAsyncStub:
        if self._stub is None:
            if self.credentials is None:
                self._channel = grpc.aio.insecure_channel(self.target, options=self.options)
            else:
                self._channel = grpc.aio.secure_channel(self.target, self.credentials, options=self.options)
            self._stub = reward_pb2_grpc.RewardServiceStub(self._channel)
            self._health = self._channel.unary_unary(
                "/grpc.health.v1.Health/Check",
                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                response_deserializer=health_pb2.HealthCheckResponse.FromString,
            )
        return self._stub

    async def call(
        self, op: Operation, body: dict[str, Any] | None, timeout: float, request_id: str | None = None
    ) -> dict[str, Any]:
        stub = self._open()
        metadata = (*self.metadata, ("x-request-id", request_id)) if request_id else self.metadata
        try:
            if op == "rewards":
                request = to_proto(body or {}, reward_pb2.ScoreRequest())
                reply = await stub.Score(request, timeout=timeout, metadata=metadata)
                return to_dict(reply, RewardResponse)
            if op == "rollouts":
                submitted = to_proto(body or {}, reward_pb2.RolloutsRequest())
                assembled = await stub.SubmitRollouts(submitted, timeout=timeout, metadata=metadata)
                return to_dict(assembled, RolloutsResponse)
            if op in ("healthz", "readyz"):
                return await self._health_check(op, timeout)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        raise NotFound(404, "not_found", f"`{op}` has no gRPC method; use the HTTP transport for it")

    async def _health_check(self, op: Operation, timeout: float) -> dict[str, Any]:
        assert self._health is not None
        service = "" if op == "healthz" else SERVICE_NAME
        reply = await self._health(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout, metadata=self.metadata
        )
        if op == "healthz":
            return {"status": "alive"}
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            raise Unavailable(503, "not_ready", f"the gRPC health service reports {name}", retry_after=1.0)
        return {"status": "ready"}

    async def score_stream(
        self,
        groups: Sequence[RolloutGroup | Mapping[str, Any]],
        options: RewardOptions | Mapping[str, Any] | None = None,
        timeout: float = 600.0,
    ) -> AsyncIterator[tuple[int, GroupReward]]:
        """(index in `groups`, its result) as each group finishes; no retries (results already seen stay seen)."""
        req = RewardRequest.model_validate(
            {"groups": list(groups), **({} if options is None else {"options": options})}
        )
        stub = self._open()
        message = to_proto(req.model_dump(mode="json", exclude_none=True), reward_pb2.ScoreRequest())
        try:
            async for item in stub.ScoreStream(message, timeout=timeout, metadata=self.metadata):
                yield item.index, group_from_proto(item.group)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None

    async def aclose(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = self._health = None
