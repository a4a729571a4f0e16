"""The cross-validation protocol on a tiny real encoder: disjoint grouped folds, choices made on training rows only."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
import torch

import models.training.cv as cv
from models.backends.embedding import EmbeddingClassifier
from models.backends.embedding_head import SCALAR_GROUPS, TextView, item_sets, make_view, pair_features
from models.training.data import Pair
from models.training.head import compute_views
from tests.models.tiny import CORPUS
from tests.models.tiny_bert import make_tiny_bert


def long_pairs(n: int, seed: int = 0) -> list[Pair]:
    """Texts of several corpus sentences (past the short-text rule); equivalent = the same sentences reordered.

    Every fourth prompt is shared by two pairs, so grouping has something to keep together.
    """
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a_parts = rng.sample(CORPUS, 3)
        a = ". ".join(a_parts)
        if i % 2 == 0:
            b, label = ". ".join(reversed(a_parts)), 1
        else:
            b, label = ". ".join(rng.sample([s for s in CORPUS if s not in a_parts], 3)), 0
        out.append(Pair(f"p{i}", a, b, label, group=f"prompt-{i // 2 if i % 4 < 2 else i}"))
    return out


@pytest.fixture(scope="module")
def tiny_views(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Pair], dict[str, TextView]]:
    base_dir = make_tiny_bert(tmp_path_factory.mktemp("tiny-cv"))
    base = EmbeddingClassifier.load(str(base_dir), head="none")
    enc = EmbeddingClassifier(base.model, base.tokenizer, 0.5, "tiny", "digest", max_tokens=16, max_chunks=4)
    pairs = long_pairs(48)
    return pairs, compute_views(enc, sorted({t for p in pairs for t in (p.a, p.b)}))


def test_groups_join_pairs_sharing_a_prompt_or_a_text() -> None:
    pairs = [
        Pair("1", "x one", "y one", 1, group="P"),
        Pair("2", "x two", "y two", 0, group="P"),
        Pair("3", "x one", "z", 0, group="Q"),  # shares a text with pair 1
        Pair("4", "u", "v", 1, group="R"),
    ]
    g = cv.pair_groups(pairs)
    assert g[0] == g[1] == g[2] and g[3] != g[0]


def test_repeated_folds_are_disjoint_cover_everything_and_keep_groups_whole() -> None:
    rng = np.random.default_rng(3)
    labels = (rng.random(200) < 0.33).astype(int)
    groups = rng.integers(0, 120, 200)  # many groups of 1-4 pairs
    splits = cv.repeated_folds(labels, groups, folds=5, repeats=3, seed=1)
    assert len(splits) == 15
    for r in range(3):
        tests = [t for _, t in splits[5 * r : 5 * r + 5]]
        assert sorted(np.concatenate(tests).tolist()) == list(range(200))
        for train, test in splits[5 * r : 5 * r + 5]:
            assert not set(train) & set(test) and len(train) + len(test) == 200
            assert not set(groups[train]) & set(groups[test])
            assert abs(labels[test].sum() - labels.sum() / 5) <= 4  # stratified up to whole groups
    assert not np.array_equal(splits[0][1], splits[5][1])  # each repeat reshuffles


def test_t_quantile_and_corrected_interval_is_wider() -> None:
    assert cv.t_quantile(24) == pytest.approx(2.0639, abs=1e-3)
    assert cv.t_quantile(4) == pytest.approx(2.7764, abs=5e-3)
    iv = cv.interval([0.7, 0.8, 0.75, 0.72, 0.78], test_fraction=0.2)
    assert iv["mean"] == pytest.approx(0.75)
    assert iv["ci_low"] < iv["ci_naive_low"] < iv["mean"] < iv["ci_naive_high"] < iv["ci_high"]
    assert cv.interval([0.7] * 5, 0.2)["ci_low"] == pytest.approx(0.7)


def test_no_choice_sees_the_test_fold(
    tiny_views: tuple[list[Pair], dict[str, TextView]], monkeypatch: pytest.MonkeyPatch
) -> None:
    pairs, views = tiny_views
    labels = np.array([p.label for p in pairs])
    space = (cv.Candidate(("cos", "len"), hidden=0, steps=60), cv.Candidate(("cos", "lex", "seg"), 4, steps=60))
    splits = cv.repeated_folds(labels, cv.pair_groups(pairs), folds=4, repeats=2, seed=0)
    fits: list[tuple[np.ndarray, np.ndarray]] = []
    thresholds: list[np.ndarray] = []
    real_fit, real_choose = cv._fit_predict, cv.choose_threshold

    def fit(cand: cv.Candidate, xp: Any, xe: Any, y: np.ndarray, ey: np.ndarray, rows: Any, pred: Any, s: int) -> Any:
        fits.append((rows, pred))
        return real_fit(cand, xp, xe, y, ey, rows, pred, s)

    def choose(scores: np.ndarray, y: np.ndarray, rule: str) -> float:
        thresholds.append(y.copy())
        return real_choose(scores, y, rule)

    monkeypatch.setattr(cv, "_fit_predict", fit)
    monkeypatch.setattr(cv, "choose_threshold", choose)
    events: list[tuple[str, dict[str, Any]]] = []
    result = cv.cross_validate(
        pairs, views, space=space, folds=4, repeats=2, inner_folds=2, progress=False, rules=False,
        hook=lambda event, **info: events.append((event, info)),
    )  # fmt: skip
    per_fold = len(space) * (2 + 1)  # inner fits + the refit, for each candidate
    assert len(fits) == len(splits) * per_fold
    for k, (rows, pred) in enumerate(fits):
        train, test = splits[k // per_fold]
        assert not set(rows) & set(test)  # never fitted on the test fold
        if k % 3 < 2:  # inner fits predict training rows only; the refit predicts exactly the test fold
            assert set(pred) <= set(train) and not set(pred) & set(rows)
        else:
            assert np.array_equal(pred, test) and np.array_equal(rows, train)
    # Each threshold is set on out-of-fold scores of the training rows, in their order.
    assert len(thresholds) == len(splits) * len(space)
    for k, y in enumerate(thresholds):
        assert np.array_equal(y, labels[splits[k // len(space)][0]])
    chosen = [info for e, info in events if e in ("choose", "select")]
    assert chosen and all(
        np.array_equal(info["rows"], splits[info["fold"]][0]) for info in chosen
    )  # selection rows = the training side
    assert len([e for e, _ in events if e == "select"]) == len(splits)
    out = result.as_dict()
    assert out["candidates"] == [c.name for c in space] and sum(out["selected"].values()) == len(splits)
    for metric in cv.METRICS:
        iv = out["nested"][metric]
        assert iv["ci_low"] <= iv["mean"] <= iv["ci_high"]
        assert set(out["per_candidate"][space[0].name]) == set(cv.METRICS)
    assert len(out["fold_estimates"]) == len(splits) and out["n"] == len(pairs) and out["n_groups"] < len(pairs)
    # Reordered sentences vs different ones: a tiny encoder with word overlap separates them well.
    assert out["nested"]["roc_auc"]["mean"] > 0.8


def test_precomputed_groups_are_what_the_fits_see(
    tiny_views: tuple[list[Pair], dict[str, TextView]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group computed outside the views (an experiment's) joins the table as given, one row per pair."""
    pairs, views = tiny_views
    labels = torch.tensor([[float(p.label)] for p in pairs])
    monkeypatch.setitem(SCALAR_GROUPS, "oracle", 1)
    monkeypatch.setitem(SCALAR_GROUPS, "flat", 1)
    space = [cv.Candidate(("oracle",), hidden=0, steps=60), cv.Candidate(("flat",), hidden=0, steps=60)]
    result = cv.cross_validate(
        pairs, views, space=space, folds=4, repeats=1, inner_folds=2, progress=False, rules=False,
        precomputed={"oracle": labels, "flat": torch.zeros(len(pairs), 1)},
    )  # fmt: skip
    per = result.per_candidate
    assert per[space[0].name]["roc_auc"]["mean"] == 1.0
    assert per[space[1].name]["roc_auc"]["mean"] == 0.5


