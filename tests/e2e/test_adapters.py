"""One GRPO-style step through each trainer adapter, driven the way that trainer calls it, against a real
server; every reward must equal a direct POST /v1/rewards on the same groups. Each test reproduces the
trainer's documented call (see the adapter docstrings for the version whose convention it follows); TRL also
trains for real in test_trl_grpo.py, the others do not install here without CUDA."""

from __future__ import annotations

import asyncio
import importlib.util
import random
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from darling_client import AsyncRewardClient, RewardClient
from darling_client.integrations import openrlhf as orlhf
from darling_client.integrations.slime import group_rm
from darling_client.integrations.trl import _shared_run_id, darling_async_reward_func, darling_reward_func
from darling_client.integrations.verl import DarlingRewardLoopManager, DarlingRewardManager

from service.app import create_app
from service.settings import Settings
from tests.conftest import serve

N = 4  # num_generations / n_samples_per_prompt / rollout.n

OPEN = [
    (
        "Tell me a fact about space.",
        [
            "The Sun is a star that makes up most of the mass of the solar system.",
            "Most of the solar system's mass is in the Sun, which is a star.",
            "Jupiter has dozens of moons, and the largest, Ganymede, is bigger than Mercury.",
            "A day on Venus is longer than its year because it spins very slowly.",
        ],
    ),
    ("Name a fruit.", ["An apple.", "apple", "A ripe banana from Ecuador.", "Mango, definitely."]),
    (
        "Describe the sea.",
        [
            "The sea is vast and blue.",
            "The ocean is huge and blue.",
            "Waves crash on rocky shores at night.",
            "Salt water covers most of Earth.",
        ],
    ),
]
MATH = [
    ("What is 6 * 7 ?", "42", ["\\boxed{42}", "The answer is \\boxed{42} .", "I think it is \\boxed{48} .", "42"]),
    ("What is 2 + 2 ?", "4", ["\\boxed{4}", "\\boxed{5}", "Four , so \\boxed{4} .", "2 + 2 = \\boxed{4}"]),
    ("What is 10 / 2 ?", "5", ["\\boxed{5}", "\\boxed{5}", "It equals \\boxed{2} .", "Half of ten : \\boxed{5}"]),
]


