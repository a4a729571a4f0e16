"""Fine-tuning a sequence-classification pair classifier with the published recipe (docs/spec.md section 2).

Both pair orders, class-weighted cross-entropy, linear warm-up then cosine decay from `lr` to `min_lr`,
an effective batch built by gradient accumulation. The folder it writes is what the `cross-encoder` backend
loads with no flags: safetensors weights, the tokenizer, and `darling_classifier.json` (layout, threshold,
truncation). Inputs are built by the serving code (`build_input`), so training and serving see the same ids.
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from models.backends.cross_encoder import Preset, build_input, pad_batch, write_preset_file
from models.backends.loading import resolve_device
from models.training.data import Pair
from models.training.metrics import best_thresholds


@dataclass(frozen=True)
class Recipe:
    steps: int = 80
    lr: float = 2e-5
    min_lr: float = 2e-6
    warmup: int = 10
    batch: int = 64  # effective batch: examples per optimiser step
    micro_batch: int = 16  # examples per forward; batch / micro_batch gradients are accumulated
    max_length: int = 512
    lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    seed: int = 0
    device: str = "auto"


def lr_at(step: int, r: Recipe) -> float:
    """Linear warm-up to `lr` over `warmup` steps, then cosine to `min_lr` at the last step."""
    if step < r.warmup:
        return r.lr * (step + 1) / r.warmup
    span = max(1, r.steps - r.warmup - 1)
    progress = min(1.0, (step - r.warmup) / span)
    return r.min_lr + (r.lr - r.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _examples(pairs: list[Pair], preset: Preset, tokenizer: Any) -> list[tuple[dict[str, list[int]], int]]:
    out = []
    for p in pairs:
        for a, b in ((p.a, p.b), (p.b, p.a)):  # both orders: the judgement must not depend on which came first
            row, _ = build_input(preset, tokenizer, a, b)
            out.append((row, p.label))
    return out


def _batches(n: int, size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled epochs laid end to end, cut into batches of `size` indices."""
    order: list[int] = []
    while len(order) < size:
        epoch = list(range(n))
        rng.shuffle(epoch)
        order += epoch
    return [order[i : i + size] for i in range(0, len(order) - size + 1, size)]


def _wrap_lora(model: Any, r: Recipe) -> Any:
    from peft import LoraConfig, TaskType, get_peft_model

    cfg = LoraConfig(task_type=TaskType.SEQ_CLS, r=r.lora_r, lora_alpha=r.lora_alpha, lora_dropout=0.05)
    return get_peft_model(model, cfg)


@torch.inference_mode()
def predict(model: Any, tokenizer: Any, preset: Preset, pairs: list[Pair], device: torch.device) -> np.ndarray:
    """P(equivalent) for each pair in the order given, as the served model computes it."""
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rows = [build_input(preset, tokenizer, p.a, p.b)[0] for p in pairs]
    out = np.zeros(len(rows))
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    for start in range(0, len(order), 32):
        idx = order[start : start + 32]
        inputs = {k: v.to(device) for k, v in pad_batch([rows[i] for i in idx], pad).items()}
        probs = torch.softmax(model(**inputs).logits.float(), dim=-1)[:, preset.label_index]
        out[idx] = probs.cpu().numpy()
    return out


def train_pair_classifier(
    pairs: list[Pair],
    base: str,
    out: str,
    recipe: Recipe | None = None,
    val_pairs: list[Pair] | None = None,
    threshold: float | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune `base` on `pairs` and write a served folder to `out`; returns what it wrote to training.json.

    The threshold is `threshold` if given, else the balanced-accuracy-optimal one on `val_pairs`, else 0.5
    (class-weighted training centres the classes there).
    """
    from tqdm import tqdm
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    r = recipe or Recipe()
    if r.batch % r.micro_batch:
        raise ValueError(f"batch {r.batch} must be a multiple of micro_batch {r.micro_batch}")
    seed_everything(r.seed)
    device = resolve_device(r.device)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(
        base,
        num_labels=2,
        id2label={0: "different", 1: "equivalent"},
        label2id={"different": 0, "equivalent": 1},
        use_safetensors=True,
    )
    if getattr(model.config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if r.lora:
        model = _wrap_lora(model, r)
    model.to(device)
    preset = Preset(name="trained", layout="pair", threshold=0.5, max_length=r.max_length)
    examples = _examples(pairs, preset, tokenizer)
    labels = torch.tensor([y for _, y in examples])
    counts = torch.bincount(labels, minlength=2).float().clamp(min=1.0)
    class_weight = (len(labels) / (2 * counts)).to(device)  # each class weighs half of the loss
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=r.lr, weight_decay=0.01)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = _batches(len(examples), r.batch, random.Random(r.seed))
    accum = r.batch // r.micro_batch
    losses: list[float] = []
    model.train()
    bar = tqdm(range(r.steps), unit="step", desc="training", disable=not progress)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, r)
        idx = batches[step % len(batches)]
        total = 0.0
        for m in range(accum):
            part = idx[m * r.micro_batch : (m + 1) * r.micro_batch]
            inputs = {k: v.to(device) for k, v in pad_batch([examples[i][0] for i in part], pad).items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = model(**inputs).logits.float()
            y = labels[part].to(device)
            loss = torch.nn.functional.cross_entropy(logits, y, weight=class_weight) / accum
            loss.backward()  # type: ignore[no-untyped-call]
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(total)
        bar.set_postfix(loss=f"{total:.4f}")
    if r.lora:
        model = model.merge_and_unload()  # a plain model: the served folder needs no peft
    tuned_on = "fixed"
    if threshold is None and val_pairs:
        scores = predict(model, tokenizer, preset, val_pairs, device)
        threshold = best_thresholds(scores, np.array([p.label for p in val_pairs]))["balanced_accuracy"]
        tuned_on = f"{len(val_pairs)} validation pairs"
    elif threshold is None:
        threshold, tuned_on = 0.5, "default (class-weighted training)"
    preset = Preset(name="trained", layout="pair", threshold=float(threshold), max_length=r.max_length)
    os.makedirs(out, exist_ok=True)
    model.to("cpu").save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    write_preset_file(out, preset)
    record: dict[str, Any] = {
        "base": base,
        "recipe": asdict(r),
        "pairs": len(pairs),
        "examples": len(examples),
        "threshold": float(threshold),
        "threshold_from": tuned_on,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
    }
    with open(os.path.join(out, "training.json"), "w") as f:
        json.dump(record, f, indent=2)
    return record
