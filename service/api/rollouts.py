"""POST /v1/rollouts: groups assembled from rollouts sent one by one (other processes, other replicas)."""

from __future__ import annotations

from typing import Annotated

from darling_client.schemas import ErrorBody, RolloutsRequest, RolloutsResponse
from fastapi import APIRouter, Depends, Request
from starlette.datastructures import State

from service.api.deps import get_scorer
from service.assembly import make_store
from service.assembly.assembler import Assembler
from service.engine.scoring import Scorer
from service.errors import NotReady

# No router lifespan: the app's lifespan closes the assembler, after both transports have stopped (a router's
# lifespan would run inside the app's, before gRPC's grace period, and cut its SubmitRollouts calls short).
router = APIRouter()

ERRORS: dict[int | str, dict[str, object]] = {
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

        assembler = Assembler(
            state.settings, make_store(state.settings), scorer, lambda: getattr(state, "drain_deadline", None)
        )
        state.assembler = assembler
    return assembler


@router.post("/v1/rollouts", response_model=RolloutsResponse, responses=ERRORS, tags=["rewards"])
async def rollouts(req: RolloutsRequest, assembler: Annotated[Assembler, Depends(get_assembler)]) -> RolloutsResponse:
    """Submit rollouts of groups whose other rollouts come in other requests (other processes, other replicas).

    The call returns when every group it touches holds `group_size` rollouts and has been scored, with the
    reward of each submitted rollout computed over its whole group. Resubmitting an identical rollout is safe.
    """
    return await assembler.submit(req)
