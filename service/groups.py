"""Group assembly: rollouts that arrive one by one, from several processes and replicas, become whole groups.

A call to `Assembler.submit` stores its rollouts under their group id, then waits until each of its groups
holds `group_size` distinct indices (or the deadline passes: 408 naming the missing indices). The call that
completes a group takes a claim on it, scores it once through the Scorer and publishes the result; every
waiting call then picks the rewards of its own rollouts out of that one result.

Where the groups live is a `GroupStore`: in process (MemoryGroupStore) or in Redis (RedisGroupStore) so that
a group's rollouts may land on different replicas. In Redis each group is one hash (a `meta` field plus one
field per index) with a TTL; one Lua script adds a rollout atomically and answers how many indices the group
holds; results are plain keys that other replicas poll.

Resubmitting a rollout that the group already holds, unchanged, is not an error: that is what a client retry
after a timeout looks like, and it gets the group's (possibly already computed) result.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

from darling_client.schemas import (
    AssembledReward,
    GroupReward,
    OpenRLHFRequest,
    OpenRLHFResponse,
    RewardOptions,
    RewardRequest,
    Rollout,
    RolloutGroup,
    RolloutsRequest,
    RolloutsResponse,
)

from service.errors import Conflict, DeadlineExceeded, NotReady, RequestError, ServiceOverloaded, TooLarge
from service.scoring import Scorer
from service.settings import Settings

log = logging.getLogger(__name__)


class GroupIncomplete(RequestError):
    status = 408
    code = "group_incomplete"


class _StoredError(RequestError):
    """A permanent scoring error of a group, replayed to every caller of that group (also on other replicas)."""

    def __init__(self, status: int, code: str, detail: str, fields: list[str]) -> None:
        super().__init__(detail, fields)
        self.status = status
        self.code = code


# Failures that say nothing about the group itself: never stored, so a retry scores the group again.
_TRANSIENT = (NotReady, ServiceOverloaded, DeadlineExceeded)


@dataclass(frozen=True)
class GroupMeta:
    """What every rollout of a group must agree on."""

    group_size: int
    prompt: str
    reference: str | None
    client_quality: bool
    options: str  # canonical JSON of the RewardOptions

    def dumps(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def loads(cls, raw: str) -> GroupMeta:
        return cls(**json.loads(raw))

    def differences(self, other: GroupMeta) -> list[str]:
        names = {"client_quality": "quality"}
        return [names.get(k, k) for k, v in asdict(self).items() if asdict(other)[k] != v]


@dataclass
class AddResult:
    status: Literal["ok", "conflict", "duplicate"]
    count: int = 0
    meta: str | None = None  # the group's meta when it conflicts


class GroupStore(Protocol):
    async def add(self, gid: str, meta: str, index: int, payload: str) -> AddResult:
        """Atomically: set the meta if new (else compare), store the payload at index if free (else compare);
        answer the number of distinct indices held."""
        ...

    async def held(self, gid: str) -> tuple[str | None, dict[int, str]]:
        """The meta and the payload per index."""
        ...

    async def claim(self, gid: str, lease_s: float) -> bool: ...

    async def release(self, gid: str) -> None: ...

    async def put_result(self, gid: str, result: str) -> None: ...

    async def get_result(self, gid: str) -> str | None: ...

    async def reserve(self, key: str, k: int) -> int:
        """Add k to a counter; answer its new value (slots end-k .. end-1 are the caller's)."""
        ...

    async def close(self) -> None: ...


class MemoryGroupStore:
    """One replica's groups, in a dict, with lazy expiry. All calls run on the event loop: no locks needed."""

    def __init__(self, ttl_s: float, max_open: int) -> None:
        self.ttl_s = ttl_s
        self.max_open = max_open
        self._groups: dict[str, tuple[str, dict[int, str]]] = {}
        self._expires: dict[str, float] = {}
        self._results: dict[str, tuple[str, float]] = {}
        self._claims: dict[str, float] = {}
        self._counters: dict[str, tuple[int, float]] = {}
        self._next_sweep = 0.0

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + min(self.ttl_s, 30.0)
        for gid in [g for g, t in self._expires.items() if t <= now]:
            self._groups.pop(gid, None)
            self._expires.pop(gid, None)
        for gid in [g for g, (_, t) in self._results.items() if t <= now]:
            self._results.pop(gid, None)
        for key in [k for k, (_, t) in self._counters.items() if t <= now]:
            self._counters.pop(key, None)
        for gid in [g for g, t in self._claims.items() if t <= now]:
            self._claims.pop(gid, None)

    async def add(self, gid: str, meta: str, index: int, payload: str) -> AddResult:
        now = time.monotonic()
        self._sweep(now)
        group = self._groups.get(gid)
        if group is None or self._expires.get(gid, 0.0) <= now:
            if len(self._groups) >= self.max_open:
                raise ServiceOverloaded(
                    f"this replica holds {len(self._groups)} partial groups, the limit (DARLING_GROUP_MAX_OPEN); "
                    "configure DARLING_REDIS_URL or retry shortly",
                    retry_after_s=5.0,
                )
            group = (meta, {})
            self._groups[gid] = group
        if group[0] != meta:
            return AddResult("conflict", len(group[1]), group[0])
        held = group[1].get(index)
        if held is not None and held != payload:
            return AddResult("duplicate", len(group[1]))
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

    async def release(self, gid: str) -> None:
        self._claims.pop(gid, None)

    async def put_result(self, gid: str, result: str) -> None:
        self._results[gid] = (result, time.monotonic() + self.ttl_s)

    async def get_result(self, gid: str) -> str | None:
        found = self._results.get(gid)
        return found[0] if found is not None and found[1] > time.monotonic() else None

    async def reserve(self, key: str, k: int) -> int:
        now = time.monotonic()
        value, expires = self._counters.get(key, (0, 0.0))
        value = (value if expires > now else 0) + k
        self._counters[key] = (value, now + self.ttl_s)
        return value

    async def close(self) -> None:
        return None


# KEYS[1] group hash; ARGV: meta, index field, payload, ttl. Returns {status, count, meta-or-empty}.
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
            "claim", lambda: self._redis.set(self._k("claim", gid), "1", nx=True, px=max(1, int(lease_s * 1000)))
        )
        return bool(ok)

    async def release(self, gid: str) -> None:
        await self._do("release", lambda: self._redis.delete(self._k("claim", gid)))

    async def put_result(self, gid: str, result: str) -> None:
        await self._do("publish", lambda: self._redis.set(self._k("result", gid), result, ex=self.ttl_s))

    async def get_result(self, gid: str) -> str | None:
        value: str | None = await self._do("poll", lambda: self._redis.get(self._k("result", gid)))
        return value

    async def reserve(self, key: str, k: int) -> int:
        name = self._k("seq", key)

        async def run() -> int:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incrby(name, k)
                pipe.expire(name, self.ttl_s)
                value, _ = await pipe.execute()
            return int(value)

        result: int = await self._do("reserve", run)
        return result

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._redis.aclose()


