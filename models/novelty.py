"""NoveltyBench's group metrics (SPEC section 6): distinct, ratings, patience-weighted utility, and the
effective number of classes. Pure functions of a partition and per-rollout scores; no web code.

Ratings u_i in 1..10 come from a quality score through cut points, u = 1 + (number of cuts strictly below the
quality), as NoveltyBench maps reward-model scores to ratings. The default cuts 0.1, 0.2, ..., 0.9 assume a
quality in [0, 1] (a verifier's 0/1, a probability); scores on another scale need their own cuts.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

PATIENCE = 0.8
DEFAULT_CUTS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MAX_CUTS = 9  # ratings stay in 1..10
MIN_RATING, MAX_RATING = 1, 10


def rating(quality: float, cuts: Sequence[float] = DEFAULT_CUTS) -> int:
    """1 + the number of cuts strictly below `quality` (a quality equal to a cut stays below it)."""
    return 1 + bisect.bisect_left(list(cuts), quality)


def ratings(quality: Sequence[float], cuts: Sequence[float] = DEFAULT_CUTS) -> list[int]:
    return [rating(q, cuts) for q in quality]


def opens_class(classes: Sequence[int]) -> list[bool]:
    """Whether each rollout, in order, is the first of its class."""
    seen: set[int] = set()
    out = []
    for c in classes:
        out.append(c not in seen)
        seen.add(c)
    return out


def utility(classes: Sequence[int], rates: Sequence[float], patience: float = PATIENCE) -> float:
    """utility_k = (1 - p) / (1 - p^k) * sum_{i=1..k} p^(i-1) * [y_i opens a new class] * u_i.

    The factor is 1 / sum of the weights, so the result is on the ratings' scale: k distinct rollouts all
    rated 10 score 10, and a collapsed group scores only (1 - p) / (1 - p^k) * u_1."""
    k = len(classes)
    if k == 0:
        raise ValueError("a group needs at least one rollout")
    if len(rates) != k:
        raise ValueError(f"{len(rates)} ratings for {k} rollouts")
    if not 0.0 < patience < 1.0:
        raise ValueError("patience must be in (0, 1)")
    total = sum(patience**i * u for i, (new, u) in enumerate(zip(opens_class(classes), rates, strict=True)) if new)
    return (1.0 - patience) / (1.0 - patience**k) * total


def effective_classes(classes: Sequence[int]) -> float:
    """exp(H) with H = -sum_c (s_c / n) ln(s_c / n) over class sizes s_c: 1 for a collapsed group, n for an
    all-distinct one, and comparable between groups of different n."""
    n = len(classes)
    if n == 0:
        raise ValueError("a group needs at least one rollout")
    h = -sum(s / n * math.log(s / n) for s in Counter(classes).values())
    return math.exp(h)


@dataclass(frozen=True)
class GroupNovelty:
    distinct: int
    ratings: list[int]
    utility: float
    effective_classes: float


def group_novelty(
    classes: Sequence[int],
    quality: Sequence[float],
    *,
    cuts: Sequence[float] = DEFAULT_CUTS,
    given_ratings: Sequence[int] | None = None,
    patience: float = PATIENCE,
) -> GroupNovelty:
    """All of section 6 for one group; `given_ratings` (the caller's own 1..10) take precedence over cuts."""
    rates = list(given_ratings) if given_ratings is not None else ratings(quality, cuts)
    return GroupNovelty(
        distinct=len(set(classes)),
        ratings=rates,
        utility=utility(classes, rates, patience),
        effective_classes=effective_classes(classes),
    )
