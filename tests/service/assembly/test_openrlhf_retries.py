"""OpenRLHF retries are idempotent (issue 14): a resent query lands in the group it belonged to, across
replicas sharing the real Redis, so no group mixes rollouts of two steps."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from service.app import create_app
from service.settings import Settings
from tests.conftest import asgi_client

N = 4


def step(k: int) -> list[str]:
    return [f"step {k}: answer {i} is \\boxed{{{40 + i + k}}}" for i in range(N)]


async def direct(c: httpx.AsyncClient, prompt: str, responses: list[str]) -> list[float]:
    r = await c.post("/v1/rewards", json={"groups": [{"prompt": prompt, "responses": responses, "reference": "42"}]})
    assert r.status_code == 200, r.text
    rewards: list[float] = r.json()["groups"][0]["rewards"]
    return rewards


async def test_a_resent_query_lands_in_its_own_group(redis_url: str, ns: str) -> None:
    settings = Settings(port=0, redis_url=redis_url, redis_namespace=ns, openrlhf_group_size=N, group_timeout_s=20)
    a, b = create_app(settings), create_app(settings)
    prompt = f"What is 6*7? ({uuid.uuid4().hex[:6]})"
    async with asgi_client(a) as ca, asgi_client(b) as cb:

        async def send(c: httpx.AsyncClient, response: str) -> httpx.Response:
            body = {"query": [prompt + response], "prompts": [prompt], "labels": ["42"]}
            return await c.post("/v1/openrlhf", json=body)

        first, second = step(1), step(2)
        # Step 1, one query per request over both replicas; query 1 is sent twice (its first response was
        # "lost"), the second time to the other replica, while its group is still being assembled.
        calls = [send((ca, cb)[i % 2], t) for i, t in enumerate(first[:3])]
        early = [asyncio.ensure_future(c) for c in calls]
        await asyncio.sleep(0.3)
        resent = asyncio.ensure_future(send(ca, first[1]))
        await asyncio.sleep(0.3)
        last = await send(cb, first[3])
        step1 = [await r for r in early] + [last]
        assert all(r.status_code == 200 for r in [*step1, await resent]), [r.text for r in step1]
        want1 = await direct(ca, prompt, first)
        assert [r.json()["rewards"][0] for r in step1] == want1
        assert (await resent).json() == step1[1].json()
        # A retry after the group finished gets the same answer again.
        assert (await send(cb, first[2])).json() == step1[2].json()
        # Step 2 is a group of its own: nothing of step 1 leaked into it.
        step2 = await asyncio.gather(*(send((ca, cb)[i % 2], t) for i, t in enumerate(second)))
        assert [r.json()["rewards"][0] for r in step2] == await direct(ca, prompt, second)
