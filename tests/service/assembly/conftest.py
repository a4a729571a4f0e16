from __future__ import annotations

import pytest


@pytest.fixture
def ns(redis_namespace: str) -> str:
    """The assembly tests' Redis namespace: fresh per test, emptied after it."""
    return redis_namespace
