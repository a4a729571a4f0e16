"""`darling-reward bench`: the service against the bare model and against the published one-pair-per-request setup.

Four modes run in one process, one after another, on the same model weights and the same workload:

- `limit`: the bare forward over every pair i < j of every group, pre-tokenized, sorted by length, at the best
  batch size of a short search. No service, no tokenization: the ceiling of plain all-pairs judging.
- `reference`: the published architecture: every pair i < j is one HTTP request, a group's requests are sent
  together, to a small server (built here, on loopback) that runs one pair per forward.
- `engine`: the in-process `Scorer` (rules, skipping planner, cache, shared batcher), K concurrent callers.
- `http`: the real service app under uvicorn on loopback, K concurrent HTTP clients.

Throughput counts workload pairs (n(n-1)/2 per group, judged or skipped) per second, so skipping shows as speed.
Every mode yields one partition per group; `identical_partitions` says whether all four agree.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import BaseModel

from service.bench_workload import (
    DEFAULT_DATA,
    Group,
    all_pairs,
    fit_threshold,
    load_answers,
    make_workload,
    partition,
)

log = logging.getLogger(__name__)

Pair = tuple[int, int]


@dataclass
class BenchConfig:
    groups: int = 64
    n: int = 8
    collapse: float = 0.5
    model: str = "minilm"  # a bench_models name, for the cross-encoder
    classifier: str = "cross-encoder"  # or "embedding": the packaged MiniLM cosine classifier
    clients: int = 16
    groups_per_request: int = 1
    device: str = "auto"
    cpu_threads: int | None = None
    batch_rows: int | None = None  # None: the best batch size the limit search found
    threshold: str = "auto"  # auto | model | a number
    latency_requests: int = 0  # >0: also measure p99 at half the saturation load against one request alone
    seed: int = 0
    quick: bool = False
    data: str = str(DEFAULT_DATA)
    tokenizer: str | None = None  # for the built cross-encoder; None: the packaged MiniLM tokenizer
    int8: bool = False  # also measure the int8 dynamically quantized copy: speed-up and agreement with fp32


@dataclass
class ModeResult:
    pairs_per_s: float
    wall_s: float
    partitions: list[list[int]]
    latencies_ms: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


# ---- small helpers ------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100.0 * (len(ordered) - 1))))
    return float(ordered[k])


def progress(mode: str, result: ModeResult) -> None:
    """One line per finished mode on stderr: the JSON on stdout stays the only thing there."""
    print(f"bench: {mode}: {result.pairs_per_s:.2f} pairs/s in {result.wall_s:.1f}s", file=sys.stderr, flush=True)


def peak_rss_mb() -> float:
    # ru_maxrss is KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@contextlib.contextmanager
def serve_in_thread(app: Any, ready_path: str, timeout_s: float = 600.0) -> Iterator[str]:
    """uvicorn on a free loopback port in a thread; yields the base URL once `ready_path` answers 200."""
    import socket

    import httpx
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(
        # Keep-alive longer than any wait in the run: a server closing an idle pooled connection just as the
        # client reuses it reads as a dropped request (httpx ReadError) under a long one-pair-per-request queue.
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            access_log=False,
            timeout_keep_alive=3600,
            backlog=4096,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True, name=f"bench-server-{port}")
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                if httpx.get(base + ready_path, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"bench server on {base} did not become ready")
            time.sleep(0.1)
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=60)


async def run_pool(jobs: Sequence[Callable[[], Awaitable[None]]], concurrency: int) -> None:
    """Run `jobs` with at most `concurrency` at a time, in order: K clients pulling from one queue."""
    queue: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)

    async def client() -> None:
        while not queue.empty():
            job = queue.get_nowait()
            await job()

    await asyncio.gather(*(client() for _ in range(max(1, concurrency))))


# ---- model ----------------------------------------------------------------------------------------------


def load_classifier(cfg: BenchConfig, workdir: str) -> tuple[Any, str | None]:
    """The classifier through the service's own loader, and the folder it came from (None: packaged MiniLM)."""
    from models.backends.loading import LoadOptions

    opts = LoadOptions(device=cfg.device)
    if cfg.classifier == "embedding":
        from models.backends.embedding import EmbeddingClassifier

        return EmbeddingClassifier.load(None, opts), None
    from models.backends.cross_encoder import CrossEncoderClassifier
    from service.bench_models import build_model

    path = build_model(cfg.model, os.path.join(workdir, cfg.model), seed=cfg.seed, tokenizer=cfg.tokenizer)
    return CrossEncoderClassifier.load(path, opts=opts), path


