"""The graph over HTTP: concepts, relationships, documents, the view around a concept, and the
streamed export, of one collection (`/c/NAME/...`; without the prefix: default). Every answer
comes from the read-side functions the CLI uses."""

from __future__ import annotations

import io
import logging
import queue
import threading
from collections.abc import Iterator
from typing import Annotated, Any, TextIO, cast

from fastapi import APIRouter, Depends, Path, Query, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from kg import graph, queries
from kg.db.models import Concept
from kg.db.scope import parse_as_of
from kg.errors import UsageError
from kg.export import FORMATS, ExportFilter, export_graph, pages
from kg.export.source import TYPE_COLUMN
from kg.server.auth import read_access
from kg.server.limits import OptionalRowIdQuery, RowId
from kg.server.state import Scoped, ServerState, json_response

log = logging.getLogger(__name__)
router = APIRouter(tags=["graph"], dependencies=[Depends(read_access)])

# Formats that stream as one file (csv is two files: use the CLI for it).
MEDIA = {"graphml": ("application/xml", "graphml"), "gexf": ("application/xml", "gexf"),
         "jsonl": ("application/x-ndjson", "jsonl"), "cypher": ("text/plain", "cypher"),
         "turtle": ("text/turtle", "ttl")}
PIPE_CHUNK = 64 * 1024
PIPE_DEPTH = 8
_END = object()


@router.get("/concepts", summary="Concepts, most mentioned first; `search` matches labels and "
            "aliases")
def list_concepts(state: Scoped,
                  search: Annotated[str | None, Query(max_length=200)] = None,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> Response:
    with state.db.session() as session:
        rows = queries.list_concepts(session, search, limit)
    return json_response(rows)


def _concept_type(session: Session, concept_id: int) -> Any:
    if TYPE_COLUMN is None:
        return None
    return session.scalar(select(TYPE_COLUMN).where(Concept.id == concept_id))


@router.get("/concepts/{ref:path}", summary="One concept (by id, label or alias): aliases, "
            "relationships both ways, verbatim evidence with document and offsets")
def show_concept(ref: str, state: Scoped,
                 evidence: Annotated[int, Query(ge=1, le=500)] = 20) -> Response:
    with state.db.session() as session:
        data = queries.concept_detail(session, ref, evidence_limit=evidence)
        data.setdefault("type", _concept_type(session, data["id"]))
    return json_response(data)


@router.get("/relationships", summary="Relationships, filtered by type, one concept (either "
            "end) and confidence")
def list_relationships(state: Scoped,
                       type: Annotated[str | None, Query(max_length=64)] = None,
                       concept: Annotated[str | None, Query(max_length=200)] = None,
                       min_confidence: Annotated[float | None, Query(ge=0, le=1)] = None,
                       limit: Annotated[int, Query(ge=1, le=5000)] = 100) -> Response:
    with state.db.session() as session:
        rows = graph.list_relationships(session, type=type, concept=concept,
                                        min_confidence=min_confidence, limit=limit)
    return json_response(rows)


@router.get("/graph", summary="Nodes and edges around a concept, for the graph view",
            description="Concepts within `depth` relationships of `center` (either direction),"
                        " closest first, at most `limit` of them besides the center; "
                        "`truncated` says whether some were left out; `as_of` (a date or "
                        "time) shows the graph as it was then.")
def graph_view(center: Annotated[str, Query(min_length=1, max_length=200)], state: Scoped,
               depth: Annotated[int, Query(ge=1, le=graph.MAX_DEPTH)] = 1,
               limit: Annotated[int, Query(ge=1, le=5000)] = 200,
               as_of: Annotated[str | None, Query(max_length=40)] = None) -> Response:
    when = parse_as_of(as_of, "as_of") if as_of is not None else None  # bad: 400, one line
    with state.db.session() as session:
        found = graph.neighbors(session, center, depth=depth, limit=limit, as_of=when)
    root = found["concept"]
    nodes = [{"id": root["id"], "label": root["label"], "distance": 0}, *found["neighbors"]]
    edges = [{"id": r["id"], "source": r["source_id"], "target": r["target_id"],
              "type": r["type"], "confidence": r["confidence"], "evidence": r["evidence"]}
             for r in found["relationships"]]
    return json_response({"center": root, "depth": depth, "nodes": nodes, "edges": edges,
                          "truncated": found["truncated"]})


@router.get("/documents", summary="Documents with status, chunk and evidence counts")
def list_documents(state: Scoped,
                   search: Annotated[str | None, Query(max_length=1024)] = None,
                   limit: Annotated[int, Query(ge=1, le=5000)] = 100) -> Response:
    with state.db.session() as session:
        rows = graph.list_documents(session, search=search, limit=limit)
    return json_response(rows)


# -- a page of an image or scanned PDF, to see evidence where it came from -----------------------

@router.get("/documents/{document_id}/page/{number}", summary="A page of an image or scanned "
            "PDF as a PNG thumbnail (at most 1024 px)", response_class=Response,
            responses={200: {"content": {"image/png": {}}}},
            description="Rendered from the original file, which must still be where it was "
                        "ingested from, unchanged. `X-Page-Width` and `X-Page-Height` give the "
                        "size of the page as read: the pixels of the evidence boxes.")
def page_image(document_id: RowId, number: Annotated[int, Path(ge=1, le=100_000)],
               state: Scoped) -> Response:
    with state.db.session() as session:
        page = pages.find(session, document_id, number)
    image = pages.render(page)  # no connection held meanwhile
    # One row is one version of one file (its hash checked): the picture never changes.
    return Response(image.png, media_type="image/png",
                    headers={"X-Page-Width": str(image.width),
                             "X-Page-Height": str(image.height),
                             "Cache-Control": "private, max-age=86400"})


# -- the export, streamed -----------------------------------------------------------------------

class _Abandoned(Exception):
    """The client went away: the export stops."""


class _Pipe(io.TextIOBase):
    """A text stream an export thread writes into; the response reads it in chunks. Bounded,
    so a slow client slows the export down instead of filling memory."""

    def __init__(self) -> None:
        super().__init__()
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=PIPE_DEPTH)
        self.abandoned = threading.Event()
        self._parts: list[str] = []
        self._size = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._parts.append(text)
        self._size += len(text)
        if self._size >= PIPE_CHUNK:
            self._send()
        return len(text)

    def _send(self) -> None:
        data = "".join(self._parts).encode("utf-8")
        self._parts, self._size = [], 0
        if data:
            self._put(data)

    def _put(self, item: Any) -> None:
        while True:
            if self.abandoned.is_set():
                raise _Abandoned()
            try:
                self.queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def finish(self, error: BaseException | None = None) -> None:
        try:
            if error is None:
                self._send()
            self._put(error if error is not None else _END)
        except _Abandoned:
            pass


