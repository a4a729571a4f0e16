"""TRL `GRPOTrainer` reward functions (run for real with TRL 1.16, tests/e2e/test_trl_grpo.py; the call of 0.2x
too: `reward_funcs` entries are called as `f(prompts=..., completions=..., completion_ids=...,
**dataset_columns, trainer_state=..., log_extra=..., log_metric=...)`, sync or `async def`, and return one
float per completion).

    from darling_client.integrations.trl import darling_reward_func
    reward = darling_reward_func(num_generations=8, quality=my_quality_fn)   # or reference_column="solution"
    trainer = GRPOTrainer(model=..., reward_funcs=reward, args=GRPOConfig(num_generations=8, scale_rewards="none"))

Each prompt's `num_generations` completions are contiguous in TRL's global batch, and process r of N holds
positions [r * local, (r + 1) * local). Groups this process holds whole are scored with POST /v1/rewards;
groups cut by a process boundary (multi-GPU) go through group assembly (POST /v1/rollouts) under a group id
that every process derives alike: run id, call number, global group number.

Quality comes from `quality` (any TRL-style reward function, sync or async, e.g. an accuracy reward: DARLING
multiplies it by diversity), else from the dataset column `reference_column` (the service's math verifier),
else from the service's reward model.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from darling_client.client import AsyncRewardClient, OptionsLike, RewardClient
from darling_client.integrations._common import adapter_run, async_client, message_text, prompt_text, sync_client
from darling_client.schemas import Rollout, RolloutGroup

QualityFn = Callable[..., Sequence[float | None] | Awaitable[Sequence[float | None]]]


def _env_int(*names: str) -> int | None:
    for name in names:
        value = os.environ.get(name)
        if value is not None and value.strip().lstrip("-").isdigit():
            return int(value)
    return None


def _shared_run_id(world: int) -> str:
    """One id for this training run, the same in every process, so that their group ids agree."""
    explicit = os.environ.get("DARLING_RUN_ID")
    if explicit:
        return explicit
    if world <= 1:
        return uuid.uuid4().hex
    torch = sys.modules.get("torch")  # never imported here: only used when the trainer already has it
    dist = getattr(torch, "distributed", None) if torch is not None else None
    if dist is not None and dist.is_available() and dist.is_initialized():
        box = [uuid.uuid4().hex if dist.get_rank() == 0 else None]
        dist.broadcast_object_list(box, src=0)
        return str(box[0])
    raise RuntimeError(
        "several processes and no shared run id: set DARLING_RUN_ID to the same value in every process "
        "(or pass run_id=...), or initialise torch.distributed before the first reward call"
    )


@dataclass
class TRLRewardState:
    """What one process's reward function remembers between calls."""

    num_generations: int
    run_id: str | None = None
    process_index: int | None = None
    num_processes: int | None = None
    calls: int = 0
    last_groups: list[Any] = field(default_factory=list)  # GroupReward of the last call, for logging
    run: str | None = None  # label of the service's per-run figures (options.run)

    def placement(self) -> tuple[int, int]:
        rank = self.process_index if self.process_index is not None else _env_int("RANK", "PROCESS_INDEX") or 0
        world = self.num_processes if self.num_processes is not None else _env_int("WORLD_SIZE", "NUM_PROCESSES") or 1
        return rank, world


def _group_size(state: TRLRewardState, kwargs: dict[str, Any]) -> int:
    """This call's group size: TRL's own when the trainer is reachable, else the configured one.

    TRL >= 1.x passes its bound `_log_metric`, hence the trainer, whose `model.training` picks between
    `num_generations` and `num_generations_eval` exactly as GRPOTrainer does. Without this, an evaluation with
    `num_generations_eval` != `num_generations` would silently score groups that mix prompts."""
    trainer = getattr(kwargs.get("log_metric"), "__self__", None)
    train_n = getattr(trainer, "num_generations", None)
    eval_n = getattr(trainer, "num_generations_eval", None)
    model = getattr(trainer, "model", None)
    if not (isinstance(train_n, int) and isinstance(eval_n, int) and model is not None):
        return state.num_generations
    if train_n != state.num_generations:
        raise ValueError(
            f"num_generations={state.num_generations} for the DARLING reward function but GRPOConfig has "
            f"num_generations={train_n}: they must be the same (a group is one prompt's completions)"
        )
    return train_n if getattr(model, "training", True) else eval_n


def _check_groups(ptexts: list[str], members: dict[int, list[int]], n: int) -> None:
    """Every group answers one prompt; if not, the group size is not TRL's (older TRL, other callers)."""
    for g, ix in members.items():
        if len({ptexts[i] for i in ix}) > 1:
            raise ValueError(
                f"completions {ix[0]}..{ix[-1]} of group {g} (num_generations={n}) answer different prompts: "
                "the reward function's num_generations must equal the trainer's (num_generations_eval when evaluating)"
            )


async def _qualities(
    quality: QualityFn | None, prompts: list[Any], completions: list[Any], kwargs: dict[str, Any]
) -> list[float] | None:
    if quality is None:
        return None
    out = quality(prompts=prompts, completions=completions, **kwargs)
    values = await out if inspect.isawaitable(out) else out
    result = []
    for i, v in enumerate(values):
        if v is None:
            raise ValueError(f"the quality function returned None for completion {i}; DARLING needs a number")
        result.append(float(v))
    if len(result) != len(completions):
        raise ValueError(f"the quality function returned {len(result)} values for {len(completions)} completions")
    return result


