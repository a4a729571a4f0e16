"""Repeated, stratified, grouped, nested cross-validation of the embedding head.

Every choice is made inside the outer training folds: for each outer split, each candidate configuration gets
out-of-fold predictions from an inner grouped k-fold over the training pairs only; the candidate with the best
inner balanced accuracy is selected and its threshold is fixed on those inner predictions (or at the
prior-corrected 0.5); only then is it refitted on the whole training side and judged once on the outer test
fold. Word weights (IDF) are counted over the training side's texts. Features are computed once per text view
(the encoder never runs here), so 5 x 5 folds of several candidates take minutes on a CPU.

The interval over the fold estimates is a t-interval with the Nadeau-Bengio correction for the overlap of
training sets across folds (variance x (1/J + n_test/n_train)); the plain t-interval, which treats the
J = repeats x folds estimates as independent and is too narrow, is reported next to it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from models.backends.embedding import text_key
from models.backends.embedding_head import HeadConfig, TextView, batch_features, idf_table
from models.rules import decide_by_rules
from models.training.data import Pair
from models.training.head import fit_head, head_probs
from models.training.metrics import best_thresholds, evaluate

METRICS = ("balanced_accuracy", "accuracy", "f1", "roc_auc")
# Called with an event name and what it touched: tests check no test-fold row informs a choice.
Hook = Callable[..., None]


@dataclass(frozen=True)
class Candidate:
    groups: tuple[str, ...]
    hidden: int = 16
    steps: int = 600
    weight_decay: float = 1e-2
    lr: float = 3e-3

    @property
    def name(self) -> str:
        return f"{'+'.join(self.groups)}/h{self.hidden}/s{self.steps}/wd{self.weight_decay:g}"


CURRENT = Candidate(("cos", "len", "lex"), hidden=16, steps=1200)
SPACES: dict[str, tuple[Candidate, ...]] = {
    # The packaged head's recipe alone: only its threshold is chosen inside the folds.
    "current": (CURRENT,),
    "full": (
        CURRENT,
        Candidate(("cos", "len", "lex"), hidden=16, steps=1200, weight_decay=0.1),
        Candidate(("cos", "len", "lex"), hidden=0, steps=600),
        Candidate(("cos", "len", "lex", "list"), hidden=16, steps=1200),
        Candidate(("cos", "len", "lex", "seg"), hidden=16, steps=1200),
        Candidate(("cos", "len", "lex", "seg"), hidden=0, steps=600),
        Candidate(("cos", "len", "lex", "seg", "list"), hidden=16, steps=1200),
        Candidate(("cos", "len", "lex", "seg", "list"), hidden=0, steps=600),
        Candidate(("cos", "len", "lex", "seg", "list"), hidden=8, steps=600, weight_decay=0.1),
    ),
}


def pair_groups(pairs: Sequence[Pair]) -> np.ndarray:
    """Connected components of pairs sharing a prompt or a text: no answer is seen on both sides of a split."""
    parent = list(range(len(pairs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[str, int] = {}
    for i, p in enumerate(pairs):
        for key in ([f"prompt:{p.group}"] if p.group else []) + [f"text:{text_key(p.a)}", f"text:{text_key(p.b)}"]:
            if key in owner:
                parent[find(i)] = find(owner[key])
            else:
                owner[key] = i
    roots = [find(i) for i in range(len(pairs))]
    ids = {r: n for n, r in enumerate(dict.fromkeys(roots))}
    return np.array([ids[r] for r in roots])


def grouped_folds(labels: np.ndarray, groups: np.ndarray, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """k disjoint test folds covering every row; whole groups go to the fold that keeps both classes most even."""
    uniq = rng.permutation(np.unique(groups))
    members = {g: np.flatnonzero(groups == g) for g in uniq}
    order = sorted(uniq, key=lambda g: -len(members[g]))  # big groups first, ties in random order
    pos_total, neg_total = max(1, int(labels.sum())), max(1, int(len(labels) - labels.sum()))
    pos, neg = np.zeros(k), np.zeros(k)
    folds: list[list[int]] = [[] for _ in range(k)]
    for g in order:
        rows = members[g]
        gp = float(labels[rows].sum())
        gn = len(rows) - gp
        load = (pos + gp) / pos_total + (neg + gn) / neg_total
        f = int(np.argmin(load + 1e-9 * rng.random(k)))
        folds[f].extend(rows.tolist())
        pos[f] += gp
        neg[f] += gn
    return [np.sort(np.array(f, dtype=int)) for f in folds]


def repeated_folds(
    labels: np.ndarray, groups: np.ndarray, folds: int = 5, repeats: int = 5, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, test rows) for `repeats` independent shuffles of `folds` grouped, stratified folds."""
    rng = np.random.default_rng(seed)
    out = []
    everything = np.arange(len(labels))
    for _ in range(repeats):
        for test in grouped_folds(labels, groups, folds, rng):
            out.append((np.setdiff1d(everything, test), test))
    return out


