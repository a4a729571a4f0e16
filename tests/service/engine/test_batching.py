"""The batcher on a real (tiny, random-weight) BERT cross-encoder loaded from a saved folder."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from models.backends.base import Encoded
from models.backends.cross_encoder import CrossEncoderClassifier
from service.engine.batching import Batcher, Overloaded
from service.engine.concurrency import gather_or_cancel
from service.tools.bench.models import build_model

WORDS = [
    *["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"],
    *["lambda", "mu", "nu", "xi", "omicron", "pi", "rho"],
]


def text(n_words: int, shift: int = 0) -> str:
    return " ".join(WORDS[(i + shift) % len(WORDS)] for i in range(n_words))


@pytest.fixture(scope="module")
def clf(tmp_path_factory: pytest.TempPathFactory) -> CrossEncoderClassifier:
    path = build_model("bert-tiny", str(tmp_path_factory.mktemp("bert-tiny")))
    return CrossEncoderClassifier.load(path)


def pairs_of_lengths(clf: CrossEncoderClassifier, lengths: list[int]) -> list[Encoded]:
    return [clf.encode_pair(text(n, k), text(n, k + 3)) for k, n in enumerate(lengths)]


class Recorder:
    """The batch observer: what each forward held."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, int, int]] = []  # rows, real tokens, padded tokens

    def __call__(self, name: str, rows: int, real: int, padded: int, forward_s: float, wait_s: float) -> None:
        self.batches.append((rows, real, padded))


def solo(clf: CrossEncoderClassifier, items: list[Encoded]) -> list[float]:
    return [clf.run([e])[0] for e in items]


async def test_token_budget_and_row_cap_bound_every_forward(clf: CrossEncoderClassifier) -> None:
    rec = Recorder()
    # Two length clusters, interleaved in arrival order: packing by closeness must not mix them.
    lengths = [4, 60] * 12
    items = pairs_of_lengths(clf, lengths)
    costs = [e.cost for e in items]
    budget = 6 * max(costs)
    b = Batcher(clf, name="t", max_batch_tokens=budget, max_batch_rows=8, max_wait_ms=50, observer=rec)
    b.start()
    try:
        scores = await b.submit(items)
    finally:
        await b.close()
    assert sum(r for r, _, _ in rec.batches) == len(items)
    assert all(padded <= budget and rows <= 8 for rows, _, padded in rec.batches)
    assert max(rows for rows, _, _ in rec.batches) > 1  # it did batch
    # FIFO packing of this alternating queue would pad every short row to the long width: ~45% padding.
    assert b.stats.padding_share < 0.1
    assert b.stats.real_tokens == sum(costs)
    assert scores == pytest.approx(solo(clf, items), abs=1e-5)


async def test_each_caller_gets_its_own_results_in_order(clf: CrossEncoderClassifier) -> None:
    b = Batcher(clf, name="t", max_batch_tokens=4096, max_batch_rows=16, max_wait_ms=5)
    b.start()
    callers = [pairs_of_lengths(clf, [3 + (7 * c + i) % 40 for i in range(5 + c)]) for c in range(6)]
    try:
        results = await asyncio.gather(*(b.submit(items) for items in callers))
    finally:
        await b.close()
    assert b.stats.batches < sum(len(c) for c in callers)  # callers shared forwards
    for items, got in zip(callers, results, strict=True):
        assert got == pytest.approx(solo(clf, items), abs=1e-5)


async def test_equal_keys_in_flight_are_computed_once(clf: CrossEncoderClassifier) -> None:
    items = pairs_of_lengths(clf, [10, 20, 30])
    b = Batcher(clf, name="t", max_wait_ms=20)
    b.start()
    try:
        first, second = await asyncio.gather(
            b.submit(items, ["k1", "k2", "k3"]), b.submit([items[1], items[1]], ["k2", "k2"])
        )
    finally:
        await b.close()
    assert b.stats.rows == 3
    assert b.stats.deduped == 2
    assert second == [first[1], first[1]]
    assert b.inflight_keys == 0


