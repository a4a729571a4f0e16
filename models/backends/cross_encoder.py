"""Pair classifiers (`AutoModelForSequenceClassification`) with the input layouts of the published ones.

A preset pins exactly what the model is sent, because the published classifiers were trained on
hand-built strings and token layouts, and a different layout silently changes their judgements.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import torch

from models.backends.base import Encoded, fingerprint, weights_digest
from models.backends.loading import LoadOptions, load_pretrained, load_tokenizer, resolve_device, to_device

PRESET_FILE = "darling_classifier.json"

Layout = Literal["words", "tokens", "pair"]


@dataclass(frozen=True)
class Preset:
    """How a pair becomes model input.

    - `words`: the DARLING layout, one string `"{cls} " + a_words + " {sep} " + b_words + " {sep}"`, each
      side cut to `max_words` whitespace words, tokenized with `add_special_tokens=False` (the string already
      carries its special tokens; letting the tokenizer add more would put two [CLS] in front).
    - `tokens`: the NoveltyBench layout, ids `[CLS] a[:n] [SEP] b[:n] [SEP]` with token_type_ids 0 up to and
      including the first [SEP] and 1 after.
    - `pair`: the tokenizer's own pair encoding, `longest_first` truncation to `max_length`.
    """

    name: str
    layout: Layout
    threshold: float
    checkpoint: str | None = None
    tokenizer: str | None = None  # where to load the tokenizer from, if not beside the weights
    cls_token: str | None = None  # None: the tokenizer's cls_token
    sep_token: str | None = None
    max_words: int | None = None
    max_tokens_per_side: int | None = None
    max_length: int = 512
    label_index: int = 1


PRESETS: dict[str, Preset] = {
    "darling-modernbert": Preset(
        name="darling-modernbert",
        layout="words",
        threshold=0.32,
        checkpoint="dogtooth/similarity-classifier-f168-hf",
        max_words=(2048 - 3) // 2,
        max_length=8192,
    ),
    "darling-math": Preset(
        name="darling-math",
        layout="words",
        threshold=0.5,
        checkpoint="dogtooth/qwen3-4b-emb-finetuned-step-70-hf",
        cls_token="<|im_start|>",
        sep_token="<|im_end|>",
        max_words=(4096 - 3) // 2,
        max_length=32768,
    ),
    "noveltybench-deberta": Preset(
        name="noveltybench-deberta",
        layout="tokens",
        threshold=0.102,
        checkpoint="yimingzhang/deberta-v3-large-generation-similarity",
        tokenizer="microsoft/deberta-v3-large",
        max_tokens_per_side=128,
    ),
    "pair": Preset(name="pair", layout="pair", threshold=0.5),
}


def build_input(preset: Preset, tokenizer: Any, a: str, b: str) -> tuple[dict[str, list[int]], tuple[bool, bool]]:
    """The exact model input for one pair, and whether each side was truncated."""
    if preset.layout == "words":
        cls = preset.cls_token or tokenizer.cls_token
        sep = preset.sep_token or tokenizer.sep_token
        assert preset.max_words is not None
        wa, wb = a.split(), b.split()
        text = f"{cls} " + " ".join(wa[: preset.max_words]) + f" {sep} " + " ".join(wb[: preset.max_words]) + f" {sep}"
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        cut = len(ids) > preset.max_length
        return {"input_ids": ids[: preset.max_length]}, (
            len(wa) > preset.max_words or cut,
            len(wb) > preset.max_words or cut,
        )
    if preset.layout == "tokens":
        n = preset.max_tokens_per_side
        assert n is not None
        ia = tokenizer(a, add_special_tokens=False)["input_ids"]
        ib = tokenizer(b, add_special_tokens=False)["input_ids"]
        cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
        ids = [cls_id, *ia[:n], sep_id, *ib[:n], sep_id]
        types = [0] * (len(ia[:n]) + 2) + [1] * (len(ib[:n]) + 1)
        return {"input_ids": ids, "token_type_ids": types}, (len(ia) > n, len(ib) > n)
    enc = tokenizer(a, b, truncation="longest_first", max_length=preset.max_length, return_overflowing_tokens=False)
    out = {"input_ids": list(enc["input_ids"])}
    if "token_type_ids" in enc:
        out["token_type_ids"] = list(enc["token_type_ids"])
    try:
        # Fast tokenizers say which text each kept token came from: a side is cut iff it kept fewer tokens.
        kept = enc.sequence_ids()
        return out, (
            kept.count(0) < len(tokenizer(a, add_special_tokens=False)["input_ids"]),
            kept.count(1) < len(tokenizer(b, add_special_tokens=False)["input_ids"]),
        )
    except ValueError:
        cut = len(tokenizer(a, b)["input_ids"]) > preset.max_length
        return out, (cut, cut)


def side_truncated(preset: Preset, tokenizer: Any, text: str) -> bool:
    """Whether one side is cut by the preset's per-side limit (the whole-input cap is reported per pair)."""
    if preset.layout == "words":
        assert preset.max_words is not None
        return len(text.split()) > preset.max_words
    n_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    if preset.layout == "tokens":
        assert preset.max_tokens_per_side is not None
        return n_tokens > preset.max_tokens_per_side
    # `pair`: longest_first truncation cuts a side only when it is over half the window.
    return n_tokens > (preset.max_length - 3) // 2


