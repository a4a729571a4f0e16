"""The ASGI middleware in front of every route: request ids, API keys, draining, the in-flight bound, the body
size limit, cancelling the work of a client that hung up, the access log and the HTTP metrics.

It is plain ASGI rather than a Starlette BaseHTTPMiddleware so that it costs one function call per request and
never buffers a response. Refusals are answered here, before any work, in the same ErrorBody JSON as the routes.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Any

from darling_client.schemas import ErrorBody, HealthResponse
from starlette.datastructures import Headers, MutableHeaders, State
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.ops import metrics
from service.ops.admission import Admission
from service.ops.logging import request_id_var
from service.ops.security import ApiKeys
from service.settings import Settings

log = logging.getLogger("service.access")

HEALTH_PATHS = frozenset({"/healthz", "/readyz"})
METRICS_PATH = "/metrics"
# Group assembly: exempt from the in-flight bound (see service/ops/admission.py).
ASSEMBLY_PATHS = frozenset({"/v1/rollouts", "/v1/openrlhf"})
# A client's id is kept only if it cannot forge log lines or blow up label sets.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")


def request_id(given: str | None) -> str:
    """The caller's X-Request-ID (HTTP header or gRPC metadata) if it is safe to log, else a fresh one."""
    if given is not None and _SAFE_ID.match(given):
        return given
    return uuid.uuid4().hex


class _TooLarge(Exception):
    pass


class OperationsMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings, state: State) -> None:
        self.app = app
        self.settings = settings
        self.state = state
        self.keys = ApiKeys(settings.keys)
        # The app's limiter, shared with gRPC; a bare middleware (no app factory) bounds HTTP alone.
        self.admission: Admission = getattr(state, "admission", None) or Admission(settings.max_inflight_requests)
        self._routes: frozenset[str] | None = None

    # ---- helpers ---------------------------------------------------------------------------------------------

    def _route(self, scope: Scope) -> str:
        """The route template for metric labels; unknown paths share one label so scanners cannot add series."""
        route = scope.get("route")
        template = getattr(route, "path", None)
        if isinstance(template, str):
            return template
        # Refused before routing: known only if the API schema lists the path.
        if self._routes is None:
            openapi = getattr(scope.get("app"), "openapi", None)
            schema: dict[str, Any] = openapi() if callable(openapi) else {}
            self._routes = frozenset([*schema.get("paths", {}), METRICS_PATH, *HEALTH_PATHS])
        path: str = scope["path"]
        return path if path in self._routes else "unmatched"

    def _needs_key(self, path: str) -> bool:
        if path in HEALTH_PATHS:
            return self.settings.auth_health
        if path == METRICS_PATH:
            return self.settings.auth_metrics
        return True

    @staticmethod
    def _error(status: int, code: str, detail: str, rid: str, headers: dict[str, str] | None = None) -> JSONResponse:
        body = ErrorBody(error=code, detail=detail, request_id=rid)
        return JSONResponse(body.model_dump(), status_code=status, headers=headers)

    def _refuse(self, scope: Scope, headers: Headers, kind: str, rid: str) -> JSONResponse | None:
        """A response that refuses the request before it reaches a route, or None to let it through."""
        path: str = scope["path"]
        if self._needs_key(path) and not self.keys.check(headers.get("authorization")):
            metrics.HTTP_REJECTED.labels("unauthorized").inc()
            return self._error(
                401,
                "unauthorized",
                "missing or wrong API key: send `Authorization: Bearer <key>`",
                rid,
                {"WWW-Authenticate": "Bearer"},
            )
        draining = bool(getattr(self.state, "draining", False))
        if draining and path == "/readyz":
            return JSONResponse(HealthResponse(status="draining").model_dump(), status_code=503)
        if kind != "api":
            return None
        if draining:
            metrics.HTTP_REJECTED.labels("draining").inc()
            return self._error(
                503, "not_ready", "the service is shutting down; retry on another replica", rid, {"Retry-After": "1"}
            )
        if path not in ASSEMBLY_PATHS and self.admission.full:
            metrics.HTTP_REJECTED.labels("too_many_requests").inc()
            return self._error(429, "too_many_requests", self.admission.refusal(), rid, {"Retry-After": "1"})
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.settings.max_body_bytes:
            return self._too_large(rid)
        return None

    def _too_large(self, rid: str) -> JSONResponse:
        metrics.HTTP_REJECTED.labels("body_too_large").inc()
        return self._error(
            413,
            "request_too_large",
            f"the request body is over {self.settings.max_body_bytes} bytes (DARLING_MAX_BODY_BYTES): split the batch",
            rid,
        )

    async def _read_body(self, receive: Receive) -> list[Message] | None:
        """The request's body messages, counted as they arrive (a chunked body has no Content-Length to trust).
        None when the client went away."""
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            messages.append(message)
            size += len(message.get("body", b""))
            if size > self.settings.max_body_bytes:
                raise _TooLarge
            if not message.get("more_body", False):
                return messages

    # ---- the request -----------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        rid = request_id(headers.get("x-request-id"))
        scope.setdefault("state", {})["request_id"] = rid
        token = request_id_var.set(rid)
        path: str = scope["path"]
        kind = "health" if path in HEALTH_PATHS else "metrics" if path == METRICS_PATH else "api"
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                MutableHeaders(scope=message)["X-Request-ID"] = rid
            await send(message)

        started = time.perf_counter()
        counted = False
        outcome = "ok"
        try:
            refusal = self._refuse(scope, headers, kind, rid)
            if refusal is not None:
                await refusal(scope, receive, send_with_id)
                return
            if kind != "api":
                await self.app(scope, receive, send_with_id)
                return
            if path not in ASSEMBLY_PATHS:
                self.admission.enter()
                counted = True
                metrics.HTTP_INFLIGHT.inc()
            try:
                body = await self._read_body(receive)
            except _TooLarge:
                await self._too_large(rid)(scope, receive, send_with_id)
                return
            if body is None:
                outcome = "client_gone"
                return
            if path in ASSEMBLY_PATHS:
                # A stored rollout belongs to its group, not to the connection that brought it: left running.
                await self.app(scope, _replay(body, receive), send_with_id)
            elif not await _cancel_on_disconnect(self.app, scope, body, receive, send_with_id):
                outcome = "client_gone"
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except Exception:
            outcome = "error"
            status = status or 500
            raise
        finally:
            if counted:
                self.admission.leave()
                metrics.HTTP_INFLIGHT.dec()
            elapsed = time.perf_counter() - started
            route = self._route(scope)
            method: str = scope.get("method", "")
            label = str(status) if status else outcome
            metrics.HTTP_REQUESTS.labels(route, method, label).inc()
            metrics.HTTP_LATENCY.labels(route, method).observe(elapsed)
            if self.settings.access_log:
                self._access(kind, method, path, route, label, elapsed, scope, outcome)
            request_id_var.reset(token)

    @staticmethod
    def _access(
        kind: str, method: str, path: str, route: str, status: str, elapsed: float, scope: Scope, outcome: str
    ) -> None:
        # Probes every few seconds would drown the log: they go at debug. No header, query or body is logged.
        level = logging.DEBUG if kind != "api" and outcome == "ok" else logging.INFO
        client = scope.get("client")
        extra: dict[str, Any] = {
            "method": method,
            "path": path if route != "unmatched" else path[:200],
            "status": status,
            "duration_ms": round(elapsed * 1000.0, 2),
            "client": client[0] if client else None,
            "outcome": outcome,
        }
        log.log(level, "%s %s %s", method, path[:200], status, extra=extra)


async def _cancel_on_disconnect(app: ASGIApp, scope: Scope, body: list[Message], receive: Receive, send: Send) -> bool:
    """Run the app on the buffered body while watching the connection; True when it answered, False when the
    client hung up first. Then the app's work is cancelled, which releases its queued model items (a batcher
    drops an item nobody waits for before it costs a forward). The middleware reads the connection from here
    on; the app's receive hands out the body, then the disconnect when it comes."""
    gone: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
    pending = list(body)
    answered = False

    async def app_receive() -> Message:
        if pending:
            return pending.pop(0)
        return await asyncio.shield(gone)

    async def app_send(message: Message) -> None:
        nonlocal answered
        await send(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            answered = True

    async def watch() -> None:
        while (message := await receive())["type"] != "http.disconnect":
            pass
        gone.set_result(message)

    task = asyncio.ensure_future(app(scope, app_receive, app_send))
    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        # A server reports the end of a connection once the response is complete, too: that is no hang-up.
        if not task.done() and not answered:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return False
        await task
        return True
    finally:
        for t in (task, watcher):
            t.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive that hands out the buffered body, then defers to the real one (for disconnects)."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