async def test_a_cancelled_caller_leaves_the_queue_clean(clf: CrossEncoderClassifier) -> None:
    items = pairs_of_lengths(clf, [10, 12, 14])
    # The long max-wait keeps the items queued while the caller gives up.
    b = Batcher(clf, name="t", max_batch_rows=64, max_wait_ms=10_000)
    b.start()
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(b.submit(items, ["a", "b", None]), timeout=0.05)
        assert b.depth == 0
        assert b.inflight_keys == 0
        assert b.stats.cancelled == 3
        # The batcher still serves the next caller, and the abandoned items never cost a forward.
        b.max_wait_s = 0.0
        got = await b.submit(items[:1], ["a"])
        assert got == pytest.approx(solo(clf, items[:1]), abs=1e-5)
        assert b.stats.rows == 1
    finally:
        await b.close()


async def test_a_shared_item_survives_one_of_its_callers_giving_up(clf: CrossEncoderClassifier) -> None:
    items = pairs_of_lengths(clf, [10, 12])
    b = Batcher(clf, name="t", max_batch_rows=64, max_wait_ms=300)
    b.start()
    try:
        stays = asyncio.ensure_future(b.submit(items, ["x", "y"]))
        await asyncio.sleep(0)
        leaves = asyncio.ensure_future(b.submit(items[:1], ["x"]))
        await asyncio.sleep(0.01)
        leaves.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaves
        assert b.depth == 2  # the other caller still waits for both
        assert await stays == pytest.approx(solo(clf, items), abs=1e-5)
        assert b.stats.cancelled == 0
    finally:
        await b.close()


async def test_a_full_queue_refuses_with_a_retry_hint(clf: CrossEncoderClassifier) -> None:
    items = pairs_of_lengths(clf, [8, 9, 10])
    b = Batcher(clf, name="t", max_batch_rows=64, max_wait_ms=200, max_queue_depth=4)
    b.start()
    try:
        waiting = asyncio.ensure_future(b.submit(items))
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded) as err:
            await b.submit(items)
        assert err.value.retry_after_s >= 1.0
        assert b.stats.rejected == 3
        assert len(await waiting) == 3  # the admitted caller is unaffected
        # An empty queue admits even a submission larger than the bound.
        assert len(await b.submit(pairs_of_lengths(clf, [5] * 6))) == 6
    finally:
        await b.close()


class OutOfMemoryAbove(CrossEncoderClassifier):
    """A test double of a GPU condition this machine cannot produce: CUDA OOM above `limit` rows."""

    limit = 2

    def run(self, batch: list[Encoded]) -> list[float]:
        if len(batch) > self.limit:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().run(batch)


async def test_out_of_memory_splits_the_batch_and_lowers_the_budget(clf: CrossEncoderClassifier) -> None:
    oom = OutOfMemoryAbove(clf.model, clf.tokenizer, clf.preset, "oom", "oom")
    items = pairs_of_lengths(clf, [20] * 8)
    b = Batcher(oom, name="t", max_batch_tokens=100_000, max_batch_rows=8, max_wait_ms=50)
    b.start()
    try:
        scores = await b.submit(items)
        assert scores == pytest.approx(solo(clf, items), abs=1e-5)
        assert b.stats.splits >= 1
        assert b._token_cap < 100_000
        # Later batches start under the size that failed.
        splits = b.stats.splits
        await b.submit(pairs_of_lengths(clf, [20] * 8))
        assert b.stats.splits == splits
    finally:
        await b.close()


class FailsOnMarker(CrossEncoderClassifier):
    def run(self, batch: list[Encoded]) -> list[float]:
        if any(e.cost == 7 for e in batch):
            raise ValueError("bad input for the model")
        return super().run(batch)


