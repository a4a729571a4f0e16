"""Cache keys, the in-process LRU's byte bound, the Redis value format and the model fingerprints (no Redis)."""

from __future__ import annotations

import gc
import math
import tracemalloc
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModel

from models.backends.base import weights_digest
from models.backends.cross_encoder import CrossEncoderClassifier
from models.backends.embedding import EmbeddingClassifier
from service.cache.keys import pair_key, quality_key
from service.cache.memory import MemoryLRU
from service.cache.redis_tier import ENCODED_SIZE, decode_value, encode_value, redact_url
from service.cache.tiers import RequestCache, TieredCache
from tests.models.tiny_bert import make_tiny_bert


def test_pair_key_is_unordered_and_bound_to_the_fingerprint() -> None:
    a, b = "The Sun is a star.", "Jupiter has many moons."
    assert pair_key("fp1", a, b) == pair_key("fp1", b, a)
    assert pair_key("fp1", a, b) != pair_key("fp2", a, b)
    assert pair_key("fp1", a, b) != pair_key("fp1", a, b + " ")
    assert quality_key("fp", "p", "r", None) != quality_key("fp", "p", "r", "ref")
    assert quality_key("fp", "p", "r", "x") != quality_key("fp", "p", "x", "r")


def _keys(start: int, stop: int) -> list[str]:
    return [pair_key("0123456789abcdef", f"text {i}", f"other {i}") for i in range(start, stop)]


