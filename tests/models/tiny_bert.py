"""A tiny BERT encoder (no classification head, like the packaged MiniLM) with a locally built WordPiece vocab.

Saved with `save_pretrained` (safetensors) so training and serving load it exactly as they load a real base.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tests.models.tiny import CORPUS, SEED, WORDS

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def make_tiny_bert(path: str | Path, hidden: int = 32, layers: int = 2) -> Path:
    """A 2-layer BertModel (hidden 32) and a BertTokenizerFast over the corpus words plus single characters."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    chars = sorted({c for line in CORPUS for c in line if c != " "} | set("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-"))
    vocab = [*SPECIAL, *WORDS, *chars, *("##" + c for c in chars)]
    tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(dict.fromkeys(vocab))}, do_lower_case=True)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(SEED)
    BertModel(config).save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path
