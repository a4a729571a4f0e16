"""The batcher's cost per forward does not grow with its queue, and a full queue refuses a request before any
tokenization or forward is spent on it. Real tiny BERT cross-encoder; work is counted, never timed."""

from __future__ import annotations

import asyncio
import threading

import pytest
from darling_client.schemas import RewardRequest, RolloutGroup

from models.backends.base import Encoded
from models.backends.cross_encoder import CrossEncoderClassifier
from service.cache.memory import MemoryLRU
from service.cache.tiers import TieredCache
from service.engine.batching import Batcher
from service.engine.scoring import Model, Scorer
from service.errors import ServiceOverloaded
from service.settings import Settings
from service.tools.bench.models import build_model
from tests.service.engine.test_batching import pairs_of_lengths, solo, text


@pytest.fixture(scope="module")
def clf(tmp_path_factory: pytest.TempPathFactory) -> CrossEncoderClassifier:
    return CrossEncoderClassifier.load(build_model("bert-tiny", str(tmp_path_factory.mktemp("bert-tiny"))))


class GatedFirstForward(CrossEncoderClassifier):
    """Holds its first forward until released, so a queue can build up behind it."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.gate = threading.Event()
        self.forwards = 0

    def run(self, batch: list[Encoded]) -> list[float]:
        self.forwards += 1
        if self.forwards == 1:
            self.gate.wait(30)
        return super().run(batch)


def gated(clf: CrossEncoderClassifier) -> GatedFirstForward:
    return GatedFirstForward(clf.model, clf.tokenizer, clf.preset, "gated", "gated")


WINDOW = 64


async def examined_per_take(clf: CrossEncoderClassifier, depth: int) -> tuple[float, int]:
    """Mean queue items examined per batch taken, with `depth` items waiting behind a held forward."""
    backend = gated(clf)
    b = Batcher(backend, name="t", max_batch_tokens=100_000, max_batch_rows=16, max_wait_ms=0, window=WINDOW)
    b.start()
    lengths = [4 + (7 * k) % 23 for k in range(depth)]
    pool = pairs_of_lengths(clf, lengths[:40])
    items = [pool[k % len(pool)] for k in range(depth)]
    try:
        head = asyncio.ensure_future(b.submit(items[:1]))
        while backend.forwards == 0:
            await asyncio.sleep(0.001)
        rest = asyncio.ensure_future(b.submit(items[1:]))
        await asyncio.sleep(0)
        assert b.depth == depth - 1
        examined, batches = b.stats.examined, b.stats.batches
        backend.gate.set()
        await head
        scores = await rest
        assert len(scores) == depth - 1
        assert scores[:5] == pytest.approx(solo(clf, items[1:6]), abs=1e-5)
        taken = b.stats.batches - batches - 1  # the held one was taken before the queue built up
        return (b.stats.examined - examined) / taken, taken
    finally:
        await b.close()


async def test_work_per_batch_taken_is_bounded_by_the_window_not_the_queue(clf: CrossEncoderClassifier) -> None:
    small, _ = await examined_per_take(clf, 500)
    large, taken = await examined_per_take(clf, 3000)
    assert taken >= 3000 // 16 - 1
    # Each take looks at the oldest `window` items at most, however deep the queue behind them.
    assert large <= WINDOW and small <= WINDOW
    assert large == pytest.approx(small, rel=0.1)


def scorer_with(backend: CrossEncoderClassifier, depth: int) -> tuple[Scorer, Batcher]:
    settings = Settings(classifier="cross-encoder", verifier=False, max_queue_depth=depth, memory_cache_bytes=0)
    b = Batcher(backend, name="clf", max_wait_ms=10_000, max_queue_depth=depth)
    return Scorer(settings, Model(backend, b), TieredCache(MemoryLRU(0))), b


class CountingEncodes(CrossEncoderClassifier):
    encodes = 0

    def encode_pair(self, a: str, b: str) -> Encoded:
        self.encodes += 1
        return super().encode_pair(a, b)


async def test_a_full_queue_refuses_a_request_before_tokenizing_it(clf: CrossEncoderClassifier) -> None:
    backend = CountingEncodes(clf.model, clf.tokenizer, clf.preset, "count", "count")
    scorer, b = scorer_with(backend, depth=8)
    b.start()
    filler = asyncio.ensure_future(b.submit(pairs_of_lengths(clf, [6] * 8)))  # waits out max_wait_ms
    await asyncio.sleep(0)
    assert b.depth == 8  # full
    group = RolloutGroup(prompt="p", responses=[text(12, 2 * k) for k in range(6)], quality=[1.0] * 6)
    try:
        with pytest.raises(ServiceOverloaded) as err:
            await scorer.score(RewardRequest(groups=[group]))
        assert err.value.retry_after_s >= 1.0
        assert backend.encodes == 0  # refused up front: no tokenization, no first planner round
        assert b.depth == 8 and b.stats.batches == 0
    finally:
        b.max_wait_s = 0.0
        b._wakeup.set()
        await filler
        await b.close()
