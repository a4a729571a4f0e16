"""Builds the models, batchers, caches and scorer from settings, and owns their life cycle."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass

from models.backends.base import PairClassifier
from models.backends.loading import LoadOptions, configure_cpu_threads
from service.cache.memory import MemoryLRU
from service.cache.redis_tier import RedisTier
from service.cache.tiers import RemoteTier, TieredCache
from service.engine.batching import Batcher, BatchObserver
from service.engine.scoring import Model, Scorer
from service.ops.runs import RunRegistry
from service.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Backends:
    classifier: PairClassifier
    verifier: object | None
    reward_model: object | None


def load_backends(settings: Settings) -> Backends:
    """Blocking: loads every model the settings name. Runs in a worker thread at start-up."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    configure_cpu_threads(settings.cpu_threads)
    opts = LoadOptions(device=settings.device, dtype=settings.dtype, trust_remote_code=settings.trust_remote_code)
    classifier: PairClassifier
    if settings.classifier == "embedding":
        from models.backends.embedding import EmbeddingClassifier

        classifier = EmbeddingClassifier.load(
            settings.classifier_path, opts, settings.classifier_threshold, settings.embedding_head
        )
    else:
        from models.backends.cross_encoder import CrossEncoderClassifier

        if not settings.classifier_path:
            raise ValueError("DARLING_CLASSIFIER=cross-encoder needs DARLING_CLASSIFIER_PATH (a folder or hub id)")
        classifier = CrossEncoderClassifier.load(
            settings.classifier_path,
            settings.classifier_preset,
            opts,
            settings.classifier_threshold,
            settings.classifier_tokenizer,
        )
        if settings.classifier_quantize == "int8":
            classifier = classifier.quantized_int8()
    verifier = None
    if settings.verifier:
        from models.backends.verifier import MathVerifier

        verifier = MathVerifier()
    reward_model = None
    if settings.quality_model_path:
        from models.backends.reward_model import RewardModelQuality

        reward_model = RewardModelQuality.load(settings.quality_model_path, opts, settings.quality_max_tokens)
    return Backends(classifier, verifier, reward_model)


def warm_up(b: Backends) -> None:
    """One small forward per model so the first real request does not pay for lazy initialisation."""
    b.classifier.run([b.classifier.encode_pair("warm-up text one.", "warm-up text two, different.")])
    for q in (b.verifier, b.reward_model):
        if q is not None:
            q.run([q.encode_rollout("1+1?", "2", "2")])  # type: ignore[attr-defined]


class Engine:
    def __init__(
        self, settings: Settings, observer: BatchObserver | None = None, remote: RemoteTier | None = None
    ) -> None:
        self.settings = settings
        self.observer = observer
        self.remote = remote
        self.scorer: Scorer | None = None
        self.backends: Backends | None = None
        self.error: BaseException | None = None
        self.ready = asyncio.Event()
        self.batchers: list[Batcher] = []
        # Kept by the engine, not the scorer, so GET /v1/runs/{run}/stats answers while models (re)load.
        self.runs = RunRegistry(settings.run_stats_max_runs, settings.run_stats_window, settings.run_stats_max_steps)

    def _batcher(self, backend: object, name: str) -> Batcher:
        s = self.settings
        b = Batcher(
            backend,  # type: ignore[arg-type]
            name=name,
            max_batch_tokens=s.max_batch_tokens,
            max_batch_rows=s.max_batch_rows,
            max_wait_ms=s.max_wait_ms,
            max_queue_depth=s.max_queue_depth,
            observer=self.observer,
        )
        b.start()
        self.batchers.append(b)
        return b

    async def start(self) -> None:
        try:
            backends = await asyncio.to_thread(load_backends, self.settings)
            if self.settings.warmup:
                await asyncio.to_thread(warm_up, backends)
        except BaseException as exc:
            self.error = exc
            log.exception("model loading failed")
            raise
        self.backends = backends
        if self.remote is None and self.settings.redis_url:
            tier = RedisTier.from_settings(self.settings)
            self.remote = tier
            # Not a start-up condition: a missing Redis is logged (once) and the service runs uncached.
            if await tier.ping():
                log.info("Redis cache tier at %s, namespace %r", tier.url, tier.namespace)
        cache = TieredCache(
            MemoryLRU(self.settings.memory_cache_bytes), self.remote, self.settings.cache_prefetch_max_keys
        )
        self.scorer = Scorer(
            self.settings,
            Model(backends.classifier, self._batcher(backends.classifier, "classifier")),
            cache,
            verifier=Model(backends.verifier, self._batcher(backends.verifier, "verifier"))
            if backends.verifier
            else None,
            reward_model=Model(backends.reward_model, self._batcher(backends.reward_model, "reward_model"))
            if backends.reward_model
            else None,
            runs=self.runs,
        )
        self.ready.set()
        log.info("ready: classifier %s on %s", backends.classifier.id, backends.classifier.device)

    async def stop(self) -> None:
        self.ready.clear()
        for b in self.batchers:
            await b.close()
        if self.scorer is not None:
            await self.scorer.cache.close()
