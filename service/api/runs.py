"""GET /v1/runs/{run}/stats: a training run's rolling diversity figures (see service/ops/runs.py)."""

from __future__ import annotations

from typing import Annotated

from darling_client.schemas import RUN_MAX_LENGTH, RUN_PATTERN, ErrorBody, RunStats
from fastapi import APIRouter, Depends, Path

from service.api.deps import get_engine
from service.engine.engine import Engine
from service.errors import NotFound

router = APIRouter()


@router.get(
    "/v1/runs/{run}/stats",
    response_model=RunStats,
    responses={
        401: {"model": ErrorBody, "description": "Missing or wrong API key"},
        404: {"model": ErrorBody, "description": "No group was scored with this run label (or it was dropped)"},
        422: {"model": ErrorBody, "description": "Not a valid run label"},
    },
    tags=["runs"],
)
async def run_stats(
    run: Annotated[str, Path(min_length=1, max_length=RUN_MAX_LENGTH, pattern=RUN_PATTERN)],
    engine: Annotated[Engine, Depends(get_engine)],
) -> RunStats:
    """Rolling figures of the groups scored with `options.run` = `run`: the last DARLING_RUN_STATS_WINDOW groups,
    and per step for groups that sent `options.step`."""
    stats = engine.runs.stats(run)
    if stats is None:
        kept = engine.settings.run_stats_max_runs
        raise NotFound(
            f"no figures for run {run!r}: no group was scored with options.run={run!r} since this replica "
            f"started, or it was dropped as the least recently active of more than {kept} runs "
            "(DARLING_RUN_STATS_MAX_RUNS)",
            ["run"],
        )
    return stats
