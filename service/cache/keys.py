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


def truncation_key(fingerprint: str, text_hash_: str) -> str:
    """Whether the classifier cuts this text (1.0) or reads all of it (0.0): a tokenization saved per hit."""
    return f"t:{fingerprint}:{text_hash_}"
