"""Tiny transformers models with random weights and locally built tokenizers, saved like real checkpoints.

Nothing here touches a hub: tokenizers are trained (or hand-made) with the `tokenizers` library on the
sentences below and saved beside the weights with `save_pretrained` (safetensors), so a test loads them back
through exactly the code path a real checkpoint takes. Each `make_tiny_*` function writes one model folder
and returns its path; they are public so other tests (classifier training, service tests) can reuse them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

CORPUS = [
    "the cat sat on the mat",
    "a dog ran in the park",
    "paris is the capital of france",
    "the capital of france is paris",
    "water boils at one hundred degrees",
    "photosynthesis turns sunlight into sugar",
    "the quick brown fox jumps over the lazy dog",
    "a story about a robot who learns to paint",
    "a poem about the sea and the moon",
    "the answer is forty two",
    "hello world",
    "one two three four five six seven eight nine ten",
]

# Whole words of the corpus: tests build long texts from these, so every word is one known vocab entry.
WORDS = sorted({w for line in CORPUS for w in line.split()})

SEED = 0


def _train_byte_bpe(special: list[str], vocab_size: int = 2000) -> Any:
    """A byte-level BPE like ModernBERT's and Qwen's (no prefix space: " word" and "word" differ)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Several copies with and without a leading space, so whole words with and without "Ġ" get merged.
    tok.train_from_iterator([*CORPUS, *(" " + s for s in CORPUS)] * 3, trainer=trainer)
    return tok


def _save_model(model: Any, tokenizer: Any, path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def make_modernbert_tokenizer() -> Any:
    """ModernBERT-style: byte-level BPE, [CLS]/[SEP]/[PAD]/[MASK]/[UNK], a post-processor adding [CLS] ... [SEP]."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    special = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
    tok = _train_byte_bpe(special)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    # The real ModernBERT tokenizer adds its own [CLS]/[SEP]; the preset must not let it do so a second time.
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        mask_token="[MASK]",
    )


def make_tiny_modernbert(path: str | Path, num_labels: int = 2) -> Path:
    """A 2-layer ModernBertForSequenceClassification (hidden 32) with its tokenizer, saved to `path`."""
    from transformers import ModernBertConfig, ModernBertForSequenceClassification

    tokenizer = make_modernbert_tokenizer()
    config = ModernBertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=8192,
        local_attention=16,
        pad_token_id=tokenizer.pad_token_id,
        cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        num_labels=num_labels,
    )
    torch.manual_seed(SEED)
    return _save_model(ModernBertForSequenceClassification(config), tokenizer, Path(path))


QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def make_qwen3_tokenizer() -> Any:
    """Qwen-style: byte-level BPE with <|endoftext|> (pad), <|im_start|> and <|im_end|> as added special tokens."""
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    tok = _train_byte_bpe([])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|endoftext|>")


def make_tiny_qwen3(path: str | Path, num_labels: int = 2) -> Path:
    """A 2-layer Qwen3ForSequenceClassification (hidden 32) with its tokenizer, saved to `path`."""
    from transformers import Qwen3Config, Qwen3ForSequenceClassification

    tokenizer = make_qwen3_tokenizer()
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=32768,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        num_labels=num_labels,
    )
    torch.manual_seed(SEED)
    return _save_model(Qwen3ForSequenceClassification(config), tokenizer, Path(path))


DEBERTA_SPECIAL = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]


def deberta_vocab() -> list[tuple[str, float]]:
    """A hand-made SentencePiece-style Unigram vocab: specials, every corpus word as "▁word", then characters."""
    pieces: list[tuple[str, float]] = [(t, 0.0) for t in DEBERTA_SPECIAL]
    pieces += [("▁" + w, -1.0) for w in WORDS]
    chars = sorted({c for line in CORPUS for c in line if c != " "} | set("abcdefghijklmnopqrstuvwxyz0123456789.,!?"))
    pieces += [("▁", -5.0)] + [(c, -10.0) for c in chars]
    return pieces


def make_deberta_tokenizer() -> Any:
    """The architecture's own DebertaV2Tokenizer (Unigram + Metaspace) built from `deberta_vocab()`."""
    from transformers import DebertaV2Tokenizer

    return DebertaV2Tokenizer(vocab=deberta_vocab(), unk_id=DEBERTA_SPECIAL.index("[UNK]"))


def make_tiny_deberta(path: str | Path, num_labels: int = 2) -> Path:
    """A 2-layer DebertaV2ForSequenceClassification shaped like deberta-v3 (relative attention, no token types)."""
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    tokenizer = make_deberta_tokenizer()
    config = DebertaV2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=512,
        relative_attention=True,
        position_buckets=32,
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        pos_att_type=["p2c", "c2p"],
        position_biased_input=False,
        type_vocab_size=0,
        pooler_hidden_size=32,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=num_labels,
    )
    torch.manual_seed(SEED)
    return _save_model(DebertaV2ForSequenceClassification(config), tokenizer, Path(path))


# Role markers are special tokens and every turn ends with </s>, so a scored conversation ENDS with the eos
# token (as Llama-3's ends with <|eot_id|>): a batcher that pads with eos must still read the last token.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
LLAMA_SPECIAL = ["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>"]


def make_llama_tokenizer(chat_template: bool = True) -> Any:
    """Llama-style: byte-level BPE, <s>/</s>, a post-processor adding <s> (pairs: "<s> A <s> B")."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok = _train_byte_bpe(LLAMA_SPECIAL)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    if chat_template:
        wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def make_tiny_llama_reward_model(path: str | Path, chat_template: bool = True) -> Path:
    """A 2-layer LlamaForSequenceClassification with one output (a reward model), pad token unset like Llama's."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tokenizer = make_llama_tokenizer(chat_template)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        num_labels=1,
    )
    torch.manual_seed(SEED)
    return _save_model(LlamaForSequenceClassification(config), tokenizer, Path(path))


def make_tiny_llama_policy(path: str | Path) -> Path:
    """A 2-layer LlamaForCausalLM (hidden 32) with the Llama-style tokenizer and its chat template: a GRPO policy."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = make_llama_tokenizer(chat_template=True)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(SEED)
    return _save_model(LlamaForCausalLM(config), tokenizer, Path(path))
