"""The three published classifier presets (docs/spec.md section 2), pinned to exact token ids on tiny models.

Expected ids are built from vocab lookups of the pieces the layout must produce, never by calling the
preset code: a byte-level BPE writes " word" as "Ġword", a SentencePiece vocab as "▁word".
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from models.backends.base import PairClassifier
from models.backends.cross_encoder import PRESET_FILE, PRESETS, CrossEncoderClassifier, Preset, write_preset_file
from models.backends.loading import LoadOptions
from tests.models.tiny import WORDS

CPU = LoadOptions(device="cpu", dtype="float32")
A = "the cat sat on the mat"
B = "a dog ran in the park"
PAIRS = [
    (A, B),
    ("paris is the capital of france", "the capital of france is paris"),
    ("hello world", "the quick brown fox jumps over the lazy dog"),
    ("water boils at one hundred degrees", "a poem about the sea and the moon and the cat"),
]


def ids_of(tokenizer: Any, tokens: list[str]) -> list[int]:
    vocab = tokenizer.get_vocab()
    missing = [t for t in tokens if t not in vocab]
    assert not missing, f"test words not whole tokens in the tiny vocab: {sorted(set(missing))}"
    return [vocab[t] for t in tokens]


def long_text(n_words: int, offset: int = 0) -> str:
    return " ".join(WORDS[(i + offset) % len(WORDS)] for i in range(n_words))


def reference_probability(path: Path, row: dict[str, list[int]]) -> float:
    """P(label 1) from a freshly loaded transformers model run on one unpadded row."""
    model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()
    # transformers refuses a batch without a pad id, but a single row is fine: it reads the last token.
    with torch.inference_mode():
        logits = model(**{k: torch.tensor([v]) for k, v in row.items()}).logits
    return float(torch.softmax(logits.float(), dim=-1)[0, 1])


def assert_batched_equals_unbatched(clf: CrossEncoderClassifier) -> None:
    encoded = [clf.encode_pair(a, b) for a, b in PAIRS]
    assert len({e.cost for e in encoded}) > 1, "rows of different lengths, so the batch is really padded"
    batched = clf.run(encoded)
    alone = [clf.run([e])[0] for e in encoded]
    assert batched == pytest.approx(alone, abs=1e-5)
    assert all(0.0 <= p <= 1.0 for p in batched)


# --- darling-modernbert ---


@pytest.fixture(scope="module")
def modernbert(modernbert_dir: Path) -> CrossEncoderClassifier:
    return CrossEncoderClassifier.load(str(modernbert_dir), preset="darling-modernbert", opts=CPU)


def darling_tokens(cls: str, sep: str, a_words: list[str], b_words: list[str]) -> list[str]:
    # "{cls} " + a + " {sep} " + b + " {sep}": each space before a special token is its own "Ġ" piece,
    # because added tokens split the text and the byte-level pre-tokenizer keeps the space.
    return [cls, *("Ġ" + w for w in a_words), "Ġ", sep, *("Ġ" + w for w in b_words), "Ġ", sep]


def test_modernbert_exact_ids(modernbert: CrossEncoderClassifier) -> None:
    tok = modernbert.tokenizer
    enc = modernbert.encode_pair(A, B)
    expected = ids_of(tok, darling_tokens("[CLS]", "[SEP]", A.split(), B.split()))
    assert enc.payload == {"input_ids": expected}
    assert enc.truncated == (False, False)
    assert enc.cost == len(expected)
    # The tokenizer adds [CLS] ... [SEP] of its own when asked: the preset must not let it.
    assert tok("x")["input_ids"][0] == tok.cls_token_id
    assert expected.count(tok.cls_token_id) == 1


def test_darling_layout_normalises_whitespace(modernbert: CrossEncoderClassifier) -> None:
    messy = modernbert.encode_pair("  the cat\n\tsat on   the mat ", "\na dog ran in the park\n")
    assert messy.payload == modernbert.encode_pair(A, B).payload


def test_modernbert_word_truncation(modernbert: CrossEncoderClassifier) -> None:
    limit = (2048 - 3) // 2
    assert modernbert.preset.max_words == limit == 1022
    a, b = long_text(limit + 9), long_text(limit + 1, offset=3)
    enc = modernbert.encode_pair(a, b)
    expected = ids_of(modernbert.tokenizer, darling_tokens("[CLS]", "[SEP]", a.split()[:limit], b.split()[:limit]))
    assert enc.payload["input_ids"] == expected
    assert enc.truncated == (True, True)
    assert modernbert.encode_pair(long_text(limit), A).truncated == (False, False)
    assert not modernbert.truncates(long_text(limit))
    assert modernbert.truncates(long_text(limit + 1))


def test_modernbert_probability_is_label_one(modernbert: CrossEncoderClassifier, modernbert_dir: Path) -> None:
    enc = modernbert.encode_pair(A, B)
    p = modernbert.run([enc])[0]
    assert 0.0 <= p <= 1.0
    assert p == pytest.approx(reference_probability(modernbert_dir, enc.payload), abs=1e-5)


def test_modernbert_batched_equals_unbatched(modernbert: CrossEncoderClassifier) -> None:
    assert_batched_equals_unbatched(modernbert)


# --- darling-math (Qwen3) ---


@pytest.fixture(scope="module")
def qwen3(qwen3_dir: Path) -> CrossEncoderClassifier:
    return CrossEncoderClassifier.load(str(qwen3_dir), preset="darling-math", opts=CPU)


def test_qwen3_exact_ids(qwen3: CrossEncoderClassifier) -> None:
    enc = qwen3.encode_pair(A, B)
    expected = ids_of(qwen3.tokenizer, darling_tokens("<|im_start|>", "<|im_end|>", A.split(), B.split()))
    assert enc.payload == {"input_ids": expected}
    # <|im_start|> and <|im_end|> are single added tokens, not spelled out in bytes.
    vocab = qwen3.tokenizer.get_vocab()
    assert enc.payload["input_ids"][0] == vocab["<|im_start|>"]
    assert enc.payload["input_ids"][-1] == vocab["<|im_end|>"]


def test_qwen3_word_truncation(qwen3: CrossEncoderClassifier) -> None:
    limit = (4096 - 3) // 2
    assert qwen3.preset.max_words == limit == 2046
    a = long_text(limit + 4)
    enc = qwen3.encode_pair(a, B)
    expected = ids_of(qwen3.tokenizer, darling_tokens("<|im_start|>", "<|im_end|>", a.split()[:limit], B.split()))
    assert enc.payload["input_ids"] == expected
    assert enc.truncated == (True, False)
    assert not qwen3.truncates(long_text(limit))
    assert qwen3.truncates(long_text(limit + 1))
    # The ModernBERT limit is not the math one: 1023 words fit here.
    assert not qwen3.truncates(long_text(1023))


def test_qwen3_probability_is_label_one(qwen3: CrossEncoderClassifier, qwen3_dir: Path) -> None:
    enc = qwen3.encode_pair(*PAIRS[1])
    assert qwen3.run([enc])[0] == pytest.approx(reference_probability(qwen3_dir, enc.payload), abs=1e-5)


def test_qwen3_batched_equals_unbatched(qwen3: CrossEncoderClassifier) -> None:
    # A decoder classifier reads the last non-pad token: right padding must not move it.
    assert_batched_equals_unbatched(qwen3)


def test_qwen3_without_pad_id_reads_the_true_last_token(qwen3_dir: Path, tmp_path: Path) -> None:
    # A config that names no pad id, and a tokenizer whose pad is <|im_end|>, the token every DARLING input
    # ends with. Alone, transformers reads the last token; in a padded batch it must read the same one.
    folder = tmp_path / "qwen3-no-pad"
    shutil.copytree(qwen3_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["pad_token_id"] = None
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.pad_token = "<|im_end|>"
    tokenizer.save_pretrained(folder)
    clf = CrossEncoderClassifier.load(str(folder), preset="darling-math", opts=CPU)
    encoded = [clf.encode_pair(a, b) for a, b in PAIRS]
    assert all(e.payload["input_ids"][-1] == tokenizer.pad_token_id for e in encoded)
    expected = [reference_probability(folder, e.payload) for e in encoded]
    assert clf.run(encoded) == pytest.approx(expected, abs=1e-5)


# --- noveltybench-deberta ---


@pytest.fixture(scope="module")
def deberta(deberta_dir: Path) -> CrossEncoderClassifier:
    return CrossEncoderClassifier.load(str(deberta_dir), preset="noveltybench-deberta", opts=CPU)


def spm(words: list[str]) -> list[str]:
    return ["▁" + w for w in words]


def test_deberta_exact_ids_and_token_types(deberta: CrossEncoderClassifier) -> None:
    enc = deberta.encode_pair(A, B)
    expected = ids_of(deberta.tokenizer, ["[CLS]", *spm(A.split()), "[SEP]", *spm(B.split()), "[SEP]"])
    assert enc.payload["input_ids"] == expected
    # 0 for [CLS] a [SEP] (6 words + 2), 1 for b [SEP] (6 words + 1).
    assert enc.payload["token_type_ids"] == [0] * 8 + [1] * 7
    assert enc.truncated == (False, False)


def test_deberta_token_truncation(deberta: CrossEncoderClassifier) -> None:
    a, b = long_text(150), long_text(129, offset=5)
    enc = deberta.encode_pair(a, b)
    expected = ids_of(deberta.tokenizer, ["[CLS]", *spm(a.split()[:128]), "[SEP]", *spm(b.split()[:128]), "[SEP]"])
    assert enc.payload["input_ids"] == expected
    assert enc.payload["token_type_ids"] == [0] * 130 + [1] * 129
    assert enc.truncated == (True, True)
    assert not deberta.truncates(long_text(128))
    assert deberta.truncates(long_text(129))


def test_deberta_truncation_counts_tokens_not_words(deberta: CrossEncoderClassifier) -> None:
    # 30 words the vocab does not know are spelled out letter by letter: well over 128 tokens.
    unknown = " ".join(["zebra"] * 30)
    assert len(deberta.tokenizer(unknown, add_special_tokens=False)["input_ids"]) > 128
    assert deberta.truncates(unknown)
    enc = deberta.encode_pair(unknown, A)
    assert enc.truncated == (True, False)
    assert len(enc.payload["input_ids"]) == 128 + 2 + 6 + 1


def test_deberta_probability_is_label_one(deberta: CrossEncoderClassifier, deberta_dir: Path) -> None:
    enc = deberta.encode_pair(*PAIRS[2])
    assert deberta.run([enc])[0] == pytest.approx(reference_probability(deberta_dir, enc.payload), abs=1e-5)


def test_deberta_batched_equals_unbatched(deberta: CrossEncoderClassifier) -> None:
    assert_batched_equals_unbatched(deberta)


def test_deberta_tokenizer_from_the_preset_when_the_checkpoint_has_none(deberta_dir: Path, tmp_path: Path) -> None:
    # The published checkpoint ships weights only; its preset names the tokenizer to use instead.
    bare = tmp_path / "weights-only"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(deberta_dir / name, bare / name)
    write_preset_file(str(bare), replace(PRESETS["noveltybench-deberta"], tokenizer=str(deberta_dir)))
    clf = CrossEncoderClassifier.load(str(bare), opts=CPU)
    expected = ids_of(clf.tokenizer, ["[CLS]", *spm(A.split()), "[SEP]", *spm(B.split()), "[SEP]"])
    assert clf.encode_pair(A, B).payload["input_ids"] == expected
    # An explicit tokenizer path works too.
    clf = CrossEncoderClassifier.load(
        str(bare), preset="noveltybench-deberta", opts=CPU, tokenizer_path=str(deberta_dir)
    )
    assert clf.encode_pair(A, B).payload["input_ids"] == expected


# --- thresholds, the generic preset, preset files ---


def test_published_thresholds(
    modernbert: CrossEncoderClassifier, qwen3: CrossEncoderClassifier, deberta: CrossEncoderClassifier
) -> None:
    assert modernbert.default_threshold == 0.32
    assert qwen3.default_threshold == 0.5
    assert deberta.default_threshold == 0.102
    for clf in (modernbert, qwen3, deberta):
        assert isinstance(clf, PairClassifier)
        assert clf.preset.label_index == 1
    assert {m.id for m in (modernbert, qwen3, deberta)} == {
        f"cross-encoder:darling-modernbert:{modernbert.id.rsplit(':', 1)[1]}",
        f"cross-encoder:darling-math:{qwen3.id.rsplit(':', 1)[1]}",
        f"cross-encoder:noveltybench-deberta:{deberta.id.rsplit(':', 1)[1]}",
    }


def test_threshold_override(modernbert_dir: Path) -> None:
    clf = CrossEncoderClassifier.load(str(modernbert_dir), preset="darling-modernbert", opts=CPU, threshold=0.7)
    assert clf.default_threshold == 0.7
    assert clf.preset.layout == "words"


def test_unknown_preset(modernbert_dir: Path) -> None:
    with pytest.raises(ValueError, match="darling-modernbert"):
        CrossEncoderClassifier.load(str(modernbert_dir), preset="darling-bert", opts=CPU)


def test_pair_preset_uses_the_tokenizers_own_pair_encoding(deberta_dir: Path) -> None:
    clf = CrossEncoderClassifier.load(str(deberta_dir), preset="pair", opts=CPU)
    assert clf.default_threshold == 0.5
    enc = clf.encode_pair(A, B)
    assert enc.payload["input_ids"] == ids_of(
        clf.tokenizer, ["[CLS]", *spm(A.split()), "[SEP]", *spm(B.split()), "[SEP]"]
    )
    assert enc.payload["token_type_ids"] == [0] * 8 + [1] * 7
    assert_batched_equals_unbatched(clf)


def test_folder_without_preset_file_or_argument_is_pair(deberta_dir: Path) -> None:
    assert not (deberta_dir / PRESET_FILE).exists()
    assert CrossEncoderClassifier.load(str(deberta_dir), opts=CPU).preset == PRESETS["pair"]


def test_pair_preset_longest_first_truncation(deberta_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "short-pair"
    shutil.copytree(deberta_dir, folder)
    write_preset_file(str(folder), Preset(name="short-pair", layout="pair", threshold=0.4, max_length=12))
    clf = CrossEncoderClassifier.load(str(folder), opts=CPU)
    assert clf.preset.name == "short-pair"
    assert clf.default_threshold == 0.4
    a = long_text(10)
    enc = clf.encode_pair(a, "hello world")
    # 12 = 3 special tokens + 9: longest_first trims the 10-word side to 7 and keeps the 2-word side whole.
    assert enc.payload["input_ids"] == ids_of(
        clf.tokenizer, ["[CLS]", *spm(a.split()[:7]), "[SEP]", "▁hello", "▁world", "[SEP]"]
    )
    assert enc.truncated == (True, False)
    # Both sides over half the window: both are cut.
    both = clf.encode_pair(a, long_text(10, offset=2))
    assert len(both.payload["input_ids"]) == 12
    assert both.truncated == (True, True)
    assert clf.encode_pair("hello world", A).truncated == (False, False)
    assert clf.truncates(a)
    assert not clf.truncates("hello world")


def test_preset_file_is_picked_up_without_a_preset_argument(modernbert_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "fine-tuned"
    shutil.copytree(modernbert_dir, folder)
    custom = replace(PRESETS["darling-modernbert"], name="my-modernbert", threshold=0.41, checkpoint=None)
    write_preset_file(str(folder), custom)
    clf = CrossEncoderClassifier.load(str(folder), opts=CPU)
    assert clf.preset == custom
    assert clf.default_threshold == 0.41
    assert clf.id == "cross-encoder:my-modernbert:fine-tuned"
    expected = ids_of(clf.tokenizer, darling_tokens("[CLS]", "[SEP]", A.split(), B.split()))
    assert clf.encode_pair(A, B).payload == {"input_ids": expected}
    # An explicit preset argument wins over the file.
    assert CrossEncoderClassifier.load(str(folder), preset="pair", opts=CPU).preset == PRESETS["pair"]


def test_fingerprint_follows_weights_and_preset(modernbert_dir: Path, tmp_path: Path) -> None:
    a = CrossEncoderClassifier.load(str(modernbert_dir), preset="darling-modernbert", opts=CPU)
    b = CrossEncoderClassifier.load(str(modernbert_dir), preset="darling-modernbert", opts=CPU)
    c = CrossEncoderClassifier.load(str(modernbert_dir), preset="pair", opts=CPU)
    assert a.fingerprint == b.fingerprint
    assert a.fingerprint != c.fingerprint
