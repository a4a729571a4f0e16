"""`gather` that leaves nothing running behind it.

`asyncio.gather` lets the other awaitables run on when one fails, so a request that has already answered
503 would keep feeding the batchers for groups nobody will read. Here the first failure (or the caller's
cancellation) cancels the rest, and they are awaited, so their queued model work is released at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
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
