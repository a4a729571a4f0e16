"""`darling-reward classifier train|eval` end to end, and the trained folder served over HTTP."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import httpx
import pytest

from service.app import create_app
from service.cli import build_parser, main
from service.settings import Settings
from tests.conftest import PAIRS, serve
from tests.models.tiny import CORPUS
from tests.models.tiny_bert import make_tiny_bert

EVAL_KEYS = {"accuracy", "precision", "recall", "f1", "roc_auc", "threshold", "n"}


def write_toy_pairs(path: Path, n: int) -> Path:
    """Corpus sentences as pairs: a sentence and itself plus one word (equivalent), or two sentences (not)."""
    rows = []
    for i in range(n):
        a = CORPUS[i % len(CORPUS)]
        if i % 2 == 0:
            b, label = a + " " + a.split()[-1], 1
        else:
            b, label = CORPUS[(i + 3) % len(CORPUS)], 0
        rows.append({"id": f"toy-{i}", "generation_0": a, "generation_1": b, "similar": label})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    base = make_tiny_bert(root / "base")
    pairs = write_toy_pairs(root / "pairs.jsonl", 24)
    out = root / "model"
    argv = ["classifier", "train", "--pairs", str(pairs), "--base", str(base), "--out", str(out)]
    argv += ["--steps", "30", "--lr", "3e-3", "--min-lr", "3e-4", "--warmup", "2", "--batch", "16"]
    argv += ["--micro-batch", "8", "--max-length", "64", "--threads", "1", "--val-pairs", str(pairs)]
    assert main(argv) == 0
    return out, pairs


def test_registered_subcommands() -> None:
    args = build_parser().parse_args(["classifier", "eval", "--pairs", "x.jsonl", "--json", "--no-rules"])
    assert args.json and not args.rules and args.model is None


def test_eval_json_of_trained_folder(trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    model, pairs = trained
    capsys.readouterr()
    assert main(["classifier", "eval", "--pairs", str(pairs), "--model", str(model), "--json", "--device", "cpu"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m.keys() >= EVAL_KEYS
    assert m["n"] == 24 and m["classifier"] == "cross-encoder:trained:model"
    assert m["threshold"] == json.loads((model / "darling_classifier.json").read_text())["threshold"]
    assert m["roc_auc"] > 0.8  # it was trained on these pairs
    assert sum(m["confusion"].values()) == 24


def test_eval_table_and_roc_png(trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, pairs = trained
    png = tmp_path / "roc.png"
    capsys.readouterr()
    assert main(["classifier", "eval", "--pairs", str(pairs), "--model", str(model), "--roc", str(png)]) == 0
    table = capsys.readouterr().out
    assert "roc auc" in table and "best-f1 thr" in table and "confusion" in table
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (480, 480)


def test_trained_folder_served_over_http(trained: tuple[Path, Path]) -> None:
    model, _ = trained
    settings = Settings(classifier="cross-encoder", classifier_path=str(model), verifier=False, cpu_threads=1)
    group = {"prompt": "Say something.", "responses": [CORPUS[0], CORPUS[0] + " mat", CORPUS[4]], "quality": [1, 1, 1]}
    with serve(create_app(settings)) as base:
        ready = httpx.get(base + "/readyz").json()
        assert ready["models"]["classifier"] == "cross-encoder:trained:model"
        r = httpx.post(base + "/v1/rewards", json={"groups": [group]}, timeout=60)
    assert r.status_code == 200, r.text
    g = r.json()["groups"][0]
    assert len(g["classes"]) == 3 and g["n_classes"] == len(set(g["classes"]))


def test_eval_of_embedded_default_runs_the_service_classifier(capsys: pytest.CaptureFixture[str]) -> None:
    """No model option: the packaged MiniLM with its head, loaded by the service's own load_backends."""
    capsys.readouterr()
    argv = ["classifier", "eval", "--pairs", str(PAIRS), "--limit", "6", "--json", "--device", "cpu"]
    assert main(argv) == 0
    m = json.loads(capsys.readouterr().out)
    assert m.keys() >= EVAL_KEYS and m["n"] == 6 and m["classifier"] == "embedding:all-MiniLM-L6-v2+head"
    assert m["rules"] is True


def test_head_training_via_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = make_tiny_bert(tmp_path / "base")
    pairs = write_toy_pairs(tmp_path / "pairs.jsonl", 30)
    out = tmp_path / "head"
    argv = ["classifier", "train", "--head", "--pairs", str(pairs), "--base", str(base), "--out", str(out)]
    argv += ["--ideas", "none", "--hidden", "8", "--head-steps", "80", "--threads", "1"]
    capsys.readouterr()
    assert main(argv) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["n_pairs"] == 30 and (out / "head.safetensors").is_file()
    argv = ["classifier", "eval", "--pairs", str(pairs), "--base", str(base), "--head", str(out), "--json"]
    assert main([*argv, "--no-rules"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["threshold"] == pytest.approx(record["threshold"]) and m["roc_auc"] > 0.8


def test_bad_pairs_file_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"generation_0": "a", "generation_1": "b", "similar": 1}\n{"generation_0": "only one side"}\n')
    with pytest.raises(SystemExit, match=r"bad.jsonl:2: not a labelled pair"):
        main(["classifier", "eval", "--pairs", str(bad), "--json"])
    with pytest.raises(SystemExit, match="cannot load the classifier"):
        main(["classifier", "eval", "--pairs", str(PAIRS), "--model", str(tmp_path), "--limit", "2"])


def test_eval_cv_prints_nested_figures_with_intervals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = make_tiny_bert(tmp_path / "base")
    pairs = write_toy_pairs(tmp_path / "pairs.jsonl", 32)
    argv = ["classifier", "eval", "--cv", "--pairs", str(pairs), "--base", str(base), "--ideas", "none"]
    argv += ["--space", "current", "--folds", "2", "--repeats", "2", "--inner-folds", "2", "--threads", "1"]
    argv += ["--cache", str(tmp_path / "states.pt")]
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["folds"] == 2 and r["repeats"] == 2 and len(r["fold_estimates"]) == 4 and r["n"] == 32
    assert r["candidates"] == ["cos+len+lex/h16/s1200/wd0.01"] and r["selected"] == {r["candidates"][0]: 4}
    for metric in ("balanced_accuracy", "accuracy", "f1", "roc_auc"):
        assert r["nested"][metric]["ci_low"] <= r["nested"][metric]["mean"] <= r["nested"][metric]["ci_high"]
    assert (tmp_path / "states.pt").is_file()
    assert main(argv) == 0  # the table, from the cache this time
    table = capsys.readouterr().out
    assert "balanced accuracy" in table and "1 of 1 configurations" in table and "Nadeau-Bengio" in table
    with pytest.raises(SystemExit, match="--threshold does not apply"):
        main([*argv, "--threshold", "0.5"])
