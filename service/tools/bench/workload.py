"""The benchmark's workload: B groups of n rollouts drawn from NoveltyBench answers, some of them planted copies.

In each group, `round(collapse * n)` rollouts (when that is at least 2) are one answer and small perturbations
of it (a word's case flipped, a word dropped): a real classifier calls them equivalent, and the identical
rule does not fire, so the classifier is asked. The other rollouts are distinct answers. Positions are shuffled.

A classifier's partition is whatever it says, so the benchmark compares modes with each other, not with the
planted classes. A random-head classifier says nothing about meaning; for it, `fit_threshold` picks the
threshold whose all-pairs partitions need the same share of judgements as the planted ones, so the model does
the same amount of work as on a real collapse of that size (and, for a real classifier, the threshold that
reproduces the planted classes).
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from models.data import noveltybench_pairs
from models.partition import AllPairsPlanner, Pair, number_by_first_appearance
from models.rules import decide_by_rules

DEFAULT_DATA = noveltybench_pairs()
MIN_WORDS = 20  # well above the short-text rule


@dataclass(frozen=True)
class Group:
    responses: list[str]
    planted: list[int]  # planted classes, numbered by first appearance


def load_answers(path: Path = DEFAULT_DATA) -> list[str]:
    answers: list[str] = []
    seen: set[str] = set()
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            for key in ("generation_0", "generation_1"):
                text = str(row.get(key) or "").strip()
                if len(text.split()) >= MIN_WORDS and text not in seen:
                    seen.add(text)
                    answers.append(text)
    return answers


def perturb(text: str, rng: random.Random) -> str:
    """A near-copy: one word's case flipped and one word dropped, so the identical rule cannot decide it."""
    words = text.split()
    i = rng.randrange(len(words))
    words[i] = words[i].lower() if words[i] != words[i].lower() else words[i].upper()
    del words[rng.randrange(len(words))]
    return " ".join(words)


def make_workload(groups: int, n: int, collapse: float, answers: Sequence[str], seed: int = 0) -> list[Group]:
    if not 0.0 <= collapse <= 1.0:
        raise ValueError("collapse must be in [0, 1]")
    rng = random.Random(seed)
    k = round(collapse * n)
    k = k if k >= 2 else 0
    distinct = n - k + (1 if k else 0)
    if distinct > len(answers):
        raise ValueError(f"need {distinct} distinct answers per group; the data has {len(answers)}")
    out: list[Group] = []
    for _ in range(groups):
        bases = rng.sample(list(answers), distinct)
        rollouts: list[tuple[str, int]] = []
        if k:
            rollouts.append((bases[0], 0))
            copies: set[str] = {bases[0].strip()}
            while len(rollouts) < k:
                text = perturb(bases[0], rng)
                if text.strip() not in copies:
                    copies.add(text.strip())
                    rollouts.append((text, 0))
            rest = bases[1:]
        else:
            rest = bases
        rollouts += [(t, c + 1) for c, t in enumerate(rest)]
        rng.shuffle(rollouts)
        out.append(Group([t for t, _ in rollouts], number_by_first_appearance([c for _, c in rollouts])))
    for g in out:  # every pair must reach the classifier, or the modes would not compare the same work
        assert all(decide_by_rules(g.responses[i], g.responses[j]) is None for i in range(n) for j in range(i + 1, n))
    return out


def all_pairs(n: int) -> list[Pair]:
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


def partition(n: int, equivalent: Mapping[Pair, bool]) -> tuple[list[int], int]:
    """The all-pairs partition from judgements of every pair, and how many the skipping planner would ask."""
    planner = AllPairsPlanner(n)
    while not planner.done:
        planner.feed({p: equivalent[p] for p in planner.next_pairs()})
    return planner.classes(), n * (n - 1) // 2 - planner.skipped


def planted_judgements(g: Group) -> dict[Pair, bool]:
    return {(i, j): g.planted[i] == g.planted[j] for i, j in all_pairs(len(g.planted))}


@dataclass(frozen=True)
class ThresholdFit:
    threshold: float
    judged_share: float  # offline, at this threshold
    planted_judged_share: float
    planted_agreement: float  # share of groups whose partition at this threshold is the planted one
    margin: float  # distance from the threshold to the nearest score


def fit_threshold(
    groups: Sequence[Group], scores: Sequence[Mapping[Pair, float]], candidates: int = 400
) -> ThresholdFit:
    """The threshold whose all-pairs partitions need the planted share of judgements; among those, the one
    that reproduces most planted partitions; among those, the one farthest from any score (robust to the
    last-bit differences between batched and unbatched forwards)."""
    n = len(groups[0].planted)
    total = len(groups) * n * (n - 1) // 2
    target = sum(partition(n, planted_judgements(g))[1] for g in groups) / total
    flat = sorted({s for sc in scores for s in sc.values()})
    mids = [(a + b) / 2 for a, b in itertools.pairwise(flat)]
    edges = [flat[0] - 1e-3, flat[-1] + 1e-3]
    step = max(1, len(mids) // candidates)
    pool = edges + mids[::step]
    best: tuple[tuple[float, float, float], ThresholdFit] | None = None
    for t in pool:
        agree = 0
        judged = 0
        for g, sc in zip(groups, scores, strict=True):
            classes, asked = partition(n, {p: s > t for p, s in sc.items()})
            agree += classes == g.planted
            judged += asked
        share = judged / total
        margin = min(abs(s - t) for s in flat)
        key = (round(abs(share - target), 3), -agree / len(groups), -margin)
        if best is None or key < best[0]:
            best = (key, ThresholdFit(t, share, target, agree / len(groups), margin))
    assert best is not None
    return best[1]
