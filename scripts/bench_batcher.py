"""What choosing a batch costs the event loop, at queue depths of 1k, 10k and 100k items: the batcher's
windowed take against the previous algorithm (sort the whole queue by closeness to the oldest item, then
rebuild the list), which is kept here for this comparison only.

Each take is measured on a steady queue: the items taken are put back at its tail, so the depth stays the
same. No model runs; what is measured is the packing alone, the work that runs on the event loop once per
forward.

    .venv/bin/python scripts/bench_batcher.py --depths 1000 10000 100000 --seconds 1
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.backends.base import Encoded  # noqa: E402
from service.engine.batching import Batcher, _Item  # noqa: E402


class _NoModel:
    """Never run: the benchmark takes batches without dispatching them."""

    id = "none"
    fingerprint = "none"
    device = "cpu"

    def run(self, batch: list[Encoded]) -> list[float]:
        raise AssertionError("the batcher benchmark runs no forward")


def old_take(pending: list[_Item], max_rows: int, token_cap: int) -> tuple[list[_Item], list[_Item]]:
    """The previous `_take_batch`: (batch, the new pending list)."""
    anchor = pending[0]
    rest = pending[1:]
    by_closeness = sorted(range(len(rest)), key=lambda k: abs(rest[k].enc.cost - anchor.enc.cost))
    batch = [anchor]
    width = max(1, anchor.enc.cost)
    chosen: set[int] = set()
    for k in by_closeness:
        if len(batch) >= max_rows:
            break
        w = max(width, rest[k].enc.cost)
        if w * (len(batch) + 1) > token_cap:
            continue
        batch.append(rest[k])
        chosen.add(k)
        width = w
    remaining = [it for k, it in enumerate(rest) if k not in chosen]
    batch.sort(key=lambda it: it.enc.cost)
    return batch, remaining


def rate(take: Callable[[], None], seconds: float) -> float:
    take()  # warm
    n = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        take()
        n += 1
    return n / elapsed


async def measure(depth: int, seconds: float, rows: int, tokens: int, seed: int) -> tuple[float, float]:
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    costs = [rng.randint(8, 512) for _ in range(depth)]
    items = [_Item(Encoded(cost=c, payload=None), loop.create_future(), None) for c in costs]

    pending = list(items)

    def old() -> None:
        nonlocal pending
        batch, pending = old_take(pending, rows, tokens)
        pending.extend(batch)

    batcher = Batcher(_NoModel(), name="bench", max_batch_rows=rows, max_batch_tokens=tokens)
    batcher._enqueue([it.enc for it in items], None)

    def new() -> None:
        batch = batcher._take_batch()
        for it in batch:
            it.running = False
        batcher._pending.extend(batch)
        batcher._live += len(batch)
        batcher._pending_cost += sum(it.enc.cost for it in batch)

    return rate(old, seconds), rate(new, seconds)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depths", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    ap.add_argument("--seconds", type=float, default=1.0, help="measuring time per depth and algorithm")
    ap.add_argument("--rows", type=int, default=64, help="DARLING_MAX_BATCH_ROWS")
    ap.add_argument("--tokens", type=int, default=16_384, help="DARLING_MAX_BATCH_TOKENS")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    window = Batcher(_NoModel(), name="w", max_batch_rows=args.rows).window
    print(f"batch takes per second (rows {args.rows}, token budget {args.tokens}, window {window})")
    print(f"{'depth':>8} {'old (sort all)':>16} {'new (window)':>14} {'speed-up':>9}")
    for depth in args.depths:
        old, new = await measure(depth, args.seconds, args.rows, args.tokens, args.seed)
        print(f"{depth:>8} {old:>16.1f} {new:>14.1f} {new / old:>8.1f}x")


if __name__ == "__main__":
    asyncio.run(main())
