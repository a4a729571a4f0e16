"""How a request reaches the service. The client's retry and chunking logic talks only to `Transport`, so
another wire (gRPC) is one more class with the same `call`; everything HTTP-specific lives in HttpTransport."""

from __future__ import annotations

from typing import Any, Literal, Protocol
from urllib.parse import quote

import httpx

from darling_client.errors import RequestNotSent, ResponseLost, ServerError, error_from_response

Operation = Literal["rewards", "rollouts", "openrlhf", "healthz", "readyz", "run_stats"]

# Operation -> (method, path). The one place that knows the HTTP routes. A GET's `{name}` is filled from its body.
ROUTES: dict[Operation, tuple[str, str]] = {
    "rewards": ("POST", "/v1/rewards"),
    "rollouts": ("POST", "/v1/rollouts"),
    "openrlhf": ("POST", "/v1/openrlhf"),
    "healthz": ("GET", "/healthz"),
    "readyz": ("GET", "/readyz"),
    "run_stats": ("GET", "/v1/runs/{run}/stats"),
}


# Failures before a byte of the request could reach the server: retrying them can never repeat any work.
NOT_SENT: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
)


class Transport(Protocol):
    async def call(
        self, op: Operation, body: dict[str, Any] | None, timeout: float, request_id: str | None = None
    ) -> dict[str, Any]:
        """Send one request; return the decoded success body or raise a darling_client.errors exception.
        `request_id`: sent as X-Request-ID (gRPC: x-request-id metadata); the same for every retry of a call."""
        ...

    async def aclose(self) -> None: ...


class HttpTransport:
    """JSON over HTTP with httpx. `transport` lets tests plug in httpx.MockTransport or an ASGI app."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        connect_timeout: float = 5.0,
        max_connections: int = 64,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        hdrs = {"User-Agent": "darling-reward-client/0.1", **(headers or {})}
        if api_key:
            hdrs["Authorization"] = f"Bearer {api_key}"
        self.connect_timeout = connect_timeout
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=hdrs,
            transport=transport,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    async def call(
        self, op: Operation, body: dict[str, Any] | None, timeout: float, request_id: str | None = None
    ) -> dict[str, Any]:
        method, path = ROUTES[op]
        if method == "GET":
            path = path.format(**{k: quote(str(v), safe="") for k, v in (body or {}).items()})
            body = None
        t = httpx.Timeout(timeout, connect=min(self.connect_timeout, timeout))
        headers = {"X-Request-ID": request_id} if request_id else None
        try:
            resp = await self._client.request(method, path, json=body, timeout=t, headers=headers)
        except httpx.TransportError as exc:
            lost = RequestNotSent if isinstance(exc, NOT_SENT) else ResponseLost
            raise lost(f"{method} {path} (request id {request_id}): {type(exc).__name__}: {exc}") from exc
        if resp.status_code >= 400:
            raise error_from_response(resp.status_code, resp.content, resp.headers)
        try:
            data: Any = resp.json()
        except ValueError as exc:
            raise ServerError(resp.status_code, "bad_response", f"not JSON: {resp.text[:200]!r}") from exc
        if not isinstance(data, dict):
            raise ServerError(resp.status_code, "bad_response", f"expected a JSON object, got {type(data).__name__}")
        return data

    async def aclose(self) -> None:
        await self._client.aclose()
