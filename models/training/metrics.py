"""Binary classification metrics for equivalence judgements, with the service's strict `p > threshold` rule."""

from __future__ import annotations

from typing import Any

import numpy as np


def confusion(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, int]:
    pred = scores > threshold
    truth = labels == 1
    return {
        "tp": int((pred & truth).sum()),
        "fp": int((pred & ~truth).sum()),
        "fn": int((~pred & truth).sum()),
        "tn": int((~pred & ~truth).sum()),
    }


def _rates(c: dict[str, int]) -> dict[str, float]:
    n = sum(c.values())
    precision = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 0.0
    recall = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 0.0
    specificity = c["tn"] / (c["tn"] + c["fp"]) if c["tn"] + c["fp"] else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": (c["tp"] + c["tn"]) / n if n else 0.0,
        "balanced_accuracy": (recall + specificity) / 2,
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates over every distinct threshold, from (0, 0) to (1, 1)."""
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    distinct = np.r_[np.where(np.diff(s))[0], len(s) - 1]
    tps = np.cumsum(y)[distinct]
    fps = (distinct + 1) - tps
    pos, neg = max(int(y.sum()), 1), max(int(len(y) - y.sum()), 1)
    return np.r_[0.0, fps / neg], np.r_[0.0, tps / pos]


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Probability that a random equivalent pair outscores a random distinct one (ties count half)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    ranks = _average_ranks(np.r_[pos, neg])
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    sx = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def best_thresholds(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Thresholds maximising accuracy, F1 and balanced accuracy; each a midpoint between adjacent scores."""
    s = np.unique(scores)
    candidates = np.r_[s[0] - 1e-6, (s[:-1] + s[1:]) / 2, s[-1]] if len(s) > 1 else np.r_[s[0] - 1e-6, s[0]]
    best: dict[str, tuple[float, float]] = {}
    for t in candidates:
        r = _rates(confusion(scores, labels, float(t)))
        for key in ("accuracy", "f1", "balanced_accuracy"):
            if key not in best or r[key] > best[key][0]:
                best[key] = (r[key], float(t))
    return {k: v[1] for k, v in best.items()}


def evaluate(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, Any]:
    """Everything `classifier eval` reports, at `threshold` and at the thresholds that would do best."""
    c = confusion(scores, labels, threshold)
    out: dict[str, Any] = {**_rates(c), "roc_auc": roc_auc(scores, labels), "threshold": threshold, "n": len(labels)}
    best = best_thresholds(scores, labels)
    out["confusion"] = c
    out["positives"] = int(labels.sum())
    for key in ("accuracy", "f1", "balanced_accuracy"):
        out[f"best_{key}_threshold"] = best[key]
        out[f"best_{key}"] = _rates(confusion(scores, labels, best[key]))[key]
    return out
