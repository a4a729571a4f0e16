"""The `reference` mode: the published one-pair-per-HTTP-request architecture, rebuilt on loopback."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from service.tools.bench.config import BenchConfig, ModeResult, Pair, run_pool
from service.tools.bench.direct import forget_embeddings
from service.tools.bench.workload import (
    Group,
    all_pairs,
    partition,
)
from service.tools.loopback import serve_in_thread


class PairIn(BaseModel):
    a: str
    b: str


class ScoreOut(BaseModel):
    score: float


def reference_app(clf: Any) -> Any:
    """The published setup's classifier server: each request is one pair and one forward, one at a time."""
    from concurrent.futures import ThreadPoolExecutor

    from fastapi import FastAPI

    app = FastAPI()
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reference-model")

    def judge_one(a: str, b: str) -> float:
        return float(clf.run([clf.encode_pair(a, b)])[0])

    @app.post("/judge")
    async def judge(pair: PairIn) -> ScoreOut:
        loop = asyncio.get_running_loop()
        return ScoreOut(score=await loop.run_in_executor(worker, judge_one, pair.a, pair.b))

    @app.get("/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    return app


async def measure_reference(clf: Any, workload: Sequence[Group], cfg: BenchConfig, threshold: float) -> ModeResult:
    import httpx

    forget_embeddings(clf)
    n = cfg.n
    partitions: list[list[int]] = [[] for _ in workload]
    latencies: list[float] = []
    with serve_in_thread(reference_app(clf), "/ready") as base:
        limits = httpx.Limits(max_connections=cfg.clients * n * n, max_keepalive_connections=cfg.clients * n * n)
        async with httpx.AsyncClient(base_url=base, timeout=None, limits=limits) as client:

            async def one_group(gi: int) -> None:
                g = workload[gi]
                pairs = all_pairs(n)
                t0 = time.perf_counter()

                async def post(p: Pair) -> float:
                    r = await client.post("/judge", json={"a": g.responses[p[0]], "b": g.responses[p[1]]})
                    r.raise_for_status()
                    return float(r.json()["score"])

                scores = await asyncio.gather(*(post(p) for p in pairs))
                latencies.append((time.perf_counter() - t0) * 1000.0)
                partitions[gi] = partition(n, {p: s > threshold for p, s in zip(pairs, scores, strict=True)})[0]

            started = time.perf_counter()
            await run_pool([functools.partial(one_group, gi) for gi in range(len(workload))], cfg.clients)
            wall = time.perf_counter() - started
    total = len(workload) * n * (n - 1) // 2
    return ModeResult(total / wall, wall, partitions, latencies)


# ---- engine and http --------------------------------------------------------------------------------------
