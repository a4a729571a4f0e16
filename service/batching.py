"""One batcher per model: a queue shared by every caller, packed into padded forwards off the event loop.

Items from all requests (and every round of every group in flight) join one queue. When the model is free,
the batcher takes the oldest waiting item and fills the batch with the items closest to it in length, up to
a budget of padded tokens (longest row x rows) and a row cap. Anchoring on the oldest item bounds how long
any item waits; choosing neighbours by length keeps padding small. A partial batch waits at most
`max_wait_ms` for company. The forward runs in a dedicated thread, so the event loop keeps serving.
Identical keys in flight are computed once and shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from models.backends.base import Backend, Encoded

log = logging.getLogger(__name__)


class Overloaded(Exception):
    """The queue is full; the caller should retry later."""

    def __init__(self, model: str, retry_after_s: float) -> None:
        super().__init__(f"the {model} queue is full; retry after {retry_after_s:.0f}s")
        self.retry_after_s = retry_after_s


@dataclass
class BatchStats:
    """Running totals the benchmark and metrics read."""

    batches: int = 0
    rows: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    forward_s: float = 0.0
    splits: int = 0

    @property
    def padding_share(self) -> float:
        return 1.0 - self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0


@dataclass
class _Item:
    enc: Encoded
    future: asyncio.Future[float]
    key: str | None
    enqueued: float = field(default_factory=time.perf_counter)


BatchObserver = Callable[[str, int, int, int, float, float], None]


def is_oom(exc: BaseException) -> bool:
    return "out of memory" in str(exc).lower()


class Batcher:
    def __init__(
        self,
        backend: Backend,
        *,
        name: str,
        max_batch_tokens: int = 16_384,
        max_batch_rows: int = 64,
        max_wait_ms: float = 2.0,
        max_queue_depth: int = 100_000,
        observer: BatchObserver | None = None,
    ) -> None:
        self.backend = backend
        self.name = name
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_rows = max_batch_rows
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue_depth = max_queue_depth
        self.stats = BatchStats()
        self._observer = observer
        self._pending: list[_Item] = []
        self._inflight: dict[str, asyncio.Future[float]] = {}
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"batcher-{name}")
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._busy = False
        self.forward_s_ewma = 0.05  # estimate of one forward's time, for Retry-After

    @property
    def depth(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher-{self.name}")

    async def close(self) -> None:
        """Finish what is queued, then stop the worker."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None
        self._executor.shutdown(wait=True)

    def retry_after_s(self) -> float:
        batches_ahead = self.depth / max(1, self.max_batch_rows)
        return max(1.0, batches_ahead * self.forward_s_ewma)

    async def submit(self, items: Sequence[Encoded], keys: Sequence[str | None] | None = None) -> list[float]:
        """Scores for `items`, in their order. Items with equal non-None keys are computed once."""
        if self._closing:
            raise Overloaded(self.name, 1.0)
        if self.depth + len(items) > self.max_queue_depth:
            raise Overloaded(self.name, self.retry_after_s())
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[float]] = []
        for i, enc in enumerate(items):
            key = keys[i] if keys is not None else None
            if key is not None and key in self._inflight and not self._inflight[key].cancelled():
                futures.append(self._inflight[key])
                continue
            fut: asyncio.Future[float] = loop.create_future()
            if key is not None:
                self._inflight[key] = fut
                fut.add_done_callback(functools.partial(self._forget, key))
            self._pending.append(_Item(enc, fut, key))
            futures.append(fut)
        self._wakeup.set()
        # shield: one caller giving up must not cancel a future another caller shares.
        return list(await asyncio.gather(*(asyncio.shield(f) for f in futures)))

    def _forget(self, key: str, fut: asyncio.Future[float]) -> None:
        if self._inflight.get(key) is fut:
            del self._inflight[key]

    def _take_batch(self) -> list[_Item]:
        live = [it for it in self._pending if not it.future.done()]
        if not live:
            self._pending = []
            return []
        anchor = live[0]
        by_closeness = sorted(live[1:], key=lambda it: abs(it.enc.cost - anchor.enc.cost))
        batch = [anchor]
        width = max(1, anchor.enc.cost)
        for it in by_closeness:
            if len(batch) >= self.max_batch_rows:
                break
            w = max(width, it.enc.cost)
            if w * (len(batch) + 1) > self.max_batch_tokens:
                continue
            batch.append(it)
            width = w
        chosen = {id(it) for it in batch}
        self._pending = [it for it in live if id(it) not in chosen]
        batch.sort(key=lambda it: it.enc.cost)
        return batch

    def _ready_to_dispatch(self) -> bool:
        if not self._pending:
            return False
        if self._closing or len(self._pending) >= self.max_batch_rows:
            return True
        if sum(it.enc.cost for it in self._pending) >= self.max_batch_tokens:
            return True
        return time.perf_counter() - self._pending[0].enqueued >= self.max_wait_s

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if not self._ready_to_dispatch():
                wait = self.max_wait_s - (time.perf_counter() - self._pending[0].enqueued)
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout=max(wait, 0.0))
                continue
            batch = self._take_batch()
            if not batch:
                continue
            started = time.perf_counter()
            try:
                scores = await loop.run_in_executor(self._executor, self._run_split, [it.enc for it in batch])
            except Exception as exc:  # a model error fails this batch's callers, not the batcher
                log.exception("model %s failed on a batch of %d", self.name, len(batch))
                for it in batch:
                    if not it.future.done():
                        it.future.set_exception(exc)
                continue
            elapsed = time.perf_counter() - started
            self.forward_s_ewma = 0.8 * self.forward_s_ewma + 0.2 * elapsed
            width = max(it.enc.cost for it in batch)
            real = sum(it.enc.cost for it in batch)
            self.stats.batches += 1
            self.stats.rows += len(batch)
            self.stats.real_tokens += real
            self.stats.padded_tokens += width * len(batch)
            self.stats.forward_s += elapsed
            if self._observer is not None:
                queue_wait = started - min(it.enqueued for it in batch)
                self._observer(self.name, len(batch), real, width * len(batch), elapsed, queue_wait)
            for it, score in zip(batch, scores, strict=True):
                if not it.future.done():
                    it.future.set_result(score)

    def _run_split(self, items: list[Encoded]) -> list[float]:
        """Run a batch; on out-of-memory, free the cache and run the two halves instead."""
        try:
            return self.backend.run(items)
        except RuntimeError as exc:
            if not is_oom(exc) or len(items) == 1:
                raise
        self.stats.splits += 1
        _empty_device_cache()
        half = len(items) // 2
        return self._run_split(items[:half]) + self._run_split(items[half:])


def _empty_device_cache() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - torch is a server dependency
        pass
