"""gRPC beside HTTP: one server process, one Engine, both transports; the HTTP scenarios must give identical
results, errors and field names on both."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import grpc.aio
import httpx
import pytest
from darling_client import AsyncRewardClient, RewardClient
from darling_client.errors import APIError, InvalidRequest, Unauthorized, Unavailable
from darling_client.grpc_transport import GrpcTransport
from darling_client.proto import reward_pb2, reward_pb2_grpc
from darling_client.protoconv import ERROR_KEY, FIELD_KEY, HTTP_STATUS_KEY, RETRY_AFTER_KEY, to_proto
from darling_client.schemas import RewardResponse
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from service.app import create_app
from service.engine.engine import Engine
from service.grpc.server import SERVICE_NAME, GrpcServer
from service.ops import metrics
from service.settings import Settings
from tests.conftest import serve
from tests.service.api.test_api import SPACE_FACTS

KEY = "grpc-test-key"
AUTH = (("authorization", f"Bearer {KEY}"),)


@pytest.fixture(scope="module")
def both() -> Iterator[tuple[str, str]]:
    """(HTTP base URL, gRPC target) of one app serving both, with an API key required."""
    app = create_app(Settings(port=0, grpc_port=0, api_keys=f"other-key,{KEY}"))
    with serve(app) as base:
        yield base, f"127.0.0.1:{app.state.grpc_port}"


@pytest.fixture
async def channel(both: tuple[str, str]) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(both[1]) as ch:
        yield ch


def comparable(resp: RewardResponse) -> list[dict[str, Any]]:
    """Everything but timings and where a judgement came from (the second transport meets a warm cache)."""
    out = []
    for g in resp.groups:
        d = g.model_dump()
        d.pop("cache")
        d["judgements"].pop("cached")
        d["judgements"].pop("model")
        out.append(d)
    return out


SCENARIOS: list[tuple[str, list[dict[str, Any]], dict[str, Any]]] = [
    (
        "paraphrases",
        [
            {
                "group_id": "g1",
                "prompt": "Tell me a fact about space.",
                "responses": SPACE_FACTS,
                "quality": [1.0, 0.5, 0.8, 0.9, 0.7, 0.6],
            }
        ],
        {},
    ),
    (
        "greedy-additive",
        [{"prompt": "Space?", "responses": SPACE_FACTS, "quality": [1, 2, 3, 4, 5, 6]}],
        {"partition": "greedy", "combine": "additive", "additive_lambda": 0.5},
    ),
    (
        "threshold-shift-nocache",
        [{"prompt": "Space?", "responses": SPACE_FACTS, "quality": [0.3, 0.5, 0.8, 0.9, 0.1, 0.6]}],
        {"threshold": 0.2, "quality_shift": "group_min", "cache": False, "diversity_floor": 0.0},
    ),
    (
        "quality-only",
        [{"prompt": "p", "responses": ["x y z", "x y z", "other words here"], "quality": [0.1, 0.2, 0.3]}],
        {"combine": "quality_only", "deadline_ms": 60_000},
    ),
    (
        "verifier",
        [
            {
                "prompt": "What is 6*7?",
                "reference": "42",
                "responses": ["6*7 = \\boxed{42}", "The answer is 42.", "I think it is 48."],
            }
        ],
        {},
    ),
    ("n=1", [{"prompt": "p", "responses": ["only one"], "quality": [0.4]}], {}),
    (
        "several-groups",
        [
            {
                "group_id": "a",
                "prompt": "Name a fruit.",
                "responses": ["An apple.", "apple", "A banana.", "Mango, definitely."],
                "quality": [0.9, 0.8, 0.7, 0.95],
            },
            {"group_id": None, "prompt": "p", "responses": ["same", "same", "same"], "quality": [1, 1, 1]},
            {"group_id": "c", "prompt": "What is 2+2?", "reference": "4", "responses": ["4", "five", "\\boxed{4}"]},
        ],
        {"cache": False},
    ),
    (
        "novelty-options",
        [
            {"prompt": "Name a colour.", "responses": ["red", "blue", "red"], "quality": [0.2, 0.7, 0.9]},
            {"prompt": "p", "responses": ["x", "y"], "quality": [1, 1], "ratings": [3, 9]},
        ],
        {"rating_cuts": [0.0, 0.5], "run": "grpc-scenario", "step": 3},
    ),
]


@pytest.mark.parametrize(("groups", "options"), [s[1:] for s in SCENARIOS], ids=[s[0] for s in SCENARIOS])
async def test_same_results_over_http_and_grpc(both: tuple[str, str], groups: Any, options: Any) -> None:
    base, target = both
    async with AsyncRewardClient(base, api_key=KEY) as http:
        over_http = await http.score(groups, options)
    async with AsyncRewardClient(transport=GrpcTransport(target, api_key=KEY)) as rpc:
        over_grpc = await rpc.score(groups, options)
    assert comparable(over_grpc) == comparable(over_http)
    g = over_grpc.groups[0]
    assert len(g.rollouts) == len(groups[0]["responses"]) and math.isclose(
        sum(g.rewards), sum(over_http.groups[0].rewards)
    )
    if options.get("cache") is False:  # nothing cached: the whole group, counts included, is the same
        assert [x.model_dump() for x in over_grpc.groups] == [x.model_dump() for x in over_http.groups]


async def test_novelty_fields_on_the_wire(both: tuple[str, str], channel: grpc.aio.Channel) -> None:
    """The proto carries distinct, utility, effective_classes and ratings, and options.run reaches the run's
    figures whichever transport the groups came by."""
    base, _ = both
    stub = reward_pb2_grpc.RewardServiceStub(channel)
    body = {
        "groups": [{"prompt": "Name a colour.", "responses": ["red", "Red", "blue", "green"], "quality": [1, 1, 1, 1]}],
        "options": {"run": "grpc-wire", "step": 7},
    }
    reply = await stub.Score(to_proto(body, reward_pb2.ScoreRequest()), metadata=AUTH, timeout=60)
    g = reply.groups[0]
    assert (g.n_classes, g.distinct, list(g.ratings)) == (3, 3, [10, 10, 10, 10])
    # Sizes 2, 1, 1 of 4 -> 2 * sqrt(2); rollouts 0, 2, 3 open classes, all rated 10.
    assert math.isclose(g.effective_classes, 2 * math.sqrt(2))
    assert math.isclose(g.utility, 10 * (1 + 0.64 + 0.512) * 0.2 / (1 - 0.8**4))
    stats = httpx.get(base + "/v1/runs/grpc-wire/stats", headers={"authorization": f"Bearer {KEY}"}).json()
    assert stats["groups_seen"] == 1 and stats["last_step"] == 7 and stats["window"]["distinct"] == 3


def test_blocking_client_over_grpc(both: tuple[str, str]) -> None:
    base, target = both
    groups = [{"prompt": "Space?", "responses": SPACE_FACTS, "quality": [1.0] * 6}]
    with RewardClient(f"grpc://{target}", api_key=KEY) as rpc:  # the same client, the URL picks the wire
        assert rpc.ready()
        rewards = rpc.rewards(groups)
    with RewardClient(base, api_key=KEY) as http:
        assert rewards == http.rewards(groups)
    # SPACE_FACTS: two pairs of paraphrases and two loners -> 4 classes; loners get diversity 1.
    assert rewards[0][2] == 1.0 and rewards[0][5] == 1.0 and rewards[0][0] == rewards[0][1] < 1.0


# (HTTP JSON body, gRPC status, field named). The body goes to both wires unchanged, except that the proto
# carries NaN as a double (JSON has no NaN, so HTTP takes the string).
BAD: list[tuple[dict[str, Any], grpc.StatusCode, str]] = [
    ({"groups": []}, grpc.StatusCode.INVALID_ARGUMENT, "groups"),
    (
        {"groups": [{"prompt": "p", "responses": [], "quality": []}]},
        grpc.StatusCode.INVALID_ARGUMENT,
        "groups[0].responses",
    ),
    (
        {"groups": [{"prompt": "p", "responses": ["a", "b"], "quality": [1.0]}]},
        grpc.StatusCode.INVALID_ARGUMENT,
        "groups[0]",
    ),
    (
        {"groups": [{"prompt": "p", "responses": ["a"], "quality": ["NaN"]}]},
        grpc.StatusCode.INVALID_ARGUMENT,
        "groups[0].quality",
    ),
    (
        {"groups": [{"prompt": "p", "responses": ["a"], "quality": [1]}], "options": {"partition": "x"}},
        grpc.StatusCode.INVALID_ARGUMENT,
        "options.partition",
    ),
    (
        {"groups": [{"prompt": "p", "responses": ["a"], "quality": [1]}], "options": {"combine": "max"}},
        grpc.StatusCode.INVALID_ARGUMENT,
        "options.combine",
    ),
    (
        {"groups": [{"prompt": "p", "responses": ["a"], "quality": [1]}], "options": {"threshold": 2}},
        grpc.StatusCode.INVALID_ARGUMENT,
        "options.threshold",
    ),
    (
        {"groups": [{"prompt": "p", "responses": ["a"], "quality": [1]}], "options": {"deadline_ms": 0}},
        grpc.StatusCode.INVALID_ARGUMENT,
        "options.deadline_ms",
    ),
    ({"groups": [{"prompt": "p", "responses": ["a"]}]}, grpc.StatusCode.INVALID_ARGUMENT, "groups[0].quality"),
    (
        {"groups": [{"prompt": "p", "responses": ["a" * 70_000], "quality": [1]}]},
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "groups[0].responses[0]",
    ),
    (
        {"groups": [{"prompt": "p", "responses": ["a"], "group_id": "g" * 513, "quality": [1]}]},
        grpc.StatusCode.INVALID_ARGUMENT,
        "groups[0].group_id",
    ),
    (
        {"groups": [{"prompt": "p", "responses": ["a"], "quality": [1]}], "options": {"run": "a b"}},
        grpc.StatusCode.INVALID_ARGUMENT,
        "options.run",
    ),
    (
        {"groups": [{"prompt": "p", "responses": ["a"], "quality": [1]}], "options": {"step": -1}},
        grpc.StatusCode.INVALID_ARGUMENT,
        "options.step",
    ),
    (
        {"groups": [{"prompt": "p", "responses": ["a"], "quality": [1]}], "options": {"rating_cuts": [0.5, 0.1]}},
        grpc.StatusCode.INVALID_ARGUMENT,
        "options.rating_cuts",
    ),
    (
        {"groups": [{"prompt": "p", "responses": ["a"], "quality": [1], "ratings": [11]}]},
        grpc.StatusCode.INVALID_ARGUMENT,
        "groups[0].ratings[0]",
    ),
]


def _nan(body: Any) -> Any:
    if isinstance(body, dict):
        return {k: _nan(v) for k, v in body.items()}
    if isinstance(body, list):
        return [_nan(v) for v in body]
    return float("nan") if body == "NaN" else body


def _trailers(err: grpc.aio.AioRpcError) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in err.trailing_metadata() or ():
        out.setdefault(k, []).append(str(v))
    return out


@pytest.mark.parametrize(("body", "code", "field"), BAD, ids=[b[2] for b in BAD])
async def test_bad_input_same_error_on_both(
    both: tuple[str, str], channel: grpc.aio.Channel, body: dict[str, Any], code: grpc.StatusCode, field: str
) -> None:
    http = httpx.post(both[0] + "/v1/rewards", json=body, headers={"authorization": f"Bearer {KEY}"}, timeout=60)
    assert http.status_code in (413, 422), http.text
    expected = http.json()
    stub = reward_pb2_grpc.RewardServiceStub(channel)
    for call in (stub.Score, stub.ScoreStream):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            reply = call(to_proto(_nan(body), reward_pb2.ScoreRequest()), metadata=AUTH, timeout=60)
            if isinstance(reply, grpc.aio.UnaryStreamCall):
                [m async for m in reply]
            else:
                await reply
        err = info.value
        assert err.code() == code
        trailers = _trailers(err)
        assert trailers[HTTP_STATUS_KEY] == [str(http.status_code)]
        assert trailers[ERROR_KEY] == [expected["error"]]
        assert trailers.get(FIELD_KEY, []) == expected["fields"]
        assert any(f.startswith(field) for f in trailers[FIELD_KEY])
        assert err.details() == expected["detail"]


async def test_request_id_is_echoed_in_trailing_metadata(channel: grpc.aio.Channel) -> None:
    """As X-Request-ID on HTTP: the caller's id comes back (on success and on error), else a fresh one."""
    stub = reward_pb2_grpc.RewardServiceStub(channel)
    good = {"groups": [{"prompt": "p", "responses": ["a b c d e f g", "h i j k l m n"], "quality": [1, 1]}]}
    call = stub.Score(to_proto(good, reward_pb2.ScoreRequest()), metadata=(*AUTH, ("x-request-id", "trace-7")))
    await call
    assert ("x-request-id", "trace-7") in tuple(await call.trailing_metadata())
    bad = {"groups": [{"prompt": "p", "responses": ["a"]}]}  # no quality source
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Score(to_proto(bad, reward_pb2.ScoreRequest()), metadata=(*AUTH, ("x-request-id", "trace-8")))
    assert _trailers(info.value)["x-request-id"] == ["trace-8"]
    unsafe = stub.Score(to_proto(good, reward_pb2.ScoreRequest()), metadata=(*AUTH, ("x-request-id", "has space!")))
    await unsafe
    fresh = dict(tuple(await unsafe.trailing_metadata()))["x-request-id"]
    assert fresh != "has space!" and len(fresh) == 32


