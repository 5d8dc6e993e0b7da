"""API tokens for `kg serve`: created once (the secret is shown then and never again), stored as
a SHA-256 hash, listed, revoked.

A token has a scope: `read` (every GET) or `admin` (also profile changes and runs), and may be
limited to some collections (`collections`: their ids; NULL is every collection). The secret
is 256 random bits, so a plain SHA-256 is enough: there is nothing to brute-force that a slow
hash would protect, and a lookup by hash is one indexed query per request.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from kg.db import collections as kg_collections
from kg.db.models import ApiToken, utcnow
from kg.errors import NotFoundError, UsageError
from kg.profiles.validation import check_actor

PREFIX = "kgt_"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
# How stale `last_used_at` may get: a busy server writes it at most once a minute per token.
TOUCH_EVERY = timedelta(seconds=60)


class TokenScope(StrEnum):
    """What a token may do; admin includes read."""

    READ = "read"
    ADMIN = "admin"

    def allows(self, needed: TokenScope) -> bool:
        return self is TokenScope.ADMIN or needed is TokenScope.READ


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: the token's name, scope and the collection ids it may use
    (None: every collection)."""

    token_id: int | None
    name: str
    scope: TokenScope
    collections: tuple[int, ...] | None = None

    def may_use(self, collection_id: int) -> bool:
        return self.collections is None or collection_id in self.collections

    @property
    def actor(self) -> str:
        """How audit rows name the caller."""
        return f"token:{self.name}" if self.token_id is not None else self.name


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def parse_scope(value: str) -> TokenScope:
    try:
        return TokenScope(value)
    except ValueError:
        raise UsageError(f"--scope must be read or admin (got {value!r})") from None


def _check_name(name: str) -> str:
    if not NAME.match(name):
        raise UsageError(f"token name {name!r} is not allowed; use letters, digits, '.', '_', "
                         "':' or '-' (at most 64 characters)")
    return name


def _live(session: Session, name: str) -> ApiToken | None:
    return session.scalar(select(ApiToken).where(ApiToken.name == name,
                                                 ApiToken.revoked_at.is_(None)))


def create(session: Session, name: str, scope: str, *, by: str,
           collections: list[str] | tuple[str, ...] | None = None) -> tuple[dict[str, Any], str]:
    """A new token; returns (its row as a dict, the secret). The secret is not stored. With
    `collections` (names) it may use only those; without, every collection."""
    by = check_actor(by)
    _check_name(name)
    chosen = parse_scope(scope)
    ids = sorted({kg_collections.find(session, c).id for c in collections}) if collections \
        else None
    if _live(session, name) is not None:
        raise UsageError(f"a token named {name!r} exists; revoke it first "
                         f"(`kg admin tokens revoke {name}`) or choose another name")
    secret = PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(name=name, scope=chosen.value, token_hash=hash_secret(secret),
                     hint=secret[:len(PREFIX) + 4], created_at=utcnow(), created_by=by,
                     collections=ids)
    session.add(token)
    session.flush()
    return row(token, kg_collections.by_id(session)), secret


def collection_names(ids: list[int] | tuple[int, ...] | None,
                     names: dict[int, str]) -> list[str] | None:
    """A token's collections by name (None: every collection); a deleted one as `#id`."""
    if ids is None:
        return None
    return [names.get(i, f"#{i}") for i in ids]


def row(token: ApiToken, names: dict[int, str]) -> dict[str, Any]:
    """A token as plain data (no hash); `names` maps collection ids to names."""
    return {"id": token.id, "name": token.name, "scope": token.scope, "hint": token.hint + "…",
            "collections": collection_names(token.collections, names),
            "created_at": token.created_at, "created_by": token.created_by,
            "last_used_at": token.last_used_at, "revoked_at": token.revoked_at,
            "revoked_by": token.revoked_by}


def list_tokens(session: Session, *, include_revoked: bool = False) -> list[dict[str, Any]]:
    query = select(ApiToken).order_by(ApiToken.id)
    if not include_revoked:
        query = query.where(ApiToken.revoked_at.is_(None))
    names = kg_collections.by_id(session)
    return [row(t, names) for t in session.scalars(query)]


def revoke(session: Session, name: str, *, by: str) -> dict[str, Any]:
    """Revoke the live token of that name (requests with it fail from the next one on)."""
    by = check_actor(by)
    token = _live(session, name)
    if token is None:
        known = ", ".join(t["name"] for t in list_tokens(session)) or "none"
        raise NotFoundError(f"no live token named {name!r}; live tokens: {known}")
    token.revoked_at = utcnow()
    token.revoked_by = by
    session.flush()
    return row(token, kg_collections.by_id(session))


def forget_collection(session: Session, collection_id: int) -> int:
    """Drop a deleted collection's id from every token limited to it (SQLite may give the id
    to the next collection made, which such a token must not reach); returns how many tokens
    changed. A token left with no collection may use none."""
    changed = 0
    for token in session.scalars(select(ApiToken).where(ApiToken.collections.is_not(None))):
        ids = list(token.collections or [])
        if collection_id in ids:
            token.collections = [i for i in ids if i != collection_id]
            changed += 1
    session.flush()
    return changed


def any_live(session: Session) -> bool:
    """Whether at least one token can be used (then every API request must carry one)."""
    return session.scalar(select(ApiToken.id).where(ApiToken.revoked_at.is_(None))
                          .limit(1)) is not None


def any_issued(session: Session) -> bool:
    """Whether a token was ever created: from then on the API needs one (revoking them all
    locks the API; it does not open it again)."""
    return session.scalar(select(ApiToken.id).limit(1)) is not None


def authenticate(session: Session, secret: str) -> Principal | None:
    """The principal of a live token with this secret, or None."""
    if not secret.startswith(PREFIX):
        return None
    found = session.execute(select(ApiToken.id, ApiToken.name, ApiToken.scope,
                                   ApiToken.collections).where(
        ApiToken.token_hash == hash_secret(secret), ApiToken.revoked_at.is_(None))).first()
    if found is None:
        return None
    allowed = None if found.collections is None else tuple(int(i) for i in found.collections)
    return Principal(found.id, found.name, TokenScope(found.scope), allowed)


def touch(session: Session, token_id: int) -> None:
    """Record that a token was used (callers throttle this: it is a write)."""
    session.execute(update(ApiToken).where(ApiToken.id == token_id)
                    .values(last_used_at=utcnow()))
