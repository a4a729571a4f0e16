"""OpenRLHF reward function file: pass this file's path as `--remote_rm_url` (or `--reward.remote_url`).

OpenRLHF loads it with importlib and calls `reward_func(queries, prompts, labels)`. The service is found at
$DARLING_URL (default http://127.0.0.1:8000), with $DARLING_API_KEY if set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from darling_client.integrations import openrlhf


def reward_func(queries: Sequence[str], prompts: Sequence[str], labels: Sequence[str | None]) -> dict[str, Any]:
    return openrlhf.reward_func(queries, prompts, labels)
