"""Content-addressed caches of pair judgements and quality scores.

Keys are hashes of (model fingerprint, inputs), values are floats (a probability, so that another threshold
still hits, or a quality score). The in-process tier is an LRU bounded in bytes; a Redis tier, when
configured, sits behind it and is shared by replicas.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol


def text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def pair_key(fingerprint: str, a: str, b: str) -> str:
    """Unordered: (a, b) and (b, a) are the same judgement."""
    ha, hb = sorted((text_hash(a), text_hash(b)))
    return f"j:{fingerprint}:{ha}:{hb}"


def quality_key(fingerprint: str, prompt: str, response: str, reference: str | None) -> str:
    ref = text_hash(reference) if reference is not None else "-"
    return f"q:{fingerprint}:{text_hash(prompt)}:{text_hash(response)}:{ref}"


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
        # key object + float object + the dict slot; close enough to bound real memory use.
        return sys.getsizeof(key) + sys.getsizeof(0.0) + 64

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
    def __init__(self, memory: MemoryLRU, remote: RemoteTier | None = None) -> None:
        self.memory = memory
        self.remote = remote

    async def get_many(self, keys: list[str]) -> Lookup:
        unique = list(dict.fromkeys(keys))
        values = self.memory.get_many(unique)
        result = Lookup(values=values, memory=TierCounts(len(values), len(unique) - len(values)))
        missing = [k for k in unique if k not in values]
        if missing and self.remote is not None:
            remote = await self.remote.get_many(missing)
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
            await self.remote.put_many(items)

    async def close(self) -> None:
        if self.remote is not None:
            await self.remote.close()
