"""Partition planners: small pure state machines that say which pairs they need judged next.

A planner never sees a model. The caller asks `next_pairs()` for a round of independent pair questions,
answers all of them with `feed()`, and repeats until `done`. Because every round is independent work,
a round of every group in flight can go into one batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

Pair = tuple[int, int]


class UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # The smaller index stays root so that roots are stable and deterministic.
            if rb < ra:
                ra, rb = rb, ra
            self.parent[rb] = ra


def number_by_first_appearance(labels: Sequence[int]) -> list[int]:
    """Relabel arbitrary class labels as 0, 1, 2... in order of first appearance."""
    mapping: dict[int, int] = {}
    return [mapping.setdefault(label, len(mapping)) for label in labels]


class Planner(Protocol):
    n: int

    @property
    def done(self) -> bool: ...

    def next_pairs(self) -> list[Pair]: ...

    def feed(self, judgements: Mapping[Pair, bool]) -> None: ...

    def classes(self) -> list[int]: ...

    @property
    def skipped(self) -> int: ...


class _RoundPlanner:
    """What both planners share: a pending round, its bookkeeping, and answering it."""

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError("a group needs at least one rollout")
        self.n = n
        self._asked = 0
        self._pending: list[Pair] = []

    def _open_round(self, pairs: list[Pair]) -> None:
        self._pending = pairs
        self._asked += len(pairs)

    def _advance(self) -> None:
        """Open the next round that has a pair to ask, if any."""
        raise NotImplementedError

    def _join(self, a: int, b: int) -> None:
        """Record that the pair (a, b) of the pending round was judged equivalent."""
        raise NotImplementedError

    def _labels(self) -> list[int]:
        raise NotImplementedError

    @property
    def done(self) -> bool:
        # `_advance` always moves on to a round with work, so an empty round means nothing is left.
        return not self._pending

    def next_pairs(self) -> list[Pair]:
        return list(self._pending)

    def feed(self, judgements: Mapping[Pair, bool]) -> None:
        missing = [p for p in self._pending if p not in judgements]
        if missing:
            raise KeyError(f"no judgement for pairs {missing}")
        for a, b in self._pending:
            if judgements[(a, b)]:
                self._join(a, b)
        self._pending = []
        self._advance()

    def classes(self) -> list[int]:
        if not self.done:
            raise RuntimeError("partition not finished")
        return number_by_first_appearance(self._labels())

    @property
    def skipped(self) -> int:
        return self.n * (self.n - 1) // 2 - self._asked


class AllPairsPlanner(_RoundPlanner):
    """Connected components of the "equivalent" graph over all pairs i < j (SPEC section 3).

    Exact work-skipping: a pair whose two rollouts are already in one component cannot change the
    components, so it is never asked. Rounds go by distance d = j - i: round d asks every still-open
    pair (i, i + d). A fully collapsed group is then settled by the n - 1 pairs of round 1.
    """

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self._uf = UnionFind(n)
        self._distance = 1
        self._advance()

    def _advance(self) -> None:
        while self._distance < self.n:
            d = self._distance
            self._distance += 1
            pairs = [(i, i + d) for i in range(self.n - d) if self._uf.find(i) != self._uf.find(i + d)]
            if pairs:
                self._open_round(pairs)
                return

    def _join(self, a: int, b: int) -> None:
        self._uf.union(a, b)

    def _labels(self) -> list[int]:
        return [self._uf.find(i) for i in range(self.n)]


class GreedyPlanner(_RoundPlanner):
    """NoveltyBench's greedy partition: each unassigned rollout opens a class, later ones join it.

    Round k compares representative k with every still-unassigned later rollout.
    """

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self._label: list[int | None] = [None] * n
        self._next_rep = 0
        self._advance()

    def _advance(self) -> None:
        # Open classes for representatives that have nobody left to compare with, until a round has work.
        while self._next_rep < self.n:
            rep = self._next_rep
            self._next_rep += 1
            if self._label[rep] is not None:
                continue
            self._label[rep] = rep
            later = [j for j in range(rep + 1, self.n) if self._label[j] is None]
            if later:
                self._open_round([(rep, j) for j in later])
                return

    def _join(self, a: int, b: int) -> None:
        self._label[b] = a

    def _labels(self) -> list[int]:
        return [label if label is not None else -1 for label in self._label]


def make_planner(algorithm: str, n: int) -> Planner:
    if algorithm == "all_pairs":
        return AllPairsPlanner(n)
    if algorithm == "greedy":
        return GreedyPlanner(n)
    raise ValueError(f"unknown partition algorithm {algorithm!r}; expected 'all_pairs' or 'greedy'")
