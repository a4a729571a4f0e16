"""A small learned head that judges a pair from two per-text MiniLM views.

A single cosine cut cannot serve short and long answers at once (short paraphrases score 0.5-0.85, long
distinct answers to one prompt have a median of 0.78), so the head sees the cosine together with the lengths,
chunk-level similarities, word overlap and the element-wise products and differences of the two embeddings.
Every feature is symmetric in (a, b), so the head gives the same probability for both pair orders.

Each text is still embedded once (one pass per 256-token chunk), so a group of n texts costs n views however
many pairs the planner asks.
"""

from __future__ import annotations

import json
import math
import os
import re
import zlib
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

HEAD_WEIGHTS = "head.safetensors"
HEAD_CONFIG = "head.json"

# Feature groups a head may use; the config names the ones it was trained with, in this order.
SCALAR_GROUPS: dict[str, int] = {"cos": 6, "len": 3, "lex": 5, "seg": 6, "list": 4}
VECTOR_GROUPS = ("vec",)


@dataclass(frozen=True)
class TextView:
    """What the head knows about one text: chunk embeddings (row 0 = the first 256 tokens), size, words, names."""

    chunks: torch.Tensor  # (k, d), unit rows
    n_tokens: int
    words: frozenset[str]
    names: frozenset[str] = frozenset()  # capitalised phrases: characters, places, titles
    opening: frozenset[str] = frozenset()  # words of the first line: a title or the answer's first claim
    # Unit means of short token segments inside each window (`HeadConfig.segment_tokens`): finer than a window,
    # so one shared idea in two long answers can find its match; empty unless the head uses "seg".
    segments: torch.Tensor | None = None
    items: tuple[frozenset[str], ...] = ()  # the opening words of each bullet, numbered item or heading

    @property
    def first(self) -> torch.Tensor:
        return self.chunks[0]

    @property
    def mean(self) -> torch.Tensor:
        return nn.functional.normalize(self.chunks.mean(0), dim=-1)


_NAME = re.compile(r"\b[A-Z][a-z]+(?:\s[A-Z][a-z]+)*")


def word_set(text: str) -> frozenset[str]:
    return frozenset(w.strip(".,;:!?\"'()[]*#`-").lower() for w in text.split()) - {""}


def opening_set(text: str) -> frozenset[str]:
    return word_set(next((line for line in text.strip().splitlines() if line.strip()), ""))


_ITEM = re.compile(r"^\s*(?:[-*+\u2022]|\d{1,3}[.)]|#{1,6})\s+(.+)$")
ITEM_WORDS = 8  # an item's title: the first words carry what the item is about, the rest is elaboration


def item_sets(text: str) -> tuple[frozenset[str], ...]:
    """Each list item's or heading's first words: two answers with the same items are usually the same answer."""
    out = []
    for line in text.splitlines():
        m = _ITEM.match(line)
        if m:
            words = word_set(" ".join(m.group(1).split()[:ITEM_WORDS]))
            if words:
                out.append(words)
    return tuple(out)


def segment_means(states: list[torch.Tensor], width: int) -> torch.Tensor:
    """Unit mean-pooled runs of `width` content tokens inside each window's token states ([CLS]/[SEP] dropped).

    The tokens are read in their window's context, so this costs no encoder pass beyond the window's own.
    """
    segs: list[torch.Tensor] = []
    for h in states:
        body = h[1:-1] if len(h) > 2 else h
        for start in range(0, len(body), width):
            segs.append(body[start : start + width].mean(0))
    return nn.functional.normalize(torch.stack(segs), dim=-1)


def window_means(states: list[torch.Tensor]) -> torch.Tensor:
    """Each window's unit mean-pooled embedding (the sentence-transformers pooling of all-MiniLM-L6-v2)."""
    return nn.functional.normalize(torch.stack([h.mean(0) for h in states]), dim=-1)


