"""FastAPI dependencies: the engine, readiness."""

from __future__ import annotations

from fastapi import Request

from service.engine.engine import Engine
from service.engine.scoring import Scorer
from service.errors import NotReady


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_scorer(request: Request) -> Scorer:
    return ready_scorer(get_engine(request), getattr(request.app.state, "draining", False))


def ready_scorer(engine: Engine, draining: bool) -> Scorer:
    """The scorer, or NotReady with the reason; every transport asks here so the messages are the same."""
    if draining:
        raise NotReady("the service is shutting down; retry on another replica", retry_after_s=1.0)
    if engine.error is not None:
        raise NotReady(f"model loading failed: {type(engine.error).__name__}: {engine.error}", retry_after_s=30.0)
    if not engine.ready.is_set() or engine.scorer is None:
        raise NotReady("models are still loading; retry shortly (see GET /readyz)", retry_after_s=2.0)
    return engine.scorer
