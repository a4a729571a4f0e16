"""Client error paths, retries, backoff and chunking, against httpx.MockTransport (the server cannot be made
to fail on cue; everything that can run against the real server does, in test_client_server.py)."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from darling_client import (
    AsyncRewardClient,
    Conflict,
    ConnectionFailed,
    GroupIncomplete,
    InvalidRequest,
    NotFound,
    RateLimited,
    RetryPolicy,
    RewardClient,
    ServerError,
    Unauthorized,
    Unavailable,
)
from darling_client.client import chunk_groups, chunk_rollouts
from darling_client.errors import parse_retry_after
from darling_client.schemas import GroupReward, JudgementCounts, RolloutGroup, RolloutReward, RuleCounts

FAST = RetryPolicy(max_retries=3, backoff_base_s=0.01, backoff_max_s=0.05)


def error_body(code: str, detail: str, fields: list[str]) -> dict[str, object]:
    return {"error": code, "detail": detail, "fields": fields, "request_id": "rid-1"}


def fake_group(g: dict[str, object]) -> dict[str, object]:
    """A well-formed GroupReward that echoes the quality it was sent (the mock is no reward model)."""
    quality = [float(q) for q in g["quality"]]  # type: ignore[attr-defined]
    n = len(quality)
    return GroupReward(
        group_id=g.get("group_id"),  # type: ignore[arg-type]
        n=n,
        n_classes=n,
        classes=list(range(n)),
        rewards=quality,
        rollouts=[
            RolloutReward(index=i, reward=q, quality=q, diversity=1.0, class_id=i, advantage=q - sum(quality) / n)
            for i, q in enumerate(quality)
        ],
        algorithm="all_pairs",
        classifier="mock",
        threshold=0.5,
        quality_source="client",
        quality_model="client",
        decided_by=RuleCounts(),
        judgements=JudgementCounts(),
    ).model_dump(mode="json")


def ok(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    return httpx.Response(200, json={"groups": [fake_group(g) for g in body["groups"]], "elapsed_ms": 1.0})


def groups(k: int, n: int = 3) -> list[RolloutGroup]:
    return [
        RolloutGroup(
            group_id=f"g{i}",
            prompt=f"p{i}",
            responses=[f"r{i}-{j}" for j in range(n)],
            quality=[i + j / 10 for j in range(n)],
        )
        for i in range(k)
    ]


def client(handler: Callable[[httpx.Request], httpx.Response], **kw: object) -> AsyncRewardClient:
    return AsyncRewardClient("http://mock", http_transport=httpx.MockTransport(handler), retry=FAST, seed=0, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, InvalidRequest),
        (401, Unauthorized),
        (404, NotFound),
        (408, GroupIncomplete),
        (409, Conflict),
        (413, InvalidRequest),
        (422, InvalidRequest),
    ],
)
async def test_4xx_raise_typed_error_with_body_fields_and_are_never_retried(status: int, cls: type) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(status, json=error_body("some_code", "groups[0].quality: bad", ["groups[0].quality"]))

    c = client(handler)
    with pytest.raises(cls) as info:
        await c.score(groups(1))
    err = info.value
    assert (err.status, err.code, err.detail, err.fields, err.request_id) == (
        status,
        "some_code",
        "groups[0].quality: bad",
        ["groups[0].quality"],
        "rid-1",
    )
    assert "groups[0].quality" in str(err) and str(status) in str(err)
    assert calls == 1 and c.retries == 0
    await c.aclose()


async def test_non_json_5xx_is_a_server_error_and_not_retried() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(500, text="<html>boom</html>")

    c = client(handler)
    with pytest.raises(ServerError) as info:
        await c.score(groups(1))
    assert info.value.status == 500 and "boom" in info.value.detail and calls == 1
    await c.aclose()


@pytest.mark.parametrize(("status", "cls"), [(429, RateLimited), (503, Unavailable)])
async def test_429_and_503_are_retried_honouring_retry_after(status: int, cls: type) -> None:
    stamps: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        stamps.append(time.monotonic())
        if len(stamps) < 3:
            return httpx.Response(status, json=error_body("busy", "later", []), headers={"Retry-After": "0.3"})
        return ok(request)

    c = client(handler)
    resp = await c.score(groups(2))
    assert [g.group_id for g in resp.groups] == ["g0", "g1"]
    assert len(stamps) == 3 and c.retries == 2
    # The backoff alone (base 0.01 s) would retry within ~20 ms; Retry-After says 0.3 s.
    assert all(b - a >= 0.3 for a, b in itertools.pairwise(stamps))
    await c.aclose()


async def test_503_gives_up_after_max_retries_with_the_last_error() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(503, json=error_body("overloaded", "queue full", []), headers={"Retry-After": "0"})

    c = client(handler)
    with pytest.raises(Unavailable) as info:
        await c.score(groups(1))
    assert calls == FAST.max_retries + 1 and info.value.code == "overloaded" and info.value.retry_after == 0.0
    await c.aclose()


async def test_connection_errors_are_retried_then_succeed_or_raise() -> None:
    calls = 0

    def flaky(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise httpx.ConnectError("connection refused", request=request)
        return ok(request)

    c = client(flaky)
    assert (await c.rewards(groups(1))) == [[0.0, 0.1, 0.2]]
    assert calls == 3 and c.retries == 2
    await c.aclose()

    def dead(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    c = client(dead)
    with pytest.raises(ConnectionFailed, match="ReadTimeout"):
        await c.score(groups(1))
    assert c.retries == FAST.max_retries
    await c.aclose()


async def test_real_refused_connection_is_retried() -> None:
    # A port nobody listens on: httpx's real transport, a real ECONNREFUSED.
    from tests.conftest import free_port

    c = AsyncRewardClient(f"http://127.0.0.1:{free_port()}", retry=FAST, connect_timeout=1.0)
    with pytest.raises(ConnectionFailed):
        await c.score(groups(1))
    assert c.retries == FAST.max_retries
    await c.aclose()


async def test_api_key_is_sent_as_bearer_and_body_is_the_wire_schema() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return ok(request)

    c = client(handler, api_key="s3cret")
    await c.score(groups(1), {"partition": "greedy"})
    req = seen[0]
    assert req.headers["authorization"] == "Bearer s3cret"
    assert req.url.path == "/v1/rewards" and req.method == "POST"
    body = json.loads(req.content)
    assert body["options"]["partition"] == "greedy" and body["groups"][0]["responses"] == ["r0-0", "r0-1", "r0-2"]
    await c.aclose()


async def test_big_batches_are_chunked_bounded_and_reassembled_in_order() -> None:
    active = peak = 0
    sizes: list[int] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal active, peak
        body = json.loads(request.content)
        sizes.append(sum(len(g["responses"]) for g in body["groups"]))
        active += 1
        peak = max(peak, active)
        # Finish in scrambled order so that reassembly is really tested.
        await asyncio.sleep(random.Random(body["groups"][0]["group_id"]).uniform(0.01, 0.05))
        active -= 1
        return httpx.Response(200, json={"groups": [fake_group(g) for g in body["groups"]], "elapsed_ms": 1.0})

    c = client(handler, max_rollouts_per_request=7, max_in_flight=2)
    gs = groups(11)
    resp = await c.score(gs)
    assert [g.group_id for g in resp.groups] == [g.group_id for g in gs]
    assert [g.rewards for g in resp.groups] == [g.quality for g in gs]
    assert sizes and max(sizes) <= 7 and sum(sizes) == 33 and len(sizes) == 6
    assert peak == 2
    await c.aclose()


def test_chunking_helpers() -> None:
    gs = [RolloutGroup(prompt="p", responses=["a"] * n, quality=[1.0] * n) for n in (3, 3, 10, 1, 2)]
    assert [[len(g.responses) for g in c] for c in chunk_groups(gs, 6)] == [[3, 3], [10], [1, 2]]
    from darling_client.schemas import Rollout

    rs = [Rollout(group_id=gid, group_size=3, index=i // 2, prompt="p", response="r") for i, gid in enumerate("abab")]
    # Rollouts of one group never straddle chunks, even when the limit would cut them.
    assert chunk_rollouts(rs, 1) == [[0, 2], [1, 3]]
    assert chunk_rollouts(rs, 4) == [[0, 2, 1, 3]]


def test_retry_policy_backoff_jitter_and_retry_after() -> None:
    p = RetryPolicy(backoff_base_s=1.0, backoff_max_s=8.0, retry_after_max_s=60.0)
    rng = random.Random(1)
    for attempt in range(6):
        cap = min(8.0, 2.0**attempt)
        samples = [p.delay(attempt, None, rng) for _ in range(200)]
        assert min(samples) >= cap / 2 and max(samples) <= cap
        assert len(set(samples)) > 150  # jittered, not a constant
    assert all(5.0 <= p.delay(0, 5.0, rng) <= 5.5 for _ in range(100))
    assert all(60.0 <= p.delay(0, 3600.0, rng) <= 66.0 for _ in range(100))


def test_parse_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < (parse_retry_after(later) or 0) <= 30


def test_sync_client_same_behaviour_and_usable_inside_a_running_loop() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return httpx.Response(429, json=error_body("rate_limited", "slow down", []), headers={"Retry-After": "0"})
        if calls == 2:
            body = error_body("invalid_request", "groups[0].responses: too short", ["groups[0].responses"])
            return httpx.Response(422, json=body)
        return ok(request)

    with RewardClient("http://mock", http_transport=httpx.MockTransport(handler), retry=FAST) as c:
        with pytest.raises(InvalidRequest) as info:
            c.score(groups(1))
        assert info.value.fields == ["groups[0].responses"] and c.retries == 1

        async def inside_a_loop() -> list[list[float]]:
            return c.rewards(groups(2))  # blocking call from a thread that runs a loop: must not deadlock

        assert asyncio.run(inside_a_loop()) == [[0.0, 0.1, 0.2], [1.0, 1.1, 1.2]]
    with pytest.raises(RuntimeError, match="closed"):
        c.rewards(groups(1))
