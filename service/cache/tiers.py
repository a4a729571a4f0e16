"""Content-addressed caches of pair judgements and quality scores.

Keys are hashes of (model fingerprint, inputs), values are floats (a probability, so that another threshold
still hits, or a quality score). The in-process tier is an LRU bounded in bytes; a Redis tier
(service/cache/redis_tier.py), when configured, sits behind it and is shared by replicas.

A request talks to the remote tier through a `RequestCache`: one read up front for every key the request may
need (all of its groups' pairs, not just the first planner round) and one write at the end, so a request
costs one or two Redis round trips however many planner rounds its groups take.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from service.cache.memory import MemoryLRU


@dataclass
class TierCounts:
    hits: int = 0
    misses: int = 0


@dataclass
class Lookup:
    values: dict[str, float]
    memory: TierCounts = field(default_factory=TierCounts)
    redis: TierCounts = field(default_factory=TierCounts)


class RemoteTier(Protocol):
    async def get_many(self, keys: list[str]) -> dict[str, float]: ...

    async def put_many(self, items: dict[str, float]) -> None: ...

    async def close(self) -> None: ...


class TieredCache:
    def __init__(self, memory: MemoryLRU, remote: RemoteTier | None = None, prefetch_max_keys: int = 20_000) -> None:
        self.memory = memory
        self.remote = remote
        self.prefetch_max_keys = prefetch_max_keys

    def request(self) -> RequestCache:
        return RequestCache(self)

    async def get_many(self, keys: list[str]) -> Lookup:
        """A one-off lookup: a request view that lives for this call only."""
        return await self.request().get_many(keys)

    async def put_many(self, items: dict[str, float]) -> None:
        view = self.request()
        await view.put_many(items)
        await view.flush()

    async def close(self) -> None:
        if self.remote is not None:
            await self.remote.close()


class RequestCache:
    """One request's view of the tiers: remote reads batched up front, remote writes batched at the end.

    `get_many` counts hits and misses per tier for the keys actually asked, when they are asked; what
    `prefetch` learnt only saves the round trip. Keys the prefetch did not cover (it is capped) fall back
    to one remote read per call.
    """

    def __init__(self, cache: TieredCache) -> None:
        self.cache = cache
        self.memory = cache.memory
        self.remote = cache.remote
        self._known: dict[str, float | None] = {}  # the remote tier's answer per key: a value, or absent
        self._writes: dict[str, float] = {}

    async def prefetch(self, keys: Iterable[str]) -> None:
        if self.remote is None:
            return
        wanted: list[str] = []
        seen: set[str] = set()
        for key in keys:
            if key in seen:
                continue
            seen.add(key)
            wanted.append(key)
            if len(wanted) >= self.cache.prefetch_max_keys:
                break
        in_memory = self.memory.get_many(wanted)
        ask = [k for k in wanted if k not in in_memory]
        if ask:
            found = await self.remote.get_many(ask)
            self._known.update((k, found.get(k)) for k in ask)

    async def get_many(self, keys: list[str]) -> Lookup:
        unique = list(dict.fromkeys(keys))
        values = self.memory.get_many(unique)
        result = Lookup(values=values, memory=TierCounts(len(values), len(unique) - len(values)))
        missing = [k for k in unique if k not in values]
        if missing and self.remote is not None:
            unknown = [k for k in missing if k not in self._known]
            if unknown:
                fetched = await self.remote.get_many(unknown)
                self._known.update((k, fetched.get(k)) for k in unknown)
            remote = {k: v for k in missing if (v := self._known.get(k)) is not None}
            result.redis = TierCounts(len(remote), len(missing) - len(remote))
            if remote:
                self.memory.put_many(remote)
                values.update(remote)
        return result

    async def put_many(self, items: dict[str, float]) -> None:
        if not items:
            return
        self.memory.put_many(items)
        if self.remote is not None:
            self._writes.update(items)

    async def flush(self) -> None:
        """Send the request's new entries to the remote tier in one write."""
        writes, self._writes = self._writes, {}
        if writes and self.remote is not None:
            await self.remote.put_many(writes)
