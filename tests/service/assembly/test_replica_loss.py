"""Replica loss (issue 14): three real replica processes share the real Redis; the one holding a complete
group's scoring lease is SIGKILLed while every caller waits. Another replica takes the group over once the lease
runs out, and every caller (those of the dead replica after their retry) gets the rewards one replica gives."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from service.tools.replicas import Replica, start_all
from tests.conftest import drop_namespace

LEASE_S = 2.0
SIZE = 48


@pytest.fixture
def cluster(redis_url: str, tmp_path: Path) -> Iterator[tuple[list[Replica], str]]:
    ns = f"test-loss-{uuid.uuid4().hex[:8]}"
    env = {
        "DARLING_REDIS_URL": redis_url,
        "DARLING_REDIS_NAMESPACE": ns,
        "DARLING_GROUP_LEASE_S": str(LEASE_S),
        "DARLING_GROUP_TIMEOUT_S": "60",
    }
    replicas = [Replica(env, tmp_path, f"replica{k}") for k in range(3)]
    try:
        start_all(replicas)
        yield replicas, ns
    finally:
        for r in replicas:
            r.stop()
        drop_namespace(redis_url, ns)


def texts(tag: str) -> list[str]:
    # Long, distinct and alike: scoring the group takes a while, long enough to kill its scorer mid-way.
    body = " ".join(f"step {j} of the plan adds detail" for j in range(30))
    return [f"Plan {i} for {tag}: {body} and ends with the number {i * 7}." for i in range(SIZE)]


async def submit(replicas: list[Replica], dead: set[int], first: int, body: dict[str, Any]) -> httpx.Response:
    """A trainer's retry loop: a transport error or a 503 moves on to the next live replica."""
    k = first
    async with httpx.AsyncClient(timeout=90) as c:
        for _ in range(20):
            if k % len(replicas) in dead:
                k += 1
                continue
            try:
                r = await c.post(replicas[k % len(replicas)].base + "/v1/rollouts", json=body)
                if r.status_code != 503:
                    return r
            except httpx.TransportError:
                pass
            k += 1
            await asyncio.sleep(0.2)
    raise AssertionError("no replica answered")


@pytest.mark.slow
async def test_the_lease_holder_dies_and_another_replica_takes_over(
    cluster: tuple[list[Replica], str], redis_url: str
) -> None:
    replicas, ns = cluster
    gid = f"loss-{uuid.uuid4().hex[:8]}"
    prompt = "Give a plan."
    responses = texts(gid)
    quality = [round(0.3 + 0.01 * i, 2) for i in range(SIZE)]
    rollouts = [
        {"group_id": gid, "group_size": SIZE, "index": i, "prompt": prompt, "response": t, "quality": quality[i]}
        for i, t in enumerate(responses)
    ]
    options = {"cache": False}
    dead: set[int] = set()
    by_pid = {r.pid: k for k, r in enumerate(replicas)}
    killed: list[tuple[int, float, bool]] = []  # (replica, when, result already published)

    def kill_the_claimer() -> None:
        watch = redis.Redis.from_url(redis_url, decode_responses=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            owner = watch.get(f"{ns}:claim:{gid}")
            if owner is not None:
                k = by_pid[int(owner.rsplit(":", 1)[1])]
                replicas[k].signal(signal.SIGKILL)
                dead.add(k)
                killed.append((k, time.monotonic(), watch.exists(f"{ns}:result:{gid}") == 1))
                return
            time.sleep(0.001)

    killer = threading.Thread(target=kill_the_claimer, daemon=True)
    killer.start()
    calls = [
        asyncio.ensure_future(submit(replicas, dead, i, {"rollouts": [r], "options": options}))
        for i, r in enumerate(rollouts[:-1])
    ]
    await asyncio.sleep(1.0)  # every caller but the last is waiting
    calls.append(
        asyncio.ensure_future(submit(replicas, dead, SIZE - 1, {"rollouts": rollouts[-1:], "options": options}))
    )
    resps = await asyncio.gather(*calls)
    done = time.monotonic()
    killer.join(timeout=5)
    assert killed, "nobody claimed the group"
    victim, when, published = killed[0]
    assert not published, "the group was scored before its scorer could be killed"
    assert replicas[victim].proc is not None and replicas[victim].proc.wait(timeout=10) == -signal.SIGKILL
    # Taken over within the lease plus a bounded scoring time, not the group timeout.
    assert done - when < LEASE_S + 20
    assert all(r.status_code == 200 for r in resps), [r.text for r in resps if r.status_code != 200]
    survivor = next(r for k, r in enumerate(replicas) if k not in dead)
    want = httpx.post(
        survivor.base + "/v1/rewards",
        json={"groups": [{"prompt": prompt, "responses": responses, "quality": quality}], "options": options},
        timeout=120,
    ).json()["groups"][0]
    for sent, resp in zip(rollouts, resps, strict=True):
        got = resp.json()
        assert got["rollouts"][0]["index"] == sent["index"]
        assert got["rollouts"][0]["reward"] == pytest.approx(want["rewards"][sent["index"]])
        assert got["groups"][0]["classes"] == want["classes"]
