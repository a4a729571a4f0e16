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
SCALAR_GROUPS: dict[str, int] = {"cos": 6, "len": 3, "lex": 5}
VECTOR_GROUPS = ("vec",)


@dataclass(frozen=True)
class TextView:
    """What the head knows about one text: chunk embeddings (row 0 = the first 256 tokens), size, words, names."""

    chunks: torch.Tensor  # (k, d), unit rows
    n_tokens: int
    words: frozenset[str]
    names: frozenset[str] = frozenset()  # capitalised phrases: characters, places, titles
    opening: frozenset[str] = frozenset()  # words of the first line: a title or the answer's first claim

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
    max_chunks: int = 8
    idf_buckets: int = 1 << 14
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
