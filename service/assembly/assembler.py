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
after a timeout looks like, and it gets the group's (possibly already computed) result. A rollout without an
index is identified by its content (response and quality, and its position among identical ones in the same
request), and its slot is live while its caller waits: a retry takes the slot of a first attempt whose caller
is gone, so a failed attempt never leaves a hole, while an identical new rollout (its twin's slot keeps being
renewed) gets a slot of its own (`assign_slots`).

While the app drains (SIGTERM), waiting calls keep waiting for their groups (which may complete here or on
another replica) until the drain deadline, then answer a retryable 503 (NotReady); what they stored stays in the
store, so their retry on another replica finds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable

from darling_client.schemas import (
    AssembledReward,
    GroupReward,
    RewardOptions,
    RewardRequest,
    Rollout,
    RolloutGroup,
    RolloutsRequest,
    RolloutsResponse,
)

from service.assembly.store import GroupMeta, GroupStore
from service.engine.concurrency import gather_or_cancel
from service.engine.scoring import Scorer
from service.errors import Conflict, DeadlineExceeded, NotReady, RequestError, ServiceOverloaded, TooLarge
from service.ops import metrics
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


def content_keys(texts: list[str]) -> list[str]:
    """One idempotency key per text: its hash, and its position among identical texts of the same request (so
    identical rollouts sent together count separately, and their retry, sent the same way, maps back)."""
    seen: dict[str, int] = {}
    out = []
    for text in texts:
        h = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
        seen[h] = seen.get(h, -1) + 1
        out.append(f"{h}:{seen[h]}")
    return out


def _missing(size: int, held: dict[int, str]) -> list[int]:
    return [i for i in range(size) if i not in held]


def _fmt(indices: list[int], limit: int = 32) -> str:
    shown = ", ".join(map(str, indices[:limit]))
    return f"[{shown}{', ...' if len(indices) > limit else ''}]"