def pad_batch(rows: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest row; the batcher has already sorted rows by length so padding stays small."""
    width = max(len(r["input_ids"]) for r in rows)
    out: dict[str, torch.Tensor] = {}
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r["input_ids"])] = torch.tensor(r["input_ids"], dtype=torch.long)
        mask[i, : len(r["input_ids"])] = 1
    out["input_ids"], out["attention_mask"] = ids, mask
    if "token_type_ids" in rows[0]:
        types = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            types[i, : len(r["token_type_ids"])] = torch.tensor(r["token_type_ids"], dtype=torch.long)
        out["token_type_ids"] = types
    return out


def pad_id_for(rows: list[dict[str, list[int]]], preferred: int) -> int:
    """`preferred`, unless some row ends with it: then the smallest id that ends no row.

    Pad positions are masked out of attention, so any id works as padding; what matters is that a decoder's
    "last token that is not pad" is each row's true last token (a pad == eos tokenizer with a chat template
    that ends in eos would otherwise be read one token early, and differently than when run alone).
    """
    last = {r["input_ids"][-1] for r in rows if r["input_ids"]}
    if preferred not in last:
        return preferred
    return next(i for i in range(len(last) + 1) if i not in last)


class PaddedForward:
    """One padded forward of a sequence-classification model, for pair classifiers and reward models alike.

    Decoder heads (Qwen3, Llama) pool the last token that is not the config's pad id. A model that names no
    pad id reads the true last token when run alone; to keep that in a padded batch, each batch gets a pad id
    that no row ends with. That writes the model config, which is safe because one worker thread runs a model.
    """

    def __init__(self, model: Any, pad_id: int) -> None:
        self.model = model
        self.pad_id = pad_id
        self.device = next(model.parameters()).device
        self.choose_pad = getattr(model.config, "pad_token_id", None) is None
        if self.choose_pad:
            model.config.pad_token_id = pad_id

    @torch.inference_mode()
    def logits(self, rows: list[dict[str, list[int]]]) -> torch.Tensor:
        pad = self.pad_id
        if self.choose_pad:
            pad = pad_id_for(rows, self.pad_id)
            self.model.config.pad_token_id = pad
        inputs = to_device(pad_batch(rows, pad), self.device)
        logits: torch.Tensor = self.model(**inputs).logits
        return logits.float()


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "spm.model", "tokenizer.model", "vocab.txt")


def _load_preset_tokenizer(path: str, preset: Preset, opts: LoadOptions, tokenizer_path: str | None) -> Any:
    """The tokenizer beside the weights, else the preset's: the NoveltyBench DeBERTa checkpoint ships without
    one and is read with microsoft/deberta-v3-large's."""
    if tokenizer_path or preset.tokenizer is None:
        return load_tokenizer(path, opts, tokenizer_path)
    if os.path.isdir(path):
        has_own = any(os.path.isfile(os.path.join(path, f)) for f in TOKENIZER_FILES)
        return load_tokenizer(path, opts, None if has_own else preset.tokenizer)
    try:
        return load_tokenizer(path, opts)
    except (OSError, ValueError):
        return load_tokenizer(path, opts, preset.tokenizer)


