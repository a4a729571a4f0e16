"""Cache keys: content hashes of (model fingerprint, inputs), so equal inputs hit on any replica."""

from __future__ import annotations

import hashlib


def text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def pair_key_hashed(fingerprint: str, ha: str, hb: str) -> str:
    """Unordered: (a, b) and (b, a) are the same judgement. Takes `text_hash`es, so a group hashes each text once."""
    if hb < ha:
        ha, hb = hb, ha
    return f"j:{fingerprint}:{ha}:{hb}"


def pair_key(fingerprint: str, a: str, b: str) -> str:
    return pair_key_hashed(fingerprint, text_hash(a), text_hash(b))


def quality_key(fingerprint: str, prompt: str, response: str, reference: str | None) -> str:
    ref = text_hash(reference) if reference is not None else "-"
    return f"q:{fingerprint}:{text_hash(prompt)}:{text_hash(response)}:{ref}"


def truncation_key(fingerprint: str, ha: str, hb: str) -> str:
    """Which sides of this pair the classifier's encoding cut (`truncation_bits`), saved with its judgement so
    that a cached judgement reports the same flags as a fresh one without tokenizing again. Unordered, as
    `pair_key_hashed`: the bits are by text hash, the smaller hash first."""
    if hb < ha:
        ha, hb = hb, ha
    return f"t:{fingerprint}:{ha}:{hb}"


def truncation_bits(ha: str, ta: bool, hb: str, tb: bool) -> float:
    """The cache value of a pair's two flags: bit 0 for the smaller text hash, bit 1 for the other."""
    if hb < ha:
        ta, tb = tb, ta
    return float(int(ta) | int(tb) << 1)


def truncation_flags(value: float, ha: str, hb: str) -> tuple[bool, bool]:
    """The inverse of `truncation_bits`: the flags of (ha, hb) in the order asked."""
    bits = int(value)
    lo, hi = bool(bits & 1), bool(bits & 2)
    return (hi, lo) if hb < ha else (lo, hi)
