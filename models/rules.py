"""The cheap equivalence rules of docs/spec.md section 2, checked before any classifier."""

from __future__ import annotations

from enum import StrEnum


class Rule(StrEnum):
    IDENTICAL = "identical"
    SHORT_TEXT = "short_text"
    CLASSIFIER = "classifier"


SHORT_TEXT_MAX_WORDS = 5


def decide_by_rules(a: str, b: str) -> tuple[Rule, bool] | None:
    """Return (rule, equivalent) if the identical or short-text rule decides the pair, else None."""
    sa, sb = a.strip(), b.strip()
    if sa == sb:
        return Rule.IDENTICAL, True
    wa, wb = sa.lower().split(), sb.lower().split()
    longer = max(len(wa), len(wb))
    if longer <= SHORT_TEXT_MAX_WORDS:
        return Rule.SHORT_TEXT, 2 * len(set(wa) & set(wb)) >= longer
    return None
