"""Request size limits and the page's security headers, as plain ASGI middleware.

A body larger than its limit is refused with 413 before the endpoint sees it: at once when the
client declares its length, or as soon as the bytes received pass the limit (chunked uploads).
Numbers in URLs are bounded the same way: an id beyond the database's 64-bit integers names no
row, so it is a 422 before any query is made.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import Path, Query
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kg.server.errors import ApiError

# The largest value a 64-bit integer column holds: ids, run numbers and event ids above it
# would make PostgreSQL (and SQLite) fail the query instead of finding nothing.
MAX_ID = 2**63 - 1
RowId = Annotated[int, Path(ge=1, le=MAX_ID)]
OptionalRowIdQuery = Annotated[int | None, Query(ge=1, le=MAX_ID)]
EventIdQuery = Annotated[int, Query(ge=0, le=MAX_ID)]

# The page and /docs may load nothing from elsewhere (no CDN: works air-gapped) and run no
# inline script: /docs starts Swagger UI from a file too, so an injection in either page has
# no script to run, and the token the page keeps in sessionStorage stays out of reach.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
DOCS_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
COMMON_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
PAGE_HEADERS = [(b"content-security-policy", PAGE_CSP.encode()), (b"x-frame-options", b"DENY")]
DOCS_HEADERS = [(b"content-security-policy", DOCS_CSP.encode()), (b"x-frame-options", b"DENY")]


def _mb(limit: int) -> str:
    return f"{limit / (1024 * 1024):g} MB"


def too_large(limit: int, kind: str) -> ApiError:
    return ApiError(413, f"the {kind} is larger than this server accepts ({_mb(limit)}); "
                    "send less" + (" or start `kg serve` with a larger --max-upload-mb"
                                   if kind == "upload" else ""))


class BodyLimit:
    """Refuse bodies over `json_limit` bytes (uploads: `upload_limit`) with a one-line 413."""

    def __init__(self, app: ASGIApp, json_limit: int, upload_limit: int) -> None:
        self.app = app
        self.json_limit = json_limit
        self.upload_limit = upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        upload = headers.get(b"content-type", b"").startswith(b"multipart/form-data")
        limit, kind = (self.upload_limit, "upload") if upload else (self.json_limit, "body")
        declared = headers.get(b"content-length")
        # More digits than any limit has: too large, without parsing a huge number.
        if declared is not None and declared.isdigit() and (
                len(declared) > len(str(limit)) or int(declared) > limit):
            await send_error(send, too_large(limit, kind))
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Raised inside the endpoint's read: FastAPI and Starlette pass an
                    # HTTPException through, and the error handler answers it.
                    raise too_large(limit, kind)
            return message

        await self.app(scope, limited, send)


async def send_error(send: Send, error: ApiError) -> None:
    """Answer with the error's one JSON line, before any endpoint ran."""
    body = json.dumps({"error": error.detail}).encode()
    await send({"type": "http.response.start", "status": error.status_code,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class SecurityHeaders:
    """nosniff and no-referrer everywhere; a strict CSP and no framing on the page and /docs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        page = path == "/" or path.startswith("/static/")
        docs = path == "/docs"

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra: list[Any] = list(COMMON_HEADERS)
                if page:
                    extra += PAGE_HEADERS
                elif docs:
                    extra += DOCS_HEADERS
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)
