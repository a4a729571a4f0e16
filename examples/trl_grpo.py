"""GRPO with TRL on DARLING rewards (quality x semantic diversity). Start the service (`make serve`), then
python examples/trl_grpo.py POLICY                        # a causal LM with a chat template: hub id or folder
torchrun --nproc_per_node 2 examples/trl_grpo.py POLICY   # groups may span processes: the service joins them
"""

import argparse
from typing import Any

import torch
from darling_client.integrations.trl import darling_async_reward_func, darling_reward_func
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

N = 4  # completions per prompt: the group DARLING scores together
PROMPTS = ["Tell me a fact about space.", "Name a fruit.", "Describe the sea.", "Write a line about rain."]


def concise(completions: list[Any], **kwargs: Any) -> list[float]:
    """Any TRL reward function can be the quality (accuracy, a judge, ...): DARLING multiplies it by diversity."""
    return [1.0 / (1.0 + len(c[-1]["content"]) / 100) for c in completions]


def make_trainer(policy: str, url: str, asynchronous: bool = False, **config: Any) -> GRPOTrainer:
    prompts = Dataset.from_dict({"prompt": [[{"role": "user", "content": p}] for p in PROMPTS]})
    make_reward = darling_async_reward_func if asynchronous else darling_reward_func
    reward = make_reward(num_generations=N, quality=concise, url=url)
    # DARLING's advantage is the reward minus the group mean: no division by the group's std.
    args = GRPOConfig(num_generations=N, scale_rewards="none", use_cpu=not torch.cuda.is_available(), **config)
    return GRPOTrainer(model=policy, reward_funcs=reward, train_dataset=prompts, args=args)


if __name__ == "__main__":
    cli = argparse.ArgumentParser()
    cli.add_argument("policy")
    cli.add_argument("--url", default="http://127.0.0.1:8000")
    cli.add_argument("--output-dir", default="grpo-darling")
    cli.add_argument("--steps", type=int, default=200)
    cli.add_argument("--batch-size", type=int, default=2 * N, help="completions per process and step")
    cli.add_argument("--max-completion-length", type=int, default=256)
    a = cli.parse_args()
    trainer = make_trainer(
        a.policy,
        a.url,
        output_dir=a.output_dir,
        max_steps=a.steps,
        per_device_train_batch_size=a.batch_size,
        max_completion_length=a.max_completion_length,
        logging_steps=1,
    )
    trainer.train()
    trainer.save_state()  # output_dir/trainer_state.json: what was logged (rewards/darling/mean, ...) per step
