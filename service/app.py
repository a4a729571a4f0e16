"""The app factory. The lifespan loads and warms the models in the background so that /healthz answers
at once and /readyz turns 200 when the models are ready."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.datastructures import State

from service.api import errors, openrlhf, rollouts, runs
from service.api.routes import router
from service.engine.engine import Engine
from service.ops import metrics
from service.ops.admission import Admission
from service.ops.middleware import OperationsMiddleware
from service.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = Engine(settings, observer=app.state.batch_metrics)
        app.state.engine = engine
        loading = asyncio.create_task(engine.start())
        loading.add_done_callback(lambda _: _record_models(engine))
        grpc_server = None
        try:
            if settings.grpc_port is not None:
                # Imported here: grpcio is only loaded by deployments that ask for gRPC.
                from service.grpc.server import GrpcServer

                grpc_server = GrpcServer(
                    settings,
                    engine,
                    draining=lambda: bool(app.state.draining),
                    assembler=lambda: rollouts.app_assembler(app.state),
                    admission=app.state.admission,
                )
                app.state.grpc_port = await grpc_server.start()
            yield
        finally:
            # Under `serve`, SIGTERM began the drain (and HTTP's grace period is over by now); otherwise it
            # begins here, with gRPC's grace period.
            begin_drain(app.state, settings.shutdown_grace_s)
            if grpc_server is not None:
                await grpc_server.stop()
            # Only now: in-flight SubmitRollouts calls on gRPC need the assembler until the server stopped.
            assembler = getattr(app.state, "assembler", None)
            if assembler is not None:
                app.state.assembler = None
                await assembler.close()
            if not loading.done():
                loading.cancel()
            with contextlib.suppress(BaseException):
                await loading
            await engine.stop()

    app = FastAPI(
        title="Darling Reward Service",
        version="0.1.0",
        description="DARLING rewards (quality x semantic diversity) for RL training of language models.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.draining = False
    app.state.admission = Admission(settings.max_inflight_requests)  # one in-flight bound for HTTP and gRPC
    app.state.drain_deadline = None  # time.monotonic() by which assembly waiters must be answered (begin_drain)
    app.state.batch_metrics = metrics.BatchMetrics(lambda: getattr(getattr(app.state, "engine", None), "batchers", []))
    errors.install(app)
    app.include_router(router)
    app.include_router(metrics.router)
    app.include_router(rollouts.router)
    app.include_router(openrlhf.router)
    app.include_router(runs.router)
    app.add_middleware(OperationsMiddleware, settings=settings, state=app.state)
    return app


def begin_drain(state: State, grace_s: float) -> None:
    """Mark the app draining; calls waiting on group assembly get until the drain deadline (a little before the
    grace period ends, so that their retryable 503 still reaches the client) to be answered."""
    state.draining = True
    if getattr(state, "drain_deadline", None) is None:
        state.drain_deadline = time.monotonic() + grace_s - min(2.0, grace_s / 4)


def _record_models(engine: Engine) -> None:
    b = engine.backends
    if b is not None:
        metrics.record_models({"classifier": b.classifier, "verifier": b.verifier, "reward_model": b.reward_model})