def read_preset_file(path: str) -> Preset | None:
    file = os.path.join(path, PRESET_FILE)
    if not os.path.isfile(file):
        return None
    with open(file) as f:
        data = json.load(f)
    fields = {k: v for k, v in data.items() if k in Preset.__dataclass_fields__}
    return Preset(**fields)


def write_preset_file(path: str, preset: Preset) -> None:
    with open(os.path.join(path, PRESET_FILE), "w") as f:
        json.dump(asdict(preset), f, indent=2)


class CrossEncoderClassifier:
    """Any sequence-classification pair classifier, run as its preset says."""

    def __init__(self, model: Any, tokenizer: Any, preset: Preset, model_id: str, digest: str) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.preset = preset
        self.default_threshold = preset.threshold
        self.id = f"cross-encoder:{preset.name}:{model_id}"
        self.fingerprint = fingerprint("cross-encoder", digest, asdict(preset))
        pad = tokenizer.pad_token_id
        self._forward = PaddedForward(model, int(pad) if pad is not None else 0)
        self.device = str(self._forward.device)
        # A fast tokenizer's truncation setting is state shared by every caller: the `pair` layout encodes with
        # truncation and without it in turn, so two threads encoding at once can get an untruncated row
        # (longer than the model's positions). Encoding runs on a thread pool; one tokenizer user at a time.
        self._tokenizer_lock = threading.Lock()

    @classmethod
    def load(
        cls,
        path: str,
        preset: str | None = None,
        opts: LoadOptions | None = None,
        threshold: float | None = None,
        tokenizer_path: str | None = None,
    ) -> CrossEncoderClassifier:
        from transformers import AutoModelForSequenceClassification

        opts = opts or LoadOptions()
        if preset and preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
        chosen = PRESETS[preset] if preset else (read_preset_file(path) or PRESETS["pair"])
        if threshold is not None:
            chosen = replace(chosen, threshold=threshold)
        tokenizer = _load_preset_tokenizer(path, chosen, opts, tokenizer_path)
        model = load_pretrained(AutoModelForSequenceClassification, path, opts)
        return cls(model, tokenizer, chosen, os.path.basename(os.path.normpath(path)), weights_digest(path))

    def truncates(self, text: str) -> bool:
        with self._tokenizer_lock:
            return side_truncated(self.preset, self.tokenizer, text)

    def encode_pair(self, a: str, b: str) -> Encoded:
        with self._tokenizer_lock:
            row, truncated = build_input(self.preset, self.tokenizer, a, b)
        return Encoded(cost=len(row["input_ids"]), payload=row, truncated=truncated)

    def quantized_int8(self) -> CrossEncoderClassifier:
        """A CPU copy with every Linear layer dynamically quantized to int8 (weights int8, activations
        quantized per batch): faster matrix products on CPU, judgements within a small distance of fp32.
        Its fingerprint differs, so cached fp32 judgements are never served as int8 ones or back."""
        import copy

        from torch.ao.quantization import quantize_dynamic

        if self._forward.device.type != "cpu":
            raise ValueError(f"int8 dynamic quantization runs on CPU; this classifier is on {self.device}")
        model = quantize_dynamic(copy.deepcopy(self.model), {torch.nn.Linear}, dtype=torch.qint8)  # type: ignore[no-untyped-call]
        q = CrossEncoderClassifier(model, self.tokenizer, self.preset, "", "")
        q.id = f"{self.id}:int8"
        q.fingerprint = fingerprint(self.fingerprint, "int8-dynamic")
        q._tokenizer_lock = self._tokenizer_lock  # the tokenizer is shared, so is its lock
        return q

    def run(self, batch: list[Encoded]) -> list[float]:
        logits = self._forward.logits([e.payload for e in batch])
        probs = torch.softmax(logits, dim=-1)[:, self.preset.label_index]
        return [float(p) for p in probs.cpu()]


def default_device() -> str:
    return str(resolve_device("auto"))
