"""Loading transformers models safely and onto the right device."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class LoadOptions:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    trust_remote_code: bool = False
    cpu_threads: int | None = None


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        if device.type == "cuda":
            # bf16 where the card supports it, else fp16: halves memory and doubles matmul throughput.
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def configure_cpu_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
    else:
        torch.set_num_threads(max(1, os.cpu_count() or 1))


def load_pretrained(cls: Any, path: str, opts: LoadOptions, **kwargs: Any) -> Any:
    """`cls.from_pretrained` with safetensors only, remote code off unless asked, SDPA attention."""
    device = resolve_device(opts.device)
    dtype = resolve_dtype(opts.dtype, device)
    common: dict[str, Any] = {
        "use_safetensors": True,
        "trust_remote_code": opts.trust_remote_code,
        "dtype": dtype,
    }
    try:
        model = cls.from_pretrained(path, attn_implementation="sdpa", **common, **kwargs)
    except (ValueError, ImportError):
        # Some architectures have no SDPA kernel; eager attention is always there.
        model = cls.from_pretrained(path, **common, **kwargs)
    model.to(device)
    model.eval()
    return model


def load_tokenizer(path: str, opts: LoadOptions, tokenizer_path: str | None = None) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_path or path, trust_remote_code=opts.trust_remote_code)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    if device.type == "cuda":
        # Pinned host memory lets the copy overlap with the previous batch's compute.
        return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
    return batch
