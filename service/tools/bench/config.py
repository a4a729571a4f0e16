"""What a benchmark run is configured with and what a mode reports; small shared helpers."""

from __future__ import annotations

import asyncio
import logging
import resource
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from service.tools.bench.workload import (
    DEFAULT_DATA,
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
