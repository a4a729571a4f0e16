"""`gather` that leaves nothing running behind it, for the SDK and (since the SDK must not import the server,
but the server may import the SDK) for the service too.

`asyncio.gather` lets the other awaitables run on when one fails: a chunk of a client call would keep retrying
after its call has failed, and a request that has already answered 503 would keep feeding the batchers for
groups nobody will read. Here the first failure (or the caller's cancellation) cancels the rest, and they are
awaited, so their queued work is released at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


async def gather_or_cancel(*aws: Awaitable[T]) -> list[T]:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def bounded(limit: int, jobs: Iterable[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run `jobs` at most `limit` at a time, results in job order, with gather_or_cancel's failure rule."""
    sem = asyncio.Semaphore(limit)

    async def run(job: Callable[[], Awaitable[T]]) -> T:
        async with sem:
            return await job()

    return await gather_or_cancel(*(run(j) for j in jobs))