def test_select_and_fit_writes_a_head_the_service_serves(tiny_views: tuple[list[Pair], dict[str, TextView]]) -> None:
    pairs, views = tiny_views
    space = (cv.Candidate(("cos", "len"), hidden=0, steps=60), cv.Candidate(("cos", "lex", "list"), 4, steps=60))
    head, record = cv.select_and_fit(pairs, views, space=space, folds=3, progress=False)
    assert record["candidates"] == 2 and record["candidate"] in {c.name for c in space}
    assert head.config.groups in {c.groups for c in space} and 0.0 < head.config.threshold < 1.0
    assert float(head.idf.abs().sum()) > 0  # word weights travel with the head


def test_list_and_segment_features() -> None:
    text = "Costumes:\n- **Bridge** builders with hard hats\n* London guards\n1. Knights in armour\n## Extras"
    assert item_sets(text) == (
        frozenset({"bridge", "builders", "with", "hard", "hats"}),
        frozenset({"london", "guards"}),
        frozenset({"knights", "in", "armour"}),
        frozenset({"extras"}),
    )
    rng = np.random.default_rng(0)
    states = [__import__("torch").from_numpy(rng.normal(size=(10, 8))).float() for _ in range(2)]
    a = make_view(text, states, 16, segment_tokens=4)
    b = make_view("- london guards\n- knights in armour", states[:1], 8, segment_tokens=4)
    assert a.segments is not None and a.segments.shape == (2 * 2, 8)  # 8 content tokens a window -> 2 segments
    fa, fb = pair_features(("seg", "list"), a, b, []), pair_features(("seg", "list"), b, a, [])
    assert fa.tolist() == pytest.approx(fb.tolist())
    assert fa[2] == pytest.approx(1.0, abs=1e-5)  # b's window is a's first: a perfect segment match exists
    assert fa[-1] == pytest.approx((2 / 4 + 2 / 2) / 2)  # items: half of a's found in b, all of b's in a
