"""Content-addressed caches of pair judgements and quality scores.

Keys are hashes of (model fingerprint, inputs), values are floats (a probability, so that another threshold
still hits, or a quality score). The in-process tier is an LRU bounded in bytes; a Redis tier
(service/redis_tier.py), when configured, sits behind it and is shared by replicas.

A request talks to the remote tier through a `RequestCache`: one read up front for every key the request may
need (all of its groups' pairs, not just the first planner round) and one write at the end, so a request
costs one or two Redis round trips however many planner rounds its groups take.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol


def text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def pair_key_hashed(fingerprint: str, ha: str, hb: str) -> str:
    """Unordered: (a, b) and (b, a) are the same judgement. Takes `text_hash`es, so a group hashes each text once."""
    if hb < ha:
        ha, hb = hb, ha
    return f"j:{fingerprint}:{ha}:{hb}"


def pair_key(fingerprint: str, a: str, b: str) -> str:
    return pair_key_hashed(fingerprint, text_hash(a), text_hash(b))


def quality_key(fingerprint: str, prompt: str, response: str, reference: str | None) -> str:
    ref = text_hash(reference) if reference is not None else "-"
    return f"q:{fingerprint}:{text_hash(prompt)}:{text_hash(response)}:{ref}"


def truncation_key(fingerprint: str, text_hash_: str) -> str:
    """Whether the classifier cuts this text (1.0) or reads all of it (0.0): a tokenization saved per hit."""
    return f"t:{fingerprint}:{text_hash_}"


@dataclass
class TierCounts:
    hits: int = 0
    misses: int = 0


@dataclass
class Lookup:
    values: dict[str, float]
    memory: TierCounts = field(default_factory=TierCounts)
    redis: TierCounts = field(default_factory=TierCounts)


class MemoryLRU:
    """A thread-safe LRU whose bound is the approximate bytes its keys and values take."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._data: OrderedDict[str, float] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def entry_bytes(key: str) -> int:
        # key object + float object + the ordered dict's slot, link and index share (measured with tracemalloc:
        # tests/service/test_cache.py holds the real footprint within a few percent of the bound).
        return sys.getsizeof(key) + sys.getsizeof(0.0) + 112

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._data)

    def get_many(self, keys: list[str]) -> dict[str, float]:
        found: dict[str, float] = {}
        with self._lock:
            for k in keys:
                v = self._data.get(k)
                if v is not None:
                    self._data.move_to_end(k)
                    found[k] = v
        return found

    def put_many(self, items: dict[str, float]) -> None:
        if self.max_bytes <= 0:
            return
        with self._lock:
            for k, v in items.items():
                if k in self._data:
                    self._data.move_to_end(k)
                    self._data[k] = v
                    continue
                self._data[k] = v
                self._bytes += self.entry_bytes(k)
            while self._bytes > self.max_bytes and self._data:
                old, _ = self._data.popitem(last=False)
                self._bytes -= self.entry_bytes(old)


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
