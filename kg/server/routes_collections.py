"""`GET /collections`: the collections a token may use, with what each holds. Making, renaming
and deleting them is `kg collections ...` on the server's machine."""

from __future__ import annotations

from fastapi import APIRouter, Response

from kg.db import collections as kg_collections
from kg.server.auth import Reader
from kg.server.state import State, json_response

router = APIRouter(tags=["collections"])


@router.get("/collections", summary="The collections this token may use, with their counts",
            description="Each is served under `/c/{name}/...`; `default` also without the "
                        "prefix.")
def list_collections(state: State, who: Reader) -> Response:
    db = state.db
    if who.collections is not None:
        # The counts read graph tables: for a limited token, the database holds them to its
        # collections too (PostgreSQL), as it does on the collection routes.
        db = db.scoped(db.collection_id, db.collection, enforce=who.collections)
    with db.session() as session:
        rows = [row for row in kg_collections.list_all(session) if who.may_use(row["id"])]
    return json_response(rows)