def t_quantile(df: int, p: float = 0.975) -> float:
    """Student t quantile by the Cornish-Fisher expansion (Hill 1970); within 1e-3 of the exact value for df >= 4."""
    z = {0.975: 1.959963984540054, 0.95: 1.6448536269514722}[p]
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def interval(values: Sequence[float], test_fraction: float) -> dict[str, float]:
    """Mean, and 95% t-intervals over fold estimates: Nadeau-Bengio corrected ("ci") and naive ("ci_naive")."""
    v = np.asarray(values, dtype=float)
    j = len(v)
    mean = float(v.mean())
    var = float(v.var(ddof=1)) if j > 1 else 0.0
    t = t_quantile(max(1, j - 1))
    corrected = math.sqrt(var * (1 / j + test_fraction / (1 - test_fraction)))
    naive = math.sqrt(var / j)
    return {
        "mean": mean,
        "sd": math.sqrt(var),
        "ci_low": mean - t * corrected,
        "ci_high": mean + t * corrected,
        "ci_naive_low": mean - t * naive,
        "ci_naive_high": mean + t * naive,
    }


class FeatureTable:
    """Pair features of the labelled pairs and the extra (always-training) pairs, with IDF from given rows."""

    def __init__(
        self,
        pairs: Sequence[Pair],
        extra: Sequence[Pair],
        views: dict[str, TextView],
        buckets: int,
        precomputed: dict[str, torch.Tensor] | None = None,
    ):
        self.pairs, self.extra, self.buckets = list(pairs), list(extra), buckets
        self._views = [(views[text_key(p.a)], views[text_key(p.b)]) for p in [*pairs, *extra]]
        # Groups whose features do not depend on IDF; `precomputed` adds groups computed elsewhere (experiments),
        # one row per pair of `pairs` then `extra`.
        self._fixed: dict[str, torch.Tensor] = dict(precomputed or {})
        self._lex: tuple[bytes, torch.Tensor] | None = None

    def _idf(self, rows: np.ndarray) -> torch.Tensor:
        texts = {
            text_key(t): v
            for i in [*rows.tolist(), *range(len(self.pairs), len(self._views))]
            for t, v in zip((self._pair(i).a, self._pair(i).b), self._views[i], strict=True)
        }
        return idf_table([v.words | v.names for v in texts.values()], self.buckets)

    def _pair(self, i: int) -> Pair:
        return self.pairs[i] if i < len(self.pairs) else self.extra[i - len(self.pairs)]

    def _group(self, g: str, fit_rows: np.ndarray) -> torch.Tensor:
        if g != "lex":
            if g not in self._fixed:
                self._fixed[g] = batch_features((g,), self._views, torch.zeros(self.buckets))
            return self._fixed[g]
        key = np.sort(fit_rows).tobytes()
        if self._lex is None or self._lex[0] != key:
            self._lex = (key, batch_features(("lex",), self._views, self._idf(fit_rows)))
        return self._lex[1]

    def matrix(self, groups: tuple[str, ...], fit_rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(features of the labelled pairs, of the extra pairs), word weights counted over `fit_rows` + extra."""
        x = torch.cat([self._group(g, fit_rows) for g in groups], dim=1)
        return x[: len(self.pairs)], x[len(self.pairs) :]


@dataclass
class CVResult:
    space: str
    threshold_rule: str
    folds: int
    repeats: int
    inner_folds: int
    n: int
    positives: int
    n_groups: int
    n_extra: int
    candidates: list[str]
    nested: dict[str, dict[str, float]]  # metric -> interval, the honest figure
    per_candidate: dict[str, dict[str, dict[str, float]]]  # each fixed candidate, threshold still nested
    selected: dict[str, int]  # how often each candidate won the inner selection
    fold_estimates: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _fit_predict(
    cand: Candidate,
    xp: torch.Tensor,
    xe: torch.Tensor,
    labels: np.ndarray,
    extra_labels: np.ndarray,
    fit_rows: np.ndarray,
    predict_rows: np.ndarray,
    seed: int,
) -> np.ndarray:
    x = torch.cat([xp[torch.from_numpy(fit_rows)], xe])
    y = torch.from_numpy(np.r_[labels[fit_rows], extra_labels]).float()
    strata = torch.tensor([0] * len(fit_rows) + [1] * len(extra_labels))
    config = HeadConfig(groups=cand.groups, hidden=cand.hidden)
    head = fit_head(config, x, y, strata, steps=cand.steps, lr=cand.lr, weight_decay=cand.weight_decay, seed=seed)
    return head_probs(head, xp[torch.from_numpy(predict_rows)])


def choose_threshold(scores: np.ndarray, labels: np.ndarray, rule: str) -> float:
    """`balanced`: the balanced-accuracy-optimal cut of training-side out-of-fold scores; `prior`: 0.5, which the
    per-class weights of training make the balanced point (the training prior is divided out of the loss)."""
    if rule == "prior":
        return 0.5
    return float(best_thresholds(scores, labels)["balanced_accuracy"])


def cross_validate(
    pairs: Sequence[Pair],
    views: dict[str, TextView],
    extra: Sequence[Pair] = (),
    space: str | Sequence[Candidate] = "full",
    folds: int = 5,
    repeats: int = 5,
    inner_folds: int = 3,
    threshold_rule: str = "balanced",
    seed: int = 0,
    rules: bool = True,
    idf_buckets: int = 1 << 14,
    hook: Hook | None = None,
    progress: bool = True,
    precomputed: dict[str, torch.Tensor] | None = None,
) -> CVResult:
    from tqdm import tqdm

    candidates = tuple(SPACES[space]) if isinstance(space, str) else tuple(space)
    labels = np.array([p.label for p in pairs])
    extra_labels = np.array([p.label for p in extra], dtype=float)
    groups = pair_groups(pairs)
    # A rule's verdict (identical or short texts) overrides the classifier, exactly as in the service.
    ruled = {i: float(d[1]) for i, p in enumerate(pairs) if rules and (d := decide_by_rules(p.a, p.b)) is not None}
    table = FeatureTable(pairs, extra, views, idf_buckets, precomputed)
    rng = np.random.default_rng(seed + 1)
    splits = repeated_folds(labels, groups, folds, repeats, seed)
    nested_folds: list[dict[str, float]] = []
    per_cand: dict[str, list[dict[str, float]]] = {c.name: [] for c in candidates}
    selected = {c.name: 0 for c in candidates}
    estimates: list[dict[str, Any]] = []
    bar = tqdm(total=len(splits) * len(candidates), desc="cv", unit="fit", disable=not progress)
    for f, (train, test) in enumerate(splits):
        inner = grouped_folds(labels[train], groups[train], inner_folds, rng)
        best: tuple[float, Candidate, float, np.ndarray] | None = None
        fold_scores: dict[str, float] = {}
        for cand in candidates:
            xp, xe = table.matrix(cand.groups, train)
            oof = np.zeros(len(train))
            for held in inner:
                fit_rows = train[np.setdiff1d(np.arange(len(train)), held)]
                oof[held] = _fit_predict(cand, xp, xe, labels, extra_labels, fit_rows, train[held], seed)
            threshold = choose_threshold(oof, labels[train], threshold_rule)
            inner_bal = float(evaluate(oof, labels[train], threshold)["balanced_accuracy"])
            if hook:
                hook("choose", fold=f, candidate=cand.name, rows=train, threshold=threshold, score=inner_bal)
            p = _fit_predict(cand, xp, xe, labels, extra_labels, train, test, seed)
            for j, i in enumerate(test):
                if int(i) in ruled:
                    p[j] = ruled[int(i)]
            if hook:
                hook("test", fold=f, candidate=cand.name, rows=test, fit_rows=train)
            m = evaluate(p, labels[test], threshold)
            per_cand[cand.name].append({k: float(m[k]) for k in METRICS})
            fold_scores[cand.name] = float(m["balanced_accuracy"])
            if best is None or inner_bal > best[0]:
                best = (inner_bal, cand, threshold, p)
            bar.update(1)
        assert best is not None
        _, winner, threshold, p = best
        selected[winner.name] += 1
        m = evaluate(p, labels[test], threshold)
        nested_folds.append({k: float(m[k]) for k in METRICS})
        estimates.append({"fold": f, "selected": winner.name, "threshold": threshold, **nested_folds[-1]})
        if hook:
            hook("select", fold=f, candidate=winner.name, rows=train, threshold=threshold)
    bar.close()
    frac = 1 / folds

    def summary(rows: list[dict[str, float]]) -> dict[str, dict[str, float]]:
        return {k: interval([r[k] for r in rows], frac) for k in METRICS}

    return CVResult(
        space=space if isinstance(space, str) else "custom",
        threshold_rule=threshold_rule,
        folds=folds,
        repeats=repeats,
        inner_folds=inner_folds,
        n=len(pairs),
        positives=int(labels.sum()),
        n_groups=len(np.unique(groups)),
        n_extra=len(extra),
        candidates=[c.name for c in candidates],
        nested=summary(nested_folds),
        per_candidate={name: summary(rows) for name, rows in per_cand.items()},
        selected=selected,
        fold_estimates=estimates,
    )


def select_and_fit(
    pairs: Sequence[Pair],
    views: dict[str, TextView],
    extra: Sequence[Pair] = (),
    space: str | Sequence[Candidate] = "full",
    folds: int = 5,
    threshold_rule: str = "balanced",
    seed: int = 0,
    base_config: HeadConfig | None = None,
    progress: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """The packaged head's recipe: pick the candidate by grouped k-fold over `pairs`, set its threshold on those
    out-of-fold scores, refit on everything. The same choice the outer CV makes per fold, made on all pairs."""
    from dataclasses import replace

    from tqdm import tqdm

    candidates = tuple(SPACES[space]) if isinstance(space, str) else tuple(space)
    base_config = base_config or HeadConfig()
    labels = np.array([p.label for p in pairs])
    extra_labels = np.array([p.label for p in extra], dtype=float)
    groups = pair_groups(pairs)
    table = FeatureTable(pairs, extra, views, base_config.idf_buckets)
    everything = np.arange(len(pairs))
    inner = grouped_folds(labels, groups, folds, np.random.default_rng(seed))
    scores: dict[str, tuple[float, float, float]] = {}
    best: tuple[float, Candidate, float] | None = None
    for cand in tqdm(candidates, desc="select", unit="candidate", disable=not progress):
        xp, xe = table.matrix(cand.groups, everything)
        oof = np.zeros(len(pairs))
        for held in inner:
            fit_rows = np.setdiff1d(everything, held)
            oof[held] = _fit_predict(cand, xp, xe, labels, extra_labels, fit_rows, held, seed)
        threshold = choose_threshold(oof, labels, threshold_rule)
        m = evaluate(oof, labels, threshold)
        scores[cand.name] = (float(m["balanced_accuracy"]), float(m["roc_auc"]), threshold)
        if best is None or m["balanced_accuracy"] > best[0]:
            best = (float(m["balanced_accuracy"]), cand, threshold)
    assert best is not None
    bal, cand, threshold = best
    xp, xe = table.matrix(cand.groups, everything)
    x = torch.cat([xp, xe])
    y = torch.from_numpy(np.r_[labels, extra_labels]).float()
    strata = torch.tensor([0] * len(pairs) + [1] * len(extra))
    idf = table._idf(everything)
    config = replace(base_config, groups=cand.groups, hidden=cand.hidden, threshold=threshold)
    head = fit_head(
        config, x, y, strata, steps=cand.steps, lr=cand.lr, weight_decay=cand.weight_decay, seed=seed, idf=idf
    )
    record = {
        "candidate": cand.name,
        "candidates": len(candidates),
        "selection_folds": folds,
        "threshold_rule": threshold_rule,
        "cv_balanced_accuracy": round(bal, 4),
        "cv_roc_auc": round(scores[cand.name][1], 4),
        "steps": cand.steps,
        "lr": cand.lr,
        "weight_decay": cand.weight_decay,
        "seed": seed,
    }
    return head, record
