"""A small configuration of scripts/chaos.py (issue 14): replica processes, a private Redis paused and
restarted, one replica SIGTERMed and one SIGKILLed while callers send rollouts one by one. Nothing may be
lost, duplicated, mixed or answered with a non-retryable 5xx."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_small_chaos_run_loses_and_mixes_nothing() -> None:
    args = ["--groups", "8", "--group-size", "3", "--replicas", "3", "--spread", "5", "--seconds", "60"]
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "chaos.py"), *args],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-3000:]
    out = json.loads(lines[-1])
    assert out["rollouts_sent"] == 24
    assert (out["lost"], out["duplicated"], out["mixed"], out["5xx"]) == (0, 0, 0, 0), (out, done.stderr[-3000:])
    assert out["rewards_returned"] == 24 and done.returncode == 0
    # The chaos did reach the callers: some attempts failed and were retried.
    assert out["attempts"] > out["rollouts_sent"], out
