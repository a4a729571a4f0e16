"""The repository is self-contained: no tracked file reaches for a path outside the checkout.

A fresh clone has nothing beside it, so a `../something` that leaves the repository (from the file's folder or
from the repository root, where commands run) or a path built from a parent of the root is a bug.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UP = re.compile(r"(?:\.\./)+[A-Za-z0-9_.-]+")
# Building a path from the folder that holds the checkout, e.g. `ROOT.parent / "shared"`, `parents[2] / "data"`.
PARENT_OF_ROOT = re.compile(r"""(?:ROOT|root|parents\[\d\])\.parent\s*/\s*["']|\.\./shared|/shared/data""")
SKIP_SUFFIXES = {".safetensors", ".png", ".jsonl"}


def tracked() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / p for p in out.decode().split("\0") if p]


def outside(base: Path, rel: str) -> bool:
    return not (base / rel).resolve().is_relative_to(ROOT)


def test_no_tracked_file_points_outside_the_repository() -> None:
    offenders: list[str] = []
    for path in tracked():
        if path.suffix in SKIP_SUFFIXES or path == Path(__file__).resolve():
            continue
        try:
            text = path.read_text()
        except (UnicodeDecodeError, FileNotFoundError):
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            hits = [
                m.group(0) for m in UP.finditer(line) if outside(path.parent, m.group(0)) and outside(ROOT, m.group(0))
            ]
            hits += [m.group(0) for m in PARENT_OF_ROOT.finditer(line)]
            offenders += [f"{path.relative_to(ROOT)}:{lineno}: {h}" for h in hits]
    assert not offenders, "paths outside the repository:\n" + "\n".join(offenders)


def test_the_checker_catches_what_it_is_for() -> None:
    assert outside(ROOT, "../shared/SPEC.md") and outside(ROOT / "docs", "../../shared")
    assert not outside(ROOT / "docs", "../README.md")
    assert PARENT_OF_ROOT.search('DATA = ROOT.parent / "shared" / "data"')
    assert PARENT_OF_ROOT.search("cp $ROOT/../shared/data/x .")