def forget_embeddings(clf: Any) -> None:
    """The embedding classifier keeps recent text embeddings; every mode must start as cold as the others."""
    cache = getattr(clf, "_cache", None)
    if cache is not None:
        with clf._lock:
            cache.clear()


# ---- limit ------------------------------------------------------------------------------------------------


def measure_limit(
    clf: Any, workload: Sequence[Group], cfg: BenchConfig, on_gpu: bool
) -> tuple[ModeResult, list[dict[Pair, float]], dict[int, float]]:
    import random

    n = cfg.n
    index = [(gi, p) for gi in range(len(workload)) for p in all_pairs(n)]
    encoded = [clf.encode_pair(workload[gi].responses[i], workload[gi].responses[j]) for gi, (i, j) in index]
    order = sorted(range(len(encoded)), key=lambda k: encoded[k].cost)
    clf.run([encoded[order[-1]]])  # warm-up: lazy initialisation is not throughput

    sizes = [1, 8, 32, 64, 128, 256] if on_gpu else ([1, 8] if cfg.quick else [1, 4, 8, 16])
    probe_n = min(len(encoded), 512 if on_gpu else (8 if cfg.quick else 16))
    probe = sorted(random.Random(cfg.seed).sample(range(len(encoded)), probe_n), key=lambda k: encoded[k].cost)
    sizes = [bs for bs in sizes if bs <= probe_n] or [1]
    search: dict[int, float] = {}
    # Sizes take turns over several passes and each keeps its best rate: load from other processes then
    # slows every size alike instead of whichever happened to run during it.
    for _ in range(1 if cfg.quick else 3):
        for bs in sizes:
            forget_embeddings(clf)
            started = time.perf_counter()
            for s in range(0, probe_n, bs):
                clf.run([encoded[k] for k in probe[s : s + bs]])
            search[bs] = max(search.get(bs, 0.0), probe_n / (time.perf_counter() - started))
    best = max(search, key=lambda b: search[b])

    forget_embeddings(clf)
    scores: list[float] = [0.0] * len(encoded)
    started = time.perf_counter()
    for s in range(0, len(order), best):
        chunk = order[s : s + best]
        for k, score in zip(chunk, clf.run([encoded[k] for k in chunk]), strict=True):
            scores[k] = score
    wall = time.perf_counter() - started
    by_group: list[dict[Pair, float]] = [{} for _ in workload]
    for (gi, p), score in zip(index, scores, strict=True):
        by_group[gi][p] = score
    result = ModeResult(len(encoded) / wall, wall, [], extra={"batch_size": best})

    def again() -> float:
        """The same forward on an evenly spread sample, timed again after the other modes: on a shared machine
        the load changes during a run, and the higher of the two limits is the one the service must reach."""
        forget_embeddings(clf)
        sample = order[:: max(1, len(order) // (2048 if on_gpu else 128))]
        started = time.perf_counter()
        for s in range(0, len(sample), best):
            clf.run([encoded[k] for k in sample[s : s + best]])
        return len(sample) / (time.perf_counter() - started)

    result.extra["again"] = again
    return result, by_group, search


def measure_int8(
    clf: Any, workload: Sequence[Group], cfg: BenchConfig, scores: list[dict[Pair, float]], threshold: float, bs: int
) -> dict[str, Any]:
    """The int8 copy against fp32 on every pair of the first groups: forward speed and agreement."""
    n = cfg.n
    per_group = n * (n - 1) // 2
    take = max(1, min(len(workload), (16 if cfg.quick else 96) // per_group))
    q = clf.quantized_int8()
    index = [(gi, p) for gi in range(take) for p in all_pairs(n)]
    encoded = [clf.encode_pair(workload[gi].responses[i], workload[gi].responses[j]) for gi, (i, j) in index]
    order = sorted(range(len(encoded)), key=lambda k: encoded[k].cost)
    out: dict[str, float] = {}
    got: dict[str, list[float]] = {}
    for name, model in (("fp32", clf), ("int8", q)):
        model.run([encoded[order[-1]]])  # warm-up
        vals = [0.0] * len(encoded)
        started = time.perf_counter()
        for s in range(0, len(order), bs):
            chunk = order[s : s + bs]
            for k, v in zip(chunk, model.run([encoded[k] for k in chunk]), strict=True):
                vals[k] = v
        out[f"{name}_pairs_per_s"] = len(encoded) / (time.perf_counter() - started)
        got[name] = vals
    same = sum((a > threshold) == (b > threshold) for a, b in zip(got["fp32"], got["int8"], strict=True))
    q_partitions = []
    for gi in range(take):
        judged = {p: v > threshold for (g, p), v in zip(index, got["int8"], strict=True) if g == gi}
        q_partitions.append(partition(n, judged)[0])
    f_partitions = [partition(n, {p: v > threshold for p, v in scores[gi].items()})[0] for gi in range(take)]
    return {
        **out,
        "speedup": out["int8_pairs_per_s"] / out["fp32_pairs_per_s"],
        "pairs": len(encoded),
        "judgement_agreement": same / len(encoded),
        "partition_agreement": sum(a == b for a, b in zip(q_partitions, f_partitions, strict=True)) / take,
        "max_abs_score_diff": max(abs(a - b) for a, b in zip(got["fp32"], got["int8"], strict=True)),
        "fp32_score_spread": max(got["fp32"]) - min(got["fp32"]),
    }


# ---- reference: one pair per HTTP request, one pair per forward ---------------------------------------------


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
    from service.batching import Batcher
    from service.cache import MemoryLRU, TieredCache
    from service.scoring import Model, Scorer

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


async def run_async(cfg: BenchConfig) -> dict[str, Any]:
    from models.backends.loading import configure_cpu_threads

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    configure_cpu_threads(cfg.cpu_threads)
    import torch

    answers = load_answers(__import__("pathlib").Path(cfg.data))
    workload = make_workload(cfg.groups, cfg.n, cfg.collapse, answers, seed=cfg.seed)
    total_pairs = cfg.groups * cfg.n * (cfg.n - 1) // 2
    with tempfile.TemporaryDirectory(prefix="darling-bench-") as workdir:
        clf, path = load_classifier(cfg, workdir)
        on_gpu = str(clf.device).startswith("cuda")

        limit, scores, search = measure_limit(clf, workload, cfg, on_gpu)
        threshold, fit = resolve_threshold(cfg, clf, workload, scores)
        limit.partitions = [partition(cfg.n, {p: s > threshold for p, s in sc.items()})[0] for sc in scores]

        # The service is configured for this hardware: rows per forward = the best batch size found above.
        rows = cfg.batch_rows or int(limit.extra["batch_size"])
        width = max(e.cost for e in [clf.encode_pair(g.responses[0], g.responses[1]) for g in workload[:8]])
        settings = service_settings(cfg, path, rows, max(rows * width, 512) if rows > 1 else 1)

        int8: dict[str, Any] = {}
        if cfg.int8 and path is not None and not on_gpu:
            int8 = measure_int8(clf, workload, cfg, scores, threshold, int(limit.extra["batch_size"]))

        progress("limit", limit)
        reference = await measure_reference(clf, workload, cfg, threshold)
        progress("reference", reference)
        engine = await measure_engine(clf, workload, cfg, threshold, settings)
        progress("engine", engine)
        http, latency = await measure_http(workload, cfg, threshold, settings)
        progress("http", http)
        limit_first = limit.pairs_per_s
        limit_again = limit.extra.pop("again")()
        limit.pairs_per_s = max(limit_first, limit_again)
        print(f"bench: limit again: {limit_again:.2f} pairs/s", file=sys.stderr, flush=True)

    modes = {"limit": limit, "reference": reference, "engine": engine, "http": http}
    mismatched = {
        name: sum(a != b for a, b in zip(m.partitions, limit.partitions, strict=True)) for name, m in modes.items()
    }
    all_lat = http.latencies_ms
    return {
        "limit_pairs_per_s": limit.pairs_per_s,
        "reference_pairs_per_s": reference.pairs_per_s,
        "engine_pairs_per_s": engine.pairs_per_s,
        "http_pairs_per_s": http.pairs_per_s,
        "engine_over_limit": engine.pairs_per_s / limit.pairs_per_s,
        "http_over_limit": http.pairs_per_s / limit.pairs_per_s,
        "http_over_reference": http.pairs_per_s / reference.pairs_per_s,
        "judged_share": engine.extra["made"] / total_pairs,
        "padding_share": engine.extra["padding_share"],
        "p50_ms": percentile(all_lat, 50),
        "p99_ms": percentile(all_lat, 99),
        "peak_rss_mb": peak_rss_mb(),
        "identical_partitions": not any(mismatched.values()),
        # workload parameters
        "groups": cfg.groups,
        "n": cfg.n,
        "collapse": cfg.collapse,
        "pairs": total_pairs,
        "classifier": clf.id,
        "model": cfg.model if path else "all-MiniLM-L6-v2 (embedding)",
        "clients": cfg.clients,
        "groups_per_request": cfg.groups_per_request,
        "device": str(clf.device),
        "quick": cfg.quick,
        "seed": cfg.seed,
        "details": {
            "torch_threads": torch.get_num_threads(),
            "threshold": threshold,
            **fit,
            "limit_first_pairs_per_s": limit_first,
            "limit_again_pairs_per_s": limit_again,
            "batch_size_search_pairs_per_s": search,
            "service_max_batch_rows": settings.max_batch_rows,
            "service_max_batch_tokens": settings.max_batch_tokens,
            "partitions_differing_from_limit": mismatched,
            "mean_classes": statistics.mean(len(set(p)) for p in limit.partitions),
            "wall_s": {name: m.wall_s for name, m in modes.items()},
            "engine": {
                **engine.extra,
                "p50_ms": percentile(engine.latencies_ms, 50),
                "p99_ms": percentile(engine.latencies_ms, 99),
            },
            "http": {**http.extra},
            "reference_group_p50_ms": percentile(reference.latencies_ms, 50),
            "latency": latency,
            "int8": int8,
        },
    }


def run(cfg: BenchConfig) -> dict[str, Any]:
    return asyncio.run(run_async(cfg))


# ---- CLI ----------------------------------------------------------------------------------------------------


def _main(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    # Tokenizing whole pairs before truncation warns once per process; the presets truncate on purpose.
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    cfg = BenchConfig(
        groups=args.groups,
        n=args.n,
        collapse=args.collapse,
        model=args.model,
        classifier=args.classifier,
        clients=args.clients,
        groups_per_request=args.groups_per_request,
        device=args.device,
        cpu_threads=args.cpu_threads,
        batch_rows=args.batch_rows,
        threshold=args.threshold,
        latency_requests=args.latency_requests,
        seed=args.seed,
        quick=args.quick,
        data=args.data,
        tokenizer=args.tokenizer,
        int8=args.int8,
    )
    if args.quick:
        cfg.groups, cfg.n, cfg.clients = min(cfg.groups, 4), min(cfg.n, 5), min(cfg.clients, 4)
    result = run(cfg)
    text = json.dumps(result, indent=2 if args.pretty else None)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    return 0


def register(subparsers: Any) -> None:
    from service.bench_models import MODELS

    p = subparsers.add_parser(
        "bench",
        help="Throughput of the service against the bare model and the one-pair-per-request setup (JSON).",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--groups", "-B", type=int, default=64, help="Groups in the workload.")
    p.add_argument("--n", "-n", type=int, default=8, help="Rollouts per group.")
    p.add_argument("--collapse", type=float, default=0.5, help="Share of a group's rollouts in one planted class.")
    p.add_argument("--classifier", choices=["cross-encoder", "embedding"], default="cross-encoder")
    p.add_argument("--model", choices=MODELS, default="minilm", help="Cross-encoder built for the run.")
    p.add_argument("--clients", "-K", type=int, default=16, help="Concurrent clients (engine, http, reference).")
    p.add_argument("--groups-per-request", type=int, default=1)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N.")
    p.add_argument("--cpu-threads", type=int, default=None, help="Torch threads; default all cores.")
    p.add_argument("--batch-rows", type=int, default=None, help="Service rows per forward; default the best found.")
    p.add_argument("--threshold", default="auto", help="auto (fit to the planted collapse), model, or a number.")
    p.add_argument("--latency-requests", type=int, default=0, help="Requests for the half-load latency check.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="NoveltyBench pairs JSONL.")
    p.add_argument("--tokenizer", default=None, help="Tokenizer folder for the built model; default packaged MiniLM.")
    p.add_argument("--int8", action="store_true", help="Also measure the int8 quantized cross-encoder (CPU).")
    p.add_argument("--quick", action="store_true", help="A small workload (under a minute on 2 cores).")
    p.add_argument("--pretty", action="store_true", help="Indent the JSON.")
    p.add_argument("--output", default=None, help="Also write the JSON here.")
    p.set_defaults(func=_main)
