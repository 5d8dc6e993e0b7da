"""Bearer tokens: who a request acts as, and whether its scope allows the endpoint.

Every API request needs a live token. Without any token there is no open mode: `kg serve`
creates one on its first start and prints a URL carrying it; until then (and once all tokens are
revoked) every request is refused. Only an app built with `open_until_first_token` on a
loopback address (tests, embedding programs) lets requests in without a token until the first
one exists. Lookups are cached for `token_ttl_s`, so a revoked token stops working within that
time without a database query per request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from kg import tokens
from kg.db import Database
from kg.server.errors import ApiError
from kg.tokens import Principal, TokenScope

log = logging.getLogger(__name__)
OPEN = Principal(None, "api", TokenScope.ADMIN)  # an app opened until the first token (tests)
CACHE_MAX = 1024
CHALLENGE = {"WWW-Authenticate": "Bearer"}

bearer = HTTPBearer(auto_error=False, description="A token from `kg admin tokens create NAME`.")


class Authenticator:
    """Turns an Authorization header into a Principal, with short-lived caches."""

    def __init__(self, db: Database, *, open_until_first_token: bool,
                 ttl_s: float = 2.0) -> None:
        self.db = db
        self.open_until_first_token = open_until_first_token
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._exists: tuple[bool, float] | None = None
        self._cache: dict[str, tuple[Principal | None, float]] = {}
        self._touched: dict[int, float] = {}
        self._toucher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kg-token-touch")

    def close(self) -> None:
        self._toucher.shutdown(wait=True)

    def required(self) -> bool:
        """Whether requests must carry a token."""
        if not self.open_until_first_token:
            return True
        now = time.monotonic()
        with self._lock:
            if self._exists is not None and self._exists[1] > now:
                return self._exists[0]
        with self.db.session() as session:
            exists = tokens.any_issued(session)
        with self._lock:
            self._exists = (exists, now + self.ttl_s)
        return exists

    def principal(self, header: str | None) -> Principal:
        """The caller, or a 401 saying what is missing."""
        if not self.required():
            return OPEN
        if not header:
            raise ApiError(401, "this server needs a token: open the URL `kg serve` printed at "
                                "its first start, or send `Authorization: Bearer TOKEN` (an "
                                "operator creates one with `kg admin tokens create NAME`)",
                           CHALLENGE)
        scheme, _, secret = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise ApiError(401, "the Authorization header must be `Bearer TOKEN`", CHALLENGE)
        found = self._lookup(secret.strip())
        if found is None:
            raise ApiError(401, "the token is not valid (unknown or revoked); ask an operator "
                                "for one (`kg admin tokens list`)", CHALLENGE)
        return found

    def optional(self, header: str | None) -> Principal | None:
        """The caller, or None for one without a token on a server that needs tokens (probes
        answer those too, with less); a token that is sent must be valid (else 401)."""
        if not header and self.required():
            return None
        return self.principal(header)

    def _lookup(self, secret: str) -> Principal | None:
        key = tokens.hash_secret(secret)
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[1] > now:
                return cached[0]
        with self.db.session() as session:
            found = tokens.authenticate(session, secret)
        with self._lock:
            if len(self._cache) >= CACHE_MAX:
                self._cache.clear()  # unknown secrets must not grow memory without bound
            self._cache[key] = (found, now + self.ttl_s)
        if found is not None and found.token_id is not None:
            self._touch(found.token_id, now)
        return found

    def _touch(self, token_id: int, now: float) -> None:
        with self._lock:
            if now - self._touched.get(token_id, -1e9) < tokens.TOUCH_EVERY.total_seconds():
                return
            self._touched[token_id] = now
        self._toucher.submit(self._write_touch, token_id)

    def _write_touch(self, token_id: int) -> None:
        try:
            with self.db.session() as session:
                tokens.touch(session, token_id)
        except Exception as exc:  # bookkeeping only: never fail a request over it
            log.info("could not record the use of token %d: %s", token_id, exc)


def caller(request: Request,
           _credentials: Annotated[HTTPAuthorizationCredentials | None,
                                   Depends(bearer)]) -> Principal:
    """A dependency: the caller (else 401). One per request, whichever dependencies ask."""
    auth: Authenticator = request.app.state.kg.auth
    return auth.principal(request.headers.get("authorization"))


Caller = Annotated[Principal, Depends(caller)]


def require(needed: TokenScope) -> Callable[..., Principal]:
    """A dependency: the caller, if its scope allows `needed` (else 401 or 403)."""

    def dependency(principal: Caller) -> Principal:
        if not principal.scope.allows(needed):
            raise ApiError(403, f"token {principal.name} has the {principal.scope} scope; this "
                                f"needs {needed} (`kg admin tokens create NAME --scope {needed}`)")
        return principal

    return dependency


read_access = require(TokenScope.READ)
admin_access = require(TokenScope.ADMIN)
Reader = Annotated[Principal, Depends(read_access)]
Admin = Annotated[Principal, Depends(admin_access)]