class Assembler:
    """Collects rollouts into groups (see the module docstring) and answers each caller with its rewards."""

    def __init__(
        self,
        settings: Settings,
        store: GroupStore,
        scorer: Callable[[], Scorer],
        drain_deadline: Callable[[], float | None] = lambda: None,
    ) -> None:
        """`drain_deadline`: the time.monotonic() by which a draining app wants every waiting call answered
        (None while it serves)."""
        self.settings = settings
        self.store = store
        self._scorer = scorer
        self._drain_deadline = drain_deadline
        # Per group: the result future local callers await, and how many of them do.
        self._futures: dict[str, asyncio.Future[str]] = {}
        self._waiters: dict[str, int] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._drained: asyncio.Future[None] | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._first_seen: dict[str, float] = {}  # when this replica first waited on a group (for the metric)
        self.scored_groups = 0  # groups this replica scored (for tests and metrics)

    @property
    def waiting_groups(self) -> int:
        return len(self._waiters)

    def _drain_signal(self) -> asyncio.Future[None]:
        """Done once the app's drain deadline has passed: one future every waiter also waits on."""
        if self._drained is None:
            self._drained = asyncio.get_running_loop().create_future()
            self._drain_task = asyncio.create_task(self._watch_drain(self._drained))
        return self._drained

    async def _watch_drain(self, drained: asyncio.Future[None]) -> None:
        # Polled by one task: a drain is a flag flipped by a signal handler, with nothing to await on.
        while True:
            deadline = self._drain_deadline()
            now = time.monotonic()
            if deadline is not None and deadline <= now:
                drained.set_result(None)
                return
            await asyncio.sleep(0.25 if deadline is None else min(0.25, deadline - now))

    async def close(self) -> None:
        if self._drain_task is not None:
            self._drain_task.cancel()
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

    async def submit(self, req: RolloutsRequest, held: list[tuple[str, list[int]]] | None = None) -> RolloutsResponse:
        """`held`: slots (GroupStore.assign) the caller took for these rollouts; they are kept live while this
        call waits and released when it ends, like the ones taken here for rollouts without an index."""
        held = list(held or [])
        try:
            self._check(req)
            req, mine = await self._assign_indices(req)
        except BaseException:
            await self._let_go(held)
            raise
        held += mine
        holding = asyncio.create_task(self._hold(held)) if held else None
        # Every wait in _submit has its own deadline; this bound is the backstop that keeps a store or scoring
        # call stuck past them from holding the slots live for ever (a retry would then count as a new rollout).
        bound = 2 * self.settings.group_timeout_s + 2 * self.settings.group_lease_s
        try:
            async with asyncio.timeout(bound) as limit:
                return await self._submit(req)
        except TimeoutError:
            if not limit.expired():
                raise
            log.warning("group assembly call exceeded its %.1f s bound; answering 503", bound)
            raise NotReady(
                f"group assembly did not answer within {bound:g} s (2 x DARLING_GROUP_TIMEOUT_S + 2 x "
                "DARLING_GROUP_LEASE_S); what was submitted is kept: retry",
                retry_after_s=1.0,
            ) from None
        finally:
            if holding is not None:
                holding.cancel()
                with contextlib.suppress(BaseException):
                    await holding
            await self._let_go(held)

    async def _submit(self, req: RolloutsRequest) -> RolloutsResponse:
        started = time.perf_counter()
        arrived = time.monotonic()
        deadline = arrived + self.settings.group_timeout_s
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
                await self._complete(gid, self._first_seen.get(gid, arrived))
        # One group failing (a transient scoring error) ends the call: the others' waits stop with it.
        results: list[str | None] = await gather_or_cancel(*(self._wait(gid, deadline) for gid in gids))
        for k, gid in enumerate(gids):
            if results[k] is None:
                # Complete but still being scored at the deadline: scoring gets its own grace period.
                meta_raw, held = await self.store.held(gid)
                if meta_raw is not None and not _missing(sizes[gid], held):
                    results[k] = await self._wait(gid, time.monotonic() + self.settings.group_timeout_s)
        late = [gid for gid, res in zip(gids, results, strict=True) if res is None]
        if late:
            metrics.GROUP_ASSEMBLY_TIMEOUTS.inc(len(late))
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

    async def _assign_indices(self, req: RolloutsRequest) -> tuple[RolloutsRequest, list[tuple[str, list[int]]]]:
        """Rollouts without an index get a slot of their group keyed by their content: a new one (the next free,
        atomic across replicas through the store) on first arrival, the same one on a retry. Answers the
        request with every index filled, and the slots this call holds while it waits."""
        unindexed: dict[str, list[int]] = {}
        for i, r in enumerate(req.rollouts):
            if r.index is None:
                unindexed.setdefault(r.group_id, []).append(i)
        if not unindexed:
            return req, []
        rollouts = list(req.rollouts)
        held = []
        for gid, members in unindexed.items():
            names = content_keys([_payload(rollouts[i]) for i in members])
            slots = await self.assign_slots("auto:" + gid, names, None, None)
            held.append(("auto:" + gid, slots))
            for slot, i in zip(slots, members, strict=True):
                size = rollouts[i].group_size
                if slot >= size:
                    await self._let_go(held)
                    raise Conflict(
                        f"rollouts[{i}]: group {gid!r} already received its {size} rollouts (group_size); "
                        "a rollout without an index takes the next free one",
                        [f"rollouts[{i}].index"],
                    )
                rollouts[i] = rollouts[i].model_copy(update={"index": slot})
        return RolloutsRequest(rollouts=rollouts, options=req.options), held

    async def assign_slots(self, key: str, names: list[str], window: int | None, max_age_s: float | None) -> list[int]:
        """The store's slots for `names` (GroupStore.assign), marked live for this call. A name whose earlier
        slots are all live waits until each of them is either released or expired (its caller is gone: this
        is its retry, which takes it) or renewed (its caller is alive: this is an identical new rollout, which
        gets a slot of its own); that takes at most about DARLING_GROUP_LEASE_S (twins: 2/5 of it)."""
        live_s = self.settings.group_lease_s
        slots: list[int | None] = [None] * len(names)
        force = [False] * len(names)
        seen: dict[int, dict[int, set[float]]] = {}  # per name: the live-until times seen for each live slot
        give_up = time.monotonic() + 3 * live_s
        while True:
            todo = [k for k, slot in enumerate(slots) if slot is None]
            if not todo:
                return [slot for slot in slots if slot is not None]
            answers = await self.store.assign(
                key, [names[k] for k in todo], window, max_age_s, live_s, [force[k] for k in todo]
            )
            for k, got in zip(todo, answers, strict=True):
                if got.slot >= 0:
                    slots[k] = got.slot
                    continue
                # Renewed twice: one renewal may be the last one of a caller that has just stopped (sent before
                # it stopped, applied after), a second one is not.
                marks = seen.setdefault(k, {})
                for s, until in got.live.items():
                    marks.setdefault(s, set()).add(until)
                renewed = all(len(marks[s]) >= 3 for s in got.live)
                force[k] = renewed or time.monotonic() > give_up
            if not all(force[k] for k in todo if slots[k] is None):
                await asyncio.sleep(min(0.25, live_s / 10))

    async def _hold(self, held: list[tuple[str, list[int]]]) -> None:
        live_s = self.settings.group_lease_s
        while True:
            await asyncio.sleep(live_s / 5)
            for key, slots in held:
                with contextlib.suppress(NotReady):  # the next renewal may still be in time
                    await self.store.hold(key, slots, live_s)

    async def _let_go(self, held: list[tuple[str, list[int]]]) -> None:
        for key, slots in held:
            # The store away: the slots stay live until their lease runs out, which a retry waits for.
            with contextlib.suppress(NotReady):
                await self.store.let_go(key, slots)

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

    async def _complete(self, gid: str, since: float | None) -> None:
        """Score the group if nobody has, or is doing so. Transient failures release the claim so that a retry
        (or another waiter) scores again; they reach this replica's waiters at once. `since`: when this replica
        first saw the group (for the assembly-wait metric)."""
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
        lease = self.settings.group_lease_s
        if not await self.store.claim(gid, lease):
            return
        renewing = asyncio.create_task(self._renew(gid, lease))
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
            if since is not None:
                metrics.GROUP_ASSEMBLY_WAIT.observe(time.monotonic() - since)
            fut = self._future(gid)
            if not fut.done():
                fut.set_result(raw)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.store.release(gid)
            raise
        finally:
            renewing.cancel()
            with contextlib.suppress(BaseException):
                await renewing

    async def _renew(self, gid: str, lease: float) -> None:
        """Keep the claim while this replica scores: a short lease that lives only as long as its holder."""
        while True:
            await asyncio.sleep(lease / 3)
            with contextlib.suppress(NotReady):  # Redis away for a moment: the next renewal may still be in time
                await self.store.renew(gid, lease)

    async def _watch(self, gid: str, fut: asyncio.Future[str]) -> None:
        """Poll the store for a result computed elsewhere; take over scoring if the claimer vanished."""
        delay = 0.005
        checked_claim = time.monotonic()
        while not fut.done():
            try:
                raw = await self.store.get_result(gid)
                if raw is not None:
                    if not fut.done():
                        fut.set_result(raw)
                    return
                if time.monotonic() - checked_claim > min(1.0, self.settings.group_lease_s / 2):
                    checked_claim = time.monotonic()
                    # A no-op unless complete, unscored and unclaimed (the claimer died: its lease ran out).
                    await self._complete(gid, self._first_seen.get(gid))
                    continue
            except NotReady as exc:
                # The store is away (Redis paused or restarting): the waiters keep their deadline, the watcher
                # keeps watching, so the result still reaches them when the store is back.
                log.debug("group %s: %s", gid, exc.detail)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)

    async def _wait(self, gid: str, deadline: float) -> str | None:
        """The group's result, or None at the deadline; NotReady (retryable) once the app's drain deadline
        passes first."""
        fut = self._future(gid)
        if gid not in self._waiters:
            self._waiters[gid] = 0
            self._first_seen.setdefault(gid, time.monotonic())
            metrics.GROUPS_ASSEMBLING.inc()
        self._waiters[gid] += 1
        watcher = self._watchers.get(gid)
        if watcher is None or watcher.done():
            self._watchers[gid] = asyncio.create_task(self._watch(gid, fut))
        drained = self._drain_signal()
        try:
            while not fut.done():
                now = time.monotonic()
                if deadline <= now:
                    return None
                if drained.done():
                    raise NotReady(
                        f"this replica is shutting down and group {gid!r} was not finished in time; what was "
                        "submitted is kept: retry (on another replica)",
                        retry_after_s=1.0,
                    )
                await asyncio.wait((fut, drained), timeout=deadline - now, return_when=asyncio.FIRST_COMPLETED)
            return fut.result()
        finally:
            self._waiters[gid] -= 1
            if self._waiters[gid] == 0:
                del self._waiters[gid]
                self._first_seen.pop(gid, None)
                metrics.GROUPS_ASSEMBLING.dec()
                task = self._watchers.pop(gid, None)
                if task is not None and not task.done():
                    task.cancel()
                if self._futures.get(gid) is fut:
                    del self._futures[gid]
