"""NoveltyBench's group metrics (SPEC section 6) on hand-worked groups."""

from __future__ import annotations

import math

import pytest

from models.novelty import DEFAULT_CUTS, effective_classes, group_novelty, rating, ratings, utility


def test_ratings_from_default_cuts() -> None:
    # u = 1 + cuts strictly below q; a quality equal to a cut stays below it.
    assert ratings([0.0, 0.1, 0.1000001, 0.55, 0.9, 0.95, 1.0]) == [1, 1, 2, 6, 9, 10, 10]
    # Outside [0, 1] the ratings saturate: the default cuts assume a quality in [0, 1].
    assert ratings([-3.0, 5.0]) == [1, 10]
    assert len(DEFAULT_CUTS) == 9


def test_ratings_from_custom_cuts() -> None:
    # A reward model on another scale: two cuts make three ratings.
    assert [rating(q, [0.0, 5.0]) for q in (-1.0, 0.0, 3.0, 5.0, 7.0)] == [1, 1, 2, 2, 3]
    assert rating(123.0, []) == 1


def test_utility_hand_worked() -> None:
    # Weights 1, 0.8, 0.64, 0.512; rollout 2 repeats class 0 and counts nothing:
    # (10 + 0.64 * 5 + 0.512 * 1) * 0.2 / (1 - 0.4096) = 2.7424 / 0.5904 = 1714 / 369.
    assert math.isclose(utility([0, 0, 1, 2], [10, 10, 5, 1]), 1714 / 369)
    # All distinct and all rated 10: the maximum, 10.
    assert math.isclose(utility([0, 1, 2, 3], [10] * 4), 10.0)
    # Collapsed: only the first counts, 10 * 0.2 / 0.5904 = 1250 / 369.
    assert math.isclose(utility([0, 0, 0, 0], [10] * 4), 1250 / 369)
    # One rollout: its own rating.
    assert math.isclose(utility([0], [7]), 7.0)


def test_utility_rewards_early_novelty() -> None:
    # Same classes, same multiset of ratings; the order in which novelty arrives changes the figure.
    late = utility([0, 1, 1, 1], [1, 10, 10, 10])  # (1 + 0.8 * 10) * 0.2 / 0.5904 = 1125 / 369
    early = utility([0, 0, 0, 1], [10, 10, 10, 1])  # (10 + 0.512) * 0.2 / 0.5904
    assert math.isclose(late, 1125 / 369)
    assert math.isclose(early, 2.1024 / 0.5904)
    assert early > late


def test_utility_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="ratings for"):
        utility([0, 1], [1])
    with pytest.raises(ValueError, match="at least one"):
        utility([], [])


def test_effective_classes_hand_worked() -> None:
    assert math.isclose(effective_classes([0, 0, 0, 0]), 1.0)
    assert math.isclose(effective_classes([0, 1, 2, 3, 4]), 5.0)
    assert math.isclose(effective_classes([0, 0, 1, 1]), 2.0)
    # Sizes 2, 1, 1 of 4: exp(H) = 2^(1/2) * 4^(1/4) * 4^(1/4) = 2 * sqrt(2).
    assert math.isclose(effective_classes([0, 1, 0, 2]), 2 * math.sqrt(2))


def test_group_novelty_prefers_given_ratings() -> None:
    g = group_novelty([0, 1, 0], [0.95, 0.05, 0.5])
    assert (g.distinct, g.ratings) == (2, [10, 1, 5])
    # (10 + 0.8 * 1) * 0.2 / (1 - 0.512) = 2.16 / 0.488
    assert math.isclose(g.utility, 2.16 / 0.488)
    mine = group_novelty([0, 1, 0], [0.95, 0.05, 0.5], given_ratings=[3, 3, 3])
    assert mine.ratings == [3, 3, 3]
    assert math.isclose(mine.utility, (3 + 0.8 * 3) * 0.2 / 0.488)
    # Sizes 2, 1 of 3.
    assert math.isclose(g.effective_classes, math.exp(-(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))))
