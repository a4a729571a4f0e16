"""Routes that assemble groups from rollouts sent one by one: POST /v1/rollouts and OpenRLHF's protocol."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

from darling_client.schemas import ErrorBody, OpenRLHFRequest, OpenRLHFResponse, RolloutsRequest, RolloutsResponse
from fastapi import APIRouter, Depends, FastAPI, Request
from starlette.datastructures import State

from service.api.deps import get_scorer
from service.errors import NotReady
from service.groups import Assembler, make_store
from service.scoring import Scorer


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    assembler: Assembler | None = getattr(app.state, "assembler", None)
    if assembler is not None:
        app.state.assembler = None
        await assembler.close()


router = APIRouter(lifespan=_lifespan)

_errors: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody, "description": desc}
    for code, desc in [
        (401, "Missing or wrong API key"),
        (408, "The group was not complete within DARLING_GROUP_TIMEOUT_S; the message names the missing indices"),
        (409, "Conflicts with the group as first submitted (duplicate index, other prompt, group_size, ...)"),
        (413, "Over a size limit; the message names the field and the setting"),
        (422, "Invalid input; the message names the field"),
        (429, "Too many requests; see Retry-After"),
        (503, "Not ready, overloaded or the group store is down; see Retry-After"),
    ]
}


def get_assembler(request: Request, _: Annotated[Scorer, Depends(get_scorer)]) -> Assembler:
    return app_assembler(request.app.state)


def app_assembler(state: State) -> Assembler:
    """One Assembler per app, shared by HTTP and gRPC, made on first use (the scorer must be ready by then)."""
    assembler: Assembler | None = getattr(state, "assembler", None)
    if assembler is None:
        engine = state.engine

        def scorer() -> Scorer:
            s: Scorer | None = engine.scorer
            if s is None:
                raise NotReady("models are not loaded", retry_after_s=2.0)
            return s

        assembler = Assembler(state.settings, make_store(state.settings), scorer)
        state.assembler = assembler
    return assembler


@router.post("/v1/rollouts", response_model=RolloutsResponse, responses=_errors, tags=["rewards"])
async def rollouts(req: RolloutsRequest, assembler: Annotated[Assembler, Depends(get_assembler)]) -> RolloutsResponse:
    """Submit rollouts of groups whose other rollouts come in other requests (other processes, other replicas).

    The call returns when every group it touches holds `group_size` rollouts and has been scored, with the
    reward of each submitted rollout computed over its whole group. Resubmitting an identical rollout is safe.
    """
    return await assembler.submit(req)


@router.post("/v1/openrlhf", response_model=OpenRLHFResponse, responses=_errors, tags=["adapters"])
async def openrlhf(req: OpenRLHFRequest, assembler: Annotated[Assembler, Depends(get_assembler)]) -> OpenRLHFResponse:
    """OpenRLHF's remote reward protocol (`--remote_rm_url`, `--reward.remote_url`).

    Rollouts are grouped by prompt into groups of DARLING_OPENRLHF_GROUP_SIZE (n_samples_per_prompt), whether
    they come as whole batches or one per request; `labels`, when non-empty, are references for the verifier.
    `rewards` are DARLING rewards, `scores` the quality, `extra_logs` per-rollout quality, diversity, classes.
    """
    return await assembler.openrlhf(req)
