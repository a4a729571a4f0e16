"""Quality from a sequence-classification reward model, scored on its chat template."""

from __future__ import annotations

import os
from typing import Any

from models.backends.base import Encoded, fingerprint, weights_digest
from models.backends.cross_encoder import PaddedForward
from models.backends.loading import LoadOptions, load_pretrained, load_tokenizer


class RewardModelQuality:
    source = "reward-model"

    def __init__(self, model: Any, tokenizer: Any, model_id: str, digest: str, max_length: int = 4096) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.id = f"reward-model:{model_id}"
        # The template decides what the model reads, and transformers saves it outside the hashed json files.
        self.fingerprint = fingerprint("reward-model", digest, max_length, getattr(tokenizer, "chat_template", None))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        # Llama-style templates end in eos, the usual stand-in pad: PaddedForward keeps the score on it.
        self._forward = PaddedForward(model, int(pad) if pad is not None else 0)
        self.device = str(self._forward.device)

    @classmethod
    def load(cls, path: str, opts: LoadOptions | None = None, max_length: int = 4096) -> RewardModelQuality:
        from transformers import AutoModelForSequenceClassification

        opts = opts or LoadOptions()
        tokenizer = load_tokenizer(path, opts)
        model = load_pretrained(AutoModelForSequenceClassification, path, opts)
        return cls(model, tokenizer, os.path.basename(os.path.normpath(path)), weights_digest(path), max_length)

    def input_ids(self, prompt: str, response: str) -> list[int]:
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
            ids = self.tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=False)
            if isinstance(ids, dict) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
            return [int(i) for i in ids]
        return [int(i) for i in self.tokenizer(prompt, response)["input_ids"]]

    def encode_rollout(self, prompt: str, response: str, reference: str | None) -> Encoded:
        ids = self.input_ids(prompt, response)
        truncated = len(ids) > self.max_length
        # Keep the end: the response's last tokens are what a reward model reads its score from.
        ids = ids[-self.max_length :]
        return Encoded(cost=len(ids), payload={"input_ids": ids}, truncated=(truncated,))

    def run(self, batch: list[Encoded]) -> list[float]:
        logits = self._forward.logits([e.payload for e in batch])
        return [float(x) for x in logits[:, 0].cpu()]
