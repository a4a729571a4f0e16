"""Data shipped inside the package: the human-labelled NoveltyBench pairs (MIT, see noveltybench_pairs/)."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def noveltybench_pairs() -> Path:
    """The 1,000 human-labelled response pairs (`train.jsonl`) that classifiers train and calibrate on."""
    return _HERE / "noveltybench_pairs" / "train.jsonl"
