"""The `reward-model` quality source on a tiny Llama-architecture reward model with a chat template."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from models.backends.base import QualityBackend
from models.backends.loading import LoadOptions
from models.backends.reward_model import RewardModelQuality

CPU = LoadOptions(device="cpu", dtype="float32")
PROMPT = "the capital of france"
ROLLOUTS = [
    ("the capital of france", "paris is the capital of france"),
    ("a story about a robot", "a robot who learns to paint the sea and the moon"),
    ("hello", "hello world"),
    ("the answer", "the answer is forty two"),
]


def ids_of(tokenizer: Any, tokens: list[str]) -> list[int]:
    vocab = tokenizer.get_vocab()
    missing = sorted({t for t in tokens if t not in vocab})
    assert not missing, f"not whole tokens in the tiny vocab: {missing}"
    return [vocab[t] for t in tokens]


def words(text: str) -> list[str]:
    """Byte-level BPE pieces of a text that does not start with a space: "the", "Ġcat", "Ġsat"..."""
    first, *rest = text.split()
    return [first, *("Ġ" + w for w in rest)]


def reference_score(path: Path, ids: list[int]) -> float:
    """The model's own reading of one unpadded row, freshly loaded (its config names no pad token)."""
    model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()
    assert model.config.pad_token_id is None
    with torch.inference_mode():
        return float(model(input_ids=torch.tensor([ids])).logits[0, 0])


@pytest.fixture(scope="module")
def rm(llama_rm_dir: Path) -> RewardModelQuality:
    return RewardModelQuality.load(str(llama_rm_dir), opts=CPU)


def test_is_a_quality_backend(rm: RewardModelQuality) -> None:
    assert isinstance(rm, QualityBackend)
    assert rm.source == "reward-model"
    assert rm.id.startswith("reward-model:")


def test_scores_on_the_chat_template(rm: RewardModelQuality) -> None:
    response = "paris is the capital of france"
    # The template: <s><|user|>\n{prompt}</s><|assistant|>\n{response}</s>  ("\n" is the byte piece "Ċ").
    expected = ids_of(
        rm.tokenizer,
        ["<s>", "<|user|>", "Ċ", *words(PROMPT), "</s>", "<|assistant|>", "Ċ", *words(response), "</s>"],
    )
    assert rm.input_ids(PROMPT, response) == expected
    messages = [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": response}]
    templated = rm.tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    assert list(templated) == expected
    enc = rm.encode_rollout(PROMPT, response, None)
    assert enc.payload == {"input_ids": expected}
    assert enc.cost == len(expected)
    assert enc.truncated == (False,)


def test_scores_are_finite_and_read_at_the_last_token(rm: RewardModelQuality, llama_rm_dir: Path) -> None:
    encoded = [rm.encode_rollout(p, r, None) for p, r in ROLLOUTS]
    scores = rm.run(encoded)
    assert all(isinstance(s, float) and math.isfinite(s) for s in scores)
    assert len(set(scores)) == len(scores)
    # Every conversation ends with </s>, the tokenizer's stand-in pad: the score must still come from that
    # last token, as the model reads it alone.
    assert scores[0] == pytest.approx(reference_score(llama_rm_dir, encoded[0].payload["input_ids"]), abs=1e-5)


def test_batched_equals_unbatched(rm: RewardModelQuality) -> None:
    encoded = [rm.encode_rollout(p, r, None) for p, r in ROLLOUTS]
    assert len({e.cost for e in encoded}) > 1
    assert rm.run(encoded) == pytest.approx([rm.run([e])[0] for e in encoded], abs=1e-5)


def test_truncation_keeps_the_end(llama_rm_dir: Path) -> None:
    short = RewardModelQuality.load(str(llama_rm_dir), opts=CPU, max_length=8)
    full = short.input_ids(*ROLLOUTS[1])
    assert len(full) > 8
    enc = short.encode_rollout(*ROLLOUTS[1], None)
    assert enc.payload["input_ids"] == full[-8:]
    assert enc.truncated == (True,)
    assert short.fingerprint != RewardModelQuality.load(str(llama_rm_dir), opts=CPU).fingerprint


def test_without_chat_template_falls_back_to_pair_encoding(
    llama_rm_no_template_dir: Path, rm: RewardModelQuality
) -> None:
    rm_with_template = rm
    rm = RewardModelQuality.load(str(llama_rm_no_template_dir), opts=CPU)
    # Same weights (same seed), different template: cached scores of one must not serve the other.
    assert rm.fingerprint != rm_with_template.fingerprint
    assert not rm.tokenizer.chat_template
    response = "paris is the capital of france"
    # The Llama pair template: <s> A <s> B.
    expected = ids_of(rm.tokenizer, ["<s>", *words(PROMPT), "<s>", *words(response)])
    assert rm.input_ids(PROMPT, response) == expected
    encoded = [rm.encode_rollout(p, r, None) for p, r in ROLLOUTS]
    scores = rm.run(encoded)
    assert all(math.isfinite(s) for s in scores)
    assert scores == pytest.approx([rm.run([e])[0] for e in encoded], abs=1e-5)