@pytest.mark.parametrize("bound", [1 << 20, 4 << 20])
def test_lru_real_memory_stays_within_its_byte_bound(bound: int) -> None:
    """The bound is on real memory (tracemalloc), keys included, not just on the LRU's own estimate."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        lru = MemoryLRU(bound)
        for start in range(0, 100_000, 500):
            lru.put_many({k: i / 7 for i, k in enumerate(_keys(start, start + 500))})
            assert lru.bytes <= bound
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(lru) < 100_000  # it did evict
    assert lru.bytes > bound * 0.95  # and stays full
    assert held <= bound * 1.10, f"{held} bytes held for a bound of {bound}"


def test_lru_evicts_the_least_recently_used() -> None:
    keys = _keys(0, 10)
    lru = MemoryLRU(MemoryLRU.entry_bytes(keys[0]) * 5 + 10)
    lru.put_many({k: float(i) for i, k in enumerate(keys[:5])})
    assert lru.get_many([keys[0]]) == {keys[0]: 0.0}  # now the most recent
    lru.put_many({keys[5]: 5.0})
    assert set(lru.get_many(keys)) == {keys[0], keys[2], keys[3], keys[4], keys[5]}
    lru.put_many({keys[2]: 2.5})  # an update moves it to the front without growing the LRU
    assert len(lru) == 5 and lru.get_many([keys[2]]) == {keys[2]: 2.5}


def test_lru_with_a_zero_bound_is_off() -> None:
    lru = MemoryLRU(0)
    lru.put_many({"k": 1.0})
    assert len(lru) == 0 and lru.get_many(["k"]) == {}


async def test_request_cache_without_a_remote_counts_memory_only() -> None:
    view = RequestCache(TieredCache(MemoryLRU(1 << 20)))
    await view.prefetch(["a", "b"])
    first = await view.get_many(["a", "b", "a"])
    assert (first.memory.hits, first.memory.misses) == (0, 2) and first.redis.hits + first.redis.misses == 0
    await view.put_many({"a": 0.25})
    await view.flush()
    second = await view.get_many(["a", "b"])
    assert second.values == {"a": 0.25} and (second.memory.hits, second.memory.misses) == (1, 1)


def test_value_format_round_trips_and_rejects_everything_else() -> None:
    key = "j:fp:aa:bb"
    for value in (0.0, 0.837, 1.0, -3.5, 1e-300):
        raw = encode_value(key, value)
        assert len(raw) == ENCODED_SIZE and decode_value(key, raw) == value
    good = encode_value(key, 0.5)
    flipped = bytes([good[0], good[1], good[2], good[3] ^ 1, *good[4:]])
    foreign = [
        None,
        "0.5",
        b"0.5",
        b"",
        good[:-1],
        good + b"x",
        flipped,  # a corrupted byte fails the checksum
        b"DR\x02" + good[3:],  # another format version
        encode_value("j:fp:aa:cc", 0.5),  # a valid value, but written for another key
    ]
    for raw in foreign:
        assert decode_value(key, raw) is None, raw
    assert decode_value(key, encode_value(key, math.nan)) is None


def test_redis_url_password_is_redacted_for_logs() -> None:
    assert redact_url("redis://:s3cret@cache.internal:6380/2") == "redis://:***@cache.internal:6380/2"
    assert "s3cret" not in redact_url("rediss://user:s3cret@host/0")
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


# ---- fingerprints: a cache entry must never outlive the model behaviour it was computed with ----------------


def _checkpoint(path: Path, tail: float) -> Path:
    """A 3 MiB checkpoint whose last tensor (past the first MiB) is filled with `tail`."""
    path.mkdir(parents=True, exist_ok=True)
    save_file(
        {"a.embeddings": torch.zeros(512, 1024), "z.last_layer": torch.full((256, 1024), tail)},
        str(path / "model.safetensors"),
    )
    (path / "config.json").write_text('{"hidden_size": 1024}')
    return path


def test_weights_digest_sees_a_change_anywhere_in_the_weights(tmp_path: Path) -> None:
    base = weights_digest(str(_checkpoint(tmp_path / "a", 0.0)))
    assert weights_digest(str(_checkpoint(tmp_path / "b", 0.0))) == base  # content-addressed, not path
    # Same file size, same first MiB: only the last layer was fine-tuned.
    assert weights_digest(str(_checkpoint(tmp_path / "c", 0.5))) != base
    tuned = _checkpoint(tmp_path / "d", 0.0)
    (tuned / "config.json").write_text('{"hidden_size": 1024, "num_labels": 3}')
    assert weights_digest(str(tuned)) != base
    (tuned / "config.json").write_text('{"hidden_size": 1024}')
    (tuned / "vocab.txt").write_text("[PAD]\n[CLS]\n")
    assert weights_digest(str(tuned)) != base  # another tokenizer is another model


def test_fingerprints_change_with_weights_preset_and_truncation(tmp_path: Path) -> None:
    """Real (tiny) checkpoints loaded through the backends' own loaders."""
    path = str(make_tiny_bert(tmp_path / "bert"))
    darling = CrossEncoderClassifier.load(path, "darling-modernbert")
    pair = CrossEncoderClassifier.load(path, "pair")
    cut = CrossEncoderClassifier(
        darling.model, darling.tokenizer, replace(darling.preset, max_words=8), "bert", weights_digest(path)
    )
    assert len({darling.fingerprint, pair.fingerprint, cut.fingerprint}) == 3
    assert CrossEncoderClassifier.load(path, "darling-modernbert").fingerprint == darling.fingerprint

    cosine = EmbeddingClassifier.load(path, head="none", threshold=0.8)
    # Entries hold probabilities, so another threshold must still hit: it is not part of the fingerprint.
    assert EmbeddingClassifier.load(path, head="none", threshold=0.9).fingerprint == cosine.fingerprint
    shorter = EmbeddingClassifier(cosine.model, cosine.tokenizer, 0.8, "bert", weights_digest(path), max_tokens=16)
    assert shorter.fingerprint != cosine.fingerprint

    # Fine-tune one tensor in place: the weights on disk change, so every fingerprint does.
    model = AutoModel.from_pretrained(path)
    with torch.no_grad():
        next(iter(model.parameters())).add_(0.01)
    model.save_pretrained(path, safe_serialization=True)
    assert CrossEncoderClassifier.load(path, "darling-modernbert").fingerprint != darling.fingerprint
    assert EmbeddingClassifier.load(path, head="none", threshold=0.8).fingerprint != cosine.fingerprint
