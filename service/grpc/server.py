"""The grpc.aio server that `darling-reward serve` runs beside HTTP when DARLING_GRPC_PORT is set.

It shares the HTTP app's Engine (so the same batchers and caches serve both transports), serves the standard
health checking service (SERVING once the models are ready; NOT_SERVING while loading, after a failed load and
from the moment the service drains) and server reflection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import grpc
import grpc.aio
from darling_client.proto import reward_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service.assembly.assembler import Assembler
from service.engine.engine import Engine
from service.grpc.auth import BearerAuth
from service.grpc.servicer import SERVICE, RewardServicer
from service.ops.admission import Admission
from service.ops.security import ApiKeys
from service.settings import Settings

log = logging.getLogger(__name__)

SERVICE_NAME: str = SERVICE
HEALTH_POLL_S = 0.25


def bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class LiveHealth(health.aio.HealthServicer):
    """Check answers from the live state, as /readyz does, so a probe never sees a status older than the
    service's; Watch streams follow the statuses the server sets (within HEALTH_POLL_S)."""

    def __init__(self, serving: Callable[[], bool]) -> None:
        super().__init__()
        self._serving = serving

    async def Check(
        self,
        request: health_pb2.HealthCheckRequest,
        context: grpc.aio.ServicerContext[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse],
    ) -> health_pb2.HealthCheckResponse:
        if request.service not in ("", SERVICE_NAME):
            return await super().Check(request, context)
        ok = self._serving()
        return health_pb2.HealthCheckResponse(
            status=health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
        )


class GrpcServer:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        draining: Callable[[], bool] = lambda: False,
        assembler: Callable[[], Assembler] | None = None,
        admission: Admission | None = None,
    ) -> None:
        """`assembler`: the app's group assembler (shared with POST /v1/rollouts); None = SubmitRollouts refused.
        `admission`: the app's in-flight bound, shared with HTTP; None = one of its own."""
        self.settings = settings
        self.engine = engine
        self.draining = draining
        self.assembler = assembler
        self.admission = admission or Admission(settings.max_inflight_requests)
        self.port: int | None = None
        self.health = LiveHealth(self.serving)
        self._stopping = False
        self._server: grpc.aio.Server | None = None
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Binds and starts serving; returns the bound port (the one picked when grpc_port is 0)."""
        s = self.settings
        assert s.grpc_port is not None, "DARLING_GRPC_PORT is not set"
        server = grpc.aio.server(
            interceptors=[BearerAuth(ApiKeys(s.keys), auth_health=s.auth_health)],
            # The same body limit as HTTP; replies are bounded by the request limits, so they may be large.
            options=[("grpc.max_receive_message_length", s.max_body_bytes), ("grpc.max_send_message_length", -1)],
        )
        reward_pb2_grpc.add_RewardServiceServicer_to_server(
            RewardServicer(s, self.engine, self.draining, self.assembler, self.admission), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        address = bind_address(s.host, s.grpc_port)
        port = server.add_insecure_port(address)
        if not port:
            raise RuntimeError(f"gRPC could not bind {address}")
        await self._set(health_pb2.HealthCheckResponse.NOT_SERVING)
        await server.start()
        self._server, self.port = server, port
        self._watch = asyncio.create_task(self._track_readiness())
        log.info("gRPC serving on %s", bind_address(s.host, port))
        return port

    def serving(self) -> bool:
        e = self.engine
        live = e.ready.is_set() and e.error is None and e.scorer is not None
        return live and not self._stopping and not self.draining()

    async def _set(self, status: int) -> None:
        for name in ("", SERVICE_NAME):  # "" is the whole server, what probes ask by default
            await self.health.set(name, status)

    async def _track_readiness(self) -> None:
        # Polled rather than event-driven: draining is a flag that SIGTERM flips, with nothing to await on.
        current = False
        while True:
            now = self.serving()
            if now != current:
                ok, no = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
                await self._set(ok if now else no)
                current = now
            await asyncio.sleep(HEALTH_POLL_S)

    async def stop(self, grace_s: float | None = None) -> None:
        """NOT_SERVING at once, then in-flight calls get up to `grace_s` (default DARLING_SHUTDOWN_GRACE_S)."""
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        await self.health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(self.settings.shutdown_grace_s if grace_s is None else grace_s)
            self._server = None
