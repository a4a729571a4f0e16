"""Groups held in one replica's memory."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

from service.assembly.store import AddResult, Assigned
from service.errors import ServiceOverloaded


def _digest(payload: str) -> str:
    # What a finished group keeps of a rollout: enough to tell a retry from a different rollout, not its text.
    return "#" + hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()


@dataclass
class _Sequence:
    """A slot sequence: the next free slot, each name's (slot, when given), until when each slot is live."""

    counter: int = 0
    names: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    live: dict[int, float] = field(default_factory=dict)
    expires: float = 0.0


def _reusable(
    earlier: tuple[int, float], counter: int, now: float, window: int | None, max_age_s: float | None
) -> bool:
    slot, given = earlier
    if window is not None and slot // window < counter // window - 1:
        return False
    return max_age_s is None or now - given <= max_age_s


class MemoryGroupStore:
    """One replica's groups, in a dict, with lazy expiry. All calls run on the event loop: no locks needed.

    `max_open` bounds the partial groups only: a group with a result keeps a digest per rollout (for retries)
    until its TTL, and does not count."""

    def __init__(self, ttl_s: float, max_open: int) -> None:
        self.ttl_s = ttl_s
        self.max_open = max_open
        self._groups: dict[str, tuple[str, dict[int, str]]] = {}
        self._expires: dict[str, float] = {}
        self._finished: set[str] = set()
        self._results: dict[str, tuple[str, float]] = {}
        self._claims: dict[str, float] = {}
        self._counters: dict[str, tuple[int, float]] = {}
        self._slots: dict[str, _Sequence] = {}
        self._next_sweep = 0.0

    @property
    def open_groups(self) -> int:
        return len(self._groups) - len(self._finished)

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + min(self.ttl_s, 30.0)
        for gid in [g for g, t in self._expires.items() if t <= now]:
            self._groups.pop(gid, None)
            self._expires.pop(gid, None)
            self._finished.discard(gid)
        for gid in [g for g, (_, t) in self._results.items() if t <= now]:
            self._results.pop(gid, None)
        for key in [k for k, (_, t) in self._counters.items() if t <= now]:
            self._counters.pop(key, None)
        for key in [k for k, seq in self._slots.items() if seq.expires <= now]:
            self._slots.pop(key, None)
        for gid in [g for g, t in self._claims.items() if t <= now]:
            self._claims.pop(gid, None)

    async def add(self, gid: str, meta: str, index: int, payload: str) -> AddResult:
        now = time.monotonic()
        self._sweep(now)
        group = self._groups.get(gid)
        if group is None or self._expires.get(gid, 0.0) <= now:
            if self.open_groups >= self.max_open:
                raise ServiceOverloaded(
                    f"this replica holds {self.open_groups} partial groups, the limit (DARLING_GROUP_MAX_OPEN); "
                    "configure DARLING_REDIS_URL or retry shortly",
                    retry_after_s=5.0,
                )
            self._finished.discard(gid)
            group = (meta, {})
            self._groups[gid] = group
        if group[0] != meta:
            return AddResult("conflict", len(group[1]), group[0])
        held = group[1].get(index)
        if held is not None and held != payload and held != _digest(payload):
            return AddResult("duplicate", len(group[1]))
        if held is None:
            group[1][index] = payload
        self._expires[gid] = now + self.ttl_s
        return AddResult("ok", len(group[1]))

    async def held(self, gid: str) -> tuple[str | None, dict[int, str]]:
        group = self._groups.get(gid)
        return (group[0], dict(group[1])) if group is not None else (None, {})

    async def claim(self, gid: str, lease_s: float) -> bool:
        now = time.monotonic()
        if self._claims.get(gid, 0.0) > now:
            return False
        self._claims[gid] = now + lease_s
        return True

    async def renew(self, gid: str, lease_s: float) -> None:
        now = time.monotonic()
        if self._claims.get(gid, 0.0) > now:
            self._claims[gid] = now + lease_s

    async def release(self, gid: str) -> None:
        self._claims.pop(gid, None)

    async def put_result(self, gid: str, result: str) -> None:
        self._results[gid] = (result, time.monotonic() + self.ttl_s)
        group = self._groups.get(gid)
        if group is not None:
            # Scored: the texts are no longer needed, and the group no longer counts against max_open.
            for index, payload in group[1].items():
                group[1][index] = _digest(payload) if not payload.startswith("#") else payload
            self._finished.add(gid)

    async def get_result(self, gid: str) -> str | None:
        found = self._results.get(gid)
        return found[0] if found is not None and found[1] > time.monotonic() else None

    async def assign(
        self, key: str, names: list[str], window: int | None, max_age_s: float | None, live_s: float, force: list[bool]
    ) -> list[Assigned]:
        now = time.monotonic()
        self._sweep(now)
        seq = self._slots.get(key)
        if seq is None or seq.expires <= now:
            seq = _Sequence()
            self._slots[key] = seq
        out = []
        for name, forced in zip(names, force, strict=True):
            kept = [c for c in seq.names.get(name, []) if _reusable(c, seq.counter, now, window, max_age_s)]
            free = [slot for slot, _ in kept if seq.live.get(slot, 0.0) <= now]
            live = {slot: seq.live[slot] for slot, _ in kept if seq.live.get(slot, 0.0) > now}
            if free:
                chosen = free[0]
            elif not live or forced:
                chosen = seq.counter
                kept.append((chosen, now))
                seq.counter += 1
            else:
                seq.names[name] = kept
                out.append(Assigned(-1, live))
                continue
            seq.names[name] = kept
            seq.live[chosen] = now + live_s
            out.append(Assigned(chosen))
        seq.expires = now + self.ttl_s
        return out

    async def hold(self, key: str, slots: list[int], live_s: float) -> None:
        seq = self._slots.get(key)
        if seq is not None:
            for slot in slots:
                seq.live[slot] = time.monotonic() + live_s

    async def let_go(self, key: str, slots: list[int]) -> None:
        seq = self._slots.get(key)
        if seq is not None:
            for slot in slots:
                seq.live.pop(slot, None)

    async def close(self) -> None:
        return None
