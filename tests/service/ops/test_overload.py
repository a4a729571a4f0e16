"""Overload on loopback with tiny limits: only 200s and 429/503 with Retry-After, nothing lost, and deadlines and
disconnects leave the batcher clean."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI

from service.app import create_app
from service.settings import Settings
from tests.conftest import serve

TOPICS = ["rivers", "volcanoes", "owls", "bridges", "comets", "tea", "chess", "glaciers", "bees", "lighthouses"]
RESPONSES = [f"A short note about {t}: they are remarkable in their own way." for t in TOPICS]
RESPONSES += ["A short note about rivers: they are remarkable in their own way!", "Owls are remarkable birds."]
BODY = {
    "groups": [{"prompt": "Write a note.", "responses": RESPONSES, "quality": [1.0] * len(RESPONSES)}],
    "options": {"cache": False},
}
N = 40


@pytest.fixture(scope="module")
def tiny() -> Iterator[tuple[str, FastAPI]]:
    # 12 rollouts ask up to 11 pairs a round: one request fits the queue of 16, two at once may not.
    settings = Settings(port=0, max_inflight_requests=4, max_queue_depth=16, max_batch_rows=8, max_wait_ms=5.0)
    app = create_app(settings)
    with serve(app) as base:
        yield base, app


def retry_after(r: httpx.Response) -> int:
    value = int(r.headers["retry-after"])
    assert value >= 1
    return value


def wait_idle(app: FastAPI, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    batchers = app.state.engine.batchers
    while any(b.depth for b in batchers) or any(getattr(b, "_inflight", {}) for b in batchers):
        assert time.monotonic() < deadline, "the batcher did not drain"
        time.sleep(0.02)


async def test_overload_gets_only_200_429_503(tiny: tuple[str, FastAPI]) -> None:
    base, app = tiny
    limits = httpx.Limits(max_connections=N, max_keepalive_connections=N)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        baseline = (await client.post("/v1/rewards", json=BODY)).json()["groups"][0]["classes"]
        responses = await asyncio.gather(*(client.post("/v1/rewards", json=BODY) for _ in range(N)))
    assert len(responses) == N  # every request was answered: none lost, none hung
    codes = Counter(r.status_code for r in responses)
    assert set(codes) <= {200, 429, 503}, codes
    assert codes[200] >= 1 and codes[429] >= 1, codes
    for r in responses:
        if r.status_code == 200:
            assert r.json()["groups"][0]["classes"] == baseline
        else:
            retry_after(r)
            assert r.json()["error"] in {"too_many_requests", "overloaded"}
    wait_idle(app)


async def test_queue_full_is_503_with_retry_after(tiny: tuple[str, FastAPI]) -> None:
    base, app = tiny
    # 20 distinct rollouts: the first round alone asks 19 pairs, more than the queue of 16 holds. An empty queue
    # takes any request (so that none starves), the next one at once finds it full.
    many = [f"Note number {i} covers a topic of its own, {TOPICS[i % 10]} {i}." for i in range(20)]
    body = {"groups": [{"prompt": "p", "responses": many, "quality": [1.0] * 20}], "options": {"cache": False}}
    full = []
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        for _ in range(5):  # the burst races the batcher; a few tries make the collision certain
            burst = await asyncio.gather(*(client.post("/v1/rewards", json=body) for _ in range(4)))
            assert {r.status_code for r in burst} <= {200, 503}
            full = [r for r in burst if r.status_code == 503]
            if full:
                break
    assert full, "no request found the queue full"
    for r in full:
        assert r.json()["error"] == "overloaded" and "queue is full" in r.json()["detail"]
        retry_after(r)
    wait_idle(app)


async def test_clients_that_retry_get_every_result(tiny: tuple[str, FastAPI]) -> None:
    base, app = tiny
    limits = httpx.Limits(max_connections=N, max_keepalive_connections=N)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        baseline = (await client.post("/v1/rewards", json=BODY)).json()["groups"][0]["classes"]

        async def with_retries() -> tuple[int, list[int]]:
            for attempt in range(1, 500):
                r = await client.post("/v1/rewards", json=BODY)
                if r.status_code == 200:
                    return attempt, r.json()["groups"][0]["classes"]
                assert r.status_code in (429, 503), r.text
                retry_after(r)
                # The header says 1 s; a test can't wait that long 40 times, so back off briefly with jitter.
                await asyncio.sleep(random.uniform(0.02, 0.1))
            raise AssertionError("never admitted")

        results = await asyncio.gather(*(with_retries() for _ in range(N)))
    assert all(classes == baseline for _, classes in results)
    assert max(attempt for attempt, _ in results) > 1, "the load did not overload the service"
    wait_idle(app)


def test_deadline_is_504_and_leaves_the_batcher_clean(tiny: tuple[str, FastAPI]) -> None:
    base, app = tiny
    body = {**BODY, "options": {"cache": False, "deadline_ms": 1}}
    r = httpx.post(base + "/v1/rewards", json=body, timeout=60)
    assert r.status_code == 504
    assert r.json()["error"] == "deadline_exceeded" and r.json()["fields"] == ["options.deadline_ms"]
    wait_idle(app)
    ok = httpx.post(base + "/v1/rewards", json={**BODY, "options": {"cache": False, "deadline_ms": 60_000}}, timeout=60)
    assert ok.status_code == 200


def test_client_that_gives_up_leaves_the_batcher_clean(tiny: tuple[str, FastAPI]) -> None:
    base, app = tiny
    with pytest.raises(httpx.TimeoutException):
        httpx.post(base + "/v1/rewards", json=BODY, timeout=0.01)
    wait_idle(app)
    assert httpx.post(base + "/v1/rewards", json=BODY, timeout=60).status_code == 200
    metrics_text = httpx.get(base + "/metrics").text
    inflight = [line for line in metrics_text.splitlines() if line.startswith("darling_http_requests_in_flight ")]
    assert inflight == ["darling_http_requests_in_flight 0.0"]


async def test_rollouts_waiting_for_their_group_do_not_hold_inflight_slots(tiny: tuple[str, FastAPI]) -> None:
    """Six single-rollout calls of one group, with four in-flight slots: each waits for the others, so counting
    them would let four waiters hold every slot while their group-mates get 429 until the group times out."""
    base, _ = tiny
    gid = f"assembly-{random.getrandbits(48):x}"
    size = 6

    def call(i: int) -> dict[str, object]:
        rollout = {"group_id": gid, "group_size": size, "index": i, "prompt": "p", "response": RESPONSES[i]}
        return {"rollouts": [{**rollout, "quality": 1.0}], "options": {"cache": False}}

    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        responses = await asyncio.gather(*(client.post("/v1/rollouts", json=call(i)) for i in range(size)))
    assert [r.status_code for r in responses] == [200] * size, [r.text for r in responses if r.status_code != 200]


def test_settings_bound_every_queue() -> None:
    s = Settings()
    assert s.max_inflight_requests > 0 and s.max_queue_depth > 0 and s.max_body_bytes > 0
    app = create_app(Settings(max_inflight_requests=1))
    assert app.state.settings.max_inflight_requests == 1
