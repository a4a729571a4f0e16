"""Defects of group assembly found by reading the code (issue 18, items 1, 2, 4, 7), each through the real app:
retries of unindexed rollouts, waits left running, the assembly metrics, finished groups counted as open."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from service.app import create_app
from service.assembly.memory_store import MemoryGroupStore
from service.assembly.store import GroupStore
from service.ops import metrics
from service.settings import Settings
from tests.conftest import asgi_client, drop_namespace

PROMPT = "Name a fruit."
RESPONSES = ["An apple.", "A ripe banana from Ecuador."]
QUALITY = [0.9, 0.7]


def uid() -> str:
    return uuid.uuid4().hex[:10]


def rollout(gid: str, i: int, *, index: bool = True, size: int = 2) -> dict[str, Any]:
    r: dict[str, Any] = {
        "group_id": gid,
        "group_size": size,
        "prompt": PROMPT,
        "response": RESPONSES[i],
        "quality": QUALITY[i],
    }
    if index:
        r["index"] = i
    return r


async def direct(c: httpx.AsyncClient) -> list[float]:
    r = await c.post("/v1/rewards", json={"groups": [{"prompt": PROMPT, "responses": RESPONSES, "quality": QUALITY}]})
    assert r.status_code == 200, r.text
    rewards: list[float] = r.json()["groups"][0]["rewards"]
    return rewards


async def until(cond: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def sample(name: str) -> float:
    return metrics.REGISTRY.get_sample_value(name) or 0.0


async def test_unindexed_retry_after_an_overload_fills_its_own_slot() -> None:
    """Item 1: a rollout refused by an overloaded store, then retried, must take the slot it was refused in,
    not the next one (which left a permanent hole: the group's last rollout then got 409 forever)."""
    app = create_app(Settings(port=0, group_max_open=1, group_timeout_s=20.0))
    async with asgi_client(app) as c:
        want = await direct(c)
        blocker = f"block-{uid()}"
        held_open = asyncio.create_task(c.post("/v1/rollouts", json={"rollouts": [rollout(blocker, 0)]}))
        await until(lambda: getattr(app.state, "assembler", None) is not None and app.state.assembler.waiting_groups)
        gid = f"auto-{uid()}"
        refused = await c.post("/v1/rollouts", json={"rollouts": [rollout(gid, 0, index=False)]})
        assert refused.status_code == 503 and refused.headers["retry-after"], refused.text
        assert "DARLING_GROUP_MAX_OPEN" in refused.json()["detail"]
        done = await c.post("/v1/rollouts", json={"rollouts": [rollout(blocker, 1)]})
        assert done.status_code == 200 and (await held_open).status_code == 200
        # The client's retry of the refused rollout, and the group's other rollout, both unindexed.
        retried, other = await asyncio.gather(
            c.post("/v1/rollouts", json={"rollouts": [rollout(gid, 0, index=False)]}),
            c.post("/v1/rollouts", json={"rollouts": [rollout(gid, 1, index=False)]}),
        )
        assert retried.status_code == 200, retried.text
        assert other.status_code == 200, other.text
        # Rewards do not depend on the order inside the group: each rollout keeps its own.
        assert [r.json()["rollouts"][0]["reward"] for r in (retried, other)] == want
        # And a later retry of either still answers (idempotent), where it used to take a slot >= group_size.
        again = await c.post("/v1/rollouts", json={"rollouts": [rollout(gid, 1, index=False)]})
        assert again.status_code == 200 and again.json()["rollouts"][0] == other.json()["rollouts"][0]


async def test_identical_unindexed_rollouts_in_one_request_count_separately() -> None:
    app = create_app(Settings(port=0, group_timeout_s=20.0))
    async with asgi_client(app) as c:
        gid = f"twins-{uid()}"
        same = [{**rollout(gid, 0, index=False), "quality": 0.5} for _ in range(2)]
        r = await c.post("/v1/rollouts", json={"rollouts": same})
        assert r.status_code == 200, r.text
        assert sorted(x["index"] for x in r.json()["rollouts"]) == [0, 1]
        retry = await c.post("/v1/rollouts", json={"rollouts": same})
        assert retry.status_code == 200 and retry.json()["rollouts"] == r.json()["rollouts"]


async def test_a_failing_group_stops_the_waits_of_the_others() -> None:
    """Item 2: one group of a call fails (a transient scoring error): the call answers at once, and its
    other groups' waits (Redis pollers, in a Redis deployment) stop with it instead of running on for
    DARLING_GROUP_TIMEOUT_S."""
    app = create_app(Settings(port=0, group_timeout_s=30.0))
    async with asgi_client(app) as c:
        complete, partial = f"fail-{uid()}", f"wait-{uid()}"
        # Distinct, similar texts: the classifier must run on every pair (no shortcut finishes in 1 ms).
        texts = [f"Idea {i} for {complete}: a plan unlike the others in detail number {i * 7}." for i in range(16)]
        whole = [
            {"group_id": complete, "group_size": 16, "index": i, "prompt": PROMPT, "response": t, "quality": 1.0}
            for i, t in enumerate(texts)
        ]
        body = {
            "rollouts": [*whole, rollout(partial, 0)],
            # Too short for any scoring: the complete group fails with a (transient) deadline error.
            "options": {"deadline_ms": 1, "cache": False},
        }
        r = await asyncio.wait_for(c.post("/v1/rollouts", json=body), 20)
        assert r.status_code == 504 and r.json()["error"] == "deadline_exceeded", r.text
        await asyncio.sleep(0.05)
        assert app.state.assembler.waiting_groups == 0


async def test_assembly_metrics_move() -> None:
    """Item 4: the wait histogram, the open-groups gauge and the timeout counter are recorded."""
    app = create_app(Settings(port=0, group_timeout_s=1.0))
    async with asgi_client(app) as c:
        waits = sample("darling_group_assembly_wait_seconds_count")
        waited = sample("darling_group_assembly_wait_seconds_sum")
        assembling = sample("darling_groups_assembling")
        timeouts = sample("darling_group_assembly_timeouts_total")
        gid = f"m-{uid()}"
        first = asyncio.create_task(c.post("/v1/rollouts", json={"rollouts": [rollout(gid, 0)]}))
        await until(lambda: sample("darling_groups_assembling") == assembling + 1)
        await asyncio.sleep(0.2)
        second = await c.post("/v1/rollouts", json={"rollouts": [rollout(gid, 1)]})
        assert second.status_code == 200 and (await first).status_code == 200
        assert sample("darling_group_assembly_wait_seconds_count") == waits + 1
        assert sample("darling_group_assembly_wait_seconds_sum") - waited >= 0.2  # from the first rollout on
        assert sample("darling_groups_assembling") == assembling
        late = await c.post("/v1/rollouts", json={"rollouts": [rollout(f"late-{uid()}", 0)]})
        assert late.status_code == 408
        assert sample("darling_group_assembly_timeouts_total") == timeouts + 1
        assert sample("darling_groups_assembling") == assembling


async def test_finished_groups_do_not_count_as_open_and_drop_their_texts() -> None:
    """Item 7: DARLING_GROUP_MAX_OPEN bounds partial groups only; a scored group keeps no rollout text."""
    app = create_app(Settings(port=0, group_max_open=1, group_timeout_s=5.0))
    async with asgi_client(app) as c:
        want = await direct(c)
        for _ in range(3):  # each group is finished before the next opens: none is refused
            gid = f"f-{uid()}"
            r = await c.post("/v1/rollouts", json={"rollouts": [rollout(gid, 0), rollout(gid, 1)]})
            assert r.status_code == 200, r.text
            assert r.json()["groups"][0]["rewards"] == want
        store = app.state.assembler.store
        _, held = await store.held(gid)
        assert not any(t in payload for payload in held.values() for t in RESPONSES)
        again = await c.post("/v1/rollouts", json={"rollouts": [rollout(gid, 1)]})
        assert again.status_code == 200 and again.json()["groups"][0]["rewards"] == want
        other = await c.post("/v1/rollouts", json={"rollouts": [{**rollout(gid, 1), "response": "A pear."}]})
        assert other.status_code == 409 and other.json()["fields"] == ["rollouts[0].index"]


async def slots(store: GroupStore, key: str, names: list[str], window: int | None, max_age: float | None) -> list[int]:
    """Slots as a caller that is done at once sees them (nothing stays live)."""
    got = [a.slot for a in await store.assign(key, names, window, max_age, 60.0, [False] * len(names))]
    await store.let_go(key, got)
    return got


async def check_assign(store: GroupStore) -> None:
    assert await slots(store, "k", ["a", "b"], None, None) == [0, 1]
    assert await slots(store, "k", ["b", "c"], None, None) == [1, 2]
    # With a window of 2 slots: a name is kept while its slot is in the current or the previous block.
    assert await slots(store, "w", ["a", "b", "c"], 2, None) == [0, 1, 2]
    assert await slots(store, "w", ["a"], 2, None) == [0]  # block 0 is the previous one (block 1 is filling)
    assert await slots(store, "w", ["d", "e", "a"], 2, None) == [3, 4, 5]  # block 0 is two behind: a new slot
    # With a maximum age: a name given longer ago than that is a new rollout.
    assert await slots(store, "t", ["a"], None, 0.1) == [0]
    assert await slots(store, "t", ["a"], None, 0.1) == [0]
    await asyncio.sleep(0.15)
    assert await slots(store, "t", ["a"], None, 0.1) == [1]
    # A live slot (its caller still waits) is not given again unless forced; released, it is.
    first = await store.assign("l", ["x"], None, None, 60.0, [False])
    assert first[0].slot == 0
    busy = await store.assign("l", ["x"], None, None, 60.0, [False])
    assert busy[0].slot == -1 and list(busy[0].live) == [0]
    assert (await store.assign("l", ["x"], None, None, 60.0, [True]))[0].slot == 1
    await store.let_go("l", [0])
    assert (await store.assign("l", ["x"], None, None, 60.0, [False]))[0].slot == 0
    # A live slot that is not renewed expires: a retry of a caller that died takes it.
    assert (await store.assign("e", ["y"], None, None, 0.05, [False]))[0].slot == 0
    await asyncio.sleep(0.1)
    assert (await store.assign("e", ["y"], None, None, 60.0, [False]))[0].slot == 0


async def test_memory_store_assign() -> None:
    await check_assign(MemoryGroupStore(ttl_s=60, max_open=10))


async def test_redis_store_assign(redis_url: str) -> None:

    from service.assembly.redis_store import RedisGroupStore

    ns = f"test-assign-{uid()}"
    rs = RedisGroupStore(redis_url, ns, ttl_s=60, timeout_s=2.0)
    try:
        await check_assign(rs)
        concurrent = await asyncio.gather(*(slots(rs, "c", [f"n{i}"], None, None) for i in range(20)))
        assert sorted(s[0] for s in concurrent) == list(range(20))
    finally:
        await rs.close()
        drop_namespace(redis_url, ns)