def _export(state: ServerState, fmt: str, scope: ExportFilter, base_iri: str, pipe: _Pipe) -> None:
    try:
        export_graph(state.db, fmt, scope=scope, base_iri=base_iri, stream=cast(TextIO, pipe))
    except _Abandoned:
        log.info("export %s: the client left", fmt)
        return
    except BaseException as exc:
        pipe.finish(exc)
        return
    pipe.finish()


def _drain(first: bytes, pipe: _Pipe) -> Iterator[bytes]:
    try:
        yield first
        while True:
            item = pipe.queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                # Too late for a status code: end the response without its final chunk, so
                # the client sees an incomplete transfer rather than a short file.
                log.error("export failed midway: %s", item)
                raise item
            yield item
    finally:
        pipe.abandoned.set()


@router.get("/export", summary="The graph (or part of it) in one export format, streamed",
            response_class=StreamingResponse,
            description="Formats: " + "; ".join(f"{k}: {v}" for k, v in FORMATS.items()
                                                if k in MEDIA))
def export(format: Annotated[str, Query(description="graphml, gexf, jsonl, cypher or turtle")],
           state: Scoped, run: OptionalRowIdQuery = None,
           document: str | None = None, min_confidence: float | None = None,
           base_iri: Annotated[str, Query(max_length=1000)] = "urn:kg:") -> Response:
    if format == "csv":
        raise UsageError("the csv export is two files; use `kg export --format csv -o DIR`, "
                         f"or one of {', '.join(MEDIA)} here")
    if format not in MEDIA:
        raise UsageError(f"unknown export format {format!r}; choose one of {', '.join(MEDIA)}")
    scope = ExportFilter(run=run, document=document, min_confidence=min_confidence)
    pipe = _Pipe()
    threading.Thread(target=_export, args=(state, format, scope, base_iri, pipe),
                     name="kg-export", daemon=True).start()
    first = pipe.queue.get()  # the first chunk, or the error that came before any output
    if isinstance(first, BaseException):
        pipe.abandoned.set()
        raise first
    if first is _END:
        first = b""
        pipe.queue.put(_END)
    media, suffix = MEDIA[format]
    return StreamingResponse(
        _drain(first, pipe), media_type=f"{media}; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="graph.{suffix}"'})
