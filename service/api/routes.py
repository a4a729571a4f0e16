"""The HTTP routes."""

from __future__ import annotations

from typing import Annotated

from darling_client.schemas import ErrorBody, HealthResponse, ModelInfo, RewardRequest, RewardResponse
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from service.api.deps import get_engine, get_scorer
from service.engine.engine import Engine
from service.engine.scoring import Scorer

router = APIRouter()

_errors: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody, "description": desc}
    for code, desc in [
        (401, "Missing or wrong API key"),
        (413, "Over a size limit; the message names the field and the setting"),
        (422, "Invalid input; the message names the field"),
        (429, "Too many requests; see Retry-After"),
        (503, "Not ready or overloaded; see Retry-After"),
        (504, "options.deadline_ms passed"),
    ]
}


@router.post("/v1/rewards", response_model=RewardResponse, responses=_errors, tags=["rewards"])
async def rewards(req: RewardRequest, scorer: Annotated[Scorer, Depends(get_scorer)]) -> RewardResponse:
    """Score one or many groups of rollouts with the DARLING reward (quality x semantic diversity)."""
    return await scorer.score(req)


def model_info(engine: Engine) -> ModelInfo | None:
    b = engine.backends
    if b is None:
        return None
    return ModelInfo(
        classifier=b.classifier.id,
        classifier_fingerprint=b.classifier.fingerprint,
        threshold=b.classifier.default_threshold,
        quality_model=getattr(b.reward_model, "id", None),
        verifier=b.verifier is not None,
        device=b.classifier.device,
    )


@router.get("/healthz", response_model=HealthResponse, tags=["health"])
async def healthz() -> HealthResponse:
    """Liveness: the process serves HTTP."""
    return HealthResponse(status="alive")


@router.get("/readyz", response_model=HealthResponse, responses={503: {"model": HealthResponse}}, tags=["health"])
async def readyz(engine: Annotated[Engine, Depends(get_engine)]) -> HealthResponse | JSONResponse:
    """Readiness: models loaded and warmed, and not shutting down."""
    from fastapi import Request  # noqa: F401  (kept local: readiness must not depend on scorer state)

    if engine.ready.is_set() and engine.error is None:
        return HealthResponse(status="ready", models=model_info(engine))
    status = "failed" if engine.error is not None else "loading"
    return JSONResponse(HealthResponse(status=status).model_dump(), status_code=503)
