"""docs/spec.md section 2, rules 1 and 2: identical after strip, then the short-text word-overlap rule."""

from __future__ import annotations

import pytest

from models.rules import SHORT_TEXT_MAX_WORDS, Rule, decide_by_rules


def test_short_text_limit_is_five_words() -> None:
    assert SHORT_TEXT_MAX_WORDS == 5


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Paris", "Paris"),
        ("  Paris\n", "Paris"),
        ("\tthe answer is 42  ", "the answer is 42"),
        # Long texts too: rule 1 does not care about length.
        ("one two three four five six seven eight", " one two three four five six seven eight\n"),
    ],
)
def test_identical_after_strip(a: str, b: str) -> None:
    assert decide_by_rules(a, b) == (Rule.IDENTICAL, True)


def test_inner_whitespace_is_not_identical_but_short_text_equal() -> None:
    # "a  b" and "a b" differ after strip(); the short-text rule splits on any whitespace and agrees.
    assert decide_by_rules("the  cat", "the cat") == (Rule.SHORT_TEXT, True)


def test_case_differences_go_to_short_text() -> None:
    assert decide_by_rules("PARIS", "paris") == (Rule.SHORT_TEXT, True)
    assert decide_by_rules("The Cat Sat", "the cat sat") == (Rule.SHORT_TEXT, True)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        # longer = 2: need 2*overlap >= 2, i.e. one shared word.
        ("red apple", "green apple", True),
        ("red apple", "green pear", False),
        # longer = 3: need overlap >= 2 (2*1 = 2 < 3).
        ("the red apple", "a green apple", False),
        ("the red apple", "the green apple", True),
        # longer = 4: exactly half is enough (2*2 >= 4).
        ("a b c d", "a b x y", True),
        ("a b c d", "a x y z", False),
        # longer = 5 (the largest short text): need 3 shared words.
        ("one two three four five", "one two three six seven", True),
        ("one two three four five", "one two six seven eight", False),
        # Unequal lengths: the LONGER length is the bar. 1 word vs 2 words: 2*1 >= 2.
        ("paris", "paris france", True),
        # 1 word vs 3 words: 2*1 < 3.
        ("paris", "paris in france", False),
        # 2 vs 5 words with both shared: 2*2 < 5.
        ("red apple", "a red apple on tables", False),
        # 3 of 5 shared with a 3-word text: 2*3 >= 5.
        ("red apple pie", "a red apple pie please", True),
    ],
)
def test_short_text_overlap(a: str, b: str, expected: bool) -> None:
    assert decide_by_rules(a, b) == (Rule.SHORT_TEXT, expected)
    assert decide_by_rules(b, a) == (Rule.SHORT_TEXT, expected)


def test_overlap_counts_distinct_words_but_length_counts_all_words() -> None:
    # set("a a a b") = {a, b}; overlap with "a c" is {a} -> 2*1 = 2 < 4 (the longer has 4 words).
    assert decide_by_rules("a a a b", "a c") == (Rule.SHORT_TEXT, False)
    # "a a b b" vs "a b": overlap {a, b} -> 2*2 = 4 >= 4.
    assert decide_by_rules("a a b b", "a b") == (Rule.SHORT_TEXT, True)


def test_five_words_is_short_six_is_not() -> None:
    five_a, five_b = "one two three four five", "one two three four six"
    assert decide_by_rules(five_a, five_b) == (Rule.SHORT_TEXT, True)
    # One more word on either side moves the pair to the classifier, however much it overlaps.
    six = "one two three four five six"
    assert decide_by_rules(six, five_a) is None
    assert decide_by_rules(five_a, six) is None
    assert decide_by_rules(six, "one two three four five seven") is None


def test_word_count_uses_whitespace_split_after_strip() -> None:
    # Five words spread with tabs and newlines are still five words.
    # 4 of 5 words shared: 2*4 >= 5.
    assert decide_by_rules("one\ttwo\nthree  four five ", "one two three four nine") == (Rule.SHORT_TEXT, True)
    # Punctuation stays attached: "paris." and "paris" are different words.
    assert decide_by_rules("paris.", "paris") == (Rule.SHORT_TEXT, False)


def test_empty_against_text() -> None:
    assert decide_by_rules("", "   ") == (Rule.IDENTICAL, True)
    assert decide_by_rules("", "paris") == (Rule.SHORT_TEXT, False)
    assert decide_by_rules("   ", "one two three four five six") is None
