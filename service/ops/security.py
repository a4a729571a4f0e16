"""Bearer API keys: several may be valid at once (rotation), each compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Iterable


class ApiKeys:
    def __init__(self, keys: Iterable[str]) -> None:
        # Bytes, so that compare_digest accepts non-ASCII keys too.
        self._keys = [k.encode() for k in keys if k]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def check(self, authorization: str | None) -> bool:
        """True when auth is off, or `authorization` is `Bearer <one of the keys>`."""
        if not self._keys:
            return True
        if not authorization:
            return False
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        given = token.strip().encode()
        # Compare with every key, without stopping at a match: the time taken does not tell which key matched.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(given, key)
        return matched