async def test_client_raises_the_same_exception_on_both(both: tuple[str, str]) -> None:
    base, target = both
    raised: list[APIError] = []
    for client in (
        AsyncRewardClient(base, api_key=KEY),
        AsyncRewardClient(transport=GrpcTransport(target, api_key=KEY)),
    ):
        async with client:
            with pytest.raises(InvalidRequest) as info:
                await client.score([{"prompt": "p", "responses": ["x" * 70_000], "quality": [1]}])
            raised.append(info.value)
    http, rpc = raised
    assert (rpc.status, rpc.code, rpc.detail, rpc.fields) == (http.status, http.code, http.detail, http.fields)
    assert rpc.status == 413 and rpc.fields == ["groups[0].responses[0]"]


async def test_stream_gives_one_result_per_group(both: tuple[str, str]) -> None:
    target = both[1]
    groups = [
        {
            "group_id": f"s{i}",
            "prompt": "Space?",
            "responses": [*SPACE_FACTS[i:], "filler text number one"],
            "quality": [0.5] * (7 - i),
        }
        for i in range(5)
    ]
    transport = GrpcTransport(target, api_key=KEY)
    try:
        seen = [(i, g) async for i, g in transport.score_stream(groups, {"cache": False})]
        whole = RewardResponse.model_validate(
            await transport.call("rewards", {"groups": groups, "options": {"cache": False}}, 60)
        )
    finally:
        await transport.aclose()
    assert sorted(i for i, _ in seen) == list(range(5))
    by_index = dict(seen)
    for i, g in enumerate(whole.groups):
        assert by_index[i].group_id == f"s{i}"
        assert by_index[i].model_dump() == g.model_dump()
    # The SDK's score_stream has the same API on both transports and gives the same groups.
    for url in (both[0], f"grpc://{target}"):
        async with AsyncRewardClient(url, api_key=KEY) as client:
            via_sdk = dict([(i, g) async for i, g in client.score_stream(groups, {"cache": False})])
        assert [via_sdk[i].rewards for i in range(5)] == [g.rewards for g in whole.groups]