def make_store(settings: Settings) -> GroupStore:
    if settings.redis_url:
        return RedisGroupStore(
            settings.redis_url,
            settings.redis_namespace,
            settings.group_ttl_s,
            max(1.0, settings.redis_timeout_s),
        )
    return MemoryGroupStore(settings.group_ttl_s, settings.group_max_open)


def _payload(r: Rollout) -> str:
    return json.dumps({"response": r.response, "quality": r.quality}, separators=(",", ":"))


def _meta(r: Rollout, options: RewardOptions) -> GroupMeta:
    return GroupMeta(
        group_size=r.group_size,
        prompt=r.prompt,
        reference=r.reference,
        client_quality=r.quality is not None,
        options=options.model_dump_json(),
    )


def _missing(size: int, held: dict[int, str]) -> list[int]:
    return [i for i in range(size) if i not in held]


def _fmt(indices: list[int], limit: int = 32) -> str:
    shown = ", ".join(map(str, indices[:limit]))
    return f"[{shown}{', ...' if len(indices) > limit else ''}]"


class Assembler:
    """Collects rollouts into groups (see the module docstring) and answers each caller with its rewards."""

    def __init__(self, settings: Settings, store: GroupStore, scorer: Callable[[], Scorer]) -> None:
        self.settings = settings
        self.store = store
        self._scorer = scorer
        # Per group: the result future local callers await, and how many of them do.
        self._futures: dict[str, asyncio.Future[str]] = {}
        self._waiters: dict[str, int] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self.scored_groups = 0  # groups this replica scored (for tests and metrics)

    async def close(self) -> None:
        for t in list(self._watchers.values()):
            t.cancel()
        for t in list(self._watchers.values()):
            with contextlib.suppress(BaseException):
                await t
        await self.store.close()

    # ---- validation ----------------------------------------------------------------------------------------

    def _check(self, req: RolloutsRequest) -> None:
        s = self.settings
        if len(req.rollouts) > s.max_rollouts_per_request:
            raise TooLarge(
                f"{len(req.rollouts)} rollouts in one request; the limit is {s.max_rollouts_per_request} "
                "(DARLING_MAX_ROLLOUTS_PER_REQUEST): split the batch",
                ["rollouts"],
            )
        scorer = self._scorer()
        for i, r in enumerate(req.rollouts):
            if r.group_size > s.max_rollouts_per_group:
                raise TooLarge(
                    f"rollouts[{i}].group_size is {r.group_size}; the limit is {s.max_rollouts_per_group} "
                    "(DARLING_MAX_ROLLOUTS_PER_GROUP)",
                    [f"rollouts[{i}].group_size"],
                )
            for name, text in (("prompt", r.prompt), ("response", r.response), ("reference", r.reference or "")):
                if len(text) > s.max_chars_per_rollout:
                    raise TooLarge(
                        f"rollouts[{i}].{name} has {len(text)} characters; the limit is {s.max_chars_per_rollout} "
                        "(DARLING_MAX_CHARS_PER_ROLLOUT)",
                        [f"rollouts[{i}].{name}"],
                    )
            if r.quality is None:
                if r.reference is not None and scorer.verifier is None:
                    raise RequestError(
                        f"rollouts[{i}].reference was sent but no verifier is configured (DARLING_VERIFIER=true); "
                        "send `quality` instead",
                        [f"rollouts[{i}].reference"],
                    )
                if r.reference is None and scorer.reward_model is None:
                    raise RequestError(
                        f"rollouts[{i}] has no quality source: send `quality`, send a `reference` for the verifier, "
                        "or start the service with a reward model (DARLING_QUALITY_MODEL_PATH)",
                        [f"rollouts[{i}].quality"],
                    )

    # ---- the main call -------------------------------------------------------------------------------------

    async def submit(self, req: RolloutsRequest) -> RolloutsResponse:
        started = time.perf_counter()
        deadline = time.monotonic() + self.settings.group_timeout_s
        self._check(req)
        req = await self._assign_indices(req)
        first_pos: dict[str, int] = {}
        sizes: dict[str, int] = {}
        counts: dict[str, int] = {}
        indices = [r.index for r in req.rollouts if r.index is not None]
        assert len(indices) == len(req.rollouts)  # _assign_indices filled every gap
        for i, r in enumerate(req.rollouts):
            meta = _meta(r, req.options)
            added = await self.store.add(r.group_id, meta.dumps(), indices[i], _payload(r))
            if added.status == "conflict":
                assert added.meta is not None
                fields = GroupMeta.loads(added.meta).differences(meta) or ["group_id"]
                raise Conflict(
                    f"rollouts[{i}] conflicts with group {r.group_id!r} as first submitted: its "
                    f"{', '.join(fields)} differ{'s' if len(fields) == 1 else ''} (a group shares one prompt, "
                    "group_size, reference, options, and either all or none of its rollouts send quality)",
                    [f"rollouts[{i}].{f}" for f in fields],
                )
            if added.status == "duplicate":
                raise Conflict(
                    f"rollouts[{i}]: group {r.group_id!r} already holds a different rollout at index {r.index}",
                    [f"rollouts[{i}].index"],
                )
            first_pos.setdefault(r.group_id, i)
            sizes[r.group_id] = r.group_size
            counts[r.group_id] = max(counts.get(r.group_id, 0), added.count)
        gids = list(first_pos)
        for gid in gids:
            if counts[gid] >= sizes[gid]:
                await self._complete(gid)
        results = list(await asyncio.gather(*(self._wait(gid, deadline) for gid in gids)))
        for k, gid in enumerate(gids):
            if results[k] is None:
                # Complete but still being scored at the deadline: scoring gets its own grace period.
                meta_raw, held = await self.store.held(gid)
                if meta_raw is not None and not _missing(sizes[gid], held):
                    results[k] = await self._wait(gid, time.monotonic() + self.settings.group_timeout_s)
        late = [gid for gid, res in zip(gids, results, strict=True) if res is None]
        if late:
            parts, fields = [], []
            for gid in late:
                _, held = await self.store.held(gid)
                missing = _missing(sizes[gid], held)
                if not missing:  # completed at the last moment: let the caller retry, it will get the result
                    missing_txt = "none missing, but scoring did not finish in time"
                else:
                    missing_txt = f"missing indices {_fmt(missing)}"
                parts.append(f"group {gid!r} holds {len(held)} of {sizes[gid]} rollouts ({missing_txt})")
                fields.append(f"rollouts[{first_pos[gid]}].group_id")
            raise GroupIncomplete(
                f"after {self.settings.group_timeout_s:g} s (DARLING_GROUP_TIMEOUT_S): " + "; ".join(parts), fields
            )
        by_gid: dict[str, GroupReward] = {}
        for gid, raw in zip(gids, results, strict=True):
            assert raw is not None
            by_gid[gid] = self._decode(raw)
        out = []
        for r, index in zip(req.rollouts, indices, strict=True):
            rr = by_gid[r.group_id].rollouts[index]
            out.append(AssembledReward(group_id=r.group_id, **rr.model_dump()))
        return RolloutsResponse(
            rollouts=out, groups=[by_gid[g] for g in gids], elapsed_ms=(time.perf_counter() - started) * 1000.0
        )

    async def _assign_indices(self, req: RolloutsRequest) -> RolloutsRequest:
        """Rollouts without an index get the next free slots of their group, in arrival order (atomic across
        replicas through the store's counter)."""
        unindexed: dict[str, list[int]] = {}
        for i, r in enumerate(req.rollouts):
            if r.index is None:
                unindexed.setdefault(r.group_id, []).append(i)
        if not unindexed:
            return req
        rollouts = list(req.rollouts)
        for gid, members in unindexed.items():
            end = await self.store.reserve("auto:" + gid, len(members))
            for slot, i in zip(range(end - len(members), end), members, strict=True):
                size = rollouts[i].group_size
                if slot >= size:
                    raise Conflict(
                        f"rollouts[{i}]: group {gid!r} already received its {size} rollouts (group_size); "
                        "a rollout without an index takes the next free one",
                        [f"rollouts[{i}].index"],
                    )
                rollouts[i] = rollouts[i].model_copy(update={"index": slot})
        return RolloutsRequest(rollouts=rollouts, options=req.options)

    @staticmethod
    def _decode(raw: str) -> GroupReward:
        data = json.loads(raw)
        if "error" in data:
            e = data["error"]
            raise _StoredError(int(e["status"]), str(e["code"]), str(e["detail"]), list(e.get("fields", [])))
        return GroupReward.model_validate(data["ok"])

    # ---- completing a group --------------------------------------------------------------------------------

    def _future(self, gid: str) -> asyncio.Future[str]:
        fut = self._futures.get(gid)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._futures[gid] = fut
        return fut

    async def _complete(self, gid: str) -> None:
        """Score the group if nobody has, or is doing so. Transient failures release the claim so that a retry
        (or another waiter) scores again; they reach this replica's waiters at once."""
        if await self.store.get_result(gid) is not None:
            return
        # A complete group never changes (only identical resubmissions are accepted), so reading it before
        # the claim is safe, and an incomplete one is never claimed.
        meta_raw, held = await self.store.held(gid)
        if meta_raw is None:
            return
        meta = GroupMeta.loads(meta_raw)
        if _missing(meta.group_size, held):
            return
        if not await self.store.claim(gid, max(30.0, self.settings.group_timeout_s)):
            return
        try:
            items = [json.loads(held[i]) for i in range(meta.group_size)]
            group = RolloutGroup(
                group_id=gid,
                prompt=meta.prompt,
                responses=[it["response"] for it in items],
                quality=[float(it["quality"]) for it in items] if meta.client_quality else None,
                reference=meta.reference,
            )
            options = RewardOptions.model_validate_json(meta.options)
            try:
                resp = await self._scorer().score(RewardRequest(groups=[group], options=options))
                raw = json.dumps({"ok": resp.groups[0].model_dump(mode="json")})
            except _TRANSIENT as exc:
                fut = self._future(gid)
                if not fut.done():
                    fut.set_exception(exc)
                await self.store.release(gid)
                return
            except RequestError as exc:
                detail = f"group {gid!r} could not be scored: {exc.detail}"
                raw = json.dumps(
                    {"error": {"status": exc.status, "code": exc.code, "detail": detail, "fields": ["rollouts"]}}
                )
            await self.store.put_result(gid, raw)
            self.scored_groups += 1
            fut = self._future(gid)
            if not fut.done():
                fut.set_result(raw)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.store.release(gid)
            raise

    async def _watch(self, gid: str, fut: asyncio.Future[str]) -> None:
        """Poll the store for a result computed elsewhere; take over scoring if the claimer vanished."""
        delay = 0.005
        checked_claim = time.monotonic()
        while not fut.done():
            raw = await self.store.get_result(gid)
            if raw is not None:
                if not fut.done():
                    fut.set_result(raw)
                return
            if time.monotonic() - checked_claim > 1.0:
                checked_claim = time.monotonic()
                await self._complete(gid)  # a no-op unless complete, unscored and unclaimed
                continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)

    async def _wait(self, gid: str, deadline: float) -> str | None:
        fut = self._future(gid)
        self._waiters[gid] = self._waiters.get(gid, 0) + 1
        watcher = self._watchers.get(gid)
        if watcher is None or watcher.done():
            self._watchers[gid] = asyncio.create_task(self._watch(gid, fut))
        try:
            remaining = deadline - time.monotonic()
            if remaining <= 0 and not fut.done():
                return None
            try:
                return await asyncio.wait_for(asyncio.shield(fut), max(remaining, 0.0))
            except TimeoutError:
                return None
        finally:
            self._waiters[gid] -= 1
            if self._waiters[gid] == 0:
                del self._waiters[gid]
                task = self._watchers.pop(gid, None)
                if task is not None and not task.done():
                    task.cancel()
                if self._futures.get(gid) is fut:
                    del self._futures[gid]

    # ---- OpenRLHF: groups by prompt, n from the settings ---------------------------------------------------

    async def openrlhf(self, req: OpenRLHFRequest) -> OpenRLHFResponse:
        n = len(req.query)
        if req.prompts is None:
            raise RequestError(
                "prompts is missing: this route groups rollouts by prompt (OpenRLHF sends it since 0.5.x)",
                ["prompts"],
            )
        if len(req.prompts) != n:
            raise RequestError(f"prompts has {len(req.prompts)} items but query has {n}", ["prompts"])
        if req.labels is not None and len(req.labels) != n:
            raise RequestError(f"labels has {len(req.labels)} items but query has {n}", ["labels"])
        size = self.settings.openrlhf_group_size
        # Slots per prompt, reserved atomically (across replicas too): slot // n is the group, slot % n the index.
        positions: dict[str, list[int]] = {}
        for i, p in enumerate(req.prompts):
            positions.setdefault(p, []).append(i)
        rollouts: list[Rollout | None] = [None] * n
        for prompt, members in positions.items():
            key = "openrlhf:" + hashlib.blake2b(prompt.encode(), digest_size=16).hexdigest()
            end = await self.store.reserve(key, len(members))
            for slot, i in zip(range(end - len(members), end), members, strict=True):
                label = req.labels[i] if req.labels is not None else None
                rollouts[i] = Rollout(
                    group_id=f"{key}:{slot // size}",
                    group_size=size,
                    index=slot % size,
                    prompt=prompt,
                    response=openrlhf_response(req.query[i], prompt),
                    reference=label if label else None,
                )
        try:
            done = await self.submit(RolloutsRequest(rollouts=[r for r in rollouts if r is not None]))
        except RequestError as exc:
            # Name the fields of the request the trainer actually sent.
            exc.fields = [_ROLLOUT_FIELD.sub(r"query[\1]", f) for f in exc.fields]
            raise
        n_classes = {g.group_id: float(g.n_classes) for g in done.groups}
        return OpenRLHFResponse(
            rewards=[r.reward for r in done.rollouts],
            scores=[r.quality for r in done.rollouts],
            extra_logs={
                "darling_quality": [r.quality for r in done.rollouts],
                "darling_diversity": [r.diversity for r in done.rollouts],
                "darling_n_classes": [n_classes[r.group_id] for r in done.rollouts],
            },
        )


_ROLLOUT_FIELD = re.compile(r"^rollouts\[(\d+)\].*$")

# End-of-sequence markers OpenRLHF leaves in `query` (it decodes with skip_special_tokens=False).
_EOS_MARKERS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "</s>", "<|end_of_text|>", "<eos>")


def openrlhf_response(query: str, prompt: str) -> str:
    """The response part of OpenRLHF's query (= prompt + response), without trailing end-of-sequence markers."""
    text = query[len(prompt) :] if query.startswith(prompt) else query
    stripped = True
    while stripped:
        stripped = False
        text = text.rstrip()
        for marker in _EOS_MARKERS:
            if text.endswith(marker):
                text = text[: -len(marker)]
                stripped = True
    return text
