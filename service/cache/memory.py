"""The in-process tier: an LRU of floats bounded in bytes."""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict


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
        # tests/service/cache/test_cache.py holds the real footprint within a few percent of the bound).
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
