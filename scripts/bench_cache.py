"""What the caches buy: latency of a cold request against the same request answered from memory and from Redis,
measured side by side, and the Redis round trips each kind of request costs.

Two replicas of the service run in this process (ASGI, no network between client and app) and share one Redis:
a private redis-server started here (so that INFO commandstats counts only this benchmark) unless --redis-url
is given. Each iteration sends a request of fresh texts (nothing cached anywhere, the embedding model's own
text cache included) to replica A, the same request again to A (memory tier hit), then to replica B, whose
memory tier is off (Redis tier hit, zero forwards).

    .venv/bin/python scripts/bench_cache.py --iterations 10 --groups 4 --n 8
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.data import noveltybench_pairs  # noqa: E402
from service.app import create_app  # noqa: E402
from service.cache.redis_tier import RedisTier  # noqa: E402
from service.settings import Settings  # noqa: E402

DATA = noveltybench_pairs()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server not found: install it or pass --redis-url")
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        proc = subprocess.Popen([*args, "--dir", workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            for _ in range(100):
                with contextlib.suppress(redis.RedisError):
                    redis.Redis.from_url(url).ping()
                    break
                time.sleep(0.05)
            yield url
        finally:
            proc.terminate()
            proc.wait(10)


@contextlib.asynccontextmanager
async def replica(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await asyncio.wait_for(app.state.engine.ready.wait(), 300)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://asgi", timeout=300) as client:
            yield client, app.state.engine


def texts(limit: int) -> list[str]:
    out: list[str] = []
    with open(DATA) as f:
        for line in f:
            row = json.loads(line)
            out += [row["generation_0"], row["generation_1"]]
            if len(out) >= limit:
                break
    return out[:limit]


def request(pool: list[str], groups: int, n: int, variant: int) -> dict[str, Any]:
    """Fresh texts per variant: a prefix no other request carries, so nothing can be cached anywhere."""
    return {
        "groups": [
            {
                "prompt": f"Request {variant}, group {g}.",
                "responses": [f"[{variant}.{g}.{i}] {pool[(g * n + i) % len(pool)]}" for i in range(n)],
                "quality": [1.0] * n,
            }
            for g in range(groups)
        ]
    }


def commandstats(client: redis.Redis) -> dict[str, int]:
    info: dict[str, Any] = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0) and k != "info"}


async def run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    namespace = f"bench-{os.getpid()}-{time.time_ns()}"
    base = {"port": 0, "redis_url": url, "redis_namespace": namespace, "cpu_threads": args.threads}
    raw = redis.Redis.from_url(url)
    pool = texts(args.groups * args.n)
    modes = ("cold", "memory_hit", "redis_hit")
    latency: dict[str, list[float]] = {m: [] for m in modes}
    trips: dict[str, list[int]] = {m: [] for m in modes}
    commands: dict[str, dict[str, int]] = {m: {} for m in modes}
    forwards: dict[str, int] = dict.fromkeys(modes, 0)
    async with (
        replica(Settings(**base)) as (a, engine_a),
        replica(Settings(**base, memory_cache_bytes=0)) as (b, engine_b),
    ):
        tiers: dict[str, RedisTier] = {
            "cold": engine_a.remote,
            "memory_hit": engine_a.remote,
            "redis_hit": engine_b.remote,
        }
        clients = {"cold": a, "memory_hit": a, "redis_hit": b}
        for it in range(-1, args.iterations):  # iteration -1 warms both replicas up and is not counted
            body = request(pool, args.groups, args.n, it)
            for mode in modes:
                # A cold request can only be cold once; hits are repeated for steadier figures.
                for _ in range(1 if mode == "cold" else args.repeats):
                    tier = tiers[mode]
                    before_trips, before_cmds = tier.stats.round_trips, commandstats(raw)
                    started = time.perf_counter()
                    resp = await clients[mode].post("/v1/rewards", json=body)
                    elapsed = time.perf_counter() - started
                    resp.raise_for_status()
                    after_cmds = commandstats(raw)
                    if it < 0:
                        continue
                    latency[mode].append(elapsed * 1000)
                    trips[mode].append(tier.stats.round_trips - before_trips)
                    for k, v in delta(after_cmds, before_cmds).items():
                        commands[mode][k] = commands[mode].get(k, 0) + v
                    forwards[mode] += sum(g["judgements"]["model"] for g in resp.json()["groups"])
    pairs = args.groups * args.n * (args.n - 1) // 2
    report: dict[str, Any] = {
        "workload": {"groups": args.groups, "n": args.n, "pairs_per_request": pairs, "iterations": args.iterations},
        "redis": "private redis-server on loopback" if args.redis_url is None else "given",
    }
    for mode in modes:
        xs = sorted(latency[mode])
        runs = len(xs)
        report[mode] = {
            "median_ms": round(statistics.median(xs), 2),
            "p90_ms": round(xs[min(len(xs) - 1, int(0.9 * len(xs)))], 2),
            "redis_round_trips_per_request": statistics.mean(trips[mode]),
            "requests": runs,
            "redis_commands_per_request": {k: v / runs for k, v in sorted(commands[mode].items())},
            "model_judgements_per_request": forwards[mode] / runs,
        }
    report["speed_up_memory"] = round(report["cold"]["median_ms"] / report["memory_hit"]["median_ms"], 1)
    report["speed_up_redis"] = round(report["cold"]["median_ms"] / report["redis_hit"]["median_ms"], 1)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--groups", type=int, default=4, help="groups per request")
    parser.add_argument("--n", type=int, default=8, help="rollouts per group")
    parser.add_argument("--repeats", type=int, default=5, help="cache-hit requests per iteration and tier")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    parser.add_argument("--redis-url", default=None, help="an existing Redis; default: start a private one")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.redis_url:
        report = asyncio.run(run(args, args.redis_url))
    else:
        with private_redis() as url:
            report = asyncio.run(run(args, url))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
