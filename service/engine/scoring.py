"""One request = many groups. Quality and partition run concurrently for every group; every round of every
group goes through the caches and then the shared batchers, so concurrent callers fill the same forwards."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from darling_client.schemas import (
    CacheStats,
    CacheTierStats,
    GroupReward,
    JudgementCounts,
    RewardOptions,
    RewardRequest,
    RewardResponse,
    RolloutGroup,
    RolloutReward,
    RuleCounts,
)

from models.backends.base import Encoded, PairClassifier, QualityBackend
from models.novelty import DEFAULT_CUTS, group_novelty
from models.partition import Pair, make_planner
from models.reward import group_rewards
from models.rules import decide_by_rules
from service.cache.keys import (
    pair_key_hashed,
    quality_key,
    text_hash,
    truncation_bits,
    truncation_flags,
    truncation_key,
)
from service.cache.tiers import Lookup, RequestCache, TieredCache
from service.engine.batching import Batcher, Overloaded
from service.engine.concurrency import gather_or_cancel
from service.errors import DeadlineExceeded, RequestError, ServiceOverloaded, TooLarge
from service.ops import metrics
from service.ops.runs import RunRegistry
from service.settings import Settings


@dataclass
class Model:
    """A backend with its batcher."""

    backend: Any
    batcher: Batcher


@dataclass
class _GroupStats:
    rules: RuleCounts = field(default_factory=RuleCounts)
    judgements: JudgementCounts = field(default_factory=JudgementCounts)
    cache: CacheStats = field(default_factory=CacheStats)

    def add_lookup(self, lookup: Lookup) -> None:
        for tier in ("memory", "redis"):
            src = getattr(lookup, tier)
            dst: CacheTierStats = getattr(self.cache, tier)
            dst.hits += src.hits
            dst.misses += src.misses


@dataclass
class _Partition:
    classes: list[int]
    truncated: list[bool]


def deadline_exceeded(opts: RewardOptions) -> DeadlineExceeded:
    return DeadlineExceeded(
        f"the request was not finished within options.deadline_ms={opts.deadline_ms}", ["options.deadline_ms"]
    )


class Scorer:
    def __init__(
        self,
        settings: Settings,
        classifier: Model,
        cache: TieredCache,
        verifier: Model | None = None,
        reward_model: Model | None = None,
        encode_pool: ThreadPoolExecutor | None = None,
        runs: RunRegistry | None = None,
    ) -> None:
        """`runs`: where groups of requests with `options.run` add to their run's figures; None = not kept."""
        self.settings = settings
        self.runs = runs
        self.classifier = classifier
        self.verifier = verifier
        self.reward_model = reward_model
        self.cache = cache
        self._pool = encode_pool or ThreadPoolExecutor(max_workers=2, thread_name_prefix="encode")

    @property
    def clf(self) -> PairClassifier:
        backend: PairClassifier = self.classifier.backend
        return backend

    # ---- validation that needs the service's configuration -------------------------------------------

    def check(self, req: RewardRequest) -> None:
        s = self.settings
        total = sum(len(g.responses) for g in req.groups)
        if total > s.max_rollouts_per_request:
            raise TooLarge(
                f"groups hold {total} rollouts in all; the limit is {s.max_rollouts_per_request} per request "
                "(DARLING_MAX_ROLLOUTS_PER_REQUEST): split the batch",
                ["groups"],
            )
        for gi, g in enumerate(req.groups):
            if len(g.responses) > s.max_rollouts_per_group:
                raise TooLarge(
                    f"groups[{gi}].responses has {len(g.responses)} rollouts; the limit is "
                    f"{s.max_rollouts_per_group} per group (DARLING_MAX_ROLLOUTS_PER_GROUP)",
                    [f"groups[{gi}].responses"],
                )
            for name, text in [("prompt", g.prompt), ("reference", g.reference or "")]:
                if len(text) > s.max_chars_per_rollout:
                    raise TooLarge(
                        f"groups[{gi}].{name} has {len(text)} characters; the limit is {s.max_chars_per_rollout}",
                        [f"groups[{gi}].{name}"],
                    )
            for ri, r in enumerate(g.responses):
                if len(r) > s.max_chars_per_rollout:
                    raise TooLarge(
                        f"groups[{gi}].responses[{ri}] has {len(r)} characters; the limit is "
                        f"{s.max_chars_per_rollout} (DARLING_MAX_CHARS_PER_ROLLOUT)",
                        [f"groups[{gi}].responses[{ri}]"],
                    )
            self.quality_source(g, gi)

    def quality_source(self, g: RolloutGroup, gi: int) -> str:
        if g.quality is not None:
            return "client"
        if g.reference is not None:
            if self.verifier is None:
                raise RequestError(
                    f"groups[{gi}].reference was sent but no verifier is configured: set DARLING_VERIFIER=true "
                    "(needs the math-verify package), or send `quality` instead",
                    [f"groups[{gi}].reference"],
                )
            return "verifier"
        if self.reward_model is not None:
            return "reward-model"
        raise RequestError(
            f"groups[{gi}] has no quality source: send `quality` (one score per response), send a `reference` "
            "for the math verifier, or start the service with a reward model (DARLING_QUALITY_MODEL_PATH)",
            [f"groups[{gi}].quality"],
        )

    def quality_model(self, source: str) -> Model | None:
        """The model behind a quality source (None for the caller's own scores)."""
        return self.verifier if source == "verifier" else self.reward_model if source == "reward-model" else None

    def admit(self, req: RewardRequest) -> None:
        """Refuse (503 with Retry-After) while a model this request needs has a full queue: before any
        tokenization, cache round trip or planner round spends work on a request that would fail anyway.
        Each group needs at least one item of each model it uses (unless cached: a full queue is overload)."""
        need: dict[int, tuple[Batcher, int]] = {}

        def add(model: Model | None, n: int) -> None:
            if model is not None:
                b = model.batcher
                need[id(b)] = (b, need.get(id(b), (b, 0))[1] + n)

        add(self.classifier, sum(1 for g in req.groups if len(g.responses) > 1))
        for gi, g in enumerate(req.groups):
            source = self.quality_source(g, gi)
            add(self.quality_model(source), 1)
        try:
            for b, n in need.values():
                if n:
                    b.admit(n)
        except Overloaded as exc:
            raise ServiceOverloaded(str(exc), exc.retry_after_s) from None

    # ---- scoring --------------------------------------------------------------------------------------

    async def score(self, req: RewardRequest) -> RewardResponse:
        self.check(req)
        self.admit(req)
        started = time.perf_counter()
        # One cache view for the whole request: one remote read for every group's keys, one write at the end.
        cache = self.cache.request() if req.options.cache else None

        async def work() -> list[GroupReward]:
            if cache is not None:
                await cache.prefetch(self._cache_keys(req.groups))
            return await gather_or_cancel(
                *(self._score_group(g, gi, req.options, cache) for gi, g in enumerate(req.groups))
            )

        try:
            if req.options.deadline_ms is not None:
                groups = await asyncio.wait_for(work(), timeout=req.options.deadline_ms / 1000.0)
            else:
                groups = await work()
        except TimeoutError:
            raise deadline_exceeded(req.options) from None
        except Overloaded as exc:
            raise ServiceOverloaded(str(exc), exc.retry_after_s) from None
        finally:
            if cache is not None:
                # Whatever was computed is kept, a missed deadline included; the remote tier never raises.
                await cache.flush()
        return RewardResponse(groups=groups, elapsed_ms=(time.perf_counter() - started) * 1000.0)

    def _cache_keys(self, groups: Sequence[RolloutGroup]) -> Iterator[str]:
        """Every key the groups may ask, most likely first: quality keys, then pairs (each judgement with its
        truncation flags) in planner-round order (distance 1 first), interleaved over groups, so a capped
        prefetch covers every group's first rounds."""
        for gi, g in enumerate(groups):
            source = self.quality_source(g, gi)
            model = self.quality_model(source)
            if model is not None:
                fp = model.backend.fingerprint
                yield from (quality_key(fp, g.prompt, r, g.reference) for r in g.responses)
        fp = self.clf.fingerprint
        hashes = [[text_hash(t) for t in g.responses] for g in groups]
        for d in range(1, max((len(h) for h in hashes), default=0)):
            for h in hashes:
                for i in range(len(h) - d):
                    if h[i] != h[i + d]:  # identical texts are settled by a rule, never cached
                        yield pair_key_hashed(fp, h[i], h[i + d])
                        yield truncation_key(fp, h[i], h[i + d])

    async def score_each(self, req: RewardRequest) -> AsyncIterator[tuple[int, GroupReward]]:
        """(index, group) as each group finishes, for streaming transports; same checks, deadline and errors
        as score(). Closing the iterator early cancels the groups still running."""
        self.check(req)
        self.admit(req)
        loop = asyncio.get_running_loop()
        deadline = None if req.options.deadline_ms is None else loop.time() + req.options.deadline_ms / 1000.0
        index: dict[asyncio.Future[GroupReward], int] = {
            asyncio.ensure_future(self._score_group(g, gi, req.options)): gi for gi, g in enumerate(req.groups)
        }
        pending: set[asyncio.Future[GroupReward]] = set(index)
        try:
            while pending:
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                done, pending = await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    raise deadline_exceeded(req.options)
                for task in sorted(done, key=index.__getitem__):
                    try:
                        group = task.result()
                    except Overloaded as exc:
                        raise ServiceOverloaded(str(exc), exc.retry_after_s) from None
                    yield index[task], group
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _score_group(
        self, g: RolloutGroup, gi: int, opts: RewardOptions, cache: RequestCache | None = None
    ) -> GroupReward:
        """`cache`: the request's view; without one (streaming), the group opens and flushes its own."""
        stats = _GroupStats()
        source = self.quality_source(g, gi)
        own = cache is None and opts.cache
        if own:
            cache = self.cache.request()
            await cache.prefetch(self._cache_keys([g]))
        try:
            quality, part = await asyncio.gather(
                self._quality(g, source, stats, cache), self._partition(g, opts, stats, cache)
            )
        finally:
            if own and cache is not None:
                await cache.flush()
        rewards = group_rewards(
            part.classes,
            quality,
            floor=opts.diversity_floor,
            combine_mode=opts.combine,
            quality_shift=opts.quality_shift,
            additive_lambda=opts.additive_lambda,
        )
        n = len(g.responses)
        # SPEC section 6. Ratings read the unshifted quality: a rating belongs to the rollout, not to its group.
        novelty = group_novelty(
            part.classes,
            quality,
            cuts=opts.rating_cuts if opts.rating_cuts is not None else DEFAULT_CUTS,
            given_ratings=g.ratings,
        )
        notes = ["n = 1: no other rollouts, diversity defined as 1"] if n == 1 else []
        if any(part.truncated):
            notes.append("some rollouts exceeded the classifier's input window and were truncated")
        quality_model = {
            "client": "client",
            "verifier": self._id(self.verifier),
            "reward-model": self._id(self.reward_model),
        }[source]
        group = GroupReward(
            group_id=g.group_id,
            n=n,
            n_classes=len(set(part.classes)),
            classes=part.classes,
            rewards=rewards.rewards,
            rollouts=[
                RolloutReward(
                    index=i,
                    reward=rewards.rewards[i],
                    quality=rewards.quality[i],
                    diversity=rewards.diversity[i],
                    class_id=part.classes[i],
                    advantage=rewards.advantages[i],
                    truncated=part.truncated[i],
                )
                for i in range(n)
            ],
            algorithm=opts.partition,
            classifier=self.clf.id,
            threshold=self._threshold(opts),
            quality_source=source,
            quality_model=quality_model,
            decided_by=stats.rules,
            judgements=stats.judgements,
            cache=stats.cache,
            truncated=sum(part.truncated),
            notes=notes,
            distinct=novelty.distinct,
            utility=novelty.utility,
            effective_classes=novelty.effective_classes,
            ratings=novelty.ratings,
        )
        metrics.record_group(group)
        if self.runs is not None and opts.run is not None:
            self.runs.record(opts.run, opts.step, group)
        return group

    @staticmethod
    def _id(model: Model | None) -> str:
        return model.backend.id if model is not None else "none"

    def _threshold(self, opts: RewardOptions) -> float:
        return opts.threshold if opts.threshold is not None else self.clf.default_threshold

    async def _encode(self, fn: Any, args: Sequence[tuple[Any, ...]]) -> list[Any]:
        # Tokenization is CPU work: keep it off the event loop.
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: [fn(*a) for a in args])

    async def _cached_scores(
        self,
        model: Model,
        keys: list[str],
        make_args: dict[str, tuple[Any, ...]],
        encode: Any,
        cache: RequestCache | None,
        stats: _GroupStats,
    ) -> tuple[dict[str, float], dict[str, Encoded]]:
        """Scores by key: cache first, the model for the misses (each unique key once), cache refilled. Also
        the encodings of the misses, by key: what the model read."""
        found: dict[str, float] = {}
        if cache is not None:
            lookup = await cache.get_many(keys)
            stats.add_lookup(lookup)
            found.update(lookup.values)
        todo = [k for k in dict.fromkeys(keys) if k not in found]
        encoded: dict[str, Encoded] = {}
        if todo:
            encoded = dict(zip(todo, await self._encode(encode, [make_args[k] for k in todo]), strict=True))
            scores = await model.batcher.submit(list(encoded.values()), todo)
            fresh = dict(zip(todo, scores, strict=True))
            found.update(fresh)
            if cache is not None:
                await cache.put_many(fresh)
        return found, encoded

    async def _truncation(
        self,
        texts: Sequence[str],
        hashes: list[str],
        asked: list[tuple[str, int, int]],
        seen: dict[str, dict[str, bool]],
        cache: RequestCache | None,
    ) -> list[bool]:
        """Whether the classifier cut each rollout in a pair it judged (`asked`: judgement key and pair): the
        flags its encoding reported (`seen`: by key, then text hash), and for a cached judgement the flags
        saved with it. Only a cached judgement whose flags were evicted costs a tokenization (no forward)."""
        clf = self.clf
        flags = dict(seen)
        pairs = {k: (i, j) for k, i, j in asked}
        tkeys = {k: truncation_key(clf.fingerprint, hashes[i], hashes[j]) for k, (i, j) in pairs.items()}
        wanted = [tkeys[k] for k in pairs if k not in flags]
        known = (await cache.get_many(wanted)).values if cache is not None and wanted else {}
        for k, (i, j) in pairs.items():
            if k not in flags and tkeys[k] in known:
                ta, tb = truncation_flags(known[tkeys[k]], hashes[i], hashes[j])
                flags[k] = {hashes[i]: ta, hashes[j]: tb}
        missing = [k for k in pairs if k not in flags]
        if missing:
            encoded = await self._encode(clf.encode_pair, [(texts[pairs[k][0]], texts[pairs[k][1]]) for k in missing])
            for k, e in zip(missing, encoded, strict=True):
                i, j = pairs[k]
                flags[k] = {hashes[i]: e.truncated[0], hashes[j]: e.truncated[1]}
        if cache is not None:
            fresh = {}
            for k, (i, j) in pairs.items():
                if tkeys[k] not in known:
                    ha, hb = hashes[i], hashes[j]
                    fresh[tkeys[k]] = truncation_bits(ha, flags[k][ha], hb, flags[k][hb])
            await cache.put_many(fresh)
        cut = [False] * len(texts)
        for k, i, j in asked:
            cut[i] = cut[i] or flags[k][hashes[i]]
            cut[j] = cut[j] or flags[k][hashes[j]]
        return cut

    async def _quality(
        self, g: RolloutGroup, source: str, stats: _GroupStats, cache: RequestCache | None
    ) -> list[float]:
        if source == "client":
            assert g.quality is not None
            return list(g.quality)
        model = self.quality_model(source)
        assert model is not None
        backend: QualityBackend = model.backend
        keys = [quality_key(backend.fingerprint, g.prompt, r, g.reference) for r in g.responses]
        args = {k: (g.prompt, r, g.reference) for k, r in zip(keys, g.responses, strict=True)}
        scores, _ = await self._cached_scores(model, keys, args, backend.encode_rollout, cache, stats)
        return [scores[k] for k in keys]

    async def _partition(
        self, g: RolloutGroup, opts: RewardOptions, stats: _GroupStats, cache: RequestCache | None
    ) -> _Partition:
        texts = g.responses
        n = len(texts)
        hashes = [text_hash(t) for t in texts]
        planner = make_planner(opts.partition, n)
        threshold = self._threshold(opts)
        clf = self.clf
        asked: list[tuple[str, int, int]] = []  # every pair the classifier judged, with its key
        seen: dict[str, dict[str, bool]] = {}  # judgement key -> text hash -> whether its encoding cut that text
        while not planner.done:
            pairs = planner.next_pairs()
            results: dict[Pair, bool] = {}
            need: list[Pair] = []
            for i, j in pairs:
                ruled = decide_by_rules(texts[i], texts[j])
                if ruled is None:
                    need.append((i, j))
                    continue
                rule, equivalent = ruled
                setattr(stats.rules, rule.value, getattr(stats.rules, rule.value) + 1)
                results[(i, j)] = equivalent
            if need:
                keys = [pair_key_hashed(clf.fingerprint, hashes[i], hashes[j]) for i, j in need]
                args = {k: (texts[i], texts[j]) for k, (i, j) in zip(keys, need, strict=True)}
                scores, encoded = await self._cached_scores(self.classifier, keys, args, clf.encode_pair, cache, stats)
                stats.rules.classifier += len(need)
                stats.judgements.made += len(need)
                stats.judgements.model += len(encoded)
                stats.judgements.cached += len(need) - len(encoded)
                for k, (i, j) in zip(keys, need, strict=True):
                    results[(i, j)] = scores[k] > threshold
                    asked.append((k, i, j))
                # `args` kept the last pair of a repeated key, and so does this: the pair that was encoded.
                encoded_pair = dict(zip(keys, need, strict=True))
                for k, e in encoded.items():
                    i, j = encoded_pair[k]
                    seen[k] = {hashes[i]: e.truncated[0], hashes[j]: e.truncated[1]}
            planner.feed(results)
        stats.judgements.skipped = planner.skipped
        # Only rollouts the classifier actually read can have been truncated by it.
        truncated = await self._truncation(texts, hashes, asked, seen, cache)
        return _Partition(classes=planner.classes(), truncated=truncated)
