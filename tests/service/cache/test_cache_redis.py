"""The Redis tier against real Redis servers: the shared one (`redis_url`, a fresh namespace per test) and, for
outages, a private redis-server this test starts, stops, pauses and restarts on a port of its own."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from darling_client.schemas import RewardRequest

from service.app import create_app
from service.cache.keys import pair_key
from service.cache.memory import MemoryLRU
from service.cache.redis_tier import RedisTier, encode_value
from service.cache.tiers import TieredCache
from service.ops import metrics
from service.settings import Settings
from tests.conftest import asgi_client, free_port

TIER_LOG = "service.cache.redis_tier"

FACTS = [
    "The Sun is a star that makes up most of the mass of the solar system.",
    "Most of the solar system's mass is in the Sun, which is a star.",
    "Jupiter has dozens of moons, and the largest, Ganymede, is bigger than Mercury.",
    "A day on Venus is longer than its year because it spins very slowly.",
    "Venus rotates so slowly that one Venusian day lasts longer than a Venusian year.",
    "Neutron stars are so dense that a teaspoon of one would weigh billions of tons.",
]
MATH = [
    "Six times seven is \\boxed{42} in total.",
    "The product of 6 and 7 equals 42, so the answer is 42.",
    "I believe the answer to 6*7 is 48 overall.",
    "Multiplying six by seven gives forty-two; final answer $42$.",
]


def body(variant: str = "", **options: Any) -> dict[str, Any]:
    """Two groups: one with client quality (classifier pairs only), one with the verifier (quality keys too)."""
    return {
        "groups": [
            {
                "prompt": "Tell me a fact about space.",
                "responses": [f"{variant}{t}" for t in FACTS],
                "quality": [1.0, 0.5, 0.8, 0.9, 0.7, 0.6],
            },
            {"prompt": "What is 6*7?", "reference": "42", "responses": [f"{variant}{t}" for t in MATH]},
        ],
        "options": options,
    }


QUALITY_KEYS = [0, len(MATH)]  # quality lookups per group of `body`


def lookups(g: dict[str, Any], gi: int) -> int:
    """Distinct cache keys group `gi` asked for: its classifier judgements plus its quality keys."""
    return int(g["judgements"]["made"]) + QUALITY_KEYS[gi]


def counts(g: dict[str, Any]) -> tuple[int, int, int, int]:
    c = g["cache"]
    return c["memory"]["hits"], c["memory"]["misses"], c["redis"]["hits"], c["redis"]["misses"]


@pytest.fixture
def namespace(redis_namespace: str) -> str:
    return redis_namespace


class OwnRedis:
    """A private redis-server on a free port: only this test's process ever stops or pauses it."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not installed; scripts/test.sh installs it")
        args = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(
            [*args, "--dir", str(self.workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client().ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.resume()
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def pause(self) -> None:
        """SIGSTOP: connections are accepted by the kernel and never answered, the worst kind of slow."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        if self.proc is not None and self.paused:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.paused = False

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=2)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class CountingConnection(aioredis.Connection):
    """Counts writes to the socket: a call that pipelines its commands writes once and reads its replies once."""

    sends = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sends += 1
        await super().send_packed_command(command, check_health)


@pytest.fixture
async def tier(redis_url: str, namespace: str) -> AsyncIterator[RedisTier]:
    t = RedisTier(redis_url, namespace=namespace, ttl_s=60, connection_class=CountingConnection)
    yield t
    await t.close()


# ---- the tier on its own -----------------------------------------------------------------------------------


async def test_one_round_trip_per_call_namespace_and_ttl(tier: RedisTier, redis_url: str, namespace: str) -> None:
    assert await tier.ping()  # opens the pooled connection (its hand-shake is not a call's round trip)
    items = {pair_key("fp", f"text {i}", f"other {i}"): i / 2500 for i in range(2500)}
    keys = list(items)
    CountingConnection.sends = 0
    await tier.put_many(items)
    assert CountingConnection.sends == 1
    found = await tier.get_many([*keys, "j:fp:never:written"])  # 2501 keys: three MGETs in one pipeline
    assert CountingConnection.sends == 2
    assert found == items
    assert (tier.stats.hits, tier.stats.misses, tier.stats.keys_written) == (2500, 1, 2500)

    raw = redis.Redis.from_url(redis_url)
    assert raw.exists(f"{namespace}:{keys[0]}") == 1 and raw.exists(keys[0]) == 0
    assert 0 < raw.ttl(f"{namespace}:{keys[-1]}") <= 60


async def test_ttl_expiry(redis_url: str, namespace: str) -> None:
    t = RedisTier(redis_url, namespace=namespace, ttl_s=1)
    try:
        await t.put_many({"q:fp:a:b:-": 0.75})
        assert await t.get_many(["q:fp:a:b:-"]) == {"q:fp:a:b:-": 0.75}
        await asyncio.sleep(1.3)
        assert await t.get_many(["q:fp:a:b:-"]) == {}
        assert t.stats.misses == 1 and t.stats.errors == 0
    finally:
        await t.close()


async def test_corrupt_and_foreign_values_are_misses(tier: RedisTier, redis_url: str) -> None:
    good, junk, moved, cut, wrong_type = (f"j:fp:{c}:{c}" for c in "abcde")
    await tier.put_many({good: 0.9})
    raw = redis.Redis.from_url(redis_url)
    raw.set(tier.name(junk), b"not ours")
    raw.set(tier.name(moved), encode_value(good, 0.9))  # a valid value, under someone else's key
    raw.set(tier.name(cut), encode_value(cut, 0.9)[:-1])
    raw.hset(tier.name(wrong_type), "x", "1")  # not even a string: MGET answers nil
    assert await tier.get_many([good, junk, moved, cut, wrong_type]) == {good: 0.9}
    assert tier.stats.corrupt == 3 and tier.stats.misses == 4 and tier.stats.errors == 0
    # Writing over a corrupt entry repairs it.
    await tier.put_many({junk: 0.1})
    assert await tier.get_many([junk]) == {junk: 0.1}


async def test_slow_redis_costs_one_timeout_then_nothing_until_it_answers(
    own_redis: OwnRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=TIER_LOG)
    t = RedisTier(own_redis.url, namespace="slow", timeout_s=0.2, retry_s=0.4, retry_max_s=0.8)
    try:
        await t.put_many({"k": 0.5})
        own_redis.pause()
        started = time.perf_counter()
        assert await t.get_many(["k"]) == {}  # the call that finds out: one timeout, then a miss
        first = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(200):  # the breaker is open: these cost nothing
            assert await t.get_many(["k"]) == {}
            await t.put_many({"k2": 0.1})
        rest = time.perf_counter() - started
        assert first < 1.0 and rest < 0.2, (first, rest)
        assert t.stats.outages == 1 and t.stats.skipped == 400 and not t.stats.up

        await asyncio.sleep(0.45)  # past the back-off: one probe, which times out and doubles the back-off
        assert await t.get_many(["k"]) == {}
        assert t.stats.errors == 2 and t.stats.outages == 1

        own_redis.resume()
        deadline = time.monotonic() + 5
        while await t.get_many(["k"]) != {"k": 0.5}:
            assert time.monotonic() < deadline, "the tier did not reconnect"
            await asyncio.sleep(0.1)
        assert t.stats.up and t.stats.outages == 1
    finally:
        own_redis.resume()
        await t.close()
    records = [r for r in caplog.records if r.name == TIER_LOG]
    assert [r.levelno for r in records] == [logging.WARNING, logging.INFO], [r.getMessage() for r in records]
    assert "unavailable" in records[0].getMessage() and "is back" in records[1].getMessage()


async def test_request_view_reads_once_then_falls_back_past_its_prefetch_cap(tier: RedisTier) -> None:
    keys = [f"j:fp:{i:02d}:xx" for i in range(6)]
    await tier.put_many({k: i / 10 for i, k in enumerate(keys[:4])})  # 0-3 in Redis, 4-5 nowhere
    memory = MemoryLRU(1 << 20)
    memory.put_many({keys[0]: 0.0})
    view = TieredCache(memory, tier, prefetch_max_keys=4).request()
    trips = tier.stats.round_trips
    await view.prefetch(keys)  # the first 4 keys; key 0 is in memory, so Redis is asked for 1-3
    assert tier.stats.round_trips - trips == 1 and tier.stats.keys_read == 3
    first = await view.get_many(keys[:4])
    assert tier.stats.round_trips - trips == 1  # answered from what the prefetch learnt
    assert (first.memory.hits, first.memory.misses, first.redis.hits, first.redis.misses) == (1, 3, 3, 0)
    rest = await view.get_many(keys)  # 4 and 5 were past the cap: one more read, for those two only
    assert tier.stats.round_trips - trips == 2 and tier.stats.keys_read == 5
    assert (rest.memory.hits, rest.redis.hits, rest.redis.misses) == (4, 0, 2)
    await view.put_many({keys[4]: 0.4, keys[5]: 0.5})
    assert tier.stats.round_trips - trips == 2  # writes wait for the end of the request
    await view.flush()
    assert tier.stats.round_trips - trips == 3 and await tier.get_many(keys[4:]) == {keys[4]: 0.4, keys[5]: 0.5}


# ---- the service ---------------------------------------------------------------------------------------------


async def test_hit_and_miss_accounting_and_a_second_replica_computes_nothing(redis_url: str, namespace: str) -> None:
    settings = Settings(port=0, redis_url=redis_url, redis_namespace=namespace)
    first, second = create_app(settings), create_app(settings)
    async with asgi_client(first) as a:
        tier: RedisTier = first.state.engine.remote
        trips = tier.stats.round_trips

        r1 = (await a.post("/v1/rewards", json=body())).json()
        for gi, g in enumerate(r1["groups"]):
            n = lookups(g, gi)
            assert n > 0 and g["judgements"]["model"] == g["judgements"]["made"]
            assert counts(g) == (0, n, 0, n)
        # One read up front for the whole request, one write at the end, however many planner rounds.
        assert tier.stats.round_trips - trips == 2
        stored = redis.Redis.from_url(redis_url).keys(f"{namespace}:*")
        kinds = [name.decode().split(":")[1] for name in stored]
        assert kinds.count("j") == sum(g["judgements"]["made"] for g in r1["groups"])
        assert kinds.count("q") == len(MATH)
        assert kinds.count("t") == kinds.count("j")  # each judgement's truncation flags, saved beside it
        assert tier.stats.keys_written == len(stored)

        trips = tier.stats.round_trips
        r2 = (await a.post("/v1/rewards", json=body())).json()
        for gi, g in enumerate(r2["groups"]):
            n = lookups(g, gi)
            assert counts(g) == (n, 0, 0, 0)
            assert g["judgements"]["model"] == 0 and g["judgements"]["cached"] == g["judgements"]["made"]
            assert g["rewards"] == r1["groups"][gi]["rewards"]
        assert tier.stats.round_trips - trips <= 1  # nothing to write

        # The streaming path scores group by group, each with a cache view of its own: same hits.
        streamed = [g async for _, g in first.state.engine.scorer.score_each(RewardRequest.model_validate(body()))]
        for gi, g in enumerate(streamed):
            n = lookups(g.model_dump(), gi)
            assert (g.cache.memory.hits, g.cache.memory.misses, g.judgements.model) == (n, 0, 0)

        r3 = (await a.post("/v1/rewards", json=body(cache=False))).json()
        for gi, g in enumerate(r3["groups"]):
            assert counts(g) == (0, 0, 0, 0)
            assert g["judgements"]["model"] == g["judgements"]["made"] > 0
            assert g["classes"] == r1["groups"][gi]["classes"]

        # Probabilities are cached, not verdicts: another threshold is still answered from the cache.
        r4 = (await a.post("/v1/rewards", json=body(threshold=0.0))).json()
        assert r4["groups"][0]["n_classes"] == 1 and r4["groups"][0]["threshold"] == 0.0
        assert all(g["judgements"]["model"] == 0 for g in r4["groups"])

        async with asgi_client(second) as b:
            batchers = second.state.engine.batchers
            assert {b.name for b in batchers} >= {"classifier", "verifier"}
            before = [(b.stats.batches, b.stats.rows) for b in batchers]
            r5 = (await b.post("/v1/rewards", json=body())).json()
            for gi, g in enumerate(r5["groups"]):
                n = lookups(g, gi)
                assert counts(g) == (0, n, n, 0)
                assert g["judgements"]["model"] == 0
                assert g["rewards"] == r1["groups"][gi]["rewards"]
            assert [(b.stats.batches, b.stats.rows) for b in batchers] == before  # not one forward
            assert all(b.stats.batches == 0 for b in batchers)  # warm-up bypasses the batchers: none ever ran
            assert second.state.engine.remote.stats.round_trips == 2  # the start-up ping and one read


async def test_redis_killed_flushed_paused_and_restarted_under_load(
    own_redis: OwnRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=TIER_LOG)
    settings = Settings(
        port=0,
        redis_url=own_redis.url,
        redis_timeout_s=0.2,
        redis_connect_timeout_s=0.2,
        redis_retry_s=0.3,
        redis_retry_max_s=1.0,
        memory_cache_bytes=0,  # every lookup goes to Redis, so what Redis does shows in the counts
    )
    app = create_app(settings)
    variants = [f"Variant {k}. " for k in range(6)]
    outages_before = metrics.REGISTRY.get_sample_value("darling_cache_redis_outages_total") or 0.0
    async with asgi_client(app) as c:
        tier: RedisTier = app.state.engine.remote

        async def post(b: dict[str, Any]) -> dict[str, Any]:
            r = await c.post("/v1/rewards", json=b)
            assert r.status_code == 200, r.text
            out: dict[str, Any] = r.json()
            return out

        async def load() -> list[dict[str, Any]]:
            """40 concurrent requests over the variants; each must match its uncached result."""
            out = await asyncio.gather(*(post(body(variants[i % len(variants)])) for i in range(40)))
            for i, resp in enumerate(out):
                ref = expected[i % len(variants)]
                assert [g["rewards"] for g in resp["groups"]] == [g["rewards"] for g in ref["groups"]]
            return out

        expected = [await post(body(v, cache=False)) for v in variants]

        first = await post(body())
        repeat = await post(body())
        for gi, g in enumerate(repeat["groups"]):
            assert counts(g) == (0, lookups(g, gi), lookups(g, gi), 0) and g["judgements"]["model"] == 0

        # Flushed mid-run: plain misses, recomputed, refilled.
        own_redis.client().flushall()
        flushed = await post(body())
        for gi, g in enumerate(flushed["groups"]):
            assert counts(g)[2:] == (0, lookups(g, gi)) and g["judgements"]["model"] == g["judgements"]["made"]
        assert flushed["groups"][1]["rewards"] == first["groups"][1]["rewards"]

        # Killed: a load of concurrent requests all succeed, uncached.
        own_redis.stop()
        for resp in await load():
            assert all(counts(g)[2] == 0 for g in resp["groups"])
        assert tier.stats.outages == 1 and tier.stats.errors >= 1 and tier.stats.skipped > 0 and not tier.stats.up

        # Restarted (empty): the tier reconnects by itself, then fills and serves the new server.
        own_redis.start()
        deadline = time.monotonic() + 10
        while not tier.stats.up:
            assert time.monotonic() < deadline, "the tier did not reconnect"
            await post(body("Probe. "))
            await asyncio.sleep(0.1)
        await post(body("After restart. "))
        again = await post(body("After restart. "))
        for gi, g in enumerate(again["groups"]):
            assert counts(g) == (0, lookups(g, gi), lookups(g, gi), 0) and g["judgements"]["model"] == 0
        assert own_redis.client().dbsize() > 0

        # Paused (answers nothing, the slow case): the load still succeeds, within a bounded delay.
        own_redis.pause()
        started = time.perf_counter()
        await load()
        assert time.perf_counter() - started < 60
        assert tier.stats.outages == 2
        own_redis.resume()
        deadline = time.monotonic() + 10
        while not tier.stats.up:
            assert time.monotonic() < deadline, "the tier did not reconnect"
            await post(body("Probe. "))
            await asyncio.sleep(0.1)
        # A corrupt value under one of our keys is a miss, recomputed and repaired.
        own_redis.client().flushall()
        await post(body("Corrupt. "))
        damaged = own_redis.client().keys("darling:j:*")
        assert damaged
        for name in damaged:
            own_redis.client().set(name, b"\x00garbage")
        hurt = await post(body("Corrupt. "))
        assert sum(counts(g)[2] for g in hurt["groups"]) == sum(QUALITY_KEYS)  # only the quality keys hit
        assert sum(g["judgements"]["model"] for g in hurt["groups"]) == len(damaged)
        healed = await post(body("Corrupt. "))
        assert all(g["judgements"]["model"] == 0 for g in healed["groups"])

        exposed = (await c.get("/metrics")).text
        assert (
            "darling_cache_redis_up 1.0" in exposed and 'darling_cache_redis_round_trips_total{kind="read"}' in exposed
        )
        assert metrics.REGISTRY.get_sample_value("darling_cache_redis_outages_total") == outages_before + 2

    records = [r for r in caplog.records if r.name == TIER_LOG and r.levelno >= logging.INFO]
    levels = [r.levelno for r in records]
    # Two outages: exactly one warning when each began and one line when each ended.
    assert levels == [logging.WARNING, logging.INFO, logging.WARNING, logging.INFO], [r.getMessage() for r in records]
