"""The app factory. The lifespan loads and warms the models in the background so that /healthz answers
at once and /readyz turns 200 when the models are ready."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from service.api import errors
from service.api.routes import router
from service.engine import Engine
from service.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = Engine(settings)
        app.state.engine = engine
        loading = asyncio.create_task(engine.start())
        try:
            yield
        finally:
            app.state.draining = True
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
    errors.install(app)
    app.include_router(router)
    return app
