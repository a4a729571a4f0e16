"""SPEC sections 4 and 5 on hand-worked groups: diversity with floor, the combine modes and the advantage.

Expected numbers are worked out by hand in the comments (fractions, not re-implementations of the code).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.reward import advantages, combine, diversity, group_rewards, shift_quality

approx = pytest.approx


def test_single_rollout_has_diversity_one_and_zero_advantage() -> None:
    out = group_rewards([0], [0.7])
    assert out.diversity == [1.0]
    assert out.rewards == approx([0.7])
    assert out.advantages == approx([0.0])


def test_single_rollout_ignores_the_floor() -> None:
    assert diversity([0], floor=0.5) == [1.0]


def test_all_equal_group_gets_the_floor() -> None:
    # n = 8, one class of 8: (8 - 8) / 7 = 0 -> floor 0.1.
    q = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    out = group_rewards([0] * 8, q)
    assert out.diversity == approx([0.1] * 8)
    assert out.rewards == approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    # mean reward 0.45
    assert out.advantages == approx([-0.35, -0.25, -0.15, -0.05, 0.05, 0.15, 0.25, 0.35])


def test_all_equal_with_floor_zero_has_zero_reward() -> None:
    assert group_rewards([0] * 4, [1.0] * 4, floor=0.0).rewards == approx([0.0] * 4)


def test_all_distinct_group_has_diversity_one() -> None:
    q = [0.9, 0.1, 0.5, 0.3]
    out = group_rewards([0, 1, 2, 3], q)
    assert out.diversity == approx([1.0] * 4)
    assert out.rewards == approx(q)
    # mean 0.45
    assert out.advantages == approx([0.45, -0.35, 0.05, -0.15])


def test_mixed_group() -> None:
    # n = 4, classes {0,1} {2} {3}: div = (4-2)/3 = 2/3 for the pair, (4-1)/3 = 1 for the singletons.
    out = group_rewards([0, 0, 1, 2], [1.0, 0.5, 0.2, -0.4])
    assert out.diversity == approx([2 / 3, 2 / 3, 1.0, 1.0])
    # r = [2/3, 1/3, 0.2, -0.4], mean = (1 - 0.2) / 4 = 0.2
    assert out.rewards == approx([2 / 3, 1 / 3, 0.2, -0.4])
    assert out.advantages == approx([2 / 3 - 0.2, 1 / 3 - 0.2, 0.0, -0.6])


def test_diversity_of_a_group_of_eight() -> None:
    # Classes of sizes 3, 3, 1, 1: (8-3)/7 = 5/7 and (8-1)/7 = 1.
    assert diversity([0, 1, 0, 1, 2, 0, 1, 3]) == approx([5 / 7, 5 / 7, 5 / 7, 5 / 7, 1, 5 / 7, 5 / 7, 1])
    # One class of 7 and a singleton: 1/7 ~ 0.143 is above the default floor, kept as is...
    assert diversity([0] * 7 + [1]) == approx([1 / 7] * 7 + [1.0])
    # ...and lifted to a higher floor.
    assert diversity([0] * 7 + [1], floor=0.25) == approx([0.25] * 7 + [1.0])


def test_negative_quality_makes_a_diverse_bad_answer_more_negative() -> None:
    # Raw quality is used (no shift): q = -1 for all; the duplicates get div 1/2, the unique one div 1.
    out = group_rewards([0, 0, 1], [-1.0, -1.0, -1.0])
    assert out.diversity == approx([0.5, 0.5, 1.0])
    assert out.rewards == approx([-0.5, -0.5, -1.0])
    assert out.rewards[2] < out.rewards[0]
    # mean -2/3
    assert out.advantages == approx([1 / 6, 1 / 6, -1 / 3])


def test_quality_shift_group_min() -> None:
    # q - min(q) = [0, 2, 3]; all distinct so r = shifted q, mean 5/3.
    out = group_rewards([0, 1, 2], [-2.0, 0.0, 1.0], quality_shift="group_min")
    assert out.quality == approx([0.0, 2.0, 3.0])
    assert out.rewards == approx([0.0, 2.0, 3.0])
    assert out.advantages == approx([-5 / 3, 1 / 3, 4 / 3])


def test_quality_shift_makes_the_diverse_bad_answer_zero_not_negative() -> None:
    out = group_rewards([0, 0, 1], [-1.0, -1.0, -3.0], quality_shift="group_min")
    # shifted q = [2, 2, 0]; div = [1/2, 1/2, 1]
    assert out.rewards == approx([1.0, 1.0, 0.0])


def test_additive_combine_uses_population_zscores() -> None:
    # q = [1, 2, 3]: mean 2, population std sqrt(2/3) -> z(q) = [-sqrt(3/2), 0, sqrt(3/2)].
    # classes [0, 0, 1] -> div = [1/2, 1/2, 1]: mean 2/3, deviations [-1/6, -1/6, 1/3], variance 1/18,
    # std 1/sqrt(18) -> z(div) = [-sqrt(18)/6, -sqrt(18)/6, sqrt(18)/3] = [-1/sqrt(2), -1/sqrt(2), sqrt(2)].
    zq = [-math.sqrt(1.5), 0.0, math.sqrt(1.5)]
    zd = [-1 / math.sqrt(2), -1 / math.sqrt(2), math.sqrt(2)]
    out = group_rewards([0, 0, 1], [1.0, 2.0, 3.0], combine_mode="additive")
    assert out.diversity == approx([0.5, 0.5, 1.0])
    assert out.rewards == approx([a + b for a, b in zip(zq, zd, strict=True)])
    half = group_rewards([0, 0, 1], [1.0, 2.0, 3.0], combine_mode="additive", additive_lambda=0.5)
    assert half.rewards == approx([a + 0.5 * b for a, b in zip(zq, zd, strict=True)])
    # z-scores sum to zero, so the rewards are already mean-centred.
    assert out.advantages == approx(out.rewards)


def test_additive_with_constant_parts_gives_zero_not_nan() -> None:
    # All distinct: div is constant; quality constant too. Nothing to distinguish -> all zero.
    out = group_rewards([0, 1, 2], [0.5, 0.5, 0.5], combine_mode="additive")
    assert out.rewards == [0.0, 0.0, 0.0]
    # Constant diversity, varying quality: the reward is z(q) alone.
    out = group_rewards([0, 1], [0.0, 1.0], combine_mode="additive")
    assert out.rewards == approx([-1.0, 1.0])


def test_quality_only_reports_diversity_but_does_not_apply_it() -> None:
    out = group_rewards([0, 0, 1], [0.2, 0.4, 0.9], combine_mode="quality_only")
    assert out.diversity == approx([0.5, 0.5, 1.0])
    assert out.rewards == approx([0.2, 0.4, 0.9])
    assert out.advantages == approx([0.2 - 0.5, 0.4 - 0.5, 0.9 - 0.5])


def test_advantage_is_not_divided_by_std() -> None:
    # rewards [0, 10]: mean 5, std 5; GRPO with std would give [-1, 1], DARLING gives [-5, 5].
    assert advantages([0.0, 10.0]) == approx([-5.0, 5.0])


def test_math_verifier_group() -> None:
    # 0/1 verifier quality, diversity over all n: the two correct answers in one class get 2/3 each... of n=4:
    # classes [0, 0, 1, 2] -> div [2/3, 2/3, 1, 1]; q [1, 1, 0, 1] -> r [2/3, 2/3, 0, 1], mean 7/12.
    out = group_rewards([0, 0, 1, 2], [1.0, 1.0, 0.0, 1.0])
    assert out.rewards == approx([2 / 3, 2 / 3, 0.0, 1.0])
    assert out.advantages == approx([2 / 3 - 7 / 12, 2 / 3 - 7 / 12, -7 / 12, 1 - 7 / 12])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: diversity([]), "at least one"),
        (lambda: shift_quality([1.0], "group_mean"), "quality_shift"),
        (lambda: combine([1.0], [1.0], "product"), "combine"),
        (lambda: combine([1.0, 2.0], [1.0], "multiplicative"), "length"),
        (lambda: group_rewards([0, 1], [1.0]), "1 quality scores for 2 rollouts"),
        (lambda: group_rewards([], [], quality_shift="group_min"), "at least one"),
    ],
)
def test_bad_arguments(call: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


@st.composite
def groups(draw: st.DrawFn) -> tuple[list[int], list[float]]:
    n = draw(st.integers(1, 8))
    classes = draw(st.lists(st.integers(0, n - 1), min_size=n, max_size=n))
    quality = draw(st.lists(st.floats(-10, 10, allow_nan=False), min_size=n, max_size=n))
    return classes, quality


@settings(max_examples=200, deadline=None)
@given(groups(), st.floats(0, 1), st.sampled_from(["multiplicative", "additive", "quality_only"]))
def test_section_4_and_5_hold_for_any_group(group: tuple[list[int], list[float]], floor: float, mode: str) -> None:
    classes, quality = group
    n = len(classes)
    out = group_rewards(classes, quality, floor=floor, combine_mode=mode)
    for i, c in enumerate(classes):
        size = classes.count(c)
        expected = 1.0 if n == 1 else max((n - size) / (n - 1), floor)
        assert out.diversity[i] == approx(expected)
    if mode == "multiplicative":
        assert out.rewards == approx([q * d for q, d in zip(quality, out.diversity, strict=True)])
    mean = sum(out.rewards) / n
    assert out.advantages == approx([r - mean for r in out.rewards], abs=1e-9)
