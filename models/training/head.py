"""Training the embedded default's head: frozen MiniLM views of each text, a small classifier on pair features."""

from __future__ import annotations

import math
import random
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from models.backends.embedding import EmbeddingClassifier, text_key
from models.backends.embedding_head import HeadConfig, PairHead, TextView, batch_features, idf_table
from models.training.data import Pair
from models.training.metrics import best_thresholds


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def compute_views(clf: EmbeddingClassifier, texts: list[str], cache_file: str | None = None) -> dict[str, TextView]:
    """Each distinct text's view, encoded once; `cache_file` keeps the token states across runs."""
    from models.training.token_cache import encode_texts, views_from_states

    return views_from_states(clf, texts, encode_texts(clf, texts, cache_file), clf.segment_tokens)


def pair_views(pairs: list[Pair], views: dict[str, TextView]) -> list[tuple[TextView, TextView]]:
    return [(views[text_key(p.a)], views[text_key(p.b)]) for p in pairs]


def class_weights(labels: torch.Tensor, strata: torch.Tensor) -> torch.Tensor:
    """Within each stratum (a data source) both classes weigh half of that stratum's examples.

    Balancing per source, not overall, keeps p = 0.5 the balanced point for long pairs (1 in 3 equivalent) and
    for the short idea pairs (1 in 2) alike, so one threshold serves both.
    """
    w = torch.zeros(len(labels))
    for s in torch.unique(strata):
        m = strata == s
        n = float(m.sum())
        for c in (0.0, 1.0):
            mc = m & (labels == c)
            if mc.any():
                w[mc] = n / (2 * float(mc.sum()))
    return w


def fit_head(
    config: HeadConfig,
    features: torch.Tensor,
    labels: torch.Tensor,
    strata: torch.Tensor | None = None,
    steps: int = 600,
    lr: float = 3e-3,
    weight_decay: float = 1e-2,
    seed: int = 0,
    idf: torch.Tensor | None = None,
    stratum_weights: dict[int, float] | None = None,
) -> PairHead:
    """Full-batch AdamW on class-weighted BCE with a cosine schedule; standardisation fitted on `features`."""
    seed_everything(seed)
    head = PairHead(config)
    if idf is not None:
        head.idf.copy_(idf)
    head.set_standardisation(features)
    strata = strata if strata is not None else torch.zeros(len(labels), dtype=torch.long)
    w = class_weights(labels, strata)
    for s, weight in (stratum_weights or {}).items():
        w[strata == s] *= weight
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / steps)))
    head.train()
    for _ in range(steps):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(features), labels, weight=w)
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        sched.step()
    head.eval()
    return head


@torch.inference_mode()
def head_probs(head: PairHead, features: torch.Tensor) -> np.ndarray:
    head.eval()
    return torch.sigmoid(head(features)).numpy()


def out_of_fold(
    config: HeadConfig, features: torch.Tensor, labels: torch.Tensor, strata: torch.Tensor, folds: int = 5, **fit: Any
) -> np.ndarray:
    """Each example's probability from a head fitted without it (5 folds, fixed permutation)."""
    n = len(labels)
    order = np.random.default_rng(0).permutation(n)
    oof = np.zeros(n)
    for f in range(folds):
        test = order[f::folds]
        train = torch.from_numpy(np.setdiff1d(order, test))
        h = fit_head(config, features[train], labels[train], strata[train], **fit)
        oof[test] = head_probs(h, features[torch.from_numpy(test)])
    return oof


def train_head(
    config: HeadConfig,
    pairs: list[Pair],
    views: dict[str, TextView],
    extra: list[Pair] | None = None,
    extra_weight: float = 1.0,
    steps: int = 600,
    lr: float = 3e-3,
    weight_decay: float = 1e-2,
    seed: int = 0,
    threshold: float | None = None,
) -> tuple[PairHead, np.ndarray | None]:
    """Fit on `pairs` plus `extra` (e.g. short idea pairs); returns the head and `pairs`' out-of-fold probabilities.

    The threshold, unless given, is the balanced-accuracy-optimal one on the out-of-fold probabilities of
    `pairs` alone: the labelled pairs are the distribution the head is judged on. Word weights (IDF) are
    counted over the distinct training texts and stored with the head.
    """
    extra = extra or []
    everything = pairs + extra
    texts = {k: views[k] for k in {text_key(t) for p in everything for t in (p.a, p.b)}}
    idf = idf_table([v.words | v.names for v in texts.values()], config.idf_buckets)
    features = batch_features(config.groups, pair_views(everything, views), idf)
    labels = torch.tensor([float(p.label) for p in everything])
    strata = torch.tensor([0] * len(pairs) + [1] * len(extra))
    fit: dict[str, Any] = {"steps": steps, "lr": lr, "weight_decay": weight_decay, "seed": seed, "idf": idf}
    fit["stratum_weights"] = {0: 1.0, 1: extra_weight}
    oof: np.ndarray | None = None
    if threshold is None:
        oof = out_of_fold(config, features, labels, strata, **fit)[: len(pairs)]
        threshold = best_thresholds(oof, np.array([p.label for p in pairs]))["balanced_accuracy"]
    config = replace(config, threshold=float(threshold))
    return fit_head(config, features, labels, strata, **fit), oof
