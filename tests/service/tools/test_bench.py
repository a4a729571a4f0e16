"""The benchmark: its workload, its threshold fit, and one whole tiny run of all four modes."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest

from models.rules import decide_by_rules
from service.cli import main
from service.tools.bench.config import percentile
from service.tools.bench.workload import (
    Group,
    all_pairs,
    fit_threshold,
    load_answers,
    make_workload,
    partition,
    perturb,
    planted_judgements,
)
from tests.conftest import PAIRS

ISSUE_KEYS = {
    "limit_pairs_per_s",
    "reference_pairs_per_s",
    "engine_pairs_per_s",
    "http_pairs_per_s",
    "engine_over_limit",
    "http_over_limit",
    "http_over_reference",
    "judged_share",
    "padding_share",
    "p50_ms",
    "p99_ms",
    "peak_rss_mb",
    "identical_partitions",
}
WORKLOAD_KEYS = {"groups", "n", "collapse", "clients", "groups_per_request", "model", "device"}


@pytest.fixture(scope="module")
def answers() -> list[str]:
    return load_answers(PAIRS)


def test_planted_copies_reach_the_classifier(answers: list[str]) -> None:
    rng = random.Random(1)
    text = answers[0]
    copy = perturb(text, rng)
    assert copy != text
    assert decide_by_rules(text, copy) is None  # neither identical nor short: the classifier is asked
    assert abs(len(copy.split()) - len(text.split())) == 1


@pytest.mark.parametrize(("collapse", "largest"), [(0.0, 1), (0.5, 4), (1.0, 8)])
def test_workload_plants_one_class_of_the_asked_share(answers: list[str], collapse: float, largest: int) -> None:
    groups = make_workload(5, 8, collapse, answers, seed=3)
    for g in groups:
        sizes = sorted((g.planted.count(c) for c in set(g.planted)), reverse=True)
        assert sizes[0] == largest
        assert len(set(g.responses)) == 8


def test_a_fully_collapsed_group_needs_n_minus_one_judgements(answers: list[str]) -> None:
    (g,) = make_workload(1, 8, 1.0, answers)
    classes, asked = partition(8, planted_judgements(g))
    assert classes == [0] * 8
    assert asked == 7  # judged_share 7/28 = 0.25


def test_threshold_fit_recovers_separable_scores() -> None:
    # Scores a real classifier would give: copies near 0.9, distinct pairs near 0.1.
    groups = [Group(["x"] * 6, planted) for planted in ([0, 0, 1, 2, 0, 3], [0, 1, 1, 1, 2, 3])]
    rng = random.Random(0)
    scores = [
        {p: (0.9 if g.planted[p[0]] == g.planted[p[1]] else 0.1) + rng.uniform(-0.05, 0.05) for p in all_pairs(6)}
        for g in groups
    ]
    fit = fit_threshold(groups, scores)
    assert 0.15 < fit.threshold < 0.85
    assert fit.planted_agreement == 1.0
    assert fit.judged_share == pytest.approx(fit.planted_judged_share)


def test_percentile_picks_order_statistics() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.0, abs=1)
    assert percentile(values, 99) == pytest.approx(99.0, abs=1)
    assert percentile([], 99) == 0.0


def test_a_tiny_run_of_all_four_modes_prints_one_agreeing_json_object(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    argv = ["bench", "--model", "bert-tiny", "--groups", "3", "--n", "4", "--collapse", "1", "--clients", "2"]
    argv += ["--cpu-threads", "1", "--quick", "--int8", "--data", str(PAIRS), "--output", str(out)]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result == json.loads(out.read_text())
    assert set(result) >= ISSUE_KEYS | WORKLOAD_KEYS
    assert result["identical_partitions"] is True
    assert result["pairs"] == 3 * 6
    assert result["collapse"] == 1.0
    for key in ("limit_pairs_per_s", "reference_pairs_per_s", "engine_pairs_per_s", "http_pairs_per_s"):
        assert result[key] > 0
    assert 0.0 <= result["padding_share"] <= 1.0
    assert 0.0 < result["judged_share"] <= 1.0
    assert result["p50_ms"] <= result["p99_ms"]
    # The engine and the service over HTTP made the same judgements, and skipped what the planner skipped.
    details = result["details"]
    assert details["engine"]["made"] == details["http"]["made"]
    assert details["engine"]["made"] + details["engine"]["skipped"] == result["pairs"]
    int8 = details["int8"]
    assert int8["int8_pairs_per_s"] > 0 and int8["speedup"] > 0
    assert 0.0 <= int8["judgement_agreement"] <= 1.0


def test_the_int8_copy_is_a_different_model_with_close_judgements(tmp_path: Path) -> None:
    from models.backends.cross_encoder import CrossEncoderClassifier
    from service.engine.engine import load_backends
    from service.settings import Settings
    from service.tools.bench.models import build_model

    path = build_model("bert-tiny", str(tmp_path / "m"))
    fp32 = CrossEncoderClassifier.load(path)
    int8 = fp32.quantized_int8()
    assert int8.fingerprint != fp32.fingerprint  # cached fp32 judgements are never served for int8
    answers = load_answers(PAIRS)[:6]
    batch = [fp32.encode_pair(a, b) for a, b in itertools.pairwise(answers)]
    assert int8.run(batch) == pytest.approx(fp32.run(batch), abs=0.05)
    # The setting loads it the same way.
    settings = Settings(
        classifier="cross-encoder", classifier_path=path, classifier_quantize="int8", verifier=False, cpu_threads=1
    )
    assert load_backends(settings).classifier.id == int8.id
