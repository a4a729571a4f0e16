"""Errors the scoring path raises, with the HTTP status and the fields they name.

Transport layers (HTTP, gRPC) map these to their own status codes; the message is the same everywhere.
"""

from __future__ import annotations


class RequestError(Exception):
    status = 422
    code = "invalid_request"

    def __init__(self, detail: str, fields: list[str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.fields = fields or []


class TooLarge(RequestError):
    status = 413
    code = "request_too_large"


class NotFound(RequestError):
    status = 404
    code = "not_found"


class Retryable(RequestError):
    """A failure that says nothing about the request itself: the same call may succeed after `retry_after_s`."""

    def __init__(self, detail: str, retry_after_s: float = 2.0) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class NotReady(Retryable):
    status = 503
    code = "not_ready"


class ServiceOverloaded(Retryable):
    status = 503
    code = "overloaded"


class DeadlineExceeded(RequestError):
    status = 504
    code = "deadline_exceeded"


class Conflict(RequestError):
    status = 409
    code = "conflict"
