"""Training pieces on tiny real models: the fine-tuning recipe, the embedding head, metrics, chunking."""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from models.backends.cross_encoder import PRESET_FILE, CrossEncoderClassifier
from models.backends.embedding import EmbeddingClassifier, chunk_ids, text_key
from models.backends.embedding_head import HeadConfig, PairHead, TextView, bucket, idf_table, name_set, pair_features
from models.training.data import Pair, balanced_subsample, is_heldout, read_idea_pairs, read_pairs, split_heldout
from models.training.head import compute_views, train_head
from models.training.metrics import best_thresholds, evaluate, roc_auc, roc_curve
from models.training.pair_classifier import Recipe, lr_at, train_pair_classifier
from tests.conftest import PAIRS
from tests.models.tiny import CORPUS
from tests.models.tiny_bert import make_tiny_bert

IDEAS = Path(__file__).resolve().parents[2] / "models" / "training" / "ideas" / "short_ideas.json"


def toy_pairs(n: int, seed: int = 0) -> list[Pair]:
    """Equivalent = the same corpus sentence twice (one with a word repeated); distinct = two different ones."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a = rng.choice(CORPUS)
        if i % 2 == 0:
            words = a.split()
            b = " ".join([*words, words[-1]])
            out.append(Pair(f"toy{i}", a, b, 1))
        else:
            b = rng.choice([s for s in CORPUS if s != a])
            out.append(Pair(f"toy{i}", a, b, 0))
    return out


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def test_lr_schedule_warms_up_then_decays_to_min() -> None:
    r = Recipe(steps=80, lr=2e-5, min_lr=2e-6, warmup=10)
    assert lr_at(0, r) == pytest.approx(2e-6)
    assert lr_at(9, r) == pytest.approx(2e-5)
    assert lr_at(79, r) == pytest.approx(2e-6)
    lrs = [lr_at(s, r) for s in range(10, 80)]
    assert all(x >= y for x, y in itertools.pairwise(lrs))


def test_fine_tune_learns_and_folder_is_served_with_no_flags(tiny_bert: Path, tmp_path: Path) -> None:
    pairs = toy_pairs(24)
    out = tmp_path / "clf"
    recipe = Recipe(steps=40, lr=3e-3, min_lr=3e-4, warmup=2, batch=16, micro_batch=8, max_length=64)
    record = train_pair_classifier(pairs, str(tiny_bert), str(out), recipe, val_pairs=pairs, progress=False)
    assert record["examples"] == 48  # both orders
    assert record["loss_last"] < record["loss_first"]
    assert {"model.safetensors", "config.json", PRESET_FILE, "tokenizer.json", "training.json"} <= {
        p.name for p in out.iterdir()
    }
    clf = CrossEncoderClassifier.load(str(out))
    assert clf.preset.layout == "pair" and clf.preset.max_length == 64
    assert clf.default_threshold == pytest.approx(record["threshold"])
    scores = clf.run([clf.encode_pair(p.a, p.b) for p in pairs])
    labels = np.array([p.label for p in pairs])
    # Trained on these very pairs: the served folder must rank them far better than chance.
    assert roc_auc(np.array(scores), labels) > 0.8


def test_lora_adapters_are_merged_into_a_plain_folder(tiny_bert: Path, tmp_path: Path) -> None:
    out = tmp_path / "lora"
    recipe = Recipe(steps=3, warmup=1, batch=8, micro_batch=4, max_length=32, lora=True, lora_r=4)
    train_pair_classifier(toy_pairs(8), str(tiny_bert), str(out), recipe, progress=False)
    keys = load_file(str(out / "model.safetensors")).keys()
    assert not any("lora" in k for k in keys)
    assert any(k.startswith("classifier.") for k in keys)
    clf = CrossEncoderClassifier.load(str(out))
    (p,) = clf.run([clf.encode_pair("the cat sat on the mat", "a dog ran in the park")])
    assert 0.0 <= p <= 1.0


def test_training_is_reproducible(tiny_bert: Path, tmp_path: Path) -> None:
    recipe = Recipe(steps=3, warmup=1, batch=8, micro_batch=4, max_length=32)
    for name in ("a", "b"):
        train_pair_classifier(toy_pairs(8), str(tiny_bert), str(tmp_path / name), recipe, progress=False)
    wa, wb = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_metrics_against_brute_force() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 60)
    scores = np.round(rng.random(60) * 0.5 + labels * 0.3, 2)  # ties on purpose
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    assert roc_auc(scores, labels) == pytest.approx(wins / (len(pos) * len(neg)))
    fpr, tpr = roc_curve(scores, labels)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(scores, labels))
    m = evaluate(scores, labels, 0.4)
    pred = scores > 0.4
    assert m["accuracy"] == pytest.approx(float((pred == (labels == 1)).mean()))
    tp = int((pred & (labels == 1)).sum())
    assert m["precision"] == pytest.approx(tp / pred.sum()) and m["recall"] == pytest.approx(tp / labels.sum())
    assert m["confusion"]["tp"] == tp and sum(m["confusion"].values()) == 60
    best = best_thresholds(scores, labels)
    for t in np.unique(scores):
        assert evaluate(scores, labels, float(t))["accuracy"] <= m["best_accuracy"] + 1e-12
        assert evaluate(scores, labels, float(t))["f1"] <= evaluate(scores, labels, best["f1"])["f1"] + 1e-12


def test_heldout_rule_and_balanced_subsample() -> None:
    pairs = read_pairs(str(PAIRS))
    train, held = split_heldout(pairs)
    assert (len(train), len(held)) == (786, 214)
    assert all(is_heldout(p.id) for p in held) and not any(is_heldout(p.id) for p in train)
    bal = balanced_subsample(held)
    assert sum(p.label for p in bal) * 2 == len(bal) == 2 * sum(p.label for p in held)


def test_idea_pairs_are_balanced_and_long_enough_for_the_classifier() -> None:
    pairs = read_idea_pairs(str(IDEAS))
    assert sum(p.label for p in pairs) * 2 == len(pairs)
    # Over five words the short-text rule does not decide; the head must.
    assert sum(max(len(p.a.split()), len(p.b.split())) > 5 for p in pairs) > 0.95 * len(pairs)


def test_chunks_cover_long_texts_in_full_windows() -> None:
    rows, cut = chunk_ids(list(range(10, 30)), 1, 2, max_tokens=8, max_chunks=8)
    assert not cut and all(len(r) == 8 and r[0] == 1 and r[-1] == 2 for r in rows)
    assert {t for r in rows for t in r[1:-1]} == set(range(10, 30))
    assert chunk_ids([5, 6], 1, 2, 8, 8) == ([[1, 5, 6, 2]], False)
    rows, cut = chunk_ids(list(range(100)), 1, 2, max_tokens=8, max_chunks=3)
    assert cut and [r[1:-1] for r in rows] == [list(range(0, 6)), list(range(6, 12)), list(range(12, 18))]


def test_head_features_are_symmetric() -> None:
    g = torch.Generator().manual_seed(0)
    a = TextView(torch.nn.functional.normalize(torch.randn(3, 8, generator=g), dim=-1), 700, frozenset("abc"))
    b = TextView(torch.nn.functional.normalize(torch.randn(1, 8, generator=g), dim=-1), 40, frozenset("bcd"))
    groups = ("cos", "len", "lex", "vec")
    idf = idf_table([a.words, b.words, frozenset("a")], 16).tolist()
    fa, fb = pair_features(groups, a, b, idf), pair_features(groups, b, a, idf)
    assert torch.allclose(fa, fb)
    assert len(fa) == HeadConfig(groups=groups, dim=8).n_features
    assert fa[7] == pytest.approx(abs(math.log1p(700) - math.log1p(40)))  # after 6 similarities: mean, |diff|, min
    assert fa[9] == pytest.approx(2 / 4)  # word Jaccard of {a,b,c} and {b,c,d}


def test_idf_weighs_rare_words_more() -> None:
    idf = idf_table([frozenset({"the", "cat"}), frozenset({"the", "dog"}), frozenset({"the"})], 1 << 12)
    assert idf[bucket("cat", 1 << 12)] > idf[bucket("the", 1 << 12)]
    assert name_set("Alice met Bob in New York.") == {"alice", "bob", "new york"}


def test_head_over_tiny_encoder_round_trips_and_is_served(tiny_bert: Path, tmp_path: Path) -> None:
    base = EmbeddingClassifier.load(str(tiny_bert), head="none")
    enc = EmbeddingClassifier(base.model, base.tokenizer, 0.5, "tiny", "digest", max_tokens=16, max_chunks=4)
    pairs = toy_pairs(40)
    cache = tmp_path / "views.pt"
    views = compute_views(enc, sorted({t for p in pairs for t in (p.a, p.b)}), str(cache))
    key = text_key(pairs[0].a)
    enc.model = None  # a second call must come from the cache file, without the encoder
    assert torch.equal(compute_views(enc, [pairs[0].a], str(cache))[key].chunks, views[key].chunks)
    enc.model = base.model
    from models.backends.base import weights_digest

    config = HeadConfig(dim=32, hidden=8, base_digest=weights_digest(str(tiny_bert)))
    head, oof = train_head(config, pairs[:30], views, pairs[30:], steps=100, lr=1e-2)
    assert oof is not None and len(oof) == 30
    assert 0.0 <= head.config.threshold <= 1.0
    head.save(str(tmp_path / "head"))
    loaded = PairHead.load(str(tmp_path / "head"))
    assert loaded.config == head.config
    clf = EmbeddingClassifier.load(str(tiny_bert), head=str(tmp_path / "head"))
    assert clf.head is not None and clf.default_threshold == head.config.threshold
    assert clf.fingerprint != EmbeddingClassifier.load(str(tiny_bert), head="none").fingerprint
    ab = clf.run([clf.encode_pair(p.a, p.b) for p in pairs])
    ba = clf.run([clf.encode_pair(p.b, p.a) for p in pairs])
    assert ab == pytest.approx(ba, abs=1e-6)
    labels = np.array([p.label for p in pairs])
    assert roc_auc(np.array(ab), labels) > 0.8  # fitted on these pairs
    with pytest.raises(ValueError, match="another encoder"):
        other = tmp_path / "other"
        make_tiny_bert(other, hidden=32, layers=1)
        EmbeddingClassifier.load(str(other), head=str(tmp_path / "head"))
    assert json.loads((tmp_path / "head" / "head.json").read_text())["hidden"] == 8