def name_set(text: str) -> frozenset[str]:
    """Capitalised words and runs of them; two stories with the same characters usually are the same story."""
    return frozenset(m.lower() for m in _NAME.findall(text))


def bucket(word: str, buckets: int) -> int:
    return zlib.crc32(word.encode()) % buckets


def idf_table(texts: list[frozenset[str]], buckets: int) -> torch.Tensor:
    """Smoothed inverse document frequency of hashed words over `texts`: rare shared words say more."""
    df = torch.zeros(buckets)
    for words in texts:
        for b in {bucket(w, buckets) for w in words}:
            df[b] += 1
    return torch.log((len(texts) + 1) / (df + 1))


@dataclass(frozen=True)
class HeadConfig:
    groups: tuple[str, ...] = ("cos", "len", "lex")
    dim: int = 384
    hidden: int = 16  # 0 = logistic regression on the features
    dropout: float = 0.0
    threshold: float = 0.5
    max_chunks: int = 1  # windows read per text: the packaged head reads the first 256 tokens (cost)
    idf_buckets: int = 1 << 14
    segment_tokens: int = 64
    base: str = "all-MiniLM-L6-v2"
    base_digest: str = ""
    trained: dict[str, object] = field(default_factory=dict)  # recipe and data, for the record

    @property
    def n_features(self) -> int:
        return sum(SCALAR_GROUPS.get(g, 0) for g in self.groups) + (2 * self.dim if "vec" in self.groups else 0)


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / max(1, len(a | b))


def _weighted_jaccard(a: frozenset[str], b: frozenset[str], idf: list[float]) -> float:
    n = len(idf)
    inter = sum(idf[bucket(w, n)] for w in a & b)
    union = sum(idf[bucket(w, n)] for w in a | b)
    return inter / union if union > 0 else 0.0


def _segment_features(a: TextView, b: TextView) -> torch.Tensor:
    if a.segments is None or b.segments is None:
        raise ValueError('feature group "seg" needs views with segments')
    sim = a.segments @ b.segments.T
    ab, ba = sim.max(1).values, sim.max(0).values
    hit = (float((ab > 0.8).float().mean()) + float((ba > 0.8).float().mean())) / 2
    return torch.tensor(
        [
            (float(ab.mean()) + float(ba.mean())) / 2,  # every segment's best match on the other side
            min(float(ab.mean()), float(ba.mean())),  # the side with more of its own ideas
            float(sim.max()),
            float(sim.mean()),
            float(sim[0, 0]),  # the openings: the answer's first claim
            hit,  # share of segments with a near-paraphrase on the other side
        ]
    )


def _list_features(a: tuple[frozenset[str], ...], b: tuple[frozenset[str], ...]) -> torch.Tensor:
    na, nb = math.log1p(len(a)), math.log1p(len(b))
    soft = 0.0
    if a and b:
        ab = sum(max(_jaccard(x, y) for y in b) for x in a) / len(a)
        ba = sum(max(_jaccard(x, y) for x in a) for y in b) / len(b)
        soft = (ab + ba) / 2
    return torch.tensor([min(na, nb), abs(na - nb), float(bool(a) and bool(b)), soft])


