"""Running the HTTP server with a graceful SIGTERM.

On SIGTERM (or SIGINT) the app is marked draining at once: /readyz answers 503 and a request that still arrives
on an open connection gets 503 with Retry-After. uvicorn then stops accepting connections and waits up to
`shutdown_grace_s` for the requests in flight (calls waiting on group assembly answer a retryable 503 a little
before it ends if their group is not done by then); only after that does the lifespan stop the batchers (which finish
what is queued) and the process exit.
"""

from __future__ import annotations

import logging
from types import FrameType

import uvicorn
from fastapi import FastAPI

from service.ops import logging as service_logging
from service.settings import Settings

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.fastapi_app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:
            log.info(
                "signal %d: draining, in-flight requests have %.0fs to finish",
                sig,
                self.config.timeout_graceful_shutdown or 0,
            )
        from service.app import begin_drain

        begin_drain(self.fastapi_app.state, float(self.config.timeout_graceful_shutdown or 0))
        super().handle_exit(sig, frame)


def serve(settings: Settings) -> None:
    from service.app import create_app

    service_logging.configure(settings.log_level, settings.log_format, secrets=settings.keys)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # keep the JSON handler configured above
        access_log=False,  # the middleware writes the access log, with request ids
        timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_s)),
        lifespan="on",
    )
    DrainingServer(config, app).run()
