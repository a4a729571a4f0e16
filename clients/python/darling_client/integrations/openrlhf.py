"""OpenRLHF (convention of OpenRLHF 0.8/0.9: `--remote_rm_url`, now `--reward.remote_url`).

Two ways in:
- HTTP: point OpenRLHF at the service's own route, `--remote_rm_url http://HOST:8000/v1/openrlhf`. The
  service speaks the protocol (`{"query", "prompts", "labels"}` in, `{"rewards", "scores", "extra_logs"}`
  out) and groups rollouts by prompt into groups of DARLING_OPENRLHF_GROUP_SIZE (= n_samples_per_prompt),
  whether a request carries a whole batch or, as current versions send, one rollout.
- A reward function file: `--remote_rm_url $(python -m darling_client.integrations.openrlhf)` prints the path
  of `openrlhf_reward_func.py`, whose `reward_func(queries, prompts, labels)` forwards to that route.
Per-run figures: `?run=NAME` on the route's URL, or $DARLING_RUN for the reward function file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from darling_client.client import RewardClient
from darling_client.integrations._common import adapter_run, sync_client

REWARD_FUNC_FILE = Path(__file__).with_name("openrlhf_reward_func.py")


def _as_tensor(values: list[float]) -> Any:
    """OpenRLHF's own reward functions return torch tensors; do the same when torch is there."""
    try:
        import torch
    except ImportError:  # outside a trainer: plain lists
        return values
    return torch.tensor(values, dtype=torch.float32)


def reward_func(
    queries: Sequence[str],
    prompts: Sequence[str],
    labels: Sequence[str | None] | None = None,
    *,
    client: RewardClient | None = None,
    run: str | None = None,
) -> dict[str, Any]:
    """OpenRLHF's `reward_func(queries, prompts, labels)`: DARLING rewards through POST /v1/openrlhf.
    `run` (default $DARLING_RUN) labels the service's per-run figures; OpenRLHF has no run name to pass."""
    c = client or sync_client()
    resp = c.openrlhf(queries, prompts, labels, run=adapter_run(None, run))
    return {
        "rewards": _as_tensor(resp.rewards),
        "scores": _as_tensor(resp.scores),
        "extra_logs": {k: _as_tensor(v) for k, v in resp.extra_logs.items()},
    }


if __name__ == "__main__":
    print(REWARD_FUNC_FILE)
