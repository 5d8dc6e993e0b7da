"""Which collection a request works in: `/c/{collection}/...` names it, the same routes without
the prefix mean `default`.

Names are looked up in memory (the `collections` table is small), refreshed every `ttl_s` and
on a miss, so a new collection answers at once and a renamed one under its new name at once
(its old name stops working within `ttl_s`). Each request gets a handle of the server's
database working in its collection; on PostgreSQL the handle is also enforced (row-level
security for that one collection), whatever the token may use otherwise.
"""

from __future__ import annotations

import threading
import time

from kg.db import Database
from kg.db import collections as kg_collections
from kg.db.models import DEFAULT_COLLECTION_ID
from kg.errors import NotFoundError
from kg.server.errors import ApiError
from kg.tokens import Principal

HANDLES_MAX = 256  # renames leave stale handles behind: bounded like the token cache


class CollectionIndex:
    """Collection names and ids, cached for `ttl_s`; and a database handle per collection."""

    def __init__(self, db: Database, ttl_s: float = 2.0) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._ids: dict[int, str] = {}
        self._names: dict[str, int] = {}
        self._loaded = -1e9
        self._handles: dict[tuple[int, str], Database] = {}

    def _load(self) -> None:
        with self.db.session() as session:
            ids = kg_collections.by_id(session)
        with self._lock:
            self._ids = ids
            self._names = {name: i for i, name in ids.items()}
            self._loaded = time.monotonic()

    def _stale(self) -> bool:
        return time.monotonic() - self._loaded > self.ttl_s

    def names(self) -> dict[int, str]:
        """Every collection, id to name."""
        if self._stale():
            self._load()
        return self._ids

    def lookup(self, name: str, principal: Principal) -> tuple[int, str]:
        """(id, name) of a collection, or a 404 naming those the caller may use."""
        if self._stale():
            self._load()
        found = self._names.get(name)
        if found is None:
            self._load()  # made since the last load?
            found = self._names.get(name)
        if found is None:
            raise NotFoundError(f"no collection {name!r}; existing: "
                                f"{', '.join(self.allowed(principal)) or 'none you may use'}"
                                f" (create it with `kg collections create {name}`)")
        return found, name

    def allowed(self, principal: Principal) -> list[str]:
        """Names of the collections this caller may use, by id (others are not its business)."""
        return [n for i, n in sorted(self.names().items()) if principal.may_use(i)]

    def check(self, principal: Principal, collection_id: int, name: str) -> None:
        """A 403 unless the caller's token may use this collection."""
        if principal.may_use(collection_id):
            return
        allowed = self.allowed(principal)
        may = (f"may use only {', '.join(allowed)}" if allowed
               else "may use no collection (the ones it was made for were deleted)")
        raise ApiError(403, f"token {principal.name} {may}, not {name!r} (an operator makes a "
                            f"token for it with `kg admin tokens create NAME --collection "
                            f"{name}`)")

    def database(self, collection_id: int, name: str) -> Database:
        """The server's database working in (and, on PostgreSQL, held to) one collection."""
        key = (collection_id, name)
        with self._lock:
            handle = self._handles.get(key)
            if handle is None:
                if len(self._handles) >= HANDLES_MAX:
                    self._handles.clear()
                handle = self.db.scoped(collection_id, name, enforce=(collection_id,))
                self._handles[key] = handle
        return handle

    def resolve(self, name: str | None, principal: Principal) -> Database:
        """The handle a request works with: its collection (None: default), if its token may
        use it (else 403; an unknown name is a 404)."""
        if name is None:
            collection_id, name = DEFAULT_COLLECTION_ID, kg_collections.DEFAULT
        else:
            collection_id, name = self.lookup(name, principal)
        self.check(principal, collection_id, name)
        return self.database(collection_id, name)
