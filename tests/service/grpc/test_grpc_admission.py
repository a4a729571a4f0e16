"""One in-flight bound for HTTP and gRPC: scoring on either transport counts against the same limit, group
assembly is exempt on both (its calls wait for each other), and a method this server does not serve says so.
Real app (tiny BERT cross-encoder), real gRPC server on a loopback port, HTTP over ASGI."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
from darling_client.proto import reward_pb2, reward_pb2_grpc
from darling_client.protoconv import HTTP_STATUS_KEY, to_proto

from service.app import create_app
from service.engine.engine import Engine
from service.grpc.server import GrpcServer
from service.settings import Settings
from service.tools.bench.models import build_model
from tests.conftest import asgi_client
from tests.service.engine.test_batching import text


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_model("bert-tiny", str(tmp_path_factory.mktemp("bert-tiny")))


def settings(model_dir: str, **kw: object) -> Settings:
    return Settings(
        classifier="cross-encoder",
        classifier_path=model_dir,
        verifier=False,
        cpu_threads=1,
        grpc_port=0,
        max_inflight_requests=1,
        memory_cache_bytes=0,
        **kw,  # type: ignore[arg-type]
    )


def score_body(shift: int) -> dict[str, object]:
    responses = [text(12, shift + 2 * i) for i in range(4)]
    return {"groups": [{"prompt": "p", "responses": responses, "quality": [1.0] * 4}]}


def rollout(index: int) -> reward_pb2.RolloutsRequest:
    body = {
        "rollouts": [
            {"group_id": "g-admission", "group_size": 2, "index": index, "prompt": "p", "response": text(12, index)}
        ]
    }
    body["rollouts"][0]["quality"] = 1.0  # type: ignore[index]
    return to_proto(body, reward_pb2.RolloutsRequest())


@pytest.fixture
async def stub_and_http(model_dir: str) -> AsyncIterator[tuple[reward_pb2_grpc.RewardServiceStub, object]]:
    # A partial batch waits 1.5 s for company: long enough to hold a scoring call in flight.
    app = create_app(settings(model_dir, max_wait_ms=1500, group_timeout_s=30))
    async with asgi_client(app) as http, grpc.aio.insecure_channel(f"127.0.0.1:{app.state.grpc_port}") as ch:
        yield reward_pb2_grpc.RewardServiceStub(ch), http


async def test_http_and_grpc_share_one_in_flight_bound(stub_and_http: tuple) -> None:  # type: ignore[type-arg]
    stub, http = stub_and_http
    held = asyncio.ensure_future(http.post("/v1/rewards", json=score_body(0)))
    await asyncio.sleep(0.3)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Score(to_proto(score_body(1), reward_pb2.ScoreRequest()), timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert dict(info.value.trailing_metadata() or ())[HTTP_STATUS_KEY] == "429"
    assert (await held).status_code == 200
    # The slot is free again, for either transport.
    reply = await stub.Score(to_proto(score_body(2), reward_pb2.ScoreRequest()), timeout=30)
    assert len(reply.groups) == 1


async def test_group_assembly_is_exempt_on_grpc_as_on_http(stub_and_http: tuple) -> None:  # type: ignore[type-arg]
    stub, _ = stub_and_http
    first = asyncio.ensure_future(stub.SubmitRollouts(rollout(0), timeout=30))  # waits for its group-mate
    await asyncio.sleep(0.3)
    # With the only slot taken by a waiting rollout, scoring and the group-mate must still get in.
    scored = asyncio.ensure_future(stub.Score(to_proto(score_body(3), reward_pb2.ScoreRequest()), timeout=30))
    second = await stub.SubmitRollouts(rollout(1), timeout=30)
    assert len(second.rollouts) == 1 and len((await first).rollouts) == 1
    assert len((await scored).groups) == 1


async def test_assembly_not_served_is_unimplemented(model_dir: str) -> None:
    s = settings(model_dir)
    server = GrpcServer(s, Engine(s))  # no assembler, models not even loaded
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await reward_pb2_grpc.RewardServiceStub(ch).SubmitRollouts(rollout(0), timeout=10)
        # Not the caller's argument (INVALID_ARGUMENT) and not worth a retry (UNAVAILABLE): this server has no
        # such method in its configuration.
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await server.stop(grace_s=1)
