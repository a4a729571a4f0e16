"""Labelled pairs in the NoveltyBench format and the fixed held-out rule every reported number uses."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Pair:
    id: str
    a: str
    b: str
    label: int  # 1 = equivalent
    group: str = ""  # the prompt both answers reply to, if the file names it: pairs of one prompt share a fold


def read_pairs(path: str) -> list[Pair]:
    """One JSON object per line with `generation_0`, `generation_1`, `similar` (0/1 or bool) and an `id`."""
    out: list[Pair] = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                out.append(
                    Pair(
                        id=str(row.get("id", f"{path}:{lineno}")),
                        a=str(row["generation_0"]),
                        b=str(row["generation_1"]),
                        label=int(bool(row["similar"])),
                        group=str(row.get("prompt", "")),
                    )
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{lineno}: not a labelled pair ({exc!r})") from None
    if not out:
        raise ValueError(f"{path}: no pairs")
    return out


def is_heldout(pair_id: str) -> bool:
    """The held-out fifth of the shared pairs: sha256(id) % 5 == 0 (214 of the 1000)."""
    return int(hashlib.sha256(pair_id.encode()).hexdigest(), 16) % 5 == 0


def split_heldout(pairs: list[Pair]) -> tuple[list[Pair], list[Pair]]:
    train = [p for p in pairs if not is_heldout(p.id)]
    held = [p for p in pairs if is_heldout(p.id)]
    return train, held


def balanced_subsample(pairs: list[Pair]) -> list[Pair]:
    """All of the rarer class and as many of the other, chosen by hash of id so the subsample is fixed."""
    pos = [p for p in pairs if p.label == 1]
    neg = [p for p in pairs if p.label == 0]
    few, many = (pos, neg) if len(pos) <= len(neg) else (neg, pos)
    many = sorted(many, key=lambda p: hashlib.sha256(("balance:" + p.id).encode()).hexdigest())[: len(few)]
    return sorted(few + many, key=lambda p: p.id)


def read_idea_pairs(path: str) -> list[Pair]:
    """Pairs from a file of prompts -> ideas -> phrasings: phrasings of one idea are equivalent, ideas are not.

    Positives are every two phrasings of one idea; negatives pair the i-th phrasing of one idea with the i-th
    and (i+1)-th of another, so the two classes come out about the same size.
    """
    with open(path) as f:
        data = json.load(f)
    out: list[Pair] = []
    for pi, prompt in enumerate(data["prompts"]):
        ideas: list[list[str]] = prompt["ideas"]
        for ii, idea in enumerate(ideas):
            for x in range(len(idea)):
                for y in range(x + 1, len(idea)):
                    out.append(Pair(f"ideas:{pi}:{ii}:{x}={ii}:{y}", idea[x], idea[y], 1))
        for ii in range(len(ideas)):
            for jj in range(ii + 1, len(ideas)):
                for x in range(len(ideas[ii])):
                    y = (x + (ii + jj) % 2) % len(ideas[jj])
                    out.append(Pair(f"ideas:{pi}:{ii}:{x}!={jj}:{y}", ideas[ii][x], ideas[jj][y], 0))
    return out
