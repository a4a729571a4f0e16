"""Which failures the client may retry, with which request id, and what a failed chunk does to its siblings.

The remote failures (a refused connection, a lost response) are simulated with httpx.MockTransport or a thin
wrapper over the real transport; one test runs against the real server to see it echo the reused request id.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from darling_client import AsyncRewardClient, InvalidRequest, RequestNotSent, ResponseLost, RetryPolicy
from darling_client.schemas import Rollout

from tests.clients.test_client_errors import error_body, groups, ok

FAST = RetryPolicy(max_retries=3, backoff_base_s=0.01, backoff_max_s=0.05)


def client(handler: object, **kw: object) -> AsyncRewardClient:
    kw.setdefault("retry", FAST)
    return AsyncRewardClient("http://mock", http_transport=httpx.MockTransport(handler), seed=0, **kw)  # type: ignore[arg-type]


def assembled(request: httpx.Request) -> httpx.Response:
    """A well-formed RolloutsResponse for whatever rollouts were posted (the mock assembles nothing)."""
    body = json.loads(request.content)
    rollouts = [
        {
            "group_id": r["group_id"],
            "index": r.get("index") or 0,
            "reward": 1.0,
            "quality": 1.0,
            "diversity": 1.0,
            "class_id": 0,
            "advantage": 0.0,
        }
        for r in body["rollouts"]
    ]
    return httpx.Response(200, json={"rollouts": rollouts, "groups": [], "elapsed_ms": 1.0})


def rollouts(indexed: bool) -> list[Rollout]:
    return [
        Rollout(group_id="g", group_size=2, index=i if indexed else None, prompt="p", response=f"r{i}", quality=1.0)
        for i in range(2)
    ]


# ---- a failed chunk cancels its siblings -------------------------------------------------------------------


async def test_a_failed_chunk_cancels_its_siblings_instead_of_leaving_them_retrying() -> None:
    second_started = asyncio.Event()
    second_cancelled = asyncio.Event()
    calls: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        first = json.loads(request.content)["groups"][0]["group_id"]
        calls.append(first)
        if first == "g0":
            await second_started.wait()
            return httpx.Response(400, json=error_body("invalid_request", "bad", ["groups"]))
        second_started.set()
        try:
            await asyncio.Event().wait()  # a chunk that would otherwise keep the caller's slot for its timeout
        except asyncio.CancelledError:
            second_cancelled.set()
            raise
        raise AssertionError("unreachable")

    c = client(handler, max_rollouts_per_request=3, max_in_flight=2)
    with pytest.raises(InvalidRequest):
        await asyncio.wait_for(c.score(groups(2)), 10)
    # By the time score() raised, the sibling's request was cancelled, not left running in the background.
    assert second_cancelled.is_set()
    assert calls == ["g0", "g1"]
    await c.aclose()


# ---- never sent vs response lost ---------------------------------------------------------------------------


async def test_connect_errors_are_retried_for_every_operation_including_submit() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if len(seen) == 1:
            raise httpx.ConnectError("connection refused", request=request)
        return assembled(request)

    c = client(handler)
    resp = await c.submit(rollouts(indexed=False))
    assert len(resp.rollouts) == 2 and c.retries == 1 and seen == ["/v1/rollouts", "/v1/rollouts"]
    await c.aclose()


@pytest.mark.parametrize(
    "lost",
    [
        lambda r: httpx.ReadTimeout("timed out", request=r),
        lambda r: httpx.RemoteProtocolError("server disconnected without sending a response", request=r),
    ],
)
async def test_a_lost_response_is_not_retried_for_a_submission_without_indices(lost: object) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise lost(request)  # type: ignore[operator]

    c = client(handler)
    with pytest.raises(ResponseLost):
        await c.submit(rollouts(indexed=False))
    # The server may have stored the rollouts; a resend would take new slots of the group.
    assert calls == 1 and c.retries == 0
    with pytest.raises(ResponseLost):
        await c.openrlhf(["q"], ["p"])
    assert calls == 2 and c.retries == 0
    await c.aclose()


async def test_a_lost_response_is_retried_for_scoring_and_for_indexed_submissions() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls % 2 == 1:
            raise httpx.ReadTimeout("timed out", request=request)
        return ok(request) if request.url.path == "/v1/rewards" else assembled(request)

    c = client(handler)
    assert await c.rewards(groups(1)) == [[0.0, 0.1, 0.2]]
    # An explicit index is an idempotency key: the server accepts the same rollout at the same index again.
    assert len((await c.submit(rollouts(indexed=True))).rollouts) == 2
    assert calls == 4 and c.retries == 2
    await c.aclose()


async def test_one_request_id_per_logical_call_reused_across_its_retries() -> None:
    ids: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        ids.append(request.headers["x-request-id"])
        if len(ids) in (1, 2):
            raise httpx.ConnectError("connection refused", request=request)
        return ok(request)

    c = client(handler)
    await c.score(groups(1))
    await c.score(groups(1))
    assert len(ids) == 4 and ids[0] == ids[1] == ids[2] and ids[3] != ids[0]
    await c.aclose()


async def test_the_exceptions_say_whether_the_request_was_sent() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("connect timed out", request=request)

    c = client(refuse, retry=RetryPolicy(max_retries=0))
    with pytest.raises(RequestNotSent, match="request id"):
        await c.score(groups(1))
    await c.aclose()


class _LoseFirstResponse(httpx.AsyncBaseTransport):
    """The real transport, except that the first response is read from the server and then thrown away,
    as a read timeout would: the server did the work, the client never saw it."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.echoed: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        await response.aread()
        self.echoed.append(response.headers["x-request-id"])
        if len(self.echoed) == 1:
            raise httpx.ReadTimeout("lost on the way back", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_the_real_server_sees_the_same_request_id_on_the_retry(default_server: str) -> None:
    transport = _LoseFirstResponse()
    async with AsyncRewardClient(default_server, http_transport=transport, retry=FAST) as c:
        resp = await c.score(groups(1))
    assert len(resp.groups) == 1 and c.retries == 1
    assert len(transport.echoed) == 2 and transport.echoed[0] == transport.echoed[1]
