"""The embedded default: the real packaged all-MiniLM-L6-v2 puts paraphrases together and different ideas apart."""

from __future__ import annotations

import pytest

from models.backends.base import PairClassifier
from models.backends.embedding import EmbeddingClassifier
from models.backends.loading import LoadOptions
from models.partition import AllPairsPlanner, GreedyPlanner

pytestmark = pytest.mark.slow

PARAPHRASES = [
    ("The capital of France is Paris.", "Paris is the capital city of France."),
    ("The Earth orbits around the Sun once every year.", "Once a year, the Earth completes an orbit around the Sun."),
    ("Drink plenty of water to stay hydrated.", "To stay hydrated, drink lots of water."),
    (
        'To reset your password, click "Forgot password" on the login page.',
        'Click "Forgot password" on the sign-in page to reset your password.',
    ),
]
DIFFERENT = [
    ("The capital of France is Paris.", "Photosynthesis converts sunlight into chemical energy in plants."),
    ("A cat is sleeping on the sofa.", "The stock market fell sharply on Monday."),
    ("Write a poem about the ocean at night.", "Here is a recipe for chocolate chip cookies."),
    ("Once upon a time, a dragon guarded a mountain of gold.", "A detective in Tokyo solves a murder with a phone."),
    # Same shape and topic, different fact.
    ("Paris is the capital of France.", "Berlin is the capital of Germany."),
]


@pytest.fixture(scope="module")
def minilm() -> EmbeddingClassifier:
    return EmbeddingClassifier.load(opts=LoadOptions(device="cpu", dtype="float32"))


def score(clf: EmbeddingClassifier, a: str, b: str) -> float:
    return clf.run([clf.encode_pair(a, b)])[0]


def test_is_the_packaged_model(minilm: EmbeddingClassifier) -> None:
    assert isinstance(minilm, PairClassifier)
    assert minilm.id == "embedding:all-MiniLM-L6-v2+head"
    assert 0.0 < minilm.default_threshold < 1.0


@pytest.mark.parametrize(("a", "b"), PARAPHRASES)
def test_paraphrases_score_above_the_default_threshold(minilm: EmbeddingClassifier, a: str, b: str) -> None:
    assert score(minilm, a, b) > minilm.default_threshold
    assert score(minilm, b, a) == pytest.approx(score(minilm, a, b), abs=1e-6)


@pytest.mark.parametrize(("a", "b"), DIFFERENT)
def test_different_ideas_score_below_the_default_threshold(minilm: EmbeddingClassifier, a: str, b: str) -> None:
    p = score(minilm, a, b)
    assert 0.0 <= p < minilm.default_threshold


def test_identical_text_is_equivalent(minilm: EmbeddingClassifier) -> None:
    assert score(minilm, PARAPHRASES[0][0], PARAPHRASES[0][0]) > 0.9
    plain = EmbeddingClassifier.load(opts=LoadOptions(device="cpu", dtype="float32"), head="none")
    assert plain.id == "embedding:all-MiniLM-L6-v2"
    assert score(plain, PARAPHRASES[0][0], PARAPHRASES[0][0]) == pytest.approx(1.0, abs=1e-5)


def test_batched_equals_unbatched(minilm: EmbeddingClassifier) -> None:
    pairs = PARAPHRASES + DIFFERENT
    fresh = EmbeddingClassifier.load(opts=LoadOptions(device="cpu", dtype="float32"))
    batched = fresh.run([fresh.encode_pair(a, b) for a, b in pairs])
    assert batched == pytest.approx([score(minilm, a, b) for a, b in pairs], abs=1e-5)


def test_a_group_partitions_by_idea(minilm: EmbeddingClassifier) -> None:
    # Three ideas, two phrasings each, interleaved: both algorithms recover the three classes.
    group = [
        PARAPHRASES[0][0],
        PARAPHRASES[1][0],
        PARAPHRASES[2][0],
        PARAPHRASES[1][1],
        PARAPHRASES[0][1],
        PARAPHRASES[2][1],
    ]
    for planner in (AllPairsPlanner(6), GreedyPlanner(6)):
        while not planner.done:
            pairs = planner.next_pairs()
            probs = minilm.run([minilm.encode_pair(group[i], group[j]) for i, j in pairs])
            planner.feed({p: s > minilm.default_threshold for p, s in zip(pairs, probs, strict=True)})
        assert planner.classes() == [0, 1, 2, 1, 0, 2]


def test_the_default_reads_the_first_window_and_flags_the_cut(minilm: EmbeddingClassifier) -> None:
    """The packaged head reads each text's first 256 tokens (the cost target); a head may read up to 8 windows."""
    assert minilm.head is not None and minilm.max_chunks == minilm.head.config.max_chunks == 1
    long, very_long = "word " * 300, "word " * 3000
    assert minilm.truncates(long) and not minilm.truncates(PARAPHRASES[0][0])
    assert minilm.encode_pair(long, PARAPHRASES[0][0]).truncated == (True, False)
    wide = EmbeddingClassifier(minilm.model, minilm.tokenizer, 0.5, "m", "d", max_chunks=8)
    assert not wide.truncates(long) and wide.truncates(very_long)
    assert len(wide._chunks(long)[0]) == 2 and len(minilm._chunks(long)[0]) == 1
    plain = EmbeddingClassifier.load(opts=LoadOptions(device="cpu", dtype="float32"), head="none")
    assert plain.truncates(long) and not plain.truncates(PARAPHRASES[0][0])


def test_a_group_tokenizes_each_text_once(minilm: EmbeddingClassifier, monkeypatch: pytest.MonkeyPatch) -> None:
    """The planner asks for n(n-1)/2 pairs of n texts: each text is tokenized once, and the answers are unchanged."""
    import itertools

    fresh = EmbeddingClassifier(minilm.model, minilm.tokenizer, 0.5, "m", "d", head=minilm.head)
    texts = [a for a, _ in PARAPHRASES] + [b for _, b in DIFFERENT]
    seen: list[str] = []
    real = fresh._chunks

    def counting(text: str) -> tuple[list[list[int]], bool, int]:
        seen.append(text)
        return real(text)

    monkeypatch.setattr(fresh, "_chunks", counting)
    pairs = list(itertools.combinations(texts, 2))
    got = fresh.run([fresh.encode_pair(a, b) for a, b in pairs])
    assert sorted(seen) == sorted(set(texts))
    assert got == pytest.approx(minilm.run([minilm.encode_pair(a, b) for a, b in pairs]), abs=1e-5)
