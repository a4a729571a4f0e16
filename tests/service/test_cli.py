"""`darling-reward score`: a JSONL file of groups scored offline with the same engine as the service."""

from __future__ import annotations

import json
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
