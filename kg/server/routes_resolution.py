"""The grey zone of entity resolution over HTTP (issue #24): the pairs `kg concepts
duplicates` lists, and a person's answer to each: accept (a merge) or reject (kept apart).
Both are curation decisions naming the token, undone with `kg curation undo`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from kg import curation
from kg.db.models import Concept
from kg.errors import NotFoundError
from kg.matching.decide import Thresholds
from kg.resolution.passes import duplicates
from kg.server.auth import Admin, Reader
from kg.server.limits import MAX_ID
from kg.server.state import Scoped, json_response

router = APIRouter(prefix="/duplicates", tags=["curation"])
Threshold = Annotated[float, Query(ge=0, le=1)]


class PairBody(BaseModel):
    """Two concepts by id, as `GET /duplicates` lists them."""

    model_config = ConfigDict(extra="forbid")

    a: int = Field(ge=1, le=MAX_ID, description="One concept's id.")
    b: int = Field(ge=1, le=MAX_ID, description="The other concept's id.")


def _ids(session: Session, body: PairBody) -> tuple[str, str]:
    """The pair as references curation takes; a concept gone since the list was read is a
    404 (a later merge or deletion), not a label lookup of its number."""
    for concept_id in (body.a, body.b):
        if session.get(Concept, concept_id) is None:
            raise NotFoundError(f"no concept {concept_id} (merged or deleted since the list "
                                "was read); reload the duplicates")
    return str(body.a), str(body.b)


@router.get("", summary="Pairs of concepts that may be one (the grey zone), strongest first",
            description="Each pair: both ids, labels and types, the score and the signals "
                        "behind it. Pairs scoring at least `high` are merged by `kg resolve`, "
                        "below `low` kept apart; pairs a person kept apart or split are not "
                        "listed.")
def list_duplicates(state: Scoped, _who: Reader, high: Threshold = Thresholds.high,
                    low: Threshold = Thresholds.low,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Response:
    thresholds = Thresholds(high, low)  # low above high: 400, one line
    with state.db.session() as session:
        rows = duplicates(session, thresholds=thresholds)
    return json_response(rows[:limit])


@router.post("/accept", summary="Merge a pair: one concept (the better evidenced, else `a`) "
             "keeps its label and takes the other's labels, evidence and relationships")
def accept(body: PairBody, state: Scoped, who: Admin) -> Response:
    with state.db.session() as session:
        data = curation.merge(session, *_ids(session, body), by=who.actor)
    return json_response(data)


@router.post("/reject", summary="Keep a pair apart: resolution never merges or lists it again")
def reject(body: PairBody, state: Scoped, who: Admin) -> Response:
    with state.db.session() as session:
        data = curation.keep_apart(session, *_ids(session, body), by=who.actor)
    return json_response(data)
