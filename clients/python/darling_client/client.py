"""RewardClient (sync) and AsyncRewardClient: typed calls, retries with backoff, chunked batches.

Retries: 429 and 503, a request that was never sent (connection refused, connect timeout), and a lost response
(read timeout, a connection closed mid-response) only for idempotent calls: scoring (deterministic and cached)
and a submission whose every rollout names its index (the server takes the same rollout at the same index
again). Exponential backoff with jitter, never sooner than the server's Retry-After. Every attempt of one
logical call sends the same X-Request-ID, so the server's logs tie the retries together. Other errors surface
at once as darling_client.errors exceptions.
Chunking: a large list of groups is split into requests of at most `max_rollouts_per_request` rollouts,
at most `max_in_flight` of them at a time; the results come back in the caller's order.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from darling_client.errors import RETRYABLE, APIError, ConnectionFailed, RequestNotSent
from darling_client.schemas import (
    GroupReward,
    OpenRLHFRequest,
    OpenRLHFResponse,
    RewardOptions,
    RewardRequest,
    RewardResponse,
    Rollout,
    RolloutGroup,
    RolloutsRequest,
    RolloutsResponse,
    RunStats,
)
from darling_client.tasks import bounded
from darling_client.transport import HttpTransport, Operation, Transport

T = TypeVar("T")
GroupLike = RolloutGroup | Mapping[str, Any]
RolloutLike = Rollout | Mapping[str, Any]
OptionsLike = RewardOptions | Mapping[str, Any] | None


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5
    backoff_base_s: float = 0.25
    backoff_max_s: float = 20.0
    # Upper bound on one honoured Retry-After, so a misconfigured server cannot park a trainer for hours.
    retry_after_max_s: float = 120.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds before retry number `attempt` (0-based): 'equal jitter' exponential backoff, and never
        less than Retry-After (plus a little jitter so that many clients told the same do not return at once)."""
        cap = min(self.backoff_max_s, self.backoff_base_s * (2.0**attempt))
        backoff = cap / 2 + rng.uniform(0, cap / 2)
        if retry_after is not None:
            honoured = min(retry_after, self.retry_after_max_s)
            return max(backoff, honoured + rng.uniform(0, max(0.05, 0.1 * honoured)))
        return backoff


def _group(g: GroupLike) -> RolloutGroup:
    return g if isinstance(g, RolloutGroup) else RolloutGroup.model_validate(g)


def _rollout(r: RolloutLike) -> Rollout:
    return r if isinstance(r, Rollout) else Rollout.model_validate(r)


def _options(o: OptionsLike, run: str | None = None, step: int | None = None) -> RewardOptions:
    """The options, with `run` / `step` (when given) in place of the options' own."""
    opts = RewardOptions() if o is None else o if isinstance(o, RewardOptions) else RewardOptions.model_validate(o)
    if run is None and step is None:
        return opts
    labels = {k: v for k, v in (("run", run), ("step", step)) if v is not None}
    # Validated again, so a bad label fails here as it would on the server.
    return RewardOptions.model_validate({**opts.model_dump(exclude_unset=True), **labels})


def chunk_groups(groups: Sequence[RolloutGroup], max_rollouts: int) -> list[list[RolloutGroup]]:
    """Consecutive runs of groups with at most `max_rollouts` rollouts each (a bigger group goes alone)."""
    chunks: list[list[RolloutGroup]] = []
    size = 0
    for g in groups:
        n = len(g.responses)
        if chunks and size + n <= max_rollouts:
            chunks[-1].append(g)
            size += n
        else:
            chunks.append([g])
            size = n
    return chunks


def chunk_rollouts(rollouts: Sequence[Rollout], max_rollouts: int) -> list[list[int]]:
    """Positions of `rollouts` split into chunks that never separate two rollouts of one group: a chunk
    waits for its own groups only, so bounded concurrency cannot deadlock."""
    by_group: dict[str, list[int]] = {}
    for i, r in enumerate(rollouts):
        by_group.setdefault(r.group_id, []).append(i)
    chunks: list[list[int]] = []
    size = 0
    for members in by_group.values():
        if chunks and size + len(members) <= max_rollouts:
            chunks[-1].extend(members)
            size += len(members)
        else:
            chunks.append(list(members))
            size = len(members)
    return chunks


