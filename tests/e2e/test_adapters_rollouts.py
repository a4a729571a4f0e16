"""Group assembly (POST /v1/rollouts) through real servers: in process, and across two replicas sharing the
real Redis. Every reward is checked against a direct POST /v1/rewards of the same group."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from service.app import create_app
from service.settings import Settings
from tests.conftest import drop_namespace, serve

GROUPS: list[dict[str, Any]] = [
    {
        "prompt": "Tell me a fact about space.",
        "responses": [
            "The Sun is a star that makes up most of the mass of the solar system.",
            "Most of the solar system's mass is in the Sun, which is a star.",
            "Jupiter has dozens of moons, and the largest, Ganymede, is bigger than Mercury.",
            "A day on Venus is longer than its year because it spins very slowly.",
        ],
        "quality": [1.0, 0.5, 0.8, 0.9],
    },
    {
        "prompt": "Name a fruit.",
        "responses": ["An apple.", "apple", "A ripe banana from Ecuador.", "Mango, definitely."],
        "quality": [0.9, 0.8, 0.7, 0.95],
    },
    {
        "prompt": "What is 6*7?",
        "responses": ["6*7 = \\boxed{42}", "The answer is 42.", "I think it is 48.", "42"],
        "reference": "42",
    },
]


def rollouts_of(gid: str, g: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for i, text in enumerate(g["responses"]):
        r: dict[str, Any] = {
            "group_id": gid,
            "group_size": len(g["responses"]),
            "index": i,
            "prompt": g["prompt"],
            "response": text,
        }
        if "quality" in g:
            r["quality"] = g["quality"][i]
        if "reference" in g:
            r["reference"] = g["reference"]
        out.append(r)
    return out


def direct(base: str, groups: list[dict[str, Any]]) -> list[list[float]]:
    r = httpx.post(base + "/v1/rewards", json={"groups": groups}, timeout=120)
    assert r.status_code == 200, r.text
    return [g["rewards"] for g in r.json()["groups"]]


async def post_all(bases: list[str], bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    """Every body as its own concurrent request, round-robin over `bases`."""
    async with httpx.AsyncClient(timeout=120) as c:
        return list(
            await asyncio.gather(
                *(c.post(bases[k % len(bases)] + "/v1/rollouts", json=b) for k, b in enumerate(bodies))
            )
        )


@dataclass
class Replica:
    base: str
    app: FastAPI

    @property
    def scored(self) -> int:
        assembler = getattr(self.app.state, "assembler", None)
        return assembler.scored_groups if assembler is not None else 0


@pytest.fixture(scope="module")
def local() -> Iterator[Replica]:
    app = create_app(Settings(port=0, group_timeout_s=3.0))
    with serve(app) as base:
        yield Replica(base, app)


@pytest.fixture(scope="module")
def replicas(redis_url: str) -> Iterator[tuple[Replica, Replica]]:
    ns = f"test-groups-{uuid.uuid4().hex[:8]}"
    a = create_app(Settings(port=0, redis_url=redis_url, redis_namespace=ns, group_timeout_s=4.0))
    b = create_app(Settings(port=0, redis_url=redis_url, redis_namespace=ns, group_timeout_s=4.0))
    with serve(a) as base_a, serve(b) as base_b:
        yield Replica(base_a, a), Replica(base_b, b)

    drop_namespace(redis_url, ns)


def uid() -> str:
    return uuid.uuid4().hex[:10]


# ---- in process ---------------------------------------------------------------------------------------------


async def test_one_by_one_out_of_order_concurrent_equals_direct(local: Replica) -> None:
    want = direct(local.base, GROUPS)
    gids = [f"g{k}-{uid()}" for k in range(len(GROUPS))]
    singles = [r for gid, g in zip(gids, GROUPS, strict=True) for r in rollouts_of(gid, g)]
    random.Random(7).shuffle(singles)
    before = local.scored
    resps = await post_all([local.base], [{"rollouts": [r]} for r in singles])
    assert all(r.status_code == 200 for r in resps), [r.text for r in resps if r.status_code != 200]
    for sent, resp in zip(singles, resps, strict=True):
        body = resp.json()
        got = body["rollouts"][0]
        k = gids.index(sent["group_id"])
        assert (got["group_id"], got["index"]) == (sent["group_id"], sent["index"])
        assert got["reward"] == want[k][sent["index"]]
        assert body["groups"][0]["rewards"] == want[k]
    assert local.scored - before == len(GROUPS)  # each group scored once, not once per caller


async def test_mixed_request_sizes_and_a_request_spanning_groups(local: Replica) -> None:
    want = direct(local.base, GROUPS[:2])
    a, b = rollouts_of(f"a-{uid()}", GROUPS[0]), rollouts_of(f"b-{uid()}", GROUPS[1])
    bodies = [
        {"rollouts": [a[3], b[0], a[1]]},
        {"rollouts": [b[2]]},
        {"rollouts": [a[0], a[2]]},
        {"rollouts": [b[3], b[1]]},
    ]
    resps = await post_all([local.base], bodies)
    assert [r.status_code for r in resps] == [200] * 4
    first = resps[0].json()
    assert [x["reward"] for x in first["rollouts"]] == [want[0][3], want[1][0], want[0][1]]
    assert [g["group_id"] for g in first["groups"]] == [a[0]["group_id"], b[0]["group_id"]]


async def test_resubmitting_an_identical_rollout_returns_the_result_again(local: Replica) -> None:
    gid = f"retry-{uid()}"
    rs = rollouts_of(gid, GROUPS[1])
    resps = await post_all([local.base], [{"rollouts": [r]} for r in rs])
    assert all(r.status_code == 200 for r in resps)
    before = local.scored
    again = httpx.post(local.base + "/v1/rollouts", json={"rollouts": [rs[2]]}, timeout=30)
    assert again.status_code == 200, again.text
    assert again.json()["rollouts"][0] == resps[2].json()["rollouts"][0]
    assert local.scored == before


async def test_timeout_names_the_missing_indices(local: Replica) -> None:
    gid = f"late-{uid()}"
    rs = rollouts_of(gid, GROUPS[0])
    resps = await post_all([local.base], [{"rollouts": [rs[0]]}, {"rollouts": [rs[2]]}])
    for r in resps:
        assert r.status_code == 408, r.text
        body = r.json()
        assert body["error"] == "group_incomplete" and body["fields"] == ["rollouts[0].group_id"]
        assert "missing indices [1, 3]" in body["detail"] and "holds 2 of 4" in body["detail"]
        assert "DARLING_GROUP_TIMEOUT_S" in body["detail"]


@pytest.mark.parametrize(
    ("change", "field", "status"),
    [
        ({"response": "something else entirely"}, "rollouts[0].index", 409),
        ({"group_size": 5}, "rollouts[0].group_size", 409),
        ({"prompt": "Another prompt."}, "rollouts[0].prompt", 409),
        ({"quality": None, "reference": "apple"}, "rollouts[0].reference,rollouts[0].quality", 409),
        ({"index": 4}, "rollouts[0].index", 422),
    ],
)
async def test_conflicts_and_bad_indices_name_the_field(
    local: Replica, change: dict[str, Any], field: str, status: int
) -> None:
    rs = rollouts_of(f"c-{uid()}", GROUPS[1])
    assert all(r.status_code == 200 for r in await post_all([local.base], [{"rollouts": [r]} for r in rs]))
    bad = {**rs[0], **change}
    r = httpx.post(local.base + "/v1/rollouts", json={"rollouts": [rs[1], bad]}, timeout=30)
    assert r.status_code == status, r.text
    assert r.json()["fields"] == field.replace("rollouts[0]", "rollouts[1]").split(",")


def test_options_must_agree_within_a_group_and_quality_must_have_a_source(local: Replica) -> None:
    rs = rollouts_of(f"o-{uid()}", GROUPS[1])
    with httpx.Client(timeout=30) as c:
        c.post(local.base + "/v1/rollouts", json={"rollouts": rs})
        r = c.post(local.base + "/v1/rollouts", json={"rollouts": rs[:1], "options": {"partition": "greedy"}})
        assert r.status_code == 409 and r.json()["fields"] == ["rollouts[0].options"], r.text
        no_quality = {k: v for k, v in rs[0].items() if k != "quality"}
        r = c.post(local.base + "/v1/rollouts", json={"rollouts": [{**no_quality, "group_id": uid()}]})
        assert r.status_code == 422 and r.json()["fields"] == ["rollouts[0].quality"], r.text


async def test_rollouts_without_index_are_numbered_on_arrival(local: Replica) -> None:
    gid = f"auto-{uid()}"
    want = direct(local.base, GROUPS[:1])[0]
    rs = [{k: v for k, v in r.items() if k != "index"} for r in rollouts_of(gid, GROUPS[0])]
    resps = await post_all([local.base], [{"rollouts": [r]} for r in rs])
    assert all(r.status_code == 200 for r in resps)
    got = [r.json()["rollouts"][0] for r in resps]
    assert sorted(g["index"] for g in got) == [0, 1, 2, 3]
    # all_pairs rewards do not depend on the order inside the group: each rollout keeps its own reward.
    assert [g["reward"] for g in got] == want
    # A retry of one of them is the same rollout (its slot again); a fifth, different rollout does not fit.
    again = httpx.post(local.base + "/v1/rollouts", json={"rollouts": [rs[0]]}, timeout=30)
    assert again.status_code == 200 and again.json()["rollouts"][0] == got[0]
    extra = httpx.post(local.base + "/v1/rollouts", json={"rollouts": [{**rs[0], "response": "Pluto."}]}, timeout=30)
    assert extra.status_code == 409 and extra.json()["fields"] == ["rollouts[0].index"]


# ---- across replicas, through the real Redis -----------------------------------------------------------------


async def test_across_replicas_out_of_order_concurrent_scored_once(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    want = direct(a.base, GROUPS)
    gids = [f"x{k}-{uid()}" for k in range(len(GROUPS))]
    singles = [r for gid, g in zip(gids, GROUPS, strict=True) for r in rollouts_of(gid, g)]
    random.Random(11).shuffle(singles)
    before = a.scored + b.scored
    resps = await post_all([a.base, b.base], [{"rollouts": [r]} for r in singles])
    assert all(r.status_code == 200 for r in resps), [r.text for r in resps if r.status_code != 200]
    for sent, resp in zip(singles, resps, strict=True):
        k = gids.index(sent["group_id"])
        assert resp.json()["rollouts"][0]["reward"] == want[k][sent["index"]]
    # A replica counts a group just after it stores the result, which the other replica's callers may read first.
    deadline = asyncio.get_running_loop().time() + 5.0
    while a.scored + b.scored - before < len(GROUPS) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    assert a.scored + b.scored - before == len(GROUPS)


async def test_openrlhf_single_rollouts_split_over_replicas(replicas: tuple[Replica, Replica]) -> None:
    """By-prompt assembly with n = DARLING_OPENRLHF_GROUP_SIZE (8): slots are reserved atomically in Redis."""
    a, b = replicas
    prompt = f"What is 6*7? ({uid()})"
    responses = [
        "\\boxed{42}",
        "42",
        "It is 42.",
        "48",
        "I think \\boxed{48}.",
        "forty-two: \\boxed{42}",
        "6*7=42",
        "41",
    ]
    want = direct(a.base, [{"prompt": prompt, "responses": responses, "reference": "42"}])[0]
    order = list(range(8))
    random.Random(2).shuffle(order)
    async with httpx.AsyncClient(timeout=60) as c:
        resps = await asyncio.gather(
            *(
                c.post(
                    (a.base, b.base)[k % 2] + "/v1/openrlhf",
                    json={"query": [prompt + responses[i]], "prompts": [prompt], "labels": ["42"]},
                )
                for k, i in enumerate(order)
            )
        )
    assert all(r.status_code == 200 for r in resps), [r.text for r in resps if r.status_code != 200]
    assert [r.json()["rewards"][0] for r in resps] == [want[i] for i in order]


async def test_across_replicas_conflicts_and_timeouts(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    rs = rollouts_of(f"xc-{uid()}", GROUPS[0])

    async def late() -> httpx.Response:
        async with httpx.AsyncClient(timeout=60) as c:
            return await c.post(a.base + "/v1/rollouts", json={"rollouts": [rs[1]]})

    opened = asyncio.create_task(late())
    await asyncio.sleep(0.5)
    async with httpx.AsyncClient(timeout=60) as c:
        dup = await c.post(b.base + "/v1/rollouts", json={"rollouts": [{**rs[1], "response": "Saturn has rings."}]})
        assert dup.status_code == 409 and dup.json()["fields"] == ["rollouts[0].index"], dup.text
        other = await c.post(b.base + "/v1/rollouts", json={"rollouts": [{**rs[2], "prompt": "Different."}]})
        assert other.status_code == 409 and other.json()["fields"] == ["rollouts[0].prompt"], other.text
        partial = await c.post(b.base + "/v1/rollouts", json={"rollouts": [rs[3]]})
    first = await opened
    for r in (first, partial):
        assert r.status_code == 408, r.text
        assert "missing indices [0, 2]" in r.json()["detail"]


# ---- the two stores, directly -----------------------------------------------------------------------------


async def test_memory_store_bounds_open_groups_and_expires_them() -> None:
    from service.assembly.memory_store import MemoryGroupStore
    from service.errors import ServiceOverloaded

    store = MemoryGroupStore(ttl_s=0.2, max_open=2)
    assert (await store.add("g1", "m", 0, "a")).count == 1
    assert (await store.add("g2", "m", 0, "a")).count == 1
    with pytest.raises(ServiceOverloaded) as info:
        await store.add("g3", "m", 0, "a")
    assert info.value.retry_after_s > 0 and "DARLING_GROUP_MAX_OPEN" in info.value.detail
    await asyncio.sleep(0.25)
    assert (await store.add("g3", "m", 0, "a")).count == 1  # g1 and g2 expired and were swept
    assert await store.held("g1") == (None, {})
    assert [a.slot for a in await store.assign("k", ["a", "b", "c"], None, None, 60.0, [False] * 3)] == [0, 1, 2]


async def test_redis_store_add_is_atomic_idempotent_and_expires(redis_url: str) -> None:
    import redis

    from service.assembly.redis_store import RedisGroupStore

    ns = f"test-store-{uid()}"
    store = RedisGroupStore(redis_url, ns, ttl_s=60, timeout_s=2.0)
    try:
        results = await asyncio.gather(*(store.add("g", "meta", i % 4, f"p{i % 4}") for i in range(12)))
        assert all(r.status == "ok" for r in results) and max(r.count for r in results) == 4
        assert (await store.add("g", "meta", 1, "other")).status == "duplicate"
        conflict = await store.add("g", "other-meta", 5, "p")
        assert (conflict.status, conflict.meta) == ("conflict", "meta")
        meta, held = await store.held("g")
        assert meta == "meta" and held == {i: f"p{i}" for i in range(4)}
        assert 0 < redis.Redis.from_url(redis_url).ttl(f"{ns}:group:g") <= 60
        assert await store.claim("g", 5.0) and not await store.claim("g", 5.0)
        await store.release("g")
        assert await store.claim("g", 5.0)
        slots = await asyncio.gather(
            *(store.assign("seq", [f"n{i}", f"m{i}"], None, None, 60.0, [False, False]) for i in range(10))
        )
        assert sorted(a.slot for pair in slots for a in pair) == list(range(20))  # each caller got its own two
    finally:
        await store.close()
        drop_namespace(redis_url, ns)
