"""What a batcher needs from a model, and nothing more.

A backend turns one work item into an `Encoded` (tokenized, truncated as its preset says, with a cost in
tokens so a batcher can pack by padded length) and runs a list of them in one forward. `run` is blocking
and is called from one worker thread per model; `encode` may be called from any thread.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Encoded:
    cost: int  # tokens the item occupies in a padded batch row
    payload: Any
    truncated: tuple[bool, ...] = field(default=())


@runtime_checkable
class Backend(Protocol):
    """Anything a batcher can drive."""

    id: str
    fingerprint: str
    device: str

    def run(self, batch: list[Encoded]) -> list[float]: ...


@runtime_checkable
class PairClassifier(Backend, Protocol):
    """P(equivalent | a, b) for a pair of rollouts."""

    default_threshold: float

    def encode_pair(self, a: str, b: str) -> Encoded:
        """The model input for a pair; `truncated` says which side the encoding cut (the service reports
        exactly this, so it must cover every cut: per side and whole input)."""
        ...


@runtime_checkable
class QualityBackend(Backend, Protocol):
    """A quality score for one rollout of a prompt."""

    source: str  # "reward-model" or "verifier"

    def encode_rollout(self, prompt: str, response: str, reference: str | None) -> Encoded: ...


def fingerprint(*parts: Any) -> str:
    """A short stable hash of everything that changes a backend's outputs (weights, preset, truncation)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# Files whose bytes decide a model's outputs: weights, configs, tokenizer vocabularies and merges.
_DIGESTED = (".safetensors", ".bin", ".json", ".model", ".txt")
_HF_BLOB = re.compile(r"[0-9a-f]{64}")


def _file_digest(path: str) -> str:
    """The content's sha256. A hub-cache snapshot links each file to a blob named by that very sha256."""
    import os

    target = os.path.realpath(path)
    name = os.path.basename(target)
    if target != os.path.abspath(path) and _HF_BLOB.fullmatch(name):
        return name
    h = hashlib.sha256()
    with open(target, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def weights_digest(model_dir: str) -> str:
    """Hash of every weight, config and tokenizer file's name and full content (sha256 runs at about 1 GB/s).

    All of the content: a fine-tune that leaves the first tensors alone (frozen embeddings, a merged LoRA)
    must still change the digest, or the cache would serve the old model's judgements.
    """
    import os

    h = hashlib.sha256()
    if os.path.isdir(model_dir):
        for name in sorted(os.listdir(model_dir)):
            path = os.path.join(model_dir, name)
            if name.endswith(_DIGESTED) and os.path.isfile(path):
                h.update(name.encode())
                h.update(_file_digest(path).encode())
    else:
        h.update(model_dir.encode())
    return h.hexdigest()[:16]