def pair_features(groups: tuple[str, ...], a: TextView, b: TextView, idf: list[float]) -> torch.Tensor:
    parts: list[torch.Tensor] = []
    for g in groups:
        if g == "cos":
            sim = a.chunks @ b.chunks.T
            ab, ba = float(sim.max(1).values.mean()), float(sim.max(0).values.mean())
            parts.append(
                torch.tensor(
                    [
                        float(a.first @ b.first),
                        float(a.mean @ b.mean),
                        (ab + ba) / 2,  # each chunk's best match on the other side
                        min(ab, ba),
                        float(a.chunks[-1] @ b.chunks[-1]),  # endings: conclusions, punchlines
                        float(sim.mean()),
                    ]
                )
            )
        elif g == "len":
            la, lb = math.log1p(a.n_tokens), math.log1p(b.n_tokens)
            parts.append(torch.tensor([(la + lb) / 2, abs(la - lb), min(la, lb)]))
        elif g == "lex":
            parts.append(
                torch.tensor(
                    [
                        _jaccard(a.words, b.words),
                        _weighted_jaccard(a.words, b.words, idf),
                        _jaccard(a.names, b.names),
                        _weighted_jaccard(a.names, b.names, idf),
                        _jaccard(a.opening, b.opening),
                    ]
                )
            )
        elif g == "seg":
            parts.append(_segment_features(a, b))
        elif g == "list":
            parts.append(_list_features(a.items, b.items))
        elif g == "vec":
            u, v = a.mean, b.mean
            parts.append(torch.cat([(u - v).abs(), u * v]))
        else:
            raise ValueError(f"unknown feature group {g!r}")
    return torch.cat(parts).float()


def batch_features(groups: tuple[str, ...], pairs: list[tuple[TextView, TextView]], idf: torch.Tensor) -> torch.Tensor:
    table = idf.tolist()
    return torch.stack([pair_features(groups, a, b, table) for a, b in pairs])


class PairHead(nn.Module):
    """Standardised features -> (MLP | linear) -> one logit of P(equivalent)."""

    shift: torch.Tensor
    scale: torch.Tensor
    idf: torch.Tensor

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        n = config.n_features
        self.register_buffer("shift", torch.zeros(n))
        self.register_buffer("scale", torch.ones(n))
        self.register_buffer("idf", torch.zeros(config.idf_buckets))
        self.net: nn.Module
        if config.hidden > 0:
            self.net = nn.Sequential(
                nn.Dropout(config.dropout),
                nn.Linear(n, config.hidden),
                nn.GELU(),
                nn.Dropout(config.dropout),
                nn.Linear(config.hidden, 1),
            )
        else:
            self.net = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(n, 1))

    def set_standardisation(self, features: torch.Tensor) -> None:
        self.shift.copy_(features.mean(0))
        self.scale.copy_(features.std(0).clamp(min=1e-6))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net((features - self.shift) / self.scale).squeeze(-1)
        return out

    @torch.inference_mode()
    def probabilities(self, pairs: list[tuple[TextView, TextView]]) -> list[float]:
        self.eval()
        return [float(p) for p in torch.sigmoid(self(self.features(pairs)))]

    def features(self, pairs: list[tuple[TextView, TextView]]) -> torch.Tensor:
        return batch_features(self.config.groups, pairs, self.idf)

    def save(self, path: str) -> None:
        from safetensors.torch import save_file

        os.makedirs(path, exist_ok=True)
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, os.path.join(path, HEAD_WEIGHTS))
        with open(os.path.join(path, HEAD_CONFIG), "w") as f:
            json.dump(asdict(self.config), f, indent=2, sort_keys=True)

    @classmethod
    def load(cls, path: str) -> PairHead:
        from safetensors.torch import load_file

        with open(os.path.join(path, HEAD_CONFIG)) as f:
            raw = json.load(f)
        raw["groups"] = tuple(raw["groups"])
        config = HeadConfig(**{k: v for k, v in raw.items() if k in HeadConfig.__dataclass_fields__})
        head = cls(config)
        head.load_state_dict(load_file(os.path.join(path, HEAD_WEIGHTS)))
        head.eval()
        return head


def is_head_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, HEAD_CONFIG)) and os.path.isfile(os.path.join(path, HEAD_WEIGHTS))


def make_view(text: str, states: list[torch.Tensor], n_tokens: int, segment_tokens: int) -> TextView:
    """One text's view from its windows' token states: what the service and the training code both build."""
    return TextView(
        chunks=window_means(states),
        n_tokens=n_tokens,
        words=word_set(text),
        names=name_set(text),
        opening=opening_set(text),
        segments=segment_means(states, segment_tokens),
        items=item_sets(text),
    )
