"""The `engine` (in-process Scorer) and `http` (the real app on loopback) modes, and the latency probe."""

from __future__ import annotations

import asyncio
import functools
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from typing import Any

from service.tools.bench.config import BenchConfig, ModeResult, percentile, run_pool
from service.tools.bench.direct import forget_embeddings
from service.tools.bench.workload import (
    Group,
    fit_threshold,
)
from service.tools.loopback import serve_in_thread


def requests_of(workload: Sequence[Group], cfg: BenchConfig, threshold: float, cache: bool = True) -> list[Any]:
    from darling_client.schemas import RewardOptions, RewardRequest, RolloutGroup

    opts = RewardOptions(partition="all_pairs", threshold=threshold, cache=cache)
    out = []
    for s in range(0, len(workload), cfg.groups_per_request):
        groups = [
            RolloutGroup(group_id=str(s + k), prompt="", responses=g.responses, quality=[1.0] * len(g.responses))
            for k, g in enumerate(workload[s : s + cfg.groups_per_request])
        ]
        out.append(RewardRequest(groups=groups, options=opts))
    return out


def service_settings(cfg: BenchConfig, model_path: str | None, batch_rows: int, batch_tokens: int) -> Any:
    from service.settings import Settings

    return Settings(
        classifier="cross-encoder" if model_path else "embedding",
        classifier_path=model_path,
        device=cfg.device,
        cpu_threads=cfg.cpu_threads,
        verifier=False,
        max_batch_rows=batch_rows,
        max_batch_tokens=batch_tokens,
        max_rollouts_per_request=max(4096, cfg.groups_per_request * cfg.n),
    )


def collect(resp_groups: Sequence[Any], partitions: list[list[int]], counts: dict[str, int]) -> None:
    for g in resp_groups:
        partitions[int(g.group_id)] = list(g.classes)
        counts["made"] += g.judgements.made
        counts["model"] += g.judgements.model
        counts["skipped"] += g.judgements.skipped


async def measure_engine(
    clf: Any, workload: Sequence[Group], cfg: BenchConfig, threshold: float, settings: Any
) -> ModeResult:
    from service.cache.memory import MemoryLRU
    from service.cache.tiers import TieredCache
    from service.engine.batching import Batcher
    from service.engine.scoring import Model, Scorer

    forget_embeddings(clf)
    batcher = Batcher(
        clf,
        name="classifier",
        max_batch_tokens=settings.max_batch_tokens,
        max_batch_rows=settings.max_batch_rows,
        max_wait_ms=settings.max_wait_ms,
        max_queue_depth=settings.max_queue_depth,
    )
    batcher.start()
    scorer = Scorer(settings, Model(clf, batcher), TieredCache(MemoryLRU(settings.memory_cache_bytes)))
    partitions: list[list[int]] = [[] for _ in workload]
    counts = {"made": 0, "model": 0, "skipped": 0}
    latencies: list[float] = []

    async def send(req: Any) -> None:
        t0 = time.perf_counter()
        resp = await scorer.score(req)
        latencies.append((time.perf_counter() - t0) * 1000.0)
        collect(resp.groups, partitions, counts)

    reqs = requests_of(workload, cfg, threshold)
    started = time.perf_counter()
    try:
        await run_pool([functools.partial(send, r) for r in reqs], cfg.clients)
    finally:
        await batcher.close()
    wall = time.perf_counter() - started
    total = len(workload) * cfg.n * (cfg.n - 1) // 2
    st = batcher.stats
    extra = {
        **counts,
        "padding_share": st.padding_share,
        "batches": st.batches,
        "mean_rows": st.mean_rows,
        "forward_s": st.forward_s,
        "model_busy_share": st.forward_s / wall if wall else 0.0,
    }
    return ModeResult(total / wall, wall, partitions, latencies, extra)


async def measure_http(
    workload: Sequence[Group], cfg: BenchConfig, threshold: float, settings: Any
) -> tuple[ModeResult, dict[str, float]]:
    import httpx

    from service.app import create_app

    app = create_app(settings)
    partitions: list[list[int]] = [[] for _ in workload]
    counts = {"made": 0, "model": 0, "skipped": 0}
    latencies: list[float] = []
    latency: dict[str, float] = {}
    with serve_in_thread(app, "/readyz") as base:
        limits = httpx.Limits(max_connections=cfg.clients + 4, max_keepalive_connections=cfg.clients + 4)
        async with httpx.AsyncClient(base_url=base, timeout=None, limits=limits) as client:

            async def send(body: bytes, record: list[float]) -> Any:
                t0 = time.perf_counter()
                r = await client.post("/v1/rewards", content=body, headers={"content-type": "application/json"})
                record.append((time.perf_counter() - t0) * 1000.0)
                if r.status_code != 200:
                    raise RuntimeError(f"service answered {r.status_code}: {r.text[:500]}")
                return r.json()

            async def send_and_collect(body: bytes) -> None:
                from darling_client.schemas import RewardResponse

                collect(RewardResponse.model_validate(await send(body, latencies)).groups, partitions, counts)

            bodies = [r.model_dump_json().encode() for r in requests_of(workload, cfg, threshold)]
            started = time.perf_counter()
            await run_pool([functools.partial(send_and_collect, b) for b in bodies], cfg.clients)
            wall = time.perf_counter() - started
            batcher = app.state.engine.batchers[0]
            st = batcher.stats
            extra: dict[str, Any] = {**counts, "padding_share": st.padding_share, "batches": st.batches}
            if cfg.latency_requests > 0:
                latency = await measure_latency(send, workload, cfg, threshold, len(bodies) / wall)
    total = len(workload) * cfg.n * (cfg.n - 1) // 2
    return ModeResult(total / wall, wall, partitions, latencies, extra), latency


async def measure_latency(
    send: Callable[[bytes, list[float]], Awaitable[Any]],
    workload: Sequence[Group],
    cfg: BenchConfig,
    threshold: float,
    saturated_rps: float,
) -> dict[str, float]:
    """One request alone, then requests arriving evenly at half the saturated rate (cache off: no free repeats)."""
    bodies = [r.model_dump_json().encode() for r in requests_of(workload, cfg, threshold, cache=False)]
    alone: list[float] = []
    for b in bodies[:3]:
        await send(b, alone)
    loaded: list[float] = []
    interval = 1.0 / (0.5 * saturated_rps)
    tasks = []
    for k in range(cfg.latency_requests):
        tasks.append(asyncio.ensure_future(send(bodies[k % len(bodies)], loaded)))
        await asyncio.sleep(interval)
    await asyncio.gather(*tasks)
    single = statistics.median(alone)
    p99 = percentile(loaded, 99)
    return {
        "single_request_ms": single,
        "half_load_rps": 0.5 * saturated_rps,
        "half_load_requests": float(cfg.latency_requests),
        "half_load_p50_ms": percentile(loaded, 50),
        "half_load_p99_ms": p99,
        "half_load_p99_over_single": p99 / single if single else 0.0,
    }


# ---- the run -----------------------------------------------------------------------------------------------


def resolve_threshold(
    cfg: BenchConfig, clf: Any, workload: Sequence[Group], scores: Any
) -> tuple[float, dict[str, Any]]:
    if cfg.threshold == "model":
        return float(clf.default_threshold), {"threshold_source": "model default"}
    if cfg.threshold != "auto":
        return float(cfg.threshold), {"threshold_source": "given"}
    fit = fit_threshold(workload, scores)
    return fit.threshold, {"threshold_source": "fitted to the planted collapse", **asdict(fit)}