def heuristic_quality(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
    """A TRL-style reward function used as DARLING's quality: longer answers score higher, capped at 1."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [min(1.0, 0.3 + 0.05 * len(t.split())) for t in texts]


def direct(base: str, groups: list[dict[str, Any]]) -> list[list[float]]:
    r = httpx.post(base + "/v1/rewards", json={"groups": groups}, timeout=120)
    assert r.status_code == 200, r.text
    return [g["rewards"] for g in r.json()["groups"]]


def direct_open(base: str) -> list[list[float]]:
    return direct(base, [{"prompt": p, "responses": rs, "quality": heuristic_quality([p] * N, rs)} for p, rs in OPEN])


def direct_math(base: str) -> list[list[float]]:
    return direct(base, [{"prompt": p, "responses": rs, "reference": ref} for p, ref, rs in MATH])


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serve(create_app(Settings(port=0, openrlhf_group_size=N, group_timeout_s=20.0))) as base:
        yield base


# ---- TRL ----------------------------------------------------------------------------------------------------


def trl_batch(conversational: bool) -> tuple[list[Any], list[Any], dict[str, Any]]:
    """A GRPO generation batch as TRL builds it: each prompt repeated num_generations times, contiguous."""
    prompts, completions = [], []
    for p, rs in OPEN:
        for r in rs:
            prompts.append([{"role": "user", "content": p}] if conversational else p)
            completions.append([{"role": "assistant", "content": r}] if conversational else r)
    kwargs = {"topic": [p for p, rs in OPEN for _ in rs]}  # a dataset column, forwarded like TRL does
    return prompts, completions, kwargs


def trl_call(fn: Any, prompts: list[Any], completions: list[Any], columns: dict[str, Any], sl: slice) -> Any:
    """Exactly GRPOTrainer._calculate_rewards' call, for one process's slice of the batch."""
    ids = [[1, 2, 3] for _ in completions[sl]]
    cols = {k: v[sl] for k, v in columns.items()}
    state = SimpleNamespace(global_step=3)
    return fn(prompts=prompts[sl], completions=completions[sl], completion_ids=ids, **cols, trainer_state=state)


def grpo_advantages(rewards: list[float]) -> list[float]:
    """TRL's advantage with scale_rewards='none' (what DARLING prescribes): reward minus the group mean."""
    out = []
    for g in range(0, len(rewards), N):
        chunk = rewards[g : g + N]
        mean = sum(chunk) / N
        out += [r - mean for r in chunk]
    return out


@pytest.mark.parametrize("conversational", [False, True])
def test_trl_sync_single_process(server: str, conversational: bool) -> None:
    want = [r for g in direct_open(server) for r in g]
    prompts, completions, cols = trl_batch(conversational)
    with RewardClient(server) as client:
        fn = darling_reward_func(N, quality=heuristic_quality, client=client, process_index=0, num_processes=1)
        assert fn.__name__ == "darling" and not asyncio.iscoroutinefunction(fn)
        got = trl_call(fn, prompts, completions, cols, slice(None))
    assert got == want
    # TRL's advantage from these rewards (scale_rewards="none") is the service's DARLING advantage.
    groups = [{"prompt": p, "responses": rs, "quality": heuristic_quality([p] * N, rs)} for p, rs in OPEN]
    served = httpx.post(server + "/v1/rewards", json={"groups": groups}, timeout=60).json()["groups"]
    assert grpo_advantages(got) == pytest.approx([x["advantage"] for g in served for x in g["rollouts"]], abs=1e-12)


async def test_trl_async_two_processes_share_groups_through_assembly(server: str) -> None:
    """2 processes x 6 completions: group 1 is cut in half between them and must be assembled."""
    want = [r for g in direct_open(server) for r in g]
    prompts, completions, cols = trl_batch(conversational=False)
    async with AsyncRewardClient(server) as c0, AsyncRewardClient(server) as c1:
        fns = [
            darling_async_reward_func(
                N, quality=heuristic_quality, client=c, run_id="run-a", process_index=rank, num_processes=2
            )
            for rank, c in enumerate((c0, c1))
        ]
        assert all(asyncio.iscoroutinefunction(f) for f in fns)  # TRL's test for running it on its loop
        # Process 1 starts first: arrival order must not matter.
        second, first = await asyncio.gather(
            trl_call(fns[1], prompts, completions, cols, slice(6, 12)),
            trl_call(fns[0], prompts, completions, cols, slice(0, 6)),
        )
    assert first + second == want


def test_trl_sync_processes_in_threads_with_verifier_quality(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Six processes holding 2 completions each, so every group of 4 is cut, in threads started out of order;
    quality from the dataset's `solution` column through the service's verifier; run id from the env."""
    monkeypatch.setenv("DARLING_RUN_ID", f"threads-{random.random()}")
    want = [r for g in direct_math(server) for r in g]
    prompts = [p for p, _, rs in MATH for _ in rs]
    completions = [r for _, _, rs in MATH for r in rs]
    cols = {"solution": [ref for _, ref, rs in MATH for _ in rs]}
    results: dict[int, list[float]] = {}
    with RewardClient(server) as client:
        fns = [
            darling_reward_func(N, reference_column="solution", client=client, process_index=k, num_processes=6)
            for k in range(6)
        ]

        def proc(k: int) -> None:
            results[k] = trl_call(fns[k], prompts, completions, cols, slice(2 * k, 2 * k + 2))

        threads = [threading.Thread(target=proc, args=(k,)) for k in (5, 2, 0, 3, 1, 4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert [r for k in range(6) for r in results[k]] == want
    assert fns[0].state.calls == 1  # type: ignore[attr-defined]


def test_trl_multi_process_needs_a_shared_run_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DARLING_RUN_ID", raising=False)
    assert len(_shared_run_id(1)) == 32
    with pytest.raises(RuntimeError, match="DARLING_RUN_ID"):
        _shared_run_id(2)
    monkeypatch.setenv("DARLING_RUN_ID", "abc")
    assert _shared_run_id(8) == "abc"


# ---- OpenRLHF -----------------------------------------------------------------------------------------------

CHAT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"


def openrlhf_rows(shift: int = 0) -> list[tuple[str, str, str]]:
    """(query, prompt, label) per rollout as OpenRLHF sends them: chat template applied, query = prompt +
    response + end-of-sequence token. `shift` makes distinct prompts for tests that must not share groups."""
    rows = []
    for p, ref, rs in MATH:
        prompt = CHAT.format(p + " " * shift)
        rows += [(prompt + r + "<|im_end|>", prompt, ref) for r in rs]
    return rows


def expected_openrlhf(server: str) -> dict[tuple[str, str], float]:
    """Reward per (prompt text, response) from a direct /v1/rewards call. all_pairs rewards do not depend
    on the order inside a group, so this is what any arrival order must give."""
    want = direct_math(server)
    return {(p, r): want[k][i] for k, (p, _, rs) in enumerate(MATH) for i, r in enumerate(rs)}


def check_openrlhf(
    rows: list[tuple[str, str, str]], rewards: list[float], want: dict[tuple[str, str], float], tol: float = 0.0
) -> None:
    for (query, prompt, _), got in zip(rows, rewards, strict=True):
        question = prompt.split("\n")[1].split("<|im_end|>")[0].rstrip()
        response = query[len(prompt) :].removesuffix("<|im_end|>")
        assert got == pytest.approx(want[(question, response)], abs=tol), (question, response)


def test_openrlhf_whole_batch_speaks_the_protocol_exactly(server: str) -> None:
    rows = openrlhf_rows(shift=1)
    random.Random(3).shuffle(rows)  # groups are found by prompt, not by position
    # What OpenRLHF's remote client posts (request_api_wrapper / _fetch_rewards_via_http).
    payload = {"query": [q for q, _, _ in rows], "prompts": [p for _, p, _ in rows], "labels": [lb for *_, lb in rows]}
    r = httpx.post(server + "/v1/openrlhf", json=payload, headers={"Content-Type": "application/json"}, timeout=180)
    r.raise_for_status()
    body = r.json()
    assert set(body) == {"rewards", "scores", "extra_logs"}
    assert len(body["rewards"]) == len(body["scores"]) == len(rows)
    assert set(body["extra_logs"]) == {"darling_quality", "darling_diversity", "darling_n_classes"}
    assert all(len(v) == len(rows) for v in body["extra_logs"].values())
    check_openrlhf(rows, body["rewards"], expected_openrlhf(server))
    assert body["scores"] == body["extra_logs"]["darling_quality"]
    assert set(body["scores"]) == {0.0, 1.0}  # the verifier's quality


async def test_openrlhf_one_rollout_per_request_concurrent_out_of_order(server: str) -> None:
    rows = openrlhf_rows(shift=2)
    random.Random(5).shuffle(rows)
    async with httpx.AsyncClient(timeout=180) as c:
        resps = await asyncio.gather(
            *(c.post(server + "/v1/openrlhf", json={"query": [q], "prompts": [p], "labels": [lb]}) for q, p, lb in rows)
        )
    assert all(r.status_code == 200 for r in resps), [r.text for r in resps if r.status_code != 200]
    check_openrlhf(rows, [r.json()["rewards"][0] for r in resps], expected_openrlhf(server))


async def test_openrlhf_reward_func_file_loaded_like_openrlhf(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DARLING_URL", server)
    path = str(orlhf.REWARD_FUNC_FILE)
    # SingleTurnAgentExecutor: spec_from_file_location + exec_module, then reward_func per rollout in threads.
    spec = importlib.util.spec_from_file_location("reward_func", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    reward_func = module.reward_func
    rows = openrlhf_rows(shift=3)
    random.Random(9).shuffle(rows)
    # OpenRLHF uses asyncio.to_thread, i.e. the loop's default pool of min(32, cores + 4) threads. A rollout's
    # call holds its thread until the group is complete, so the pool must hold the rollouts in flight: 12
    # here (on this 2-core machine the default pool has 6). The README says so; the HTTP route has no limit.
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=len(rows)) as pool:
        outs = await asyncio.gather(*(loop.run_in_executor(pool, reward_func, [q], [p], [lb]) for q, p, lb in rows))
    for out in outs:
        assert set(out) == {"rewards", "scores", "extra_logs"} and isinstance(out["rewards"], torch.Tensor)
    # float32 tensors, as OpenRLHF's own reward functions return.
    check_openrlhf(rows, [float(o["rewards"][0]) for o in outs], expected_openrlhf(server), tol=1e-6)
    # Older OpenRLHF calls it once with the whole batch.
    rows = openrlhf_rows(shift=4)
    out = await asyncio.to_thread(
        reward_func, [q for q, _, _ in rows], [p for _, p, _ in rows], [lb for *_, lb in rows]
    )
    check_openrlhf(rows, out["rewards"].tolist(), expected_openrlhf(server), tol=1e-6)


def test_openrlhf_errors_name_the_field(server: str) -> None:
    r = httpx.post(server + "/v1/openrlhf", json={"query": ["a", "b"], "prompts": ["a"]}, timeout=30)
    assert r.status_code == 422 and r.json()["fields"] == ["prompts"]
    r = httpx.post(server + "/v1/openrlhf", json={"query": ["qa"]}, timeout=30)
    assert r.status_code == 422 and r.json()["fields"] == ["prompts"]
    # No label and no reward model: no quality source for that rollout.
    r = httpx.post(server + "/v1/openrlhf", json={"query": ["q a"], "prompts": ["q"], "labels": [""]}, timeout=30)
    assert r.status_code == 422 and r.json()["fields"] == ["query[0]"], r.text


# ---- veRL ---------------------------------------------------------------------------------------------------


def word_tokenizer() -> Any:
    """A real transformers tokenizer built in memory (nothing downloads): one id per whitespace word, so that
    decode(encode(text)) == text for our single-spaced texts."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for p, ref, rs in MATH for t in [p, ref, *rs] for w in t.split()})
    vocab = {"[PAD]": 0, "[UNK]": 1} | {w: i + 2 for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")


@dataclass
class ProtoItem:
    batch: dict[str, torch.Tensor]
    non_tensor_batch: dict[str, Any]


@dataclass
class Proto:
    """The fields of verl.DataProto that reward managers read: `batch` (a TensorDict; here a dict of equal-
    length tensors), `non_tensor_batch` (numpy object arrays), len() and item access."""

    batch: dict[str, torch.Tensor]
    non_tensor_batch: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.batch["responses"])

    def __getitem__(self, i: int) -> ProtoItem:
        return ProtoItem({k: v[i] for k, v in self.batch.items()}, {k: v[i] for k, v in self.non_tensor_batch.items()})


def verl_batch(tok: Any, order: list[int]) -> tuple[Proto, list[tuple[str, str]]]:
    """A veRL rollout batch: prompts left-padded, responses right-padded, uid per prompt, rows in `order`."""
    rows = [(k, p, ref, r) for k, (p, ref, rs) in enumerate(MATH) for r in rs]
    rows = [rows[i] for i in order]
    enc_p = [tok.encode(p, add_special_tokens=False) for _, p, _, _ in rows]
    enc_r = [tok.encode(r, add_special_tokens=False) for *_, r in rows]
    lp, lr = max(map(len, enc_p)), max(map(len, enc_r)) + 2
    prompts = torch.tensor([[0] * (lp - len(e)) + e for e in enc_p])
    responses = torch.tensor([e + [0] * (lr - len(e)) for e in enc_r])
    mask = torch.tensor(
        [
            [0] * (lp - len(a)) + [1] * len(a) + [1] * len(b) + [0] * (lr - len(b))
            for a, b in zip(enc_p, enc_r, strict=True)
        ]
    )
    uids = {k: f"uid-{random.random()}" for k in range(len(MATH))}
    proto = Proto(
        batch={
            "prompts": prompts,
            "responses": responses,
            "input_ids": torch.cat([prompts, responses], 1),
            "attention_mask": mask,
        },
        non_tensor_batch={
            "uid": np.array([uids[k] for k, *_ in rows], dtype=object),
            "data_source": np.array(["math"] * len(rows), dtype=object),
            "reward_model": np.array([{"ground_truth": ref, "style": "rule"} for _, _, ref, _ in rows], dtype=object),
            "extra_info": np.array([{"index": i} for i in range(len(rows))], dtype=object),
        },
    )
    return proto, [(p, r) for _, p, _, r in rows]


@pytest.mark.parametrize("quality_from", ["ground_truth", "compute_score", "rm_scores"])
def test_verl_reward_manager_groups_by_uid_in_a_reordered_batch(server: str, quality_from: str) -> None:
    tok = word_tokenizer()
    order = list(range(12))
    random.Random(13).shuffle(order)  # balance_batch reorders rows
    data, rows = verl_batch(tok, order)

    def compute_score(
        data_source: str, solution_str: str, ground_truth: str, extra_info: Any, **kw: Any
    ) -> dict[str, float]:
        return {"score": 1.0 if ground_truth in solution_str else 0.2}  # veRL's dict form

    def rm_quality(text: str) -> float:
        return 0.25 * len(text.split())

    if quality_from == "compute_score":
        want_groups = direct(
            server,
            [{"prompt": p, "responses": rs, "quality": [1.0 if ref in r else 0.2 for r in rs]} for p, ref, rs in MATH],
        )
    elif quality_from == "rm_scores":
        # A reward-model worker's token-level scores: the score sits on the last valid token.
        lengths = data.batch["attention_mask"][:, data.batch["prompts"].shape[1] :].sum(-1)
        rm = torch.zeros_like(data.batch["responses"], dtype=torch.float32)
        for i, (_, r) in enumerate(rows):
            rm[i, int(lengths[i]) - 1] = rm_quality(r)
        data.batch["rm_scores"] = rm
        want_groups = direct(
            server, [{"prompt": p, "responses": rs, "quality": [rm_quality(r) for r in rs]} for p, _, rs in MATH]
        )
    else:
        want_groups = direct_math(server)
    want = {(p, r): want_groups[k][i] for k, (p, _, rs) in enumerate(MATH) for i, r in enumerate(rs)}
    with RewardClient(server) as client:
        manager = DarlingRewardManager(
            tok, num_examine=0, compute_score=compute_score if quality_from == "compute_score" else None, client=client
        )
        out = manager(data, return_dict=True)
        plain = manager(data)
    tensor = out["reward_tensor"]
    assert tensor.shape == data.batch["responses"].shape and tensor.dtype == torch.float32
    assert torch.equal(plain, tensor)
    lengths = data.batch["attention_mask"][:, data.batch["prompts"].shape[1] :].sum(-1)
    for i, (p, r) in enumerate(rows):
        last = int(lengths[i]) - 1
        assert float(tensor[i, last]) == pytest.approx(want[(p, r)], abs=1e-6)  # float32, as veRL stores it
        assert float(tensor[i].abs().sum()) == pytest.approx(abs(want[(p, r)]), abs=1e-6)  # nothing elsewhere
        q = rm_quality(r) if quality_from == "rm_scores" else None
        assert out["reward_extra_info"]["darling_quality"][i] in ((q,) if q is not None else (0.0, 0.2, 1.0))
    assert set(out["reward_extra_info"]) == {"darling_quality", "darling_diversity", "darling_n_classes"}


async def test_verl_reward_loop_one_sample_at_a_time(server: str) -> None:
    tok = word_tokenizer()
    order = list(range(12))
    random.Random(17).shuffle(order)
    data, rows = verl_batch(tok, order)
    want_groups = direct_math(server)
    want = {(p, r): want_groups[k][i] for k, (p, _, rs) in enumerate(MATH) for i, r in enumerate(rs)}
    config = SimpleNamespace(actor_rollout_ref=SimpleNamespace(rollout=SimpleNamespace(n=N)))
    manager = DarlingRewardLoopManager(config, tok, url=server)
    # The reward loop calls run_single once per finished rollout, concurrently.
    singles = [
        Proto(
            {k: v[i : i + 1] for k, v in data.batch.items()},
            {k: v[i : i + 1] for k, v in data.non_tensor_batch.items()},
        )
        for i in range(len(rows))
    ]
    outs = await asyncio.gather(*(manager.run_single(s) for s in singles))
    for (p, r), out in zip(rows, outs, strict=True):
        assert out["reward_score"] == want[(p, r)]
        assert set(out["reward_extra_info"]) == {"darling_quality", "darling_diversity", "darling_n_classes"}


# ---- slime --------------------------------------------------------------------------------------------------


@dataclass
class Sample:
    """The fields of slime.utils.types.Sample that a reward function reads."""

    prompt: str | list[dict[str, str]]
    response: str
    label: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    reward: float | None = None


async def test_slime_group_rm_once_per_group_concurrently(server: str) -> None:
    args = SimpleNamespace(darling_url=server, n_samples_per_prompt=N, group_rm=True)
    math_groups = [[Sample(p, r, label=ref) for r in rs] for p, ref, rs in MATH]
    open_groups = [
        [
            Sample([{"role": "user", "content": p}], r, metadata={"quality": q})
            for r, q in zip(rs, heuristic_quality([p] * N, rs), strict=True)
        ]
        for p, rs in OPEN
    ]
    # slime's batched_async_rm: `await rm_function(args, samples, **kwargs)`, one call per group, many at once.
    got = await asyncio.gather(*(group_rm(args, g) for g in math_groups + open_groups))
    assert got == direct_math(server) + direct_open(server)
    assert all(isinstance(x, float) for g in got for x in g)
