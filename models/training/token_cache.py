"""Encode each distinct text once with the frozen encoder and keep its windows' token states.

Every feature variant the cross-validation compares is derived from these states (window means, shorter
segments pooled inside a window), so the encoder runs once per text for the whole protocol, and what the
service computes from its own single pass per text is the same function of the same numbers.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from models.backends.embedding import EmbeddingClassifier, text_key
from models.backends.embedding_head import TextView, make_view

# Per text: the token states of each window, [CLS]/[SEP] included, float16 to keep 2,000 long texts in memory.
TokenStates = dict[str, list[torch.Tensor]]


def encode_texts(
    clf: EmbeddingClassifier, texts: list[str], cache_file: str | None = None, batch_rows: int = 32
) -> TokenStates:
    """Token states per distinct text (keyed by `text_key`); `cache_file` keeps them between runs."""
    from tqdm import tqdm

    tag = f"{clf.fingerprint}:{clf.max_tokens}:{clf.max_chunks}"
    cached: dict[str, Any] = {}
    if cache_file and os.path.isfile(cache_file):
        blob = torch.load(cache_file, weights_only=False)
        if blob.get("tag") == tag:
            cached = blob["states"]
    states: TokenStates = {}
    todo: dict[str, list[list[int]]] = {}
    for t in texts:
        k = text_key(t)
        if k in cached:
            states[k] = [s.float() for s in cached[k]]
        elif k not in todo:
            todo[k] = clf._chunks(t)[0]
    flat = sorted(((k, j, row) for k, rows in todo.items() for j, row in enumerate(rows)), key=lambda x: len(x[2]))
    got: dict[str, dict[int, torch.Tensor]] = {}
    with tqdm(total=len(flat), unit="window", desc="encoding", disable=not flat) as bar:
        for start in range(0, len(flat), batch_rows):
            part = flat[start : start + batch_rows]
            for (k, j, _), h in zip(part, clf.window_states([r for _, _, r in part]), strict=True):
                # Rounded as the cache stores them, so a run gives the same numbers with or without its cache.
                got.setdefault(k, {})[j] = h.half().float()
            bar.update(len(part))
    for k, parts in got.items():
        states[k] = [parts[j] for j in sorted(parts)]
    if cache_file and todo:
        store = {k: [s.half() for s in v] for k, v in states.items()}
        store.update({k: v for k, v in cached.items() if k not in store})
        os.makedirs(os.path.dirname(os.path.abspath(cache_file)), exist_ok=True)
        torch.save({"tag": tag, "states": store}, cache_file)
    return states


def views_from_states(
    clf: EmbeddingClassifier, texts: list[str], states: TokenStates, segment_tokens: int
) -> dict[str, TextView]:
    """The head's view of each text, built by the same `make_view` the service applies to its own pass."""
    out: dict[str, TextView] = {}
    for t in texts:
        k = text_key(t)
        if k not in out:
            out[k] = make_view(t, states[k], clf._chunks(t)[2], segment_tokens)
    return out
