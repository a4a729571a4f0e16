"""What a batcher needs from a model, and nothing more.

A backend turns one work item into an `Encoded` (tokenized, truncated as its preset says, with a cost in
tokens so a batcher can pack by padded length) and runs a list of them in one forward. `run` is blocking
and is called from one worker thread per model; `encode` may be called from any thread.
"""

from __future__ import annotations

import hashlib
import json
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

    def encode_pair(self, a: str, b: str) -> Encoded: ...

    def truncates(self, text: str) -> bool:
        """Whether this text, on either side of a pair, is cut before the model reads it."""
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


def weights_digest(model_dir: str) -> str:
    """Hash of the weight files' names and sizes and their first MiB: cheap, and changes with the weights."""
    import os

    h = hashlib.sha256()
    if os.path.isdir(model_dir):
        for name in sorted(os.listdir(model_dir)):
            if name.endswith((".safetensors", ".json")):
                path = os.path.join(model_dir, name)
                h.update(name.encode())
                h.update(str(os.path.getsize(path)).encode())
                with open(path, "rb") as f:
                    h.update(f.read(1 << 20))
    else:
        h.update(model_dir.encode())
    return h.hexdigest()[:16]
