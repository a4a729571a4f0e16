"""A real TRL `GRPOTrainer` trains a tiny random Llama against the live service, through the README's example
(examples/trl_grpo.py): in one process (sync and async reward function) and in two processes (torchrun) whose
slices cut a group. The service's traffic is recorded by an ASGI wrapper, so the tests check what TRL really
sent and got: whole groups of `num_generations`, the completions TRL generated, and rewards equal to a direct
POST /v1/rewards on the same groups, as TRL logged them."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import torch
from darling_client.integrations.trl import darling_reward_func
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from service.app import create_app
from service.settings import Settings
from tests.conftest import free_port, serve
from tests.models.tiny import make_tiny_llama_policy

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "trl_grpo.py"
ROUTES = ("/v1/rewards", "/v1/rollouts")


class Recorder:
    """ASGI wrapper that keeps every (path, request JSON, response JSON) exchanged on the scoring routes."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.calls: list[tuple[str, dict[str, Any], dict[str, Any]]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in ROUTES:
            await self.app(scope, receive, send)
            return
        body, out = bytearray(), bytearray()

        async def recv() -> dict[str, Any]:
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                body.extend(message.get("body", b""))
            return message

        async def snd(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                out.extend(message.get("body", b""))
            await send(message)

        await self.app(scope, recv, snd)
        self.calls.append((scope["path"], json.loads(body), json.loads(out)))

    def trl(self, path: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """The exchanges on `path` that came from the TRL adapter (its group ids start with "trl:")."""
        found = []
        for p, req, resp in self.calls:
            items = req["groups"] if p == "/v1/rewards" else req["rollouts"]
            if p == path and items and str(items[0].get("group_id") or "").startswith("trl:"):
                found.append((req, resp))
        return found


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("trl_grpo_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama_policy(tmp_path_factory.mktemp("policy"))


@pytest.fixture(scope="module")
def service() -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder(create_app(Settings(port=0, group_timeout_s=60.0)))
    with serve(recorder) as base:  # type: ignore[arg-type]
        yield base, recorder


def direct(base: str, groups: list[dict[str, Any]]) -> list[list[float]]:
    """The rewards of the same groups asked for directly, without group ids or the adapter."""
    plain = [{"prompt": g["prompt"], "responses": g["responses"], "quality": g["quality"]} for g in groups]
    r = httpx.post(base + "/v1/rewards", json={"groups": plain}, timeout=120)
    assert r.status_code == 200, r.text
    return [g["rewards"] for g in r.json()["groups"]]


def call_of(group_id: str) -> int:
    """The adapter's call number in a group id trl:<run>:<call>:<global group>: call k is training step k + 1."""
    return int(group_id.split(":")[2])


def logged_means(log_history: list[dict[str, Any]]) -> list[float]:
    return [h["rewards/darling/mean"] for h in log_history if "rewards/darling/mean" in h]


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_grpo_trainer_trains_on_darling_rewards(
    example: ModuleType, policy: Path, service: tuple[str, Recorder], tmp_path: Path, asynchronous: bool
) -> None:
    base, recorder = service
    before = len(recorder.calls)
    trainer = example.make_trainer(
        str(policy),
        base,
        asynchronous=asynchronous,
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=2 * example.N,  # two whole groups per step
        max_completion_length=8,
        logging_steps=1,
        save_strategy="no",
    )
    initial = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    trainer.train()
    assert trainer.state.global_step == 2
    assert any(not torch.equal(initial[k], v) for k, v in trainer.model.named_parameters())

    recorder.calls[:before] = []  # this run's traffic only (the module's service is shared)
    assert not recorder.trl("/v1/rollouts")  # one process holds every group whole: no assembly
    requests = recorder.trl("/v1/rewards")
    assert len(requests) == 2  # one request per step, both groups in it
    groups = [g for req, _ in requests for g in req["groups"]]
    assert [len(g["responses"]) for g in groups] == [example.N] * 4
    assert len({g["group_id"].split(":")[1] for g in groups}) == 1  # one run id

    # What the service received is what TRL generated (its completions table keeps the last step).
    last = [g for g in groups if call_of(g["group_id"]) == 1]
    completions = list(trainer._logs["completion"])
    assert [r for g in last for r in g["responses"]] == [c[-1]["content"] for c in completions]
    assert [q for g in last for q in g["quality"]] == example.concise(completions)
    assert [g["prompt"] for g in last] == [
        f"user: {p[-1]['content']}" for p in list(trainer._logs["prompt"])[:: example.N]
    ]

    # The rewards TRL used and logged equal a direct /v1/rewards call on the same groups.
    want = direct(base, groups)
    assert [resp["rewards"] for _, r in requests for resp in r["groups"]] == want
    assert list(trainer._logs["rewards"]["darling"]) == pytest.approx([x for w in want[2:] for x in w], rel=1e-6)
    per_step = [[x for w in want[2 * k : 2 * k + 2] for x in w] for k in range(2)]
    means = [sum(s) / len(s) for s in per_step]
    assert logged_means(trainer.state.log_history) == pytest.approx(means, rel=1e-6)
    assert len({x for s in per_step for x in s}) > 1  # rewards differ, so a misplaced one would show


def test_evaluation_with_its_own_group_size(
    example: ModuleType, policy: Path, service: tuple[str, Recorder], tmp_path: Path
) -> None:
    """GRPOTrainer.evaluate groups by num_generations_eval (2 here, 4 in training): the adapter must follow it,
    not score groups of 4 that mix two prompts (what it did before reading the trainer's group size)."""
    base, recorder = service
    before = len(recorder.calls)
    trainer = example.make_trainer(
        str(policy),
        base,
        output_dir=str(tmp_path),
        max_steps=1,
        per_device_train_batch_size=example.N,
        per_device_eval_batch_size=4,
        num_generations_eval=2,
        max_completion_length=8,
        save_strategy="no",
    )
    questions = ["Name a colour.", "Name a river.", "Name a city.", "Name a tree."]
    evaluation = trainer.evaluate(Dataset.from_dict({"prompt": [[{"role": "user", "content": q}] for q in questions]}))
    recorder.calls[:before] = []
    groups = [g for req, _ in recorder.trl("/v1/rewards") for g in req["groups"]]
    assert sorted(g["prompt"] for g in groups) == sorted(f"user: {q}" for q in questions)
    assert all(len(g["responses"]) == 2 for g in groups)
    served = [resp for _, r in recorder.trl("/v1/rewards") for resp in r["groups"]]
    want = direct(base, groups)
    assert [g["rewards"] for g in served] == want
    flat = [x for w in want for x in w]
    assert evaluation["eval_rewards/darling/mean"] == pytest.approx(sum(flat) / len(flat), rel=1e-6)


def test_a_group_size_that_differs_from_the_trainers_is_refused(
    example: ModuleType, policy: Path, service: tuple[str, Recorder], tmp_path: Path
) -> None:
    """darling_reward_func(num_generations=2) under GRPOConfig(num_generations=4) would score half groups."""
    base, _ = service
    reward = darling_reward_func(num_generations=2, quality=example.concise, url=base)
    prompts = Dataset.from_dict(
        {"prompt": [[{"role": "user", "content": q}] for q in ("Name a fruit.", "Name a bird.")]}
    )
    args = GRPOConfig(
        output_dir=str(tmp_path), num_generations=4, per_device_train_batch_size=4, max_steps=1,
        max_completion_length=4, use_cpu=True, save_strategy="no",
    )  # fmt: skip
    trainer = GRPOTrainer(model=str(policy), reward_funcs=reward, train_dataset=prompts, args=args)
    with pytest.raises(ValueError, match="num_generations=2 for the DARLING reward function but GRPOConfig has"):
        trainer.train()


def test_two_torchrun_processes_whose_slices_cut_a_group(
    policy: Path, service: tuple[str, Recorder], tmp_path: Path
) -> None:
    """2 processes x 6 completions per step: each holds one group whole and half of the middle group, which
    only the service's group assembly can score; the run id comes from torch.distributed."""
    base, recorder = service
    before = len(recorder.calls)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "clients" / "python"), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("DARLING_RUN_ID", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())]
    cmd += [str(EXAMPLE), str(policy), "--url", base, "--output-dir", str(tmp_path), "--steps", "2"]
    cmd += ["--batch-size", "6", "--max-completion-length", "8"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    state = json.loads((tmp_path / "trainer_state.json").read_text())
    assert state["global_step"] == 2

    recorder.calls[:before] = []
    whole = [g for req, _ in recorder.trl("/v1/rewards") for g in req["groups"]]
    assembled = recorder.trl("/v1/rollouts")
    # Per step: groups 3k and 3k + 2 whole in one process each, group 3k + 1 half in each process.
    assert sorted((call_of(g["group_id"]), int(g["group_id"].split(":")[3])) for g in whole) == [
        (0, 0), (0, 2), (1, 0), (1, 2)
    ]  # fmt: skip
    assert all(len(g["responses"]) == 4 for g in whole)
    parts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    rewards: dict[str, dict[int, float]] = defaultdict(dict)
    for req, resp in assembled:
        assert len({r["group_id"] for r in req["rollouts"]}) == 1 and len(req["rollouts"]) == 2
        parts[req["rollouts"][0]["group_id"]].append(req)
        for r in resp["rollouts"]:
            rewards[r["group_id"]][r["index"]] = r["reward"]
    assert sorted((call_of(g), int(g.split(":")[3])) for g in parts) == [(0, 1), (1, 1)]
    assert all(sorted(r["index"] for req in reqs for r in req["rollouts"]) == [0, 1, 2, 3] for reqs in parts.values())
    run_ids = {g["group_id"].split(":")[1] for g in whole} | {g.split(":")[1] for g in parts}
    assert len(run_ids) == 1  # both processes derived the same ids: the run id was broadcast

    # The service's rewards for the assembled groups equal a direct call on the whole group.
    cut_groups = []
    for gid, reqs in sorted(parts.items()):
        rows = sorted((r for req in reqs for r in req["rollouts"]), key=lambda r: r["index"])
        cut_groups.append(
            {
                "group_id": gid,
                "prompt": rows[0]["prompt"],
                "responses": [r["response"] for r in rows],
                "quality": [r["quality"] for r in rows],
            }
        )
    want_cut = direct(base, cut_groups)
    assert [[rewards[g["group_id"]][i] for i in range(4)] for g in cut_groups] == want_cut
    # The service's answers for the whole groups equal a direct call too.
    served_whole = {g["group_id"]: g["rewards"] for _, resp in recorder.trl("/v1/rewards") for g in resp["groups"]}
    assert [served_whole[g["group_id"]] for g in whole] == direct(base, whole)

    # TRL's logged mean per step is the mean over the step's three groups, whatever path each took.
    by_call: dict[int, list[float]] = defaultdict(list)
    for g, w in zip(cut_groups, want_cut, strict=True):
        by_call[call_of(g["group_id"])] += w
    for gid, w in served_whole.items():
        by_call[call_of(gid)] += w
    means = [sum(by_call[k]) / len(by_call[k]) for k in range(2)]
    assert all(len(by_call[k]) == 12 for k in range(2))
    assert logged_means(state["log_history"]) == pytest.approx(means, rel=1e-6)


def test_the_readme_trl_example_is_the_file_the_tests_run() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- examples/trl_grpo\.py[^>]*-->\n```python\n(.*?)```", readme, re.S)
    assert block is not None, "README: the TRL example block (marked <!-- examples/trl_grpo.py -->) is missing"
    assert block.group(1) == EXAMPLE.read_text()


def test_groups_mixing_prompts_are_refused_without_a_trainer_to_ask(service: tuple[str, Recorder]) -> None:
    """Callers that pass no trainer (older TRL: no log_metric) get the prompt check: evaluation batches of
    num_generations_eval=2 under a reward function for 4 would mix two prompts in each group."""
    base, _ = service
    reward = darling_reward_func(
        num_generations=4, quality=lambda completions, **kw: [1.0] * len(completions), url=base
    )
    prompts = [p for p in ("Name a fruit.", "Name a bird.", "Name a tree.", "Name a city.") for _ in range(2)]
    with pytest.raises(
        ValueError, match=r"completions 0\.\.3 of group 0 \(num_generations=4\) answer different prompts"
    ):
        reward(prompts=prompts, completions=["x"] * 8, completion_ids=[[1]] * 8, trainer_state=None)