async def test_health_serving_and_reflection(both: tuple[str, str], channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE_NAME):  # no key needed: probes are open, as /readyz is
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)  # type: ignore[attr-defined]
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    asks = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="darling.v1.ScoreRequest"),
    ]
    # The contract is behind the key, as /openapi.json is. The server refuses before reading any request.
    refused = reflection.ServerReflectionInfo(timeout=10)
    assert await refused.code() == grpc.StatusCode.UNAUTHENTICATED
    listed, found = [r async for r in reflection.ServerReflectionInfo(iter(asks), metadata=AUTH, timeout=10)]
    services = [s.name for s in listed.list_services_response.service]
    assert SERVICE_NAME in services and "grpc.health.v1.Health" in services
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(b) for b in found.file_descriptor_response.file_descriptor_proto
    ]
    messages = {m.name for f in files for m in f.message_type}
    assert {"ScoreRequest", "GroupReward", "GroupResult"} <= messages


async def test_auth_rejects_missing_and_wrong_keys(both: tuple[str, str], channel: grpc.aio.Channel) -> None:
    http = httpx.post(both[0] + "/v1/rewards", json={"groups": []}, timeout=10)
    assert http.status_code == 401
    stub = reward_pb2_grpc.RewardServiceStub(channel)
    request = reward_pb2.ScoreRequest(groups=[reward_pb2.RolloutGroup(prompt="p", responses=["a"])])
    for metadata in [(), (("authorization", "Bearer nope"),), (("authorization", KEY),)]:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Score(request, metadata=metadata, timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert info.value.details() == http.json()["detail"]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            [m async for m in stub.ScoreStream(request, metadata=metadata, timeout=10)]
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    async with AsyncRewardClient(transport=GrpcTransport(both[1], api_key="wrong")) as client:
        with pytest.raises(Unauthorized):
            await client.score([{"prompt": "p", "responses": ["a"], "quality": [1]}])


async def test_metrics_count_grpc_calls(both: tuple[str, str], channel: grpc.aio.Channel) -> None:
    def count(method: str, code: str) -> float:
        return metrics.REGISTRY.get_sample_value("darling_grpc_requests_total", {"method": method, "code": code}) or 0.0

    before = {c: count("Score", c) for c in ("OK", "INVALID_ARGUMENT", "UNAUTHENTICATED")}
    stub = reward_pb2_grpc.RewardServiceStub(channel)
    good = reward_pb2.ScoreRequest(
        groups=[reward_pb2.RolloutGroup(prompt="p", responses=["a"], quality=reward_pb2.DoubleList(values=[1]))]
    )
    await stub.Score(good, metadata=AUTH, timeout=30)
    for request, metadata in [(reward_pb2.ScoreRequest(), AUTH), (good, ())]:
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Score(request, metadata=metadata, timeout=30)
    assert {c: count("Score", c) - v for c, v in before.items()} == {
        "OK": 1,
        "INVALID_ARGUMENT": 1,
        "UNAUTHENTICATED": 1,
    }


@pytest.mark.parametrize("draining", [False, True])
async def test_not_ready_is_unavailable_with_retry_after(draining: bool) -> None:
    """Models not loaded (or the service draining): NOT_SERVING, and calls get HTTP's 503 message."""
    settings = Settings(grpc_port=0, warmup=False)
    server = GrpcServer(settings, Engine(settings), draining=lambda: draining)  # never started: still loading
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            reply = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=10
            )  # type: ignore[attr-defined]
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await reward_pb2_grpc.RewardServiceStub(ch).Score(reward_pb2.ScoreRequest(), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        trailers = _trailers(info.value)
        assert trailers[HTTP_STATUS_KEY] == ["503"] and trailers[ERROR_KEY] == ["not_ready"]
        if draining:
            assert info.value.details() == "the service is shutting down; retry on another replica"
            assert trailers[RETRY_AFTER_KEY] == ["1"]
        else:
            assert info.value.details() == "models are still loading; retry shortly (see GET /readyz)"
            assert trailers[RETRY_AFTER_KEY] == ["2"]
        client = AsyncRewardClient(transport=GrpcTransport(f"127.0.0.1:{port}"))
        async with client:
            assert await client.ready() is False
            with pytest.raises(Unavailable) as err:
                await client.transport.call("rewards", {"groups": []}, 10)
            assert err.value.retry_after == (1.0 if draining else 2.0)
    finally:
        await server.stop(grace_s=1)


async def test_group_assembled_from_both_transports(both: tuple[str, str]) -> None:
    """Half a group over HTTP, half over gRPC, at the same time: one group, scored once, the same rewards to
    every caller, equal to scoring the whole group in one call."""
    base, target = both
    quality = [0.9, 0.2, 0.6, 0.8, 0.4, 0.7]
    rollouts = [
        {"group_id": "mixed-wires", "group_size": 6, "index": i, "prompt": "Space?", "response": r, "quality": q}
        for i, (r, q) in enumerate(zip(SPACE_FACTS, quality, strict=True))
    ]
    async with (
        AsyncRewardClient(base, api_key=KEY) as http,
        AsyncRewardClient(transport=GrpcTransport(target, api_key=KEY)) as rpc,
    ):
        over_http, over_grpc = await asyncio.gather(http.submit(rollouts[::2]), rpc.submit(rollouts[1::2]))
        whole = await rpc.score([{"prompt": "Space?", "responses": SPACE_FACTS, "quality": quality}])
    assert [r.index for r in over_http.rollouts] == [0, 2, 4] and [r.index for r in over_grpc.rollouts] == [1, 3, 5]
    assert comparable(RewardResponse(groups=over_http.groups, elapsed_ms=0)) == comparable(
        RewardResponse(groups=over_grpc.groups, elapsed_ms=0)
    )
    rewards = {r.index: r.reward for r in [*over_http.rollouts, *over_grpc.rollouts]}
    assert [rewards[i] for i in range(6)] == whole.groups[0].rewards
    assert over_grpc.groups[0].classes == whole.groups[0].classes


async def test_rollouts_errors_match(both: tuple[str, str], channel: grpc.aio.Channel) -> None:
    body = {
        "rollouts": [{"group_id": "bad", "group_size": 2, "index": 5, "prompt": "p", "response": "r", "quality": 1}]
    }
    http = httpx.post(both[0] + "/v1/rollouts", json=body, headers={"authorization": f"Bearer {KEY}"}, timeout=30)
    assert http.status_code == 422
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await reward_pb2_grpc.RewardServiceStub(channel).SubmitRollouts(
            to_proto(body, reward_pb2.RolloutsRequest()), metadata=AUTH, timeout=30
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == http.json()["detail"]
    assert _trailers(info.value)[FIELD_KEY] == http.json()["fields"] == ["rollouts[0].index"]


async def test_stream_deadline_is_deadline_exceeded(both: tuple[str, str], channel: grpc.aio.Channel) -> None:
    """options.deadline_ms ends a stream as it ends a unary call: DEADLINE_EXCEEDED naming the option."""
    responses = [f"answer number {i} is about topic {i * 7 % 13} in some detail" for i in range(48)]
    group = {"prompt": "p", "responses": responses, "quality": [1.0] * 48}
    body = {"groups": [group, group], "options": {"deadline_ms": 1, "cache": False}}
    with pytest.raises(grpc.aio.AioRpcError) as info:
        stream = reward_pb2_grpc.RewardServiceStub(channel).ScoreStream(
            to_proto(body, reward_pb2.ScoreRequest()), metadata=AUTH, timeout=60
        )
        [m async for m in stream]
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    trailers = _trailers(info.value)
    assert trailers[FIELD_KEY] == ["options.deadline_ms"] and trailers[HTTP_STATUS_KEY] == ["504"]
    assert info.value.details() == "the request was not finished within options.deadline_ms=1"
