"""Diversity, the DARLING reward and the advantage (SPEC sections 4 and 5). Pure functions."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass


def diversity(classes: Sequence[int], floor: float = 0.1) -> list[float]:
    """div_i = max((n - |C(i)|) / (n - 1), floor); n = 1 has no others and gets 1."""
    n = len(classes)
    if n == 0:
        raise ValueError("a group needs at least one rollout")
    if n == 1:
        return [1.0]
    sizes = Counter(classes)
    return [max((n - sizes[c]) / (n - 1), floor) for c in classes]


def shift_quality(quality: Sequence[float], mode: str) -> list[float]:
    if mode == "none":
        return list(quality)
    if mode == "group_min":
        low = min(quality)
        return [q - low for q in quality]
    raise ValueError(f"unknown quality_shift {mode!r}")


def _zscores(values: Sequence[float]) -> list[float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    # A constant vector carries no signal: its z-scores are all zero rather than a division by zero.
    return [0.0 if std == 0 else (v - mean) / std for v in values]


def combine(quality: Sequence[float], div: Sequence[float], mode: str, additive_lambda: float = 1.0) -> list[float]:
    if len(quality) != len(div):
        raise ValueError("quality and diversity differ in length")
    if mode == "multiplicative":
        return [q * d for q, d in zip(quality, div, strict=True)]
    if mode == "additive":
        zq, zd = _zscores(quality), _zscores(div)
        return [a + additive_lambda * b for a, b in zip(zq, zd, strict=True)]
    if mode == "quality_only":
        return list(quality)
    raise ValueError(f"unknown combine mode {mode!r}")


def advantages(rewards: Sequence[float]) -> list[float]:
    """Mean-centred, NOT divided by the group std (SPEC section 5)."""
    mean = sum(rewards) / len(rewards)
    return [r - mean for r in rewards]


@dataclass(frozen=True)
class GroupRewards:
    quality: list[float]
    diversity: list[float]
    rewards: list[float]
    advantages: list[float]


def group_rewards(
    classes: Sequence[int],
    quality: Sequence[float],
    *,
    floor: float = 0.1,
    combine_mode: str = "multiplicative",
    quality_shift: str = "none",
    additive_lambda: float = 1.0,
) -> GroupRewards:
    div = diversity(classes, floor)
    if len(quality) != len(classes):
        raise ValueError(f"{len(quality)} quality scores for {len(classes)} rollouts")
    q = shift_quality(quality, quality_shift)
    rewards = combine(q, div, combine_mode, additive_lambda)
    return GroupRewards(quality=q, diversity=div, rewards=rewards, advantages=advantages(rewards))
