"""A ROC curve as a PNG, drawn with numpy and written with zlib: no plotting library needed on a server.

The image has no rendered text (no fonts); the title and AUC go into the PNG's tEXt metadata.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

SIZE = 480
MARGIN = 40


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(rgb: np.ndarray, text: dict[str, str] | None = None) -> bytes:
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].astype(np.uint8).tobytes() for y in range(h))
    meta = b"".join(
        _chunk(b"tEXt", k.encode("latin-1") + b"\x00" + v.encode("latin-1", "replace")) for k, v in (text or {}).items()
    )
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + meta
        + _chunk(b"IDAT", zlib.compress(raw, 9))
        + _chunk(b"IEND", b"")
    )


def _line(
    img: np.ndarray, p0: tuple[float, float], p1: tuple[float, float], color: tuple[int, int, int], width: int
) -> None:
    n = int(max(abs(p1[0] - p0[0]), abs(p1[1] - p0[1]))) + 1
    xs = np.linspace(p0[0], p1[0], n).round().astype(int)
    ys = np.linspace(p0[1], p1[1], n).round().astype(int)
    r = width // 2
    for dx in range(-r, r + 1):
        for dy in range(-r, r + 1):
            img[np.clip(ys + dy, 0, SIZE - 1), np.clip(xs + dx, 0, SIZE - 1)] = color


def _to_px(x: float, y: float) -> tuple[float, float]:
    span = SIZE - 2 * MARGIN
    return MARGIN + x * span, SIZE - MARGIN - y * span


def write_roc_png(path: str, fpr: np.ndarray, tpr: np.ndarray, title: str) -> None:
    """False-positive rate on x, true-positive rate on y, the chance diagonal in grey."""
    img = np.full((SIZE, SIZE, 3), 255, dtype=np.uint8)
    for a, b in (((0, 0), (1, 0)), ((1, 0), (1, 1)), ((1, 1), (0, 1)), ((0, 1), (0, 0))):
        _line(img, _to_px(*a), _to_px(*b), (0, 0, 0), 1)
    for t in np.linspace(0, 1, 41)[::2]:
        _line(img, _to_px(t, t), _to_px(min(1.0, t + 0.0125), min(1.0, t + 0.0125)), (160, 160, 160), 1)
    for i in range(len(fpr) - 1):
        _line(img, _to_px(fpr[i], tpr[i]), _to_px(fpr[i + 1], tpr[i + 1]), (31, 119, 180), 3)
    with open(path, "wb") as f:
        f.write(encode_png(img, {"Title": title, "Software": "darling-reward classifier eval"}))
