"""Exceptions the client raises. Every server error carries the fields of the server's ErrorBody.

Transports (HTTP here, gRPC elsewhere) map their own failures onto these classes, so retry logic and callers
never look at a status line or a gRPC code.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

from pydantic import ValidationError

from darling_client.schemas import ErrorBody


class DarlingError(Exception):
    """Base class of everything this package raises."""


class ConnectionFailed(DarlingError):
    """The request never got an answer: refused, reset, DNS, or timed out."""


class RequestNotSent(ConnectionFailed):
    """The request never left this process (connection refused, DNS, connect timeout, no free connection):
    the server did nothing, so any call may be retried."""


class ResponseLost(ConnectionFailed):
    """The request may have reached the server but no answer came back (read timeout, reset, a connection
    closed mid-response): the server may have done the work, so only idempotent calls are retried."""


class APIError(DarlingError):
    """The server answered with an error status."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        fields: list[str] | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.detail = detail
        self.fields = list(fields or [])
        self.request_id = request_id
        self.retry_after = retry_after
        where = f" [fields: {', '.join(self.fields)}]" if self.fields else ""
        super().__init__(f"HTTP {status} {code}: {detail}{where}")


class InvalidRequest(APIError):
    """400, 413 or 422: the request itself is wrong; never retried."""


class Unauthorized(APIError):
    """401 or 403: missing or wrong API key."""


class NotFound(APIError):
    """404: wrong base URL or a route this server does not have."""


class GroupIncomplete(APIError):
    """408: the group's other rollouts did not all arrive before the server's group deadline."""


class Conflict(APIError):
    """409: the rollout contradicts what the group already holds (duplicate index, other prompt or size)."""


class RateLimited(APIError):
    """429: too many requests; retried after Retry-After."""


class Unavailable(APIError):
    """503: not ready, draining or overloaded; retried after Retry-After."""


class DeadlineExceeded(APIError):
    """504: options.deadline_ms passed on the server."""


class ServerError(APIError):
    """Any other 5xx."""


RETRYABLE: tuple[type[DarlingError], ...] = (ConnectionFailed, RateLimited, Unavailable)

_BY_STATUS: dict[int, type[APIError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    408: GroupIncomplete,
    409: Conflict,
    413: InvalidRequest,
    422: InvalidRequest,
    429: RateLimited,
    503: Unavailable,
    504: DeadlineExceeded,
}


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


def error_from_response(status: int, content: bytes, headers: Mapping[str, str]) -> APIError:
    """The exception for an error status, with the ErrorBody fields when the body is one."""
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else InvalidRequest)
    retry_after = parse_retry_after(headers.get("retry-after"))
    try:
        payload: Any = json.loads(content)
        body = ErrorBody.model_validate(payload)
        return cls(status, body.error, body.detail, body.fields, body.request_id, retry_after)
    except (ValueError, ValidationError):
        text = content.decode("utf-8", "replace").strip()[:1000] or "(empty body)"
        return cls(status, "http_error", text, [], None, retry_after)
