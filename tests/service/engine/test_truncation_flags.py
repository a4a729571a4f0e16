"""A rollout's `truncated` flag is what the classifier's encoding of its pairs saw, on a fresh judgement and on
a cached one, with no second tokenization. Real tiny BERT (WordPiece: one token per CJK character)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from darling_client.schemas import RewardRequest, RolloutGroup

from models.backends.base import Encoded
from models.backends.cross_encoder import CrossEncoderClassifier, Preset
from service.cache.memory import MemoryLRU
from service.cache.tiers import TieredCache
from service.engine.batching import Batcher
from service.engine.scoring import Model, Scorer
from service.settings import Settings
from service.tools.bench.models import build_model

# No spaces: one "word" for the `words` layout's per-side cut, 128 tokens for the whole-input cut.
CJK = "天地玄黄宇宙洪荒日月盈昃辰宿列张" * 8
SHORT = "one two three four five six seven"
# About 300 tokens: over half of the `pair` layout's 512, yet the pair with SHORT fits whole.
MEDIUM = " ".join(["cat", "dog", "sun", "tree", "red", "blue", "car", "sea"][k % 8] for k in range(300))


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> CrossEncoderClassifier:
    return CrossEncoderClassifier.load(build_model("bert-tiny", str(tmp_path_factory.mktemp("bert-tiny"))))


class EncodingOnly(CrossEncoderClassifier):
    """Counts encodings and refuses any other tokenization of a rollout."""

    encodes = 0

    def encode_pair(self, a: str, b: str) -> Encoded:
        self.encodes += 1
        return super().encode_pair(a, b)

    def truncates(self, text: str) -> bool:
        raise AssertionError("a second tokenization, beside the encoding the model reads")


WORDS_64 = Preset(name="words-64", layout="words", threshold=0.5, max_words=100, max_length=64)


@pytest.mark.parametrize(
    ("layout", "texts"),
    [("words", [CJK, SHORT]), ("words", [SHORT, CJK]), ("pair", [MEDIUM, SHORT]), ("pair", [SHORT, MEDIUM])],
)
async def test_flags_are_what_the_encoding_saw_fresh_and_cached(
    bert: CrossEncoderClassifier, layout: str, texts: list[str]
) -> None:
    preset = WORDS_64 if layout == "words" else replace(bert.preset, name="pair-512")
    clf = EncodingOnly(bert.model, bert.tokenizer, preset, "t", "t")
    seen = CrossEncoderClassifier(bert.model, bert.tokenizer, preset, "t", "t").encode_pair(*texts).truncated
    if layout == "words":
        assert any(seen)  # the whole-input cut at 64 tokens, which no word count sees
    else:
        assert seen == (False, False)  # 300 + 7 tokens fit in 512: nothing is cut
    settings = Settings(classifier="cross-encoder", verifier=False)
    scorer = Scorer(settings, Model(clf, Batcher(clf, name="clf", max_wait_ms=0)), TieredCache(MemoryLRU(1 << 20)))
    req = RewardRequest(groups=[RolloutGroup(prompt="p", responses=texts, quality=[1.0, 0.5])])
    try:
        fresh = (await scorer.score(req)).groups[0]
        assert fresh.judgements.model == 1 and clf.encodes == 1
        assert [r.truncated for r in fresh.rollouts] == list(seen)
        assert fresh.truncated == sum(seen)
        cached = (await scorer.score(req)).groups[0]
        assert cached.judgements.cached == 1 and clf.encodes == 1  # a hit costs no tokenization at all
        assert [r.truncated for r in cached.rollouts] == list(seen)
    finally:
        await scorer.classifier.batcher.close()
