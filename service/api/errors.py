"""Every error leaves as JSON naming the field at fault; nothing leaves as a bare 500."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from darling_client.schemas import ErrorBody
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import NotReady, RequestError, ServiceOverloaded

log = logging.getLogger(__name__)


def field_path(loc: Sequence[Any]) -> str:
    """('body', 'groups', 0, 'quality') -> 'groups[0].quality'."""
    out = ""
    for part in loc:
        if part in ("body", "query", "path", "header"):
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def validation_error(errors: Sequence[Mapping[str, Any]]) -> RequestError:
    """Pydantic's errors as one 422 naming every field; each transport words them through here."""
    fields, parts = [], []
    for err in errors:
        path = field_path(err.get("loc", ()))
        fields.append(path)
        parts.append(f"{path}: {err.get('msg', 'invalid')}")
    return RequestError("; ".join(parts), fields)


def error_response(
    status: int, code: str, detail: str, fields: list[str], request: Request, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = ErrorBody(error=code, detail=detail, fields=fields, request_id=getattr(request.state, "request_id", None))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = validation_error(exc.errors())
        return error_response(err.status, err.code, err.detail, err.fields, request)

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        headers = None
        if isinstance(exc, (NotReady, ServiceOverloaded)):
            headers = {"Retry-After": str(max(1, round(exc.retry_after_s)))}
        return error_response(exc.status, exc.code, exc.detail, exc.fields, request, headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, "http_error", str(exc.detail), [], request, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, "internal_error", f"internal error: {type(exc).__name__}", [], request)
