"""Every error the API returns is `{"error": "one line"}` with the status that fits it."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException

from kg.errors import (
    ConflictError,
    DatabaseError,
    KgError,
    NotFoundError,
    ProviderError,
    UsageError,
)

log = logging.getLogger(__name__)
MAX_LINE = 500


class ApiError(HTTPException):
    """An error with its HTTP status and the one line the client sees."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=status, detail=one_line(message), headers=headers)


def one_line(message: str) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= MAX_LINE else text[:MAX_LINE - 1] + "…"


def error_response(status: int, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": one_line(message)}, status_code=status, headers=headers)


def status_of(exc: KgError) -> int:
    """The HTTP status of one of kg's own errors."""
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, UsageError):
        return 400
    if isinstance(exc, DatabaseError):
        return 503
    if isinstance(exc, ProviderError):
        return 502  # the LLM backend (a server behind this one) failed or refused
    return 500


def _where(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if not parts:
        return "request"
    kind, rest = parts[0], parts[1:]
    names = {"query": "query parameter", "path": "path parameter", "header": "header",
             "body": "body field", "cookie": "cookie"}
    if kind in names:
        return f"{names[kind]} {'.'.join(rest)}" if rest else "request body"
    return ".".join(parts)


def validation_message(exc: RequestValidationError) -> tuple[int, str]:
    """FastAPI's list of validation errors as (status, one line): malformed JSON is a 400,
    a request that does not match the declared shape a 422."""
    errors = list(exc.errors())
    if not errors:
        return 422, "the request does not match this endpoint; see /docs"
    first = errors[0]
    if first.get("type") == "json_invalid":
        ctx = first.get("ctx") or {}
        return 400, f"malformed JSON body: {ctx.get('error', first.get('msg'))}"
    where = _where(first.get("loc", ()))
    message = first.get("msg", "invalid")
    if first.get("type") == "missing":
        text = f"{where} is required"
    else:
        shown = first.get("input")
        got = f" (got {shown!r})" if isinstance(shown, str | int | float | bool) else ""
        text = f"{where}: {message}{got}"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return 422, text + more


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into one JSON line."""

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}; see /docs"
        elif exc.status_code == 405 and message == "Method Not Allowed":
            message = f"{request.method} is not allowed on {request.url.path}; see /docs"
        return error_response(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message = validation_message(exc)
        return error_response(status, message)

    @app.exception_handler(KgError)
    async def kg_error(request: Request, exc: KgError) -> JSONResponse:
        status = status_of(exc)
        if status >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, exc.message)
        return error_response(status, exc.message)

    @app.exception_handler(OperationalError)
    async def database_down(request: Request, exc: OperationalError) -> JSONResponse:
        # Reads outside a kg session (event polling, exports) meet the driver's own error.
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        log.warning("%s %s: database error: %s", request.method, request.url.path, reason)
        return error_response(503, f"database error: {reason}")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(500, f"internal error ({type(exc).__name__}); see the server log")
