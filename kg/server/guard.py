"""What a browser must not be able to do to a server on this machine, checked before routing.

- `Host` must name this server: a loopback name or address (`localhost`, `127.0.0.1`, `[::1]`,
  any port), the `--host` it listens on, or an `--allowed-host`. A page whose own name was
  re-pointed at 127.0.0.1 (DNS rebinding) sends its own name and is refused.
- A state-changing request (POST, PUT, PATCH, DELETE) that carries `Origin` must come from
  this server's own origin or a `--cors-origin`. Browsers send `Origin` on every cross-site
  POST, so a page elsewhere cannot act through the user's browser; clients that are not
  browsers (the CLI, curl, scripts) send none and are not affected.
- A state-changing request's body must have a content type its route declares (JSON routes:
  `application/json`; `POST /runs` also `multipart/form-data`; routes without a body: none or
  `application/json`). `text/plain`, form-encoded or type-less bodies are what a page can send
  cross-site without a CORS preflight, so they never reach an endpoint. This check needs the
  route, so it is a dependency of every route (`declared_content_type`), run before the
  endpoint and before its body is validated.

Refusals are one JSON line like every other error: 403 (host, origin) or 415 (content type).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from kg.server.errors import ApiError
from kg.server.limits import send_error

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARDS = frozenset({"", "0.0.0.0", "::"})  # listen everywhere: names no host of its own
JSON = "application/json"


def host_name(value: str) -> str:
    """The host part of a `Host` header or an `--allowed-host`, lower case, without port,
    brackets or a final dot."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value[1:]
    if value.count(":") == 1:
        value = value.partition(":")[0]
    return value.rstrip(".")


def allowed_hosts(listen_host: str, extra: Iterable[str]) -> frozenset[str]:
    """The host names this server answers to."""
    names = set(LOOPBACK_NAMES)
    own = host_name(listen_host)
    if own not in WILDCARDS:
        names.add(own)
    names.update(host_name(h) for h in extra if host_name(h))
    return frozenset(names)


def _loopback_address(name: str) -> bool:
    # An address cannot be re-pointed by DNS, and 127.0.0.0/8 is this machine.
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def declared_types(route: APIRoute) -> frozenset[str]:
    """The content types a route's body may have; empty for a route that takes no body."""
    body = (route.openapi_extra or {}).get("requestBody", {}).get("content")
    if body:
        return frozenset(str(t).lower() for t in body)
    if route.body_field is None:
        return frozenset()
    return frozenset({str(getattr(route.body_field.field_info, "media_type", JSON)).lower()})


async def declared_content_type(request: Request) -> None:
    """A dependency of every route: a state-changing request's body has a declared type."""
    if request.method.upper() not in STATE_CHANGING:
        return
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    declared = declared_types(route)
    headers = request.headers
    media = headers.get("content-type", "").partition(";")[0].strip().lower()
    has_body = headers.get("content-length", "0").strip() not in ("", "0") \
        or "transfer-encoding" in headers
    if not media:
        if has_body:
            wanted = " or ".join(sorted(declared)) or JSON
            raise ApiError(415, f"a body needs a Content-Type header ({wanted})")
        return
    if media in declared or (not declared and media == JSON):
        return
    where = f"{request.method} {request.url.path}"
    if not declared:
        raise ApiError(415, f"{where} takes no body (got {media[:100]})")
    raise ApiError(415, f"{where} accepts {' or '.join(sorted(declared))} (got {media[:100]})")


class RequestGuard:
    """Host allow-list and same-origin check of state-changing requests (see the module)."""

    def __init__(self, app: ASGIApp, *, hosts: frozenset[str],
                 cors_origins: Sequence[str]) -> None:
        self.app = app
        self.hosts = hosts
        self.cors_origins = frozenset(o.strip().rstrip("/").lower() for o in cors_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers") or []}
        refusal = self._host(headers)
        if refusal is None and scope.get("method", "GET").upper() in STATE_CHANGING:
            refusal = self._origin(headers)
        if refusal is not None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await send_error(send, refusal)
            return
        await self.app(scope, receive, send)

    def _host(self, headers: dict[str, str]) -> ApiError | None:
        raw = headers.get("host")
        if raw is None:  # HTTP/1.0 without Host: no browser sends that
            return None
        name = host_name(raw)
        if name in self.hosts or _loopback_address(name):
            return None
        shown = raw.strip()[:100]
        return ApiError(403, f"this server does not answer to the host name {shown!r}; if it "
                             f"is yours, start kg serve with --allowed-host {host_name(shown)}")

    def _origin(self, headers: dict[str, str]) -> ApiError | None:
        origin = headers.get("origin")
        if origin is None:  # not a browser (or a same-origin GET): nothing cross-site here
            return None
        origin = origin.strip()
        try:
            netloc = urlsplit(origin).netloc.lower()
        except ValueError:
            netloc = ""
        host = headers.get("host", "").strip().lower()
        if (netloc and netloc == host) or origin.rstrip("/").lower() in self.cors_origins:
            return None
        return ApiError(403, f"cross-site request refused: a page at {origin[:100]!r} may not "
                             "change this server (start kg serve with --cors-origin ORIGIN to "
                             "let it)")
