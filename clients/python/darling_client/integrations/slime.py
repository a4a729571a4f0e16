"""slime group reward (convention of slime 0.1/0.2: `--group-rm --custom-rm-path MODULE.FUNCTION`, called as
`await fn(args, samples, **kwargs)` once per full group of `n_samples_per_prompt` samples, returning one
float per sample in order).

    --group-rm --custom-rm-path darling_client.integrations.slime.group_rm

Quality per sample: `sample.metadata["quality"]` when every sample has one, else `sample.label` as the
verifier's reference, else the service's reward model. The service: $DARLING_URL (or `args.darling_url`).
Run label of the service's per-run figures: `args.darling_run`, else $DARLING_RUN, else `args.wandb_group`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from darling_client.integrations._common import adapter_run, async_client, prompt_text
from darling_client.schemas import RolloutGroup


def _quality(samples: Sequence[Any]) -> list[float] | None:
    values = []
    for s in samples:
        meta = getattr(s, "metadata", None)
        q = meta.get("quality") if isinstance(meta, dict) else None
        if q is None:
            return None
        values.append(float(q))
    return values


def _reference(samples: Sequence[Any]) -> str | None:
    label = getattr(samples[0], "label", None)
    return label if isinstance(label, str) and label != "" else None


def to_group(samples: Sequence[Any], group_id: str | None = None) -> RolloutGroup:
    quality = _quality(samples)
    return RolloutGroup(
        group_id=group_id,
        prompt=prompt_text(samples[0].prompt),
        responses=[str(s.response) for s in samples],
        quality=quality,
        reference=None if quality is not None else _reference(samples),
    )


async def group_rm(args: Any, samples: Sequence[Any], **kwargs: Any) -> list[float]:
    """One DARLING reward per sample of one group."""
    if not samples:
        return []
    client = async_client(getattr(args, "darling_url", None), getattr(args, "darling_api_key", None))
    run = adapter_run(None, getattr(args, "darling_run", None), getattr(args, "wandb_group", None))
    resp = await client.score([to_group(samples)], run=run)
    return list(resp.groups[0].rewards)
