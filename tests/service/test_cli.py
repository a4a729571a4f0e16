"""`darling-reward score`: a JSONL file of groups scored offline with the same engine as the service."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from service.cli import build_parser, main


def test_score_file(tmp_path: Path) -> None:
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    groups = [
        {"group_id": "a", "prompt": "Name a colour.", "responses": ["red", "Red", "blue"], "quality": [1, 1, 1]},
        {"group_id": "b", "prompt": "2+2?", "responses": ["4", "The answer is 5."], "reference": "4"},
    ]
    src.write_text("\n".join(json.dumps(g) for g in groups) + "\n")
    assert main(["score", str(src), str(dst), "--options", '{"partition": "greedy"}']) == 0
    out = [json.loads(line) for line in dst.read_text().splitlines()]
    assert [g["group_id"] for g in out] == ["a", "b"]
    assert out[0]["classes"] == [0, 0, 1] and out[0]["algorithm"] == "greedy"
    assert [r["quality"] for r in out[1]["rollouts"]] == [1.0, 0.0]


def test_score_rejects_bad_line(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "p", "responses": []}\n')
    with pytest.raises(SystemExit, match=r"in\.jsonl:1"):
        main(["score", str(src), str(tmp_path / "out.jsonl")])


def test_serve_arguments() -> None:
    args = build_parser().parse_args(["serve", "--host", "0.0.0.0", "--port", "9000"])
    assert (args.host, args.port) == ("0.0.0.0", 9000)


NOVELTYBENCH = [
    {"id": "collapsed", "prompt": "Name a colour.", "model": "m", "generations": ["red", "red", "red", "red"]},
    {
        "id": "rated",
        "prompt": "Name a colour.",
        "generations": ["red", "blue", "green", "yellow"],
        "ratings": [10, 5, 5, 1],
    },
    {"id": "scored", "prompt": "Yes or no?", "generations": ["yes", "no"], "quality": [0.95, 0.05]},
]


def test_score_noveltybench_file_prints_distinct_and_utility(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "generations.jsonl"
    src.write_text("\n".join(json.dumps(line) for line in NOVELTYBENCH) + "\n")
    assert main(["score", str(src), "--json", "--quality", "1"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    rows, summary = {r["group"]: r for r in lines[:-1]}, lines[-1]["summary"]
    assert [r["distinct"] for r in rows.values()] == [1, 4, 2]
    # --quality 1 rates every generation 10; only the first opens a class: 10 * 0.2 / (1 - 0.8^4).
    assert math.isclose(rows["collapsed"]["utility"], 10 * 0.2 / (1 - 0.8**4))
    assert math.isclose(rows["rated"]["utility"], (10 + 0.8 * 5 + 0.64 * 5 + 0.512 * 1) * 0.2 / (1 - 0.8**4))
    # The line's own quality wins over --quality: 0.95 -> 10, 0.05 -> 1; (10 + 0.8) * 0.2 / (1 - 0.64) = 6.
    assert math.isclose(rows["scored"]["utility"], 6.0)
    assert [r["effective_classes"] for r in rows.values()] == [1.0, 4.0, 2.0]
    assert summary["groups"] == 3 and math.isclose(summary["distinct"], 7 / 3)
    assert math.isclose(summary["utility"], sum(r["utility"] for r in rows.values()) / 3)

    assert main(["score", str(src), "--quality", "1"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["group", "n", "distinct", "utility", "eff_classes"]
    assert table[1].split()[:3] == ["collapsed", "4", "1"] and table[-1].startswith("mean")


def test_score_noveltybench_without_quality_says_how(tmp_path: Path) -> None:
    src = tmp_path / "generations.jsonl"
    src.write_text(json.dumps(NOVELTYBENCH[0]) + "\n")
    with pytest.raises(SystemExit, match=r"groups\[0\] has no quality source.*--quality 1"):
        main(["score", str(src)])
