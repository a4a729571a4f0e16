"""veRL reward managers that forward `non_tensor_batch["uid"]` as the group id.

veRL identifies the n rollouts of a prompt only by `uid` (and may reorder the batch, e.g. balance_batch), so
a group reward has to be computed per uid, never per position.

- `DarlingRewardManager`: the batch reward-manager interface of veRL 0.4-0.6 (`verl.workers.reward_manager`:
  `__init__(tokenizer, num_examine, compute_score=None, reward_fn_key="data_source", **kwargs)`,
  `__call__(data: DataProto, return_dict=False)` -> token-level reward tensor, the reward on each response's
  last valid token). One call holds whole groups: they are scored with POST /v1/rewards.
- `DarlingRewardLoopManager`: the per-sample "reward loop" interface of veRL >= 0.6
  (`verl.experimental.reward_loop`: `__init__(config, tokenizer, compute_score=None, ...)`,
  `async run_single(data)` -> `{"reward_score", "reward_extra_info"}`), where rollouts arrive one by one: it
  uses group assembly (POST /v1/rollouts) with group id = uid and n = `actor_rollout_ref.rollout.n`.

Quality: the veRL `compute_score(data_source, solution_str, ground_truth, extra_info)` passed to the manager
(its float, or the dict's "score"), else (batch manager) the reward-model worker's `rm_scores` summed per
response, else `reward_model.ground_truth` as the service verifier's reference, else the service's reward
model. torch is imported only inside the batch manager's call (veRL has it).
Importing this module registers both managers as "darling" when veRL is importable.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from darling_client.client import OptionsLike, RewardClient
from darling_client.integrations._common import adapter_run, async_client, sync_client
from darling_client.schemas import Rollout, RolloutGroup

ComputeScore = Callable[..., Any]


def _score_value(result: Any) -> float:
    if isinstance(result, Mapping):
        return float(result["score"])
    return float(result)


def _ground_truth(reward_model: Any) -> str | None:
    gt = reward_model.get("ground_truth") if isinstance(reward_model, Mapping) else None
    return None if gt is None else str(gt)


def _config_get(config: Any, path: str, default: Any = None) -> Any:
    node = config
    for part in path.split("."):
        if node is None:
            return default
        node = node.get(part) if isinstance(node, Mapping) else getattr(node, part, None)
    return default if node is None else node


class DarlingRewardManager:
    """Batch reward manager: whole groups by uid, scored in one chunked call."""

    def __init__(
        self,
        tokenizer: Any,
        num_examine: int = 0,
        compute_score: ComputeScore | None = None,
        reward_fn_key: str = "data_source",
        *,
        client: RewardClient | None = None,
        options: OptionsLike = None,
        url: str | None = None,
        api_key: str | None = None,
        run: str | None = None,
        **reward_kwargs: Any,
    ) -> None:
        """`run`: label of the service's per-run figures (veRL passes no config to batch managers: set it with
        `+reward_model.reward_kwargs.run=${trainer.experiment_name}`); default $DARLING_RUN."""
        self.tokenizer = tokenizer
        self.num_examine = num_examine
        self.compute_score = compute_score
        self.reward_fn_key = reward_fn_key
        self.reward_kwargs = reward_kwargs
        self.options = options
        self.run = adapter_run(options, run)
        self._client = client
        self._url, self._key = url, api_key

    @property
    def client(self) -> RewardClient:
        if self._client is None:
            self._client = sync_client(self._url, self._key)
        return self._client

    def _decode(self, data: Any) -> tuple[list[str], list[str], list[int]]:
        prompt_ids = data.batch["prompts"]
        response_ids = data.batch["responses"]
        mask = data.batch["attention_mask"]
        prompt_len = prompt_ids.shape[-1]
        valid_resp = mask[:, prompt_len:].sum(dim=-1).tolist()
        valid_prompt = mask[:, :prompt_len].sum(dim=-1).tolist()
        prompts, responses = [], []
        for i in range(len(valid_resp)):
            # veRL left-pads prompts and right-pads responses.
            p = prompt_ids[i][prompt_len - int(valid_prompt[i]) :]
            prompts.append(self.tokenizer.decode(p, skip_special_tokens=True))
            responses.append(self.tokenizer.decode(response_ids[i][: int(valid_resp[i])], skip_special_tokens=True))
        return prompts, responses, [int(v) for v in valid_resp]

    def __call__(self, data: Any, return_dict: bool = False) -> Any:
        import torch

        prompts, responses, lengths = self._decode(data)
        nt = data.non_tensor_batch
        size = len(responses)
        uids = [str(u) for u in nt["uid"]]
        truths = [_ground_truth(x) for x in nt["reward_model"]] if "reward_model" in nt else [None] * size
        sources = list(nt[self.reward_fn_key]) if self.reward_fn_key in nt else [None] * size
        extras = list(nt["extra_info"]) if "extra_info" in nt else [None] * size
        quality: list[float] | None = None
        if self.compute_score is not None:
            quality = [
                _score_value(
                    self.compute_score(
                        data_source=sources[i],
                        solution_str=responses[i],
                        ground_truth=truths[i],
                        extra_info=extras[i],
                        **self.reward_kwargs,
                    )
                )
                for i in range(size)
            ]
        elif "rm_scores" in data.batch.keys():  # noqa: SIM118  (TensorDict refuses `in` on itself)
            # A veRL reward-model worker ran: its token-level scores sum to each response's score.
            quality = [float(x) for x in data.batch["rm_scores"].sum(dim=-1).tolist()]
        members: dict[str, list[int]] = {}
        for i, u in enumerate(uids):
            members.setdefault(u, []).append(i)
        groups = [
            RolloutGroup(
                group_id=u,
                prompt=prompts[ix[0]],
                responses=[responses[i] for i in ix],
                quality=[quality[i] for i in ix] if quality is not None else None,
                reference=None if quality is not None else truths[ix[0]],
            )
            for u, ix in members.items()
        ]
        meta = getattr(data, "meta_info", None)
        step = meta.get("global_steps") if isinstance(meta, Mapping) else None
        resp = self.client.score(
            groups, self.options, run=self.run, step=step if isinstance(step, int) and step >= 0 else None
        )
        reward = [0.0] * size
        info: dict[str, list[float]] = {"darling_quality": [0.0] * size, "darling_diversity": [0.0] * size}
        info["darling_n_classes"] = [0.0] * size
        for ix, g in zip(members.values(), resp.groups, strict=True):
            for i, r in zip(ix, g.rollouts, strict=True):
                reward[i] = r.reward
                info["darling_quality"][i] = r.quality
                info["darling_diversity"][i] = r.diversity
                info["darling_n_classes"][i] = float(g.n_classes)
        tensor = torch.zeros_like(data.batch["responses"], dtype=torch.float32)
        for i, length in enumerate(lengths):
            if length > 0:
                tensor[i, length - 1] = reward[i]
        if return_dict:
            return {"reward_tensor": tensor, "reward_extra_info": info}
        return tensor


class DarlingRewardLoopManager:
    """Per-sample reward-loop manager: each rollout joins its uid's group on the service."""

    def __init__(
        self,
        config: Any,
        tokenizer: Any,
        compute_score: ComputeScore | None = None,
        reward_router_address: str | None = None,
        reward_model_tokenizer: Any = None,
        *,
        group_size: int | None = None,
        options: OptionsLike = None,
        url: str | None = None,
        api_key: str | None = None,
        run: str | None = None,
    ) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.compute_score = compute_score
        n = group_size or _config_get(config, "actor_rollout_ref.rollout.n")
        if not n:
            raise ValueError("group size unknown: pass group_size= or set actor_rollout_ref.rollout.n")
        self.group_size = int(n)
        self.options = options
        # The per-run figures are labelled with the experiment's name unless run= or $DARLING_RUN says otherwise.
        self.run = adapter_run(options, run, _config_get(config, "trainer.experiment_name"))
        self._url, self._key = url, api_key

    async def run_single(self, data: Any) -> dict[str, Any]:
        item = data[0]
        response_ids = item.batch["responses"]
        prompt_ids = item.batch["prompts"]
        mask = item.batch["attention_mask"]
        resp_len = response_ids.shape[-1]
        prompt_len = prompt_ids.shape[-1]
        valid_resp = int(mask[-resp_len:].sum())
        valid_prompt = int(mask[:prompt_len].sum())
        response = self.tokenizer.decode(response_ids[:valid_resp], skip_special_tokens=True)
        prompt = self.tokenizer.decode(prompt_ids[prompt_len - valid_prompt :], skip_special_tokens=True)
        nt = item.non_tensor_batch
        truth = _ground_truth(nt.get("reward_model"))
        quality: float | None = None
        if self.compute_score is not None:
            out = self.compute_score(
                data_source=nt.get("data_source"),
                solution_str=response,
                ground_truth=truth,
                extra_info=nt.get("extra_info", {}),
            )
            quality = _score_value(await out if inspect.isawaitable(out) else out)
        rollout = Rollout(
            group_id=f"verl:{nt['uid']}",
            group_size=self.group_size,
            index=None,  # the service numbers a uid's rollouts in arrival order
            prompt=prompt,
            response=response,
            quality=quality,
            reference=None if quality is not None else truth,
        )
        res = await async_client(self._url, self._key).submit([rollout], self.options, run=self.run)
        r = res.rollouts[0]
        n_classes = float(res.groups[0].n_classes) if res.groups else 0.0
        return {
            "reward_score": r.reward,
            "reward_extra_info": {
                "darling_quality": r.quality,
                "darling_diversity": r.diversity,
                "darling_n_classes": n_classes,
            },
        }


def _register() -> None:
    """Make both managers selectable as `reward_model.reward_manager=darling` when veRL is installed."""
    try:
        from verl.workers.reward_manager import register
    except Exception:  # veRL absent (or too old to have a registry): nothing to do
        pass
    else:
        register("darling")(DarlingRewardManager)
    try:
        from verl.experimental.reward_loop.reward_manager import register as register_loop
    except Exception:
        pass
    else:
        register_loop("darling")(DarlingRewardLoopManager)


_register()