class AsyncRewardClient:
    """Async client. Use as `async with AsyncRewardClient(url) as c: await c.score(groups)`."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        rollouts_timeout: float = 600.0,
        connect_timeout: float = 5.0,
        retry: RetryPolicy | None = None,
        max_rollouts_per_request: int = 1024,
        max_in_flight: int = 4,
        transport: Transport | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
        seed: int | None = None,
    ) -> None:
        """`timeout`: per attempt for scoring calls; `rollouts_timeout`: per attempt for group-assembly calls,
        which wait for the rest of the group (keep it above the server's DARLING_GROUP_TIMEOUT_S).
        `transport` replaces HTTP entirely; `http_transport` keeps HTTP but swaps httpx's transport (tests).
        A `grpc://host:port` base_url speaks gRPC (needs the `grpc` extra) with the same methods and results."""
        if max_rollouts_per_request < 1 or max_in_flight < 1:
            raise ValueError("max_rollouts_per_request and max_in_flight must be >= 1")
        self.timeout = timeout
        self.rollouts_timeout = rollouts_timeout
        self.retry = retry or RetryPolicy()
        self.max_rollouts_per_request = max_rollouts_per_request
        self.max_in_flight = max_in_flight
        if transport is None and base_url.startswith("grpc://"):
            # Imported here: grpcio is the optional `grpc` extra, never needed for HTTP.
            from darling_client.grpc_transport import GrpcTransport

            transport = GrpcTransport(base_url, api_key=api_key)
        self.transport: Transport = transport or HttpTransport(
            base_url, api_key=api_key, connect_timeout=connect_timeout, transport=http_transport
        )
        self._rng = random.Random(seed)
        self.retries = 0  # how many retries this client has made, for logs and tests

    async def __aenter__(self) -> AsyncRewardClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def _call(
        self, op: Operation, body: dict[str, Any] | None, timeout: float, *, idempotent: bool = True
    ) -> dict[str, Any]:
        """`idempotent`: whether a repeat of a call the server may already have done is harmless."""
        request_id = uuid.uuid4().hex
        attempt = 0
        while True:
            try:
                return await self.transport.call(op, body, timeout, request_id)
            except RETRYABLE as exc:
                # A transport failure other than "never sent" may have reached the server.
                lost = isinstance(exc, ConnectionFailed) and not isinstance(exc, RequestNotSent)
                if attempt >= self.retry.max_retries or (lost and not idempotent):
                    raise
                retry_after = exc.retry_after if isinstance(exc, APIError) else None
                await asyncio.sleep(self.retry.delay(attempt, retry_after, self._rng))
                attempt += 1
                self.retries += 1

    # ---- scoring whole groups ------------------------------------------------------------------------------

    async def score_request(self, request: RewardRequest) -> RewardResponse:
        """One POST /v1/rewards, exactly as given (no chunking)."""
        data = await self._call("rewards", request.model_dump(mode="json", exclude_none=True), self.timeout)
        return RewardResponse.model_validate(data)

    async def score(
        self,
        groups: Sequence[GroupLike],
        options: OptionsLike = None,
        *,
        run: str | None = None,
        step: int | None = None,
    ) -> RewardResponse:
        """Score groups (RolloutGroup or dicts); big batches go out in bounded parallel chunks. `run` / `step`
        label the groups for the service's per-run figures (`run_stats`)."""
        gs = [_group(g) for g in groups]
        if not gs:
            raise ValueError("score() needs at least one group")
        opts = _options(options, run, step)
        started = time.perf_counter()
        chunks = chunk_groups(gs, self.max_rollouts_per_request)
        parts = await bounded(
            self.max_in_flight,
            [lambda c=c: self.score_request(RewardRequest(groups=c, options=opts)) for c in chunks],  # type: ignore[misc]
        )
        out: list[GroupReward] = [g for p in parts for g in p.groups]
        return RewardResponse(groups=out, elapsed_ms=(time.perf_counter() - started) * 1000.0)

    async def score_stream(
        self,
        groups: Sequence[GroupLike],
        options: OptionsLike = None,
        *,
        run: str | None = None,
        step: int | None = None,
    ) -> AsyncIterator[tuple[int, GroupReward]]:
        """(index in `groups`, its result) as results arrive, on either transport: one group at a time over gRPC
        (server streaming), one chunk at a time over HTTP. A stream is not retried: what was seen stays seen."""
        gs = [_group(g) for g in groups]
        if not gs:
            raise ValueError("score_stream() needs at least one group")
        opts = _options(options, run, step)
        stream = getattr(self.transport, "score_stream", None)
        if stream is not None:
            async for item in stream(gs, opts, timeout=self.timeout):
                yield item
            return
        chunks = chunk_groups(gs, self.max_rollouts_per_request)
        offsets = [sum(len(c) for c in chunks[:k]) for k in range(len(chunks))]
        gate = asyncio.Semaphore(self.max_in_flight)

        async def one(k: int) -> tuple[int, RewardResponse]:
            async with gate:
                return k, await self.score_request(RewardRequest(groups=chunks[k], options=opts))

        tasks = [asyncio.ensure_future(one(k)) for k in range(len(chunks))]
        try:
            for next_done in asyncio.as_completed(tasks):
                k, resp = await next_done
                for j, group in enumerate(resp.groups):
                    yield offsets[k] + j, group
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def rewards(
        self,
        groups: Sequence[GroupLike],
        options: OptionsLike = None,
        *,
        run: str | None = None,
        step: int | None = None,
    ) -> list[list[float]]:
        """Just the reward lists, one per group."""
        return [g.rewards for g in (await self.score(groups, options, run=run, step=step)).groups]

    # ---- group assembly ------------------------------------------------------------------------------------

    async def submit_request(self, request: RolloutsRequest) -> RolloutsResponse:
        # Without an index, the server gives a resent rollout its first attempt's slot only once that attempt
        # stopped waiting; a resend after a lost response may race a wait still running and count twice.
        indexed = all(r.index is not None for r in request.rollouts)
        data = await self._call(
            "rollouts", request.model_dump(mode="json", exclude_none=True), self.rollouts_timeout, idempotent=indexed
        )
        return RolloutsResponse.model_validate(data)

    async def submit(
        self,
        rollouts: Sequence[RolloutLike],
        options: OptionsLike = None,
        *,
        run: str | None = None,
        step: int | None = None,
    ) -> RolloutsResponse:
        """Submit rollouts of groups whose other rollouts may come from elsewhere; returns when every group
        touched is complete and scored. Results are in the order given."""
        rs = [_rollout(r) for r in rollouts]
        if not rs:
            raise ValueError("submit() needs at least one rollout")
        opts = _options(options, run, step)
        started = time.perf_counter()
        chunks = chunk_rollouts(rs, self.max_rollouts_per_request)
        parts = await bounded(
            self.max_in_flight,
            [
                lambda c=c: self.submit_request(RolloutsRequest(rollouts=[rs[i] for i in c], options=opts))  # type: ignore[misc]
                for c in chunks
            ],
        )
        placed: list[Any] = [None] * len(rs)
        groups: dict[str, GroupReward] = {}
        for chunk, part in zip(chunks, parts, strict=True):
            for pos, res in zip(chunk, part.rollouts, strict=True):
                placed[pos] = res
            for g in part.groups:
                groups.setdefault(g.group_id or "", g)
        order = list(dict.fromkeys(r.group_id for r in rs))
        return RolloutsResponse(
            rollouts=placed,
            groups=[groups[k] for k in order if k in groups],
            elapsed_ms=(time.perf_counter() - started) * 1000.0,
        )

    # ---- OpenRLHF protocol and health ----------------------------------------------------------------------

    async def openrlhf(
        self,
        query: Sequence[str],
        prompts: Sequence[str],
        labels: Sequence[str | None] | None = None,
        run: str | None = None,
    ) -> OpenRLHFResponse:
        req = OpenRLHFRequest(
            query=list(query), prompts=list(prompts), labels=None if labels is None else list(labels), run=run
        )
        # OpenRLHF's queries go through group assembly without indices: not safe to send twice.
        data = await self._call(
            "openrlhf", req.model_dump(mode="json", exclude_none=True), self.rollouts_timeout, idempotent=False
        )
        return OpenRLHFResponse.model_validate(data)

    async def run_stats(self, run: str) -> RunStats:
        """A run's rolling diversity figures (GET /v1/runs/{run}/stats; HTTP only). NotFound if the service has
        none for it."""
        data = await self._call("run_stats", {"run": run}, self.timeout)
        return RunStats.model_validate(data)

    async def ready(self) -> bool:
        """True when /readyz answers 200 (a 503 'loading' is False, not an exception)."""
        try:
            await self.transport.call("readyz", None, self.timeout)
        except APIError as exc:
            if exc.status == 503:
                return False
            raise
        return True

    async def wait_ready(self, timeout: float = 300.0, poll_s: float = 1.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if await self.ready():
                    return
            except RETRYABLE:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the reward service was not ready within {timeout} s")
            await asyncio.sleep(poll_s)


class RewardClient:
    """Blocking client with the same methods as AsyncRewardClient. It drives an AsyncRewardClient on a
    private event-loop thread, so it is safe to call from any thread, including one that runs an event loop
    of its own (as trainers' reward hooks often do)."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="darling-client", daemon=True)
        self._thread.start()
        self._closed = False

        async def make() -> AsyncRewardClient:
            return AsyncRewardClient(base_url, **kwargs)

        self.aio: AsyncRewardClient = self._run(make())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine that uses `self.aio` on this client's loop and wait for it (for adapters)."""
        return self._run(coro)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("this RewardClient is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._run(self.aio.aclose())
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    @property
    def retries(self) -> int:
        return self.aio.retries

    def score_request(self, request: RewardRequest) -> RewardResponse:
        return self._run(self.aio.score_request(request))

    def score(
        self,
        groups: Sequence[GroupLike],
        options: OptionsLike = None,
        *,
        run: str | None = None,
        step: int | None = None,
    ) -> RewardResponse:
        return self._run(self.aio.score(groups, options, run=run, step=step))

    def rewards(
        self,
        groups: Sequence[GroupLike],
        options: OptionsLike = None,
        *,
        run: str | None = None,
        step: int | None = None,
    ) -> list[list[float]]:
        return self._run(self.aio.rewards(groups, options, run=run, step=step))

    def submit_request(self, request: RolloutsRequest) -> RolloutsResponse:
        return self._run(self.aio.submit_request(request))

    def submit(
        self,
        rollouts: Sequence[RolloutLike],
        options: OptionsLike = None,
        *,
        run: str | None = None,
        step: int | None = None,
    ) -> RolloutsResponse:
        return self._run(self.aio.submit(rollouts, options, run=run, step=step))

    def openrlhf(
        self,
        query: Sequence[str],
        prompts: Sequence[str],
        labels: Sequence[str | None] | None = None,
        run: str | None = None,
    ) -> OpenRLHFResponse:
        return self._run(self.aio.openrlhf(query, prompts, labels, run))

    def run_stats(self, run: str) -> RunStats:
        return self._run(self.aio.run_stats(run))

    def ready(self) -> bool:
        return self._run(self.aio.ready())

    def wait_ready(self, timeout: float = 300.0, poll_s: float = 1.0) -> None:
        self._run(self.aio.wait_ready(timeout, poll_s))
