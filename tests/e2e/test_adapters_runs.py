"""Every adapter labels its groups with a run, so the run's diversity figures fill as the trainer calls it."""

from __future__ import annotations

import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from darling_client import RewardClient
from darling_client.integrations._common import run_label
from darling_client.integrations.openrlhf import reward_func as openrlhf_reward_func
from darling_client.integrations.slime import group_rm
from darling_client.integrations.trl import darling_reward_func

COLOURS = ["red", "blue", "red", "green"]


def stats(base: str, run: str) -> dict[str, Any]:
    r = httpx.get(f"{base}/v1/runs/{run}/stats", timeout=30)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def test_run_label_cleans_trainer_names() -> None:
    assert run_label(None, "", "Qwen2.5 GRPO/run #3") == "Qwen2.5-GRPO-run-3"
    assert run_label("x" * 300) == "x" * 128
    assert run_label(None, "///") is None


def test_trl_labels_with_the_config_run_name_and_the_global_step(
    default_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DARLING_RUN", raising=False)
    name = f"grpo {uuid.uuid4().hex[:6]}"
    # GRPOConfig's fields the adapter reads; run_name unset falls back to output_dir's base name.
    args = SimpleNamespace(run_name=None, output_dir=str(tmp_path / name))
    with RewardClient(default_server) as client:
        reward = darling_reward_func(
            2, quality=lambda prompts, completions, **_: [1.0] * len(completions), client=client, args=args
        )
        for step, completions in [(0, ["red", "red", "blue", "blue"]), (1, ["red", "blue", "green", "yellow"])]:
            reward(["Name a colour."] * 4, completions, trainer_state=SimpleNamespace(global_step=step))
    run = name.replace(" ", "-")
    assert reward.state.run == run  # type: ignore[attr-defined]
    got = stats(default_server, run)
    assert [(s["step"], s["groups"], s["distinct"]) for s in got["steps"]] == [(0, 2, 1.0), (1, 2, 2.0)]


def test_darling_run_env_and_explicit_options_win(default_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    env_run, own_run = f"env-{uuid.uuid4().hex[:6]}", f"own-{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("DARLING_RUN", env_run)
    args = SimpleNamespace(run_name="ignored-name", output_dir="/tmp/x")
    quality = lambda prompts, completions, **_: [0.5] * len(completions)  # noqa: E731
    with RewardClient(default_server) as client:
        darling_reward_func(2, quality=quality, client=client, args=args)(["p", "p"], ["red", "blue"])
        darling_reward_func(2, quality=quality, client=client, args=args, options={"run": own_run})(
            ["p", "p"], ["red", "blue"]
        )
    assert stats(default_server, env_run)["groups_seen"] == 1
    assert stats(default_server, own_run)["groups_seen"] == 1
    assert httpx.get(f"{default_server}/v1/runs/ignored-name/stats").status_code == 404


async def test_slime_labels_with_its_args(default_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DARLING_RUN", raising=False)
    run = f"slime-{uuid.uuid4().hex[:6]}"
    args = SimpleNamespace(darling_url=default_server, wandb_group=run)
    samples = [
        SimpleNamespace(prompt="Name a colour.", response=r, label=None, metadata={"quality": 1.0}) for r in COLOURS
    ]
    await group_rm(args, samples)
    got = stats(default_server, run)
    assert got["groups_seen"] == 1 and got["window"]["distinct"] == 3


def test_openrlhf_labels_by_body_or_query(default_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    body_run, query_run = f"orl-{uuid.uuid4().hex[:6]}", f"orlq-{uuid.uuid4().hex[:6]}"
    tag = uuid.uuid4().hex[:6]
    # The default DARLING_OPENRLHF_GROUP_SIZE is 8: one whole group of the math verifier per call.
    prompt = f"What is 6*7? ({tag}) "
    responses = ["42", "\\boxed{42}", "41", "It is 42.", "48", "42", "forty-two is 42", "7"]
    monkeypatch.setenv("DARLING_RUN", body_run)
    with RewardClient(default_server) as client:
        openrlhf_reward_func([prompt + r for r in responses], [prompt] * 8, ["42"] * 8, client=client)
    assert stats(default_server, body_run)["groups_seen"] == 1
    prompt2 = prompt + "again "
    payload = {"query": [prompt2 + r for r in responses], "prompts": [prompt2] * 8, "labels": ["42"] * 8}
    r = httpx.post(f"{default_server}/v1/openrlhf?run={query_run}", json=payload, timeout=120)
    assert r.status_code == 200, r.text
    assert stats(default_server, query_run)["groups_seen"] == 1
    bad = httpx.post(f"{default_server}/v1/openrlhf?run=a%20b", json=payload, timeout=120)
    assert bad.status_code == 422 and bad.json()["fields"] == ["run"]
