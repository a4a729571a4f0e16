"""The client against the real embedded server: typed results, chunking, and server-side errors."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from darling_client import AsyncRewardClient, InvalidRequest, RewardClient
from darling_client.schemas import RewardResponse, RolloutGroup

SPACE = [
    "The Sun is a star that makes up most of the mass of the solar system.",
    "Most of the solar system's mass is in the Sun, which is a star.",
    "Jupiter has dozens of moons, and the largest, Ganymede, is bigger than Mercury.",
    "A day on Venus is longer than its year because it spins very slowly.",
]
FRUIT = ["An apple.", "apple", "A ripe banana from Ecuador.", "Mango, definitely.", "Mangoes!"]


def batch() -> list[RolloutGroup]:
    return [
        RolloutGroup(group_id="space", prompt="A space fact?", responses=SPACE, quality=[1.0, 0.5, 0.8, 0.9]),
        RolloutGroup(group_id="fruit", prompt="Name a fruit.", responses=FRUIT, quality=[0.9, 0.8, 0.7, 0.95, 0.6]),
        RolloutGroup(group_id="math", prompt="6*7?", responses=["\\boxed{42}", "42", "48"], reference="42"),
        RolloutGroup(group_id="one", prompt="Say hi.", responses=["hi"], quality=[0.3]),
    ]


def direct(base: str, groups: list[RolloutGroup]) -> RewardResponse:
    body = {"groups": [g.model_dump(exclude_none=True) for g in groups]}
    r = httpx.post(base + "/v1/rewards", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return RewardResponse.model_validate(r.json())


async def test_async_client_matches_a_direct_post_also_when_chunked(default_server: str) -> None:
    want = direct(default_server, batch())
    async with AsyncRewardClient(default_server) as c:
        assert await c.ready()
        whole = await c.score(batch())
    async with AsyncRewardClient(default_server, max_rollouts_per_request=5, max_in_flight=2) as c:
        chunked = await c.score([g.model_dump() for g in batch()])  # dicts are accepted too
    for got in (whole, chunked):
        assert [g.group_id for g in got.groups] == ["space", "fruit", "math", "one"]
        assert [g.rewards for g in got.groups] == [g.rewards for g in want.groups]
        assert [g.classes for g in got.groups] == [g.classes for g in want.groups]
    assert chunked.groups[2].quality_source == "verifier"
    assert [r.quality for r in chunked.groups[2].rollouts] == [1.0, 1.0, 0.0]


async def test_score_stream_over_http_yields_every_group_once_by_its_index(default_server: str) -> None:
    want = direct(default_server, batch())
    async with AsyncRewardClient(default_server, max_rollouts_per_request=5, max_in_flight=2) as c:
        seen = [(i, g) async for i, g in c.score_stream(batch())]
    assert sorted(i for i, _ in seen) == [0, 1, 2, 3]
    for i, g in seen:
        assert g.group_id == want.groups[i].group_id and g.rewards == want.groups[i].rewards


def test_sync_client_matches_and_surfaces_server_errors_with_fields(default_server: str) -> None:
    want = direct(default_server, batch())
    with RewardClient(default_server) as c:
        assert c.rewards(batch(), {"partition": "all_pairs"}) == [g.rewards for g in want.groups]
        # No quality, no reference, no reward model: only the server knows, and it names the field.
        with pytest.raises(InvalidRequest) as info:
            c.score([{"prompt": "p", "responses": ["a", "b"]}])
        assert info.value.status == 422 and info.value.fields == ["groups[0].quality"]
        with pytest.raises(InvalidRequest) as info:
            c.score([{"prompt": "p", "responses": ["a", "x" * 70_000], "quality": [1.0, 1.0]}])
        assert info.value.status == 413 and info.value.fields == ["groups[0].responses[1]"]
        assert c.retries == 0


async def test_concurrent_callers_share_the_server(default_server: str) -> None:
    want = direct(default_server, batch())
    async with AsyncRewardClient(default_server) as c:
        results = await asyncio.gather(*(c.score([g]) for g in batch()))
    assert [r.groups[0].rewards for r in results] == [g.rewards for g in want.groups]
