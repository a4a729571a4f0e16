"""Cost per judgement: the embedded default against a MiniLM-sized cross-encoder, side by side in one run.

Groups of n real NoveltyBench answers (the packaged pairs' texts, fresh texts every group so no cache helps
across groups): the default embeds each text once and judges all n(n-1)/2 pairs from the views; the cross-encoder
(the `pair` preset, all-MiniLM-L6-v2's architecture and tokenizer with a freshly initialised classification
model: the weights do not change the cost) runs one forward per pair. Both take the same batches of pairs.

    .venv/bin/python scripts/bench_classifier_cost.py --groups 6 --n 8 --threads 2
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from models.backends.cross_encoder import PRESETS, CrossEncoderClassifier  # noqa: E402
from models.backends.embedding import EmbeddingClassifier, packaged_minilm_path  # noqa: E402
from models.data import noveltybench_pairs  # noqa: E402
from models.training.data import read_pairs  # noqa: E402


def minilm_cross_encoder() -> CrossEncoderClassifier:
    """A randomly initialised BERT pair classifier with all-MiniLM-L6-v2's exact shape and tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    path = packaged_minilm_path()
    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(path, num_labels=2)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    return CrossEncoderClassifier(model, AutoTokenizer.from_pretrained(path), PRESETS["pair"], "minilm-random", "")


def time_groups(clf: Any, groups: list[list[str]], batch: int) -> float:
    """Seconds to judge every pair of every group, each group's pairs sent in batches of `batch` as the engine does."""
    start = time.perf_counter()
    for texts in groups:
        pairs = [clf.encode_pair(a, b) for a, b in itertools.combinations(texts, 2)]
        for i in range(0, len(pairs), batch):
            clf.run(pairs[i : i + batch])
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", type=int, default=6, help="Groups per classifier and round.")
    parser.add_argument("--n", type=int, default=8, help="Answers per group.")
    parser.add_argument("--rounds", type=int, default=3, help="Alternating rounds; the median is reported.")
    parser.add_argument("--batch", type=int, default=32, help="Pairs per run() call.")
    parser.add_argument("--threads", type=int, default=None, help="Torch CPU threads (default: torch's).")
    parser.add_argument(
        "--max-chunks", type=int, default=None, help="Windows the default reads per text (default: its head's)."
    )
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    texts = sorted({t for p in read_pairs(str(noveltybench_pairs())) for t in (p.a, p.b)})
    need = args.groups * args.n * args.rounds * 2
    if need + args.n > len(texts):
        raise SystemExit(f"--groups x --n x --rounds x 2 = {need} texts; the packaged pairs have {len(texts)}")
    words = statistics.median(len(t.split()) for t in texts[:need])
    default = EmbeddingClassifier.load()
    if args.max_chunks:
        default.max_chunks = args.max_chunks
    cross = minilm_cross_encoder()
    chunks = iter(texts[i : i + args.n] for i in range(0, need, args.n))
    per_round: dict[str, list[float]] = {"default": [], "cross": []}
    judged = args.groups * args.n * (args.n - 1) // 2
    warm = [texts[-args.n :]]  # texts no timed group uses, so the default's text cache cannot help
    time_groups(default, warm, args.batch)
    time_groups(cross, warm, args.batch)
    for _ in range(args.rounds):
        for name, clf in (("default", default), ("cross", cross)):
            groups = [next(chunks) for _ in range(args.groups)]
            per_round[name].append(judged / time_groups(clf, groups, args.batch))
    d, c = statistics.median(per_round["default"]), statistics.median(per_round["cross"])
    print(
        json.dumps(
            {
                "default": default.id,
                "default_max_chunks": default.max_chunks,
                "cross_encoder": f"{cross.id} (max_length {cross.preset.max_length})",
                "groups": args.groups,
                "n": args.n,
                "median_words_per_answer": words,
                "threads": torch.get_num_threads(),
                "default_judgements_per_s": round(d, 2),
                "cross_encoder_judgements_per_s": round(c, 2),
                "ratio": round(d / c, 2),
                "rounds": per_round,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
