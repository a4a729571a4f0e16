"""Groups held in Redis, shared by every replica that points at the same Redis and namespace."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from service.assembly.store import AddResult, Assigned
from service.errors import NotReady

_ADD_LUA = """
local meta = redis.call('HGET', KEYS[1], 'meta')
if meta and meta ~= ARGV[1] then
  return {'conflict', redis.call('HLEN', KEYS[1]) - 1, meta}
end
if not meta then redis.call('HSET', KEYS[1], 'meta', ARGV[1]) end
local held = redis.call('HGET', KEYS[1], ARGV[2])
if held and held ~= ARGV[3] then
  return {'duplicate', redis.call('HLEN', KEYS[1]) - 1, ''}
end
if not held then redis.call('HSET', KEYS[1], ARGV[2], ARGV[3]) end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return {'ok', redis.call('HLEN', KEYS[1]) - 1, ''}
"""

# KEYS[1]: the sequence's hash: '#' = next free slot; 'k:<name>' = "<slot>:<ms given>,..." (the name's slots);
# 'l:<slot>' = ms until which the slot is live. ARGV: ttl, window (0 = none), max age ms (0 = none), now ms,
# live ms, then (name, force) pairs. Answers per name {slot} or {-1, live slot, until ms, ...}.
_ASSIGN_LUA = """
local window = tonumber(ARGV[2])
local max_age = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
local live_ms = tonumber(ARGV[5])
local out = {}
for i = 6, #ARGV, 2 do
  local field = 'k:' .. ARGV[i]
  local forced = ARGV[i + 1] == '1'
  local counter = tonumber(redis.call('HGET', KEYS[1], '#') or '0')
  local kept, live = {}, {}
  local chosen = nil
  local held = redis.call('HGET', KEYS[1], field)
  if held then
    for entry in string.gmatch(held, '[^,]+') do
      local sep = string.find(entry, ':', 1, true)
      local slot = tonumber(string.sub(entry, 1, sep - 1))
      local given = tonumber(string.sub(entry, sep + 1))
      local old = (window > 0 and math.floor(slot / window) < math.floor(counter / window) - 1)
        or (max_age > 0 and now - given > max_age)
      if not old then
        kept[#kept + 1] = entry
        local untl = tonumber(redis.call('HGET', KEYS[1], 'l:' .. slot) or '0')
        if untl <= now then
          if chosen == nil then chosen = slot end
        else
          live[#live + 1] = slot
          live[#live + 1] = untl
        end
      end
    end
  end
  if chosen == nil and (#live == 0 or forced) then
    chosen = counter
    kept[#kept + 1] = counter .. ':' .. now
    redis.call('HSET', KEYS[1], '#', counter + 1)
  end
  if #kept > 0 then redis.call('HSET', KEYS[1], field, table.concat(kept, ',')) end
  if chosen ~= nil then
    redis.call('HSET', KEYS[1], 'l:' .. chosen, now + live_ms)
    out[#out + 1] = {chosen}
  else
    local res = {-1}
    for _, v in ipairs(live) do res[#res + 1] = v end
    out[#out + 1] = res
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return out
"""


def _now_ms() -> int:
    return round(time.time() * 1000)


class RedisGroupStore:
    """Groups shared by every replica that points at the same Redis and namespace."""

    def __init__(self, url: str, namespace: str, ttl_s: int, timeout_s: float) -> None:
        import redis.asyncio as aioredis

        self._redis: Any = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, decode_responses=True
        )
        self.ns = namespace
        self.ttl_s = ttl_s
        self._add = self._redis.register_script(_ADD_LUA)
        self._assign = self._redis.register_script(_ASSIGN_LUA)
        # Written into claims: which replica process is scoring a group (for operators, and the tests).
        self.owner = f"{socket.gethostname()}:{os.getpid()}"

    def _k(self, kind: str, name: str) -> str:
        return f"{self.ns}:{kind}:{name}"

    async def _do(self, what: str, fn: Callable[[], Any]) -> Any:
        import redis

        try:
            return await fn()
        except redis.RedisError as exc:
            raise NotReady(
                f"the group store (Redis) failed during {what}: {type(exc).__name__}: {exc}", retry_after_s=2.0
            ) from exc

    async def add(self, gid: str, meta: str, index: int, payload: str) -> AddResult:
        key = self._k("group", gid)
        status, count, old = await self._do(
            "add", lambda: self._add(keys=[key], args=[meta, f"i:{index}", payload, self.ttl_s])
        )
        return AddResult(status, int(count), old or None)

    async def held(self, gid: str) -> tuple[str | None, dict[int, str]]:
        raw: dict[str, str] = await self._do("read", lambda: self._redis.hgetall(self._k("group", gid)))
        meta = raw.pop("meta", None)
        return meta, {int(k[2:]): v for k, v in raw.items() if k.startswith("i:")}

    async def claim(self, gid: str, lease_s: float) -> bool:
        ok = await self._do(
            "claim", lambda: self._redis.set(self._k("claim", gid), self.owner, nx=True, px=max(1, int(lease_s * 1000)))
        )
        return bool(ok)

    async def renew(self, gid: str, lease_s: float) -> None:
        await self._do("renew", lambda: self._redis.pexpire(self._k("claim", gid), max(1, int(lease_s * 1000))))

    async def release(self, gid: str) -> None:
        await self._do("release", lambda: self._redis.delete(self._k("claim", gid)))

    async def put_result(self, gid: str, result: str) -> None:
        await self._do("publish", lambda: self._redis.set(self._k("result", gid), result, ex=self.ttl_s))

    async def get_result(self, gid: str) -> str | None:
        value: str | None = await self._do("poll", lambda: self._redis.get(self._k("result", gid)))
        return value

    async def assign(
        self, key: str, names: list[str], window: int | None, max_age_s: float | None, live_s: float, force: list[bool]
    ) -> list[Assigned]:
        name = self._k("slots", key)
        # Wall-clock milliseconds: every replica's clock, which NTP keeps far closer than any lease or max age.
        args: list[str | int] = [self.ttl_s, window or 0, round((max_age_s or 0) * 1000), _now_ms()]
        args.append(max(1, round(live_s * 1000)))
        for n, f in zip(names, force, strict=True):
            args += [n, int(f)]
        answers = await self._do("assign", lambda: self._assign(keys=[name], args=args))
        out = []
        for a in answers:
            if int(a[0]) >= 0:
                out.append(Assigned(int(a[0])))
            else:
                out.append(Assigned(-1, {int(a[k]): int(a[k + 1]) / 1000 for k in range(1, len(a), 2)}))
        return out

    async def hold(self, key: str, slots: list[int], live_s: float) -> None:
        until = _now_ms() + max(1, round(live_s * 1000))
        mapping = {f"l:{s}": until for s in slots}
        await self._do("hold", lambda: self._redis.hset(self._k("slots", key), mapping=mapping))

    async def let_go(self, key: str, slots: list[int]) -> None:
        await self._do("let go", lambda: self._redis.hdel(self._k("slots", key), *(f"l:{s}" for s in slots)))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._redis.aclose()
