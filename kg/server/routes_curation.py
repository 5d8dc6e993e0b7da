"""Curation decisions over HTTP: the list `kg curation list` prints, and undo, so a merge or a
keep-apart made through `/duplicates` can be taken back without a shell. Undo is an admin
action recorded under the token's name, as `kg curation undo` records the user's."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from kg import curation
from kg.server.auth import Admin, Reader
from kg.server.limits import RowId
from kg.server.state import Scoped, json_response

router = APIRouter(prefix="/curation", tags=["curation"])


class UndoBody(BaseModel):
    """How far an undo reaches."""

    model_config = ConfigDict(extra="forbid")

    cascade: bool = Field(default=False, description="Also undo, newest first, the later "
                          "merges built on this one (otherwise they make it a 409).")


@router.get("", summary="Curation decisions (merges, renames, deletions, pairs kept apart), "
            "newest first, with who made them and whether they were undone")
def list_decisions(state: Scoped, _who: Reader,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 50,
                   include_undone: bool = True) -> Response:
    with state.db.session() as session:
        rows = curation.list_decisions(session, limit=limit, include_undone=include_undone)
    return json_response(rows)


@router.post("/{decision_id}/undo", summary="Put back what a decision changed and mark it "
             "undone; a merge later merges built on is refused (409) unless `cascade`")
def undo(decision_id: RowId, state: Scoped, who: Admin,
         body: UndoBody | None = None) -> Response:
    with state.db.session() as session:
        data = curation.undo(session, decision_id, by=who.actor,
                             cascade=body.cascade if body else False)
    return json_response(data)
