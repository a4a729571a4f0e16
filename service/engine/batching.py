"""One batcher per model: a queue shared by every caller, packed into padded forwards off the event loop.

Items from all requests (and every round of every group in flight) join one queue, in arrival order. When the
model is free, the batcher takes the oldest waiting item and fills the batch with the items closest to it in
length among the oldest `window` items, up to a budget of padded tokens (longest row x rows) and a row cap.
Anchoring on the oldest item bounds how long any item waits; choosing neighbours by length keeps padding
small; the window keeps the event loop's cost per forward O(window log window) however deep the queue
(100,000 items under overload), where sorting the whole queue would cost O(N log N) per forward. A partial
batch waits at most `max_wait_ms` for company, and only while the model is idle: a busy model's queue is its
company.
The forward runs in a dedicated thread, so the event loop keeps serving.

Identical keys in flight are computed once and shared. Every queued item counts its waiters; a caller that
is cancelled (deadline, disconnect, a sibling group's failure) releases its items, and an item nobody waits
for any more leaves the queue before it costs a forward. An item already in a running forward is finished
and its result dropped. A released item is only marked (the queue is a deque; removing from its middle would
cost O(N)): takes skip it, and the queue is compacted when such items outnumber the live ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from models.backends.base import Backend, Encoded

log = logging.getLogger(__name__)


class Overloaded(Exception):
    """The queue is full; the caller should retry later."""

    def __init__(self, model: str, retry_after_s: float) -> None:
        super().__init__(f"the {model} queue is full; retry after {max(1, round(retry_after_s))}s")
        self.retry_after_s = retry_after_s


@dataclass
class BatchStats:
    """Running totals the benchmark and metrics read."""

    batches: int = 0
    rows: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    forward_s: float = 0.0
    splits: int = 0  # out-of-memory splits
    submitted: int = 0  # items callers asked for
    deduped: int = 0  # items answered by a computation already in flight
    cancelled: int = 0  # items dropped from the queue because nobody waited for them any more
    rejected: int = 0  # items refused because the queue was full
    peak_depth: int = 0
    examined: int = 0  # queue items looked at while choosing batches: the event loop's cost of packing

    @property
    def padding_share(self) -> float:
        return 1.0 - self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0

    @property
    def mean_rows(self) -> float:
        return self.rows / self.batches if self.batches else 0.0


@dataclass(eq=False)
class _Item:
    enc: Encoded
    future: asyncio.Future[float]
    key: str | None
    waiters: int = 1
    running: bool = False
    enqueued: float = field(default_factory=time.perf_counter)


BatchObserver = Callable[[str, int, int, int, float, float], None]


def is_oom(exc: BaseException) -> bool:
    return "out of memory" in str(exc).lower()


# After this many clean forwards, a token budget lowered by an out-of-memory error is allowed back up.
_OOM_RECOVERY_BATCHES = 64


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
        window: int | None = None,
    ) -> None:
        """`window`: how many of the oldest queued items a batch is chosen from (default: 4 batches' rows,
        at least 256), enough neighbours by length to keep padding small, few enough to stay cheap."""
        self.backend = backend
        self.name = name
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_rows = max_batch_rows
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue_depth = max_queue_depth
        self.stats = BatchStats()
        self._observer = observer
        self._pending: deque[_Item] = deque()  # arrival order; may hold released items, see _release
        self._live = 0  # queued items somebody still waits for
        self._released = 0  # released items still in the deque
        self._pending_cost = 0
        self._inflight: dict[str, _Item] = {}
        self._running: list[_Item] = []
        self.window = window if window is not None else max(256, 4 * max_batch_rows)
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"batcher-{name}")
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._token_cap = max_batch_tokens  # lowered after an out-of-memory error, restored after clean runs
        self._clean_batches = 0
        self.forward_s_ewma = 0.05  # estimate of one forward's time, for Retry-After

    @property
    def depth(self) -> int:
        """Items waiting for a forward (not counting the one running)."""
        return self._live

    @property
    def inflight_keys(self) -> int:
        return len(self._inflight)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher-{self.name}")
            self._task.add_done_callback(self._on_loop_exit)

    async def close(self) -> None:
        """Finish what is queued, then stop the worker."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._executor.shutdown(wait=True)

    def retry_after_s(self) -> float:
        batches_ahead = self.depth / max(1, self.max_batch_rows)
        return max(1.0, batches_ahead * self.forward_s_ewma)

    # ---- callers ---------------------------------------------------------------------------------------

    async def submit(self, items: Sequence[Encoded], keys: Sequence[str | None] | None = None) -> list[float]:
        """Scores for `items`, in their order. Items with equal non-None keys are computed once."""
        if not items:
            return []
        if keys is not None and len(keys) != len(items):
            raise ValueError(f"{len(items)} items but {len(keys)} keys")
        if self._task is None and not self._closing:
            self.start()
        if self._closing or self._task is None or self._task.done():
            raise Overloaded(self.name, 1.0)
        self.admit(len(items))
        mine = self._enqueue(items, keys)
        self._wakeup.set()
        unique = list({id(it): it for it in mine}.values())
        try:
            # asyncio.wait, unlike gather, never cancels what it waits on: shared futures outlive this caller.
            await asyncio.wait([it.future for it in unique])
        except BaseException:
            self._release(mine)
            raise
        # Read every exception so none is logged as "never retrieved"; raise the first.
        errors = [e for e in (it.future.exception() for it in unique) if e is not None]
        if errors:
            raise errors[0]
        return [it.future.result() for it in mine]

    def admits(self, n: int) -> bool:
        """Whether `n` more items fit. An empty queue admits any number, so one oversized request is served
        rather than refused forever."""
        return not self.depth or self.depth + n <= self.max_queue_depth

    def admit(self, n: int) -> None:
        """Raise Overloaded unless `n` more items fit (callers check before spending work on a request)."""
        if not self.admits(n):
            self.stats.rejected += n
            raise Overloaded(self.name, self.retry_after_s())

    def _enqueue(self, items: Sequence[Encoded], keys: Sequence[str | None] | None) -> list[_Item]:
        loop = asyncio.get_running_loop()
        mine: list[_Item] = []
        for i, enc in enumerate(items):
            key = keys[i] if keys is not None else None
            shared = self._inflight.get(key) if key is not None else None
            if shared is not None and not shared.future.done():
                shared.waiters += 1
                self.stats.deduped += 1
                mine.append(shared)
                continue
            item = _Item(enc, loop.create_future(), key)
            if key is not None:
                self._inflight[key] = item
                item.future.add_done_callback(functools.partial(self._forget, key, item))
            self._pending.append(item)
            self._live += 1
            self._pending_cost += enc.cost
            mine.append(item)
        self.stats.submitted += len(items)
        self.stats.peak_depth = max(self.stats.peak_depth, self._live)
        return mine

    def _release(self, mine: list[_Item]) -> None:
        """A caller gave up: drop the queued items nobody else waits for."""
        for it in mine:
            it.waiters -= 1
            if it.waiters <= 0 and not it.future.done() and not it.running:
                it.future.cancel()  # a cancelled future is what takes skip
                self.stats.cancelled += 1
                self._live -= 1
                self._released += 1
                self._pending_cost -= it.enc.cost
        if not self._live:
            self._pending.clear()
            self._released = 0
        elif self._released > max(self.window, self._live):
            # Amortized O(1) per release: this pass removes more items than the live ones it keeps.
            self._pending = deque(it for it in self._pending if not it.future.done())
            self._released = 0

    def _forget(self, key: str, item: _Item, _fut: asyncio.Future[float]) -> None:
        if self._inflight.get(key) is item:
            del self._inflight[key]

    # ---- the worker --------------------------------------------------------------------------------------

    def _head(self) -> _Item:
        """The oldest live item (there must be one); released items in front of it leave the deque."""
        while self._pending[0].future.done():
            self._pending.popleft()
            self._released -= 1
        return self._pending[0]

    def _take_batch(self) -> list[_Item]:
        # The oldest `window` live items leave the deque; those not chosen go back in front, in their order.
        window: list[_Item] = []
        while self._pending and len(window) < self.window:
            it = self._pending.popleft()
            self.stats.examined += 1
            if it.future.done():
                self._released -= 1
            else:
                window.append(it)
        anchor, rest = window[0], window[1:]
        by_closeness = sorted(range(len(rest)), key=lambda k: abs(rest[k].enc.cost - anchor.enc.cost))
        batch = [anchor]
        width = max(1, anchor.enc.cost)
        chosen: set[int] = set()
        for k in by_closeness:
            if len(batch) >= self.max_batch_rows:
                break
            w = max(width, rest[k].enc.cost)
            if w * (len(batch) + 1) > self._token_cap:
                continue
            batch.append(rest[k])
            chosen.add(k)
            width = w
        self._pending.extendleft(reversed([it for k, it in enumerate(rest) if k not in chosen]))
        self._live -= len(batch)
        self._pending_cost -= sum(it.enc.cost for it in batch)
        batch.sort(key=lambda it: it.enc.cost)
        for it in batch:
            it.running = True
        return batch

    def _ready_to_dispatch(self) -> bool:
        if not self._live:
            return False
        if self._closing or self._live >= self.max_batch_rows or self._pending_cost >= self._token_cap:
            return True
        return time.perf_counter() - self._head().enqueued >= self.max_wait_s

    async def _loop(self) -> None:
        while True:
            if not self._live:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if not self._ready_to_dispatch():
                wait = self.max_wait_s - (time.perf_counter() - self._head().enqueued)
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout=max(wait, 0.0))
                continue
            await self._dispatch(self._take_batch())

    async def _dispatch(self, batch: list[_Item]) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        self._running = batch
        try:
            scores = await loop.run_in_executor(self._executor, self._run_split, [it.enc for it in batch])
            if len(scores) != len(batch):
                raise RuntimeError(f"model {self.name} returned {len(scores)} scores for {len(batch)} items")
        except Exception as exc:  # a model error fails this batch's callers, not the batcher
            log.exception("model %s failed on a batch of %d", self.name, len(batch))
            self._running = []
            for it in batch:
                self._settle(it, exc=exc)
            return
        # Left set when the worker itself is cancelled mid-forward, so _on_loop_exit can settle these items.
        self._running = []
        elapsed = time.perf_counter() - started
        self.forward_s_ewma = 0.8 * self.forward_s_ewma + 0.2 * elapsed
        width = max(it.enc.cost for it in batch)
        real = sum(it.enc.cost for it in batch)
        self.stats.batches += 1
        self.stats.rows += len(batch)
        self.stats.real_tokens += real
        self.stats.padded_tokens += width * len(batch)
        self.stats.forward_s += elapsed
        self._clean_batches += 1
        if self._token_cap < self.max_batch_tokens and self._clean_batches >= _OOM_RECOVERY_BATCHES:
            self._token_cap = min(self.max_batch_tokens, self._token_cap * 2)
            self._clean_batches = 0
        for it, score in zip(batch, scores, strict=True):
            self._settle(it, result=score)
        if self._observer is not None:
            queue_wait = started - min(it.enqueued for it in batch)
            try:
                self._observer(self.name, len(batch), real, width * len(batch), elapsed, queue_wait)
            except Exception:  # metrics must never stop the model
                log.exception("batch observer failed")

    @staticmethod
    def _settle(it: _Item, result: float | None = None, exc: BaseException | None = None) -> None:
        it.running = False
        if it.future.done():
            return
        if it.waiters <= 0:
            it.future.cancel()  # nobody to read it: an exception set here would be logged as never retrieved
        elif exc is not None:
            it.future.set_exception(exc)
        else:
            assert result is not None
            it.future.set_result(result)

    def _on_loop_exit(self, task: asyncio.Task[None]) -> None:
        """If the worker ever dies, nobody may be left waiting on it."""
        exc = None if task.cancelled() else task.exception()
        if task.cancelled() or exc is not None:
            if exc is not None:
                log.error("batcher %s stopped: %r", self.name, exc)
            failure = exc if exc is not None else Overloaded(self.name, 1.0)
            for it in [*self._running, *self._pending, *self._inflight.values()]:
                self._settle(it, exc=failure)
            self._pending.clear()
            self._live = self._released = 0
            self._pending_cost = 0

    def _run_split(self, items: list[Encoded]) -> list[float]:
        """Run a batch; on out-of-memory, free the cache, lower the token budget and run the two halves."""
        try:
            return self.backend.run(items)
        except RuntimeError as exc:
            if not is_oom(exc) or len(items) == 1:
                raise
        self.stats.splits += 1
        padded = max(e.cost for e in items) * len(items)
        # Later batches start below the size that failed (read by the event-loop thread; an int swap is atomic).
        self._token_cap = max(1, min(self._token_cap, padded // 2))
        self._clean_batches = 0
        log.warning("model %s out of memory on %d rows (%d padded tokens); splitting", self.name, len(items), padded)
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