async def trl_rewards(
    client: AsyncRewardClient,
    state: TRLRewardState,
    prompts: list[Any],
    completions: list[Any],
    kwargs: dict[str, Any],
    quality: QualityFn | None = None,
    reference_column: str | None = None,
    options: OptionsLike = None,
) -> list[float]:
    """The rewards of one process's slice of a GRPO batch (the body of both reward functions)."""
    n = _group_size(state, kwargs)
    local = len(completions)
    if local == 0:
        return []
    call_no = state.calls
    state.calls += 1
    rank, world = state.placement()
    if state.run_id is None:
        state.run_id = _shared_run_id(world)
    # The quality function sees exactly what TRL gave us (completion_ids, dataset columns, trainer_state).
    qualities = await _qualities(quality, prompts, completions, kwargs)
    references: list[Any] | None = list(kwargs[reference_column]) if reference_column else None
    texts = [message_text(c[-1] if isinstance(c, list) and c else c) for c in completions]
    ptexts = [prompt_text(p) for p in prompts]

    start = rank * local
    members: dict[int, list[int]] = {}
    for i in range(local):
        members.setdefault((start + i) // n, []).append(i)
    _check_groups(ptexts, members, n)
    whole = {g: ix for g, ix in members.items() if len(ix) == n}
    cut = {g: ix for g, ix in members.items() if len(ix) != n}

    rewards = [0.0] * local
    # TRL passes its TrainerState: the global step makes per-step figures of the run.
    step = getattr(kwargs.get("trainer_state"), "global_step", None)
    labels: dict[str, Any] = {"run": state.run, "step": step if isinstance(step, int) and step >= 0 else None}

    def ref(i: int) -> str | None:
        return None if references is None or references[i] is None else str(references[i])

    async def score_whole() -> None:
        if not whole:
            return
        groups = [
            RolloutGroup(
                group_id=f"trl:{state.run_id}:{call_no}:{g}",
                prompt=ptexts[ix[0]],
                responses=[texts[i] for i in ix],
                quality=[qualities[i] for i in ix] if qualities is not None else None,
                reference=ref(ix[0]),
            )
            for g, ix in whole.items()
        ]
        resp = await client.score(groups, options, **labels)
        state.last_groups.extend(resp.groups)
        for ix, g in zip(whole.values(), resp.groups, strict=True):
            for i, r in zip(ix, g.rewards, strict=True):
                rewards[i] = r

    async def assemble_cut() -> None:
        if not cut:
            return
        rollouts = [
            Rollout(
                group_id=f"trl:{state.run_id}:{call_no}:{g}",
                group_size=n,
                index=(start + i) % n,
                prompt=ptexts[i],
                response=texts[i],
                quality=qualities[i] if qualities is not None else None,
                reference=ref(i),
            )
            for g, ix in cut.items()
            for i in ix
        ]
        order = [i for ix in cut.values() for i in ix]
        resp = await client.submit(rollouts, options, **labels)
        state.last_groups.extend(resp.groups)
        for i, r in zip(order, resp.rollouts, strict=True):
            rewards[i] = r.reward

    state.last_groups = []
    await asyncio.gather(score_whole(), assemble_cut())
    return rewards


def _run(options: OptionsLike, run: str | None, args: Any) -> str | None:
    """TrainingArguments.run_name, else the base name of output_dir; TRL does not pass them to reward functions."""
    output_dir = getattr(args, "output_dir", None)
    trainer = getattr(args, "run_name", None) or (
        os.path.basename(os.path.normpath(output_dir)) if output_dir else None
    )
    return adapter_run(options, run, trainer)


def darling_reward_func(
    num_generations: int,
    *,
    quality: QualityFn | None = None,
    reference_column: str | None = None,
    options: OptionsLike = None,
    url: str | None = None,
    api_key: str | None = None,
    client: RewardClient | None = None,
    run_id: str | None = None,
    process_index: int | None = None,
    num_processes: int | None = None,
    name: str = "darling",
    run: str | None = None,
    args: Any = None,
) -> Callable[..., list[float]]:
    """A synchronous TRL reward function. Process placement comes from RANK/WORLD_SIZE unless given.
    `run` labels the service's per-run figures; default $DARLING_RUN, else the run name of `args` (the trainer's
    GRPOConfig: run_name, else the output_dir's base name)."""
    state = TRLRewardState(num_generations, run_id, process_index, num_processes, run=_run(options, run, args))

    def reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        c = client or sync_client(url, api_key)
        return c.run(
            trl_rewards(c.aio, state, list(prompts), list(completions), kwargs, quality, reference_column, options)
        )

    reward.__name__ = name
    reward.state = state  # type: ignore[attr-defined]
    return reward


def darling_async_reward_func(
    num_generations: int,
    *,
    quality: QualityFn | None = None,
    reference_column: str | None = None,
    options: OptionsLike = None,
    url: str | None = None,
    api_key: str | None = None,
    client: AsyncRewardClient | None = None,
    run_id: str | None = None,
    process_index: int | None = None,
    num_processes: int | None = None,
    name: str = "darling",
    run: str | None = None,
    args: Any = None,
) -> Callable[..., Awaitable[list[float]]]:
    """An `async def` TRL reward function (TRL runs those on its own event loop, concurrently with others).
    `run` and `args`: as for darling_reward_func."""
    state = TRLRewardState(num_generations, run_id, process_index, num_processes, run=_run(options, run, args))

    async def reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        c = client or async_client(url, api_key)
        return await trl_rewards(c, state, list(prompts), list(completions), kwargs, quality, reference_column, options)

    reward.__name__ = name
    reward.state = state  # type: ignore[attr-defined]
    return reward
