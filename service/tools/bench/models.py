"""Cross-encoders for the benchmark, written to a folder and loaded back through the service's loader.

Speed does not depend on what the weights know, so the benchmark builds its models locally: the packaged
MiniLM encoder under a fresh two-label head (a MiniLM-sized cross-encoder), or a ModernBERT-base-shaped
model with random weights (the architecture of the published DARLING classifier). Both use the packaged
MiniLM WordPiece tokenizer, so nothing is downloaded. The folder carries a preset file, so
`CrossEncoderClassifier.load` (and `DARLING_CLASSIFIER_PATH`) read it exactly as a real checkpoint.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch

from models.backends.cross_encoder import PRESETS, write_preset_file
from models.backends.embedding import packaged_minilm_path

MODELS = ("minilm", "modernbert-base", "modernbert-tiny", "bert-tiny")


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """A fresh head is the point here; transformers' "newly initialized" report is noise."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)


def _tokenizer(path: str | None) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path or os.environ.get("DARLING_BENCH_TOKENIZER") or packaged_minilm_path())


def _save(model: Any, tokenizer: Any, dest: str, preset: str) -> str:
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
    write_preset_file(dest, PRESETS[preset])
    return dest


def build_model(name: str, dest: str, seed: int = 0, tokenizer: str | None = None) -> str:
    """Write model `name` (one of MODELS) to `dest` and return `dest`.

    The tokenizer is the packaged MiniLM one unless `tokenizer` (or DARLING_BENCH_TOKENIZER) names a folder:
    a GPU machine without the package gets the tokenizer files carried beside the script.
    """
    import transformers

    # transformers is untyped where it matters here.
    auto: Any = transformers.AutoModelForSequenceClassification
    bert_config: Any = transformers.BertConfig
    modernbert_config: Any = transformers.ModernBertConfig
    torch.manual_seed(seed)
    tok = _tokenizer(tokenizer)
    with _quiet_transformers():
        if name == "minilm":
            model = auto.from_pretrained(packaged_minilm_path(), num_labels=2)
            return _save(model, tok, dest, "pair")
        if name == "bert-tiny":
            cfg: Any = bert_config(
                vocab_size=tok.vocab_size,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=64,
                max_position_embeddings=512,
                num_labels=2,
            )
            return _save(auto.from_config(cfg), tok, dest, "pair")
        if name in ("modernbert-base", "modernbert-tiny"):
            ids = {
                "vocab_size": tok.vocab_size,
                "pad_token_id": tok.pad_token_id,
                "cls_token_id": tok.cls_token_id,
                "sep_token_id": tok.sep_token_id,
                "bos_token_id": tok.cls_token_id,
                "eos_token_id": tok.sep_token_id,
                "num_labels": 2,
            }
            if name == "modernbert-tiny":  # same code path, CPU-sized, for checking the GPU script here
                ids |= {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 96}
            cfg = modernbert_config(**ids)  # defaults are the base sizes: 768 wide, 22 layers
            # The DARLING layout: "[CLS] a [SEP] b [SEP]" as one string; ModernBERT takes no token_type_ids.
            return _save(auto.from_config(cfg), tok, dest, "darling-modernbert")
    raise ValueError(f"unknown bench model {name!r}; expected one of {MODELS}")