async def test_a_model_error_fails_its_callers_but_not_the_batcher(clf: CrossEncoderClassifier) -> None:
    bad = FailsOnMarker(clf.model, clf.tokenizer, clf.preset, "bad", "bad")
    b = Batcher(bad, name="t", max_wait_ms=1)
    b.start()
    try:
        poisoned = Encoded(cost=7, payload=clf.encode_pair("a b c", "d e").payload)
        with pytest.raises(ValueError, match="bad input"):
            await b.submit([poisoned])
        good = pairs_of_lengths(clf, [12])
        assert await b.submit(good) == pytest.approx(solo(clf, good), abs=1e-5)
    finally:
        await b.close()


async def test_close_finishes_the_queue_then_refuses(clf: CrossEncoderClassifier) -> None:
    b = Batcher(clf, name="t", max_wait_ms=10_000)
    b.start()
    waiting = asyncio.ensure_future(b.submit(pairs_of_lengths(clf, [6, 7])))
    await asyncio.sleep(0.01)
    await b.close()
    assert all(math.isfinite(s) for s in await waiting)
    with pytest.raises(Overloaded):
        await b.submit(pairs_of_lengths(clf, [6]))


async def test_gather_or_cancel_stops_the_siblings_of_a_failure() -> None:
    finished: list[str] = []

    async def slow() -> int:
        await asyncio.sleep(5)
        finished.append("slow")
        return 1

    async def fails() -> int:
        await asyncio.sleep(0.01)
        raise Overloaded("m", 2.0)

    sibling = asyncio.ensure_future(slow())
    with pytest.raises(Overloaded):
        await gather_or_cancel(sibling, fails())
    assert sibling.cancelled()
    assert finished == []


def test_tiny_model_folder_holds_a_loadable_checkpoint(tmp_path: Path) -> None:
    path = build_model("bert-tiny", str(tmp_path / "m"))
    assert (Path(path) / "darling_classifier.json").is_file()
    assert any(p.suffix == ".safetensors" for p in Path(path).iterdir())


async def test_a_full_queue_answers_503_with_retry_after_over_http(tmp_path: Path) -> None:
    from service.app import create_app
    from service.settings import Settings
    from tests.conftest import asgi_client

    model = build_model("bert-tiny", str(tmp_path / "m"))
    settings = Settings(
        classifier="cross-encoder",
        classifier_path=model,
        verifier=False,
        cpu_threads=1,
        max_wait_ms=1000,  # the first request's round waits here while the second arrives
        max_queue_depth=8,
        memory_cache_bytes=0,
    )

    def body(shift: int) -> dict[str, object]:
        responses = [text(12, shift + 2 * i) for i in range(8)]
        return {"groups": [{"prompt": "p", "responses": responses, "quality": [1.0] * 8}]}

    async with asgi_client(create_app(settings)) as client:
        first = asyncio.ensure_future(client.post("/v1/rewards", json=body(0)))
        await asyncio.sleep(0.2)
        second = await client.post("/v1/rewards", json=body(1))
        assert second.status_code == 503, second.text
        assert int(second.headers["retry-after"]) >= 1
        assert second.json()["error"] == "overloaded"
        ok = await first
        assert ok.status_code == 200, ok.text
        assert ok.json()["groups"][0]["n"] == 8


def test_concurrent_encoding_keeps_every_row_inside_the_window(clf: CrossEncoderClassifier) -> None:
    from concurrent.futures import ThreadPoolExecutor

    # Long texts on both sides: the `pair` layout must truncate every row to the preset's max_length even
    # when several threads tokenize at once (the scorer encodes on a thread pool).
    long_texts = [text(400, k) for k in range(24)]
    with ThreadPoolExecutor(4) as pool:
        rows = list(pool.map(lambda k: clf.encode_pair(long_texts[k], long_texts[k + 1]), range(23)))
    assert max(e.cost for e in rows) == clf.preset.max_length
