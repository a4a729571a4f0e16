"""OpenRLHF's remote reward protocol: POST /v1/openrlhf, and how its requests map onto group assembly."""

from __future__ import annotations

import hashlib
import re
from typing import Annotated

from darling_client.schemas import (
    RUN_MAX_LENGTH,
    RUN_PATTERN,
    OpenRLHFRequest,
    OpenRLHFResponse,
    RewardOptions,
    Rollout,
    RolloutsRequest,
)
from fastapi import APIRouter, Depends, Query

from service.api.rollouts import ERRORS, get_assembler
from service.assembly.assembler import Assembler, content_keys
from service.errors import RequestError
from service.settings import Settings

router = APIRouter()

_ROLLOUT_FIELD = re.compile(r"^rollouts\[(\d+)\].*$")

# End-of-sequence markers OpenRLHF leaves in `query` (it decodes with skip_special_tokens=False).
_EOS_MARKERS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "</s>", "<|end_of_text|>", "<eos>")


def openrlhf_response(query: str, prompt: str) -> str:
    """The response part of OpenRLHF's query (= prompt + response), without trailing end-of-sequence markers."""
    text = query[len(prompt) :] if query.startswith(prompt) else query
    stripped = True
    while stripped:
        stripped = False
        text = text.rstrip()
        for marker in _EOS_MARKERS:
            if text.endswith(marker):
                text = text[: -len(marker)]
                stripped = True
    return text


def retry_window_s(settings: Settings) -> float:
    """How long after its first arrival a query is taken for a retry of itself: a retry comes while its group
    is assembled (at most DARLING_GROUP_TIMEOUT_S) or soon after; later, the same text is a new rollout."""
    return 2.0 * settings.group_timeout_s


async def openrlhf_rewards(assembler: Assembler, req: OpenRLHFRequest, run: str | None = None) -> OpenRLHFResponse:
    """Map one OpenRLHF request onto rollouts of groups by prompt, submit them, and answer in OpenRLHF's shape.
    `run`: the run label when the body has none (the route's `?run=` query parameter)."""
    n = len(req.query)
    if req.prompts is None:
        raise RequestError(
            "prompts is missing: this route groups rollouts by prompt (OpenRLHF sends it since 0.5.x)",
            ["prompts"],
        )
    if len(req.prompts) != n:
        raise RequestError(f"prompts has {len(req.prompts)} items but query has {n}", ["prompts"])
    if req.labels is not None and len(req.labels) != n:
        raise RequestError(f"labels has {len(req.labels)} items but query has {n}", ["labels"])
    size = assembler.settings.openrlhf_group_size
    # Slots per prompt, assigned atomically (across replicas too): slot // n is the group, slot % n the index.
    # A query keeps the slot it was first given (keyed by its text, see content_keys) while that slot is in
    # the prompt's current or previous group and was given within the retry window: a retry lands in its own
    # group and shifts nothing after it (docs/trainers.md, "Retries").
    positions: dict[str, list[int]] = {}
    for i, p in enumerate(req.prompts):
        positions.setdefault(p, []).append(i)
    rollouts: list[Rollout | None] = [None] * n
    held: list[tuple[str, list[int]]] = []
    for prompt, members in positions.items():
        key = "openrlhf:" + hashlib.blake2b(prompt.encode(), digest_size=16).hexdigest()
        names = content_keys([req.query[i] for i in members])
        slots = await assembler.assign_slots(key, names, size, retry_window_s(assembler.settings))
        held.append((key, slots))
        for slot, i in zip(slots, members, strict=True):
            label = req.labels[i] if req.labels is not None else None
            rollouts[i] = Rollout(
                group_id=f"{key}:{slot // size}",
                group_size=size,
                index=slot % size,
                prompt=prompt,
                response=openrlhf_response(req.query[i], prompt),
                reference=label if label else None,
            )
    try:
        done = await assembler.submit(
            RolloutsRequest(rollouts=[r for r in rollouts if r is not None], options=RewardOptions(run=req.run or run)),
            held,
        )
    except RequestError as exc:
        # Name the fields of the request the trainer actually sent.
        exc.fields = [_ROLLOUT_FIELD.sub(r"query[\1]", f) for f in exc.fields]
        raise
    n_classes = {g.group_id: float(g.n_classes) for g in done.groups}
    return OpenRLHFResponse(
        rewards=[r.reward for r in done.rollouts],
        scores=[r.quality for r in done.rollouts],
        extra_logs={
            "darling_quality": [r.quality for r in done.rollouts],
            "darling_diversity": [r.diversity for r in done.rollouts],
            "darling_n_classes": [n_classes[r.group_id] for r in done.rollouts],
        },
    )


@router.post("/v1/openrlhf", response_model=OpenRLHFResponse, responses=ERRORS, tags=["adapters"])
async def openrlhf(
    req: OpenRLHFRequest,
    assembler: Annotated[Assembler, Depends(get_assembler)],
    run: Annotated[str | None, Query(min_length=1, max_length=RUN_MAX_LENGTH, pattern=RUN_PATTERN)] = None,
) -> OpenRLHFResponse:
    """OpenRLHF's remote reward protocol (`--remote_rm_url`, `--reward.remote_url`).

    Rollouts are grouped by prompt into groups of DARLING_OPENRLHF_GROUP_SIZE (n_samples_per_prompt), whether
    they come as whole batches or one per request; `labels`, when non-empty, are references for the verifier.
    `rewards` are DARLING rewards, `scores` the quality, `extra_logs` per-rollout quality, diversity, classes.
    A run label (body `run`, else `?run=` in the URL given to OpenRLHF) keeps per-run figures
    (GET /v1/runs/{run}/stats).
    """
    return await openrlhf_rewards(assembler, req, run)
