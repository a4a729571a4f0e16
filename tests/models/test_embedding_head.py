"""The embedded default with its packaged head, measured for real on the packaged MiniLM."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.backends.embedding import DEFAULT_COSINE_THRESHOLD, DEFAULT_HEAD, EmbeddingClassifier, text_key
from models.training.data import Pair, balanced_subsample, read_idea_pairs, read_pairs, split_heldout
from models.training.metrics import evaluate
from service.engine.engine import load_backends
from service.settings import Settings
from tests.conftest import PAIRS

SHORT_TEST = Path(__file__).parent / "data" / "short_ideas_test.json"


@pytest.fixture(scope="module")
def head_clf() -> EmbeddingClassifier:
    clf = load_backends(Settings(verifier=False, cpu_threads=2)).classifier
    assert isinstance(clf, EmbeddingClassifier)
    return clf


def cosine_of(clf: EmbeddingClassifier) -> EmbeddingClassifier:
    """The plain-cosine classifier over the same loaded encoder (DARLING_EMBEDDING_HEAD=none)."""
    return EmbeddingClassifier(clf.model, clf.tokenizer, DEFAULT_COSINE_THRESHOLD, "all-MiniLM-L6-v2", "x")


def scores(clf: EmbeddingClassifier, pairs: list[Pair]) -> tuple[np.ndarray, np.ndarray]:
    """Head probabilities through `run`, and the plain cosine of the same views' first windows."""
    out: list[float] = []
    for start in range(0, len(pairs), 16):
        part = pairs[start : start + 16]
        out += clf.run([clf.encode_pair(p.a, p.b) for p in part])
    views = clf.views([clf._side(t)[0] for p in pairs for t in (p.a, p.b)])
    cos = cosine_of(clf).score_views([(views[text_key(p.a)], views[text_key(p.b)]) for p in pairs])
    return np.array(out), np.array(cos)


def test_service_default_loads_the_packaged_head(head_clf: EmbeddingClassifier) -> None:
    assert head_clf.head is not None and head_clf.max_chunks == head_clf.head.config.max_chunks
    assert head_clf.default_threshold == json.loads((Path(DEFAULT_HEAD) / "head.json").read_text())["threshold"]
    plain = load_backends(Settings(verifier=False, embedding_head="none")).classifier
    assert isinstance(plain, EmbeddingClassifier) and plain.head is None
    assert plain.default_threshold == DEFAULT_COSINE_THRESHOLD
    assert plain.fingerprint != head_clf.fingerprint


def test_first_window_is_exactly_the_plain_cosine_embedding(head_clf: EmbeddingClassifier) -> None:
    """So the cosine computed from the head's views below is the cosine classifier's own score."""
    text, other = read_pairs(str(PAIRS))[0].a, "An unrelated sentence about cooking pasta at home."
    plain = cosine_of(head_clf)
    (p,) = plain.run([plain.encode_pair(text, other)])
    views = head_clf.views([head_clf._side(text)[0], head_clf._side(other)[0]])
    a, b = views[text_key(text)], views[text_key(other)]
    assert head_clf.truncates(text) and len(a.chunks) == head_clf.max_chunks
    assert plain.score_views([(a, b)])[0] == pytest.approx(p, abs=1e-5)


def test_short_paraphrases_equivalent_and_short_ideas_distinct(head_clf: EmbeddingClassifier) -> None:
    """Held-out short answers (prompts the head never saw): the single cosine cut calls most paraphrases distinct."""
    pairs = read_idea_pairs(str(SHORT_TEST))
    head, cos = scores(head_clf, pairs)
    y = np.array([p.label for p in pairs])
    m_head = evaluate(head, y, head_clf.default_threshold)
    m_cos = evaluate(cos, y, DEFAULT_COSINE_THRESHOLD)
    # Measured at the packaged 0.5: accuracy 0.82, precision 0.95, recall 0.69 (the 8-window head at its 0.43
    # had 0.84 / 0.95 / 0.72: two pairs of 108; at 0.5 it too had recall 0.69). The cut errs towards "distinct".
    assert m_head["accuracy"] >= 0.8 and m_head["recall"] >= 0.65 and m_head["precision"] >= 0.9
    assert m_head["accuracy"] > m_cos["accuracy"] + 0.1


@pytest.mark.slow
def test_head_beats_cosine_on_balanced_heldout_pairs(head_clf: EmbeddingClassifier) -> None:
    """The held-out fifth (sha256(id) % 5 == 0), balanced: all 66 equivalent pairs and 66 distinct ones."""
    _, held = split_heldout(read_pairs(str(PAIRS)))
    pairs = balanced_subsample(held)
    head, cos = scores(head_clf, pairs)
    y = np.array([p.label for p in pairs])
    m_head = evaluate(head, y, head_clf.default_threshold)
    m_cos = evaluate(cos, y, DEFAULT_COSINE_THRESHOLD)
    assert m_head["accuracy"] >= 0.75
    assert m_head["accuracy"] > m_cos["accuracy"] and m_head["roc_auc"] > m_cos["roc_auc"]
