"""The rows every export format writes: concepts (with their literal attributes) and
relationships, streamed in id order.

Keyset pagination (`WHERE id > last ORDER BY id LIMIT n`) reads a batch at a time, with the
batch's aliases and evidence counts fetched by `IN` queries, so memory follows the batch size
whatever the size of the graph, and the same code runs on SQLite and PostgreSQL. The reads
share one snapshot (one transaction), so an ingest that commits meanwhile cannot produce an
edge whose concept was not exported.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Integer, and_, any_, exists, func, literal, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.elements import ColumnElement

from kg import sourcemap
from kg.db.models import (
    AttributeEvidence,
    Chunk,
    Concept,
    ConceptAlias,
    ConceptAttribute,
    Document,
    Evidence,
    Relationship,
    RelationshipType,
    Run,
)
from kg.db.scope import begin_scope, scope_of, valid
from kg.errors import NotFoundError, UsageError

if TYPE_CHECKING:
    from kg.db import Database

BATCH = 1000
# Source maps of OCR documents kept between batches: a map holds every word's box, so the
# cache is bounded by count, and a document whose quotes span batches is read once or so.
MAPS_CACHED = 32


@dataclass(frozen=True)
class ExportFilter:
    """Which part of the graph to export; empty means all of it."""

    run: int | None = None
    document: str | None = None
    min_confidence: float | None = None
    as_of: datetime | None = None  # the graph as it was then (None: as it is)

    def __post_init__(self) -> None:
        if self.min_confidence is not None and not 0 <= self.min_confidence <= 1:
            raise UsageError(f"--min-confidence must be between 0 and 1 "
                             f"(got {self.min_confidence})")


@dataclass(slots=True)
class Quote:
    quote: str
    document: str
    char_start: int
    char_end: int
    run_id: int
    # Where the quote is on the image (OCR or vision text): its first page and the box around
    # its words there, in the pixels of the page as read; None for text documents.
    page: int | None = None
    box: list[int] | None = None


@dataclass(slots=True)
class Attribute:
    """A literal value of a concept (issue #20), under the ontology relation's name."""

    name: str
    datatype: str  # string | number | date | year
    value: str  # verbatim, as first seen
    normalised: str
    evidence: int = 0
    quotes: list[Quote] = field(default_factory=list)


@dataclass(frozen=True)
class AttributeColumn:
    """One attribute name as a property of the node formats (GraphML, GEXF, CSV, Cypher),
    which declare their properties before the first node."""

    name: str  # as the ontology spells it
    key: str  # the property's name: `name`, prefixed where it would hide a built-in one
    datatype: str
    multi: bool  # some concept has more than one value: the property is a list
    numeric: str | None  # "long" or "double" when every value is such a number, else None

    def typed(self, normalised: str) -> object:
        """The value as the property's type: an int or float for a numeric column, else text."""
        if self.numeric == "long":
            return int(normalised)
        if self.numeric == "double":
            return float(normalised)
        return normalised

    @property
    def xml_type(self) -> str:
        """The type GraphML and GEXF declare: a list or text is a string."""
        if self.multi or self.numeric is None:
            return "string"
        return self.numeric  # long | double

    def values(self, node: Node) -> list[object]:
        return [self.typed(a.normalised) for a in node.attributes if a.name == self.name]


def _number_kind(normalised: str) -> str | None:
    """"long" for an integer, "double" for another number, None for text."""
    try:
        int(normalised)
        return "long"
    except ValueError:
        pass
    try:
        float(normalised)
    except ValueError:
        return None
    return "double"


@dataclass(slots=True)
class Node:
    id: int
    label: str
    description: str
    search_terms: list[str]
    aliases: list[str] = field(default_factory=list)
    evidence: int = 0
    documents: int = 0
    type: str | None = None
    quotes: list[Quote] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)


@dataclass(slots=True)
class Edge:
    id: int
    source_id: int
    source: str
    target_id: int
    target: str
    type: str
    category: str
    direction: str
    confidence: float
    evidence: int = 0
    quotes: list[Quote] = field(default_factory=list)


# A concept type column arrives with ontologies; the exports carry it when it exists.
TYPE_COLUMN: Any = Concept.__table__.c.get("type")


def snapshot(conn: Connection, database: Database) -> None:
    """Make the connection's reads one consistent snapshot of `database`'s collection (call
    before the first read)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    else:
        raw = conn.connection.dbapi_connection
        # pysqlite starts no transaction for a SELECT: each statement would see its own state.
        if raw is not None and not getattr(raw, "in_transaction", True):
            conn.exec_driver_sql("BEGIN")
    begin_scope(conn, database.collection_id, database.enforce)


class GraphSource:
    """Streams nodes and edges of one scope over one connection."""

    def __init__(self, conn: Connection, scope: ExportFilter | None = None, *,
                 quotes: bool = False, batch: int = BATCH) -> None:
        self.conn = conn
        self.collection = scope_of(conn)  # a Core connection: the filter is ours to write
        self.scope = scope or ExportFilter()
        self.quotes = quotes
        self.batch = batch
        self._maps: OrderedDict[int, sourcemap.Index | None] = OrderedDict()
        self.document_ids = self._documents()
        if self.scope.run is not None and conn.scalar(
                select(Run.id).where(Run.id == self.scope.run,
                                     Run.collection_id == self.collection)) is None:
            raise NotFoundError(f"no run {self.scope.run}; see `kg runs list`")

    def _documents(self) -> list[int] | None:
        path = self.scope.document
        if path is None:
            return None
        candidates = [path, str(Path(path).expanduser().resolve(strict=False))]
        ids = list(self.conn.scalars(select(Document.id).where(
            Document.collection_id == self.collection, Document.path.in_(candidates))))
        if not ids:
            raise NotFoundError(f"no document {path!r} in the graph; see `kg documents list`")
        return ids

    # -- the scope as SQL --------------------------------------------------------------
    def _valid(self, table: Any) -> ColumnElement[bool]:
        """Core statements are not filtered by kg.db.scope: the validity test is ours too."""
        return valid(table.valid_from, table.valid_to, self.scope.as_of)

    def _evidence_scope(self) -> list[ColumnElement[bool]]:
        return [self._valid(Evidence), *self._narrowing()]

    def _narrowing(self, evidence: Any = Evidence) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = []
        if self.scope.run is not None:
            conditions.append(evidence.run_id == self.scope.run)
        if self.document_ids is not None:
            chunks = select(Chunk.id).where(Chunk.document_id.in_(self.document_ids))
            conditions.append(evidence.chunk_id.in_(chunks))
        return conditions

    def _attribute_scope(self) -> list[ColumnElement[bool]]:
        """An attribute is exported with its evidence in the scope (and valid, as of then)."""
        return [self._valid(ConceptAttribute), self._valid(AttributeEvidence),
                *self._narrowing(AttributeEvidence)]

    def _member(self, column: Any, ids: list[int]) -> ColumnElement[bool]:
        """`column IN ids`; on PostgreSQL as `= ANY(array)`, one parameter instead of a
        thousand (rendering and splitting those cost more than the query)."""
        if self.conn.dialect.name == "postgresql":
            return column == any_(literal(ids, ARRAY(Integer)))
        return column.in_(ids)

    @property
    def scoped(self) -> bool:
        """Whether a run or document narrows the export (the collection always does)."""
        return bool(self._narrowing())

    def _concept_in_scope(self, column: Any) -> ColumnElement[bool]:
        return exists().where(Evidence.concept_id == column, *self._evidence_scope())

    # -- nodes -------------------------------------------------------------------------
    def nodes(self) -> Iterator[Node]:
        """Concepts in the scope, by id, with aliases and evidence counts (and quotes)."""
        columns = [Concept.id, Concept.label, Concept.description, Concept.search_terms]
        if TYPE_COLUMN is not None:
            columns.append(TYPE_COLUMN)
        last = 0
        while True:
            query = select(*columns).where(Concept.id > last,
                                           Concept.collection_id == self.collection,
                                           self._valid(Concept))
            if self.scoped:
                query = query.where(self._concept_in_scope(Concept.id))
            rows: list[Any] = list(self.conn.execute(
                query.order_by(Concept.id).limit(self.batch)).all())
            if not rows:
                return
            nodes = {r[0]: Node(r[0], r[1], r[2] or "", list(r[3] or []),
                                type=r[4] if len(r) > 4 else None) for r in rows}
            ids = list(nodes)
            for cid, alias in self.conn.execute(
                    select(ConceptAlias.concept_id, ConceptAlias.alias)
                    .where(self._member(ConceptAlias.concept_id, ids))
                    .order_by(ConceptAlias.concept_id, ConceptAlias.alias)):
                nodes[cid].aliases.append(alias)
            for owner, count, documents in self.conn.execute(
                    select(Evidence.concept_id, func.count(Evidence.id),
                           func.count(func.distinct(Chunk.document_id)))
                    .join(Chunk, Chunk.id == Evidence.chunk_id)
                    .where(self._member(Evidence.concept_id, ids), *self._evidence_scope())
                    .group_by(Evidence.concept_id)):
                if owner is not None:
                    nodes[owner].evidence, nodes[owner].documents = count, documents
            if self.quotes:
                for cid, quote in self._quotes(Evidence.concept_id, ids):
                    nodes[cid].quotes.append(quote)
            self._attributes(nodes)
            yield from nodes.values()
            last = rows[-1][0]

    # -- edges -------------------------------------------------------------------------
    def _edge_filter(self) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = [Relationship.collection_id == self.collection,
                                                 self._valid(Relationship)]
        if self.scope.min_confidence is not None:
            conditions.append(Relationship.confidence >= self.scope.min_confidence)
        if self.scoped:
            conditions.append(exists().where(Evidence.relationship_id == Relationship.id,
                                             *self._evidence_scope()))
            # Both ends must be exported nodes, or the edge would point nowhere.
            conditions.append(and_(self._concept_in_scope(Relationship.source_id),
                                   self._concept_in_scope(Relationship.target_id)))
        return conditions

    def edges(self) -> Iterator[Edge]:
        """Relationships in the scope, by id, with both ends, type and evidence counts."""
        source, target = Concept.__table__.alias("s"), Concept.__table__.alias("t")
        last = 0
        while True:
            query = (
                select(Relationship.id, Relationship.source_id, source.c.label.label("source"),
                       Relationship.target_id, target.c.label.label("target"),
                       RelationshipType.name, RelationshipType.category,
                       RelationshipType.direction, Relationship.confidence)
                .join(RelationshipType, RelationshipType.id == Relationship.type_id)
                .join(source, source.c.id == Relationship.source_id)
                .join(target, target.c.id == Relationship.target_id)
                .where(Relationship.id > last, *self._edge_filter(),
                       self._valid(source.c), self._valid(target.c))
                .order_by(Relationship.id).limit(self.batch))
            rows = self.conn.execute(query).all()
            if not rows:
                return
            edges = {r[0]: Edge(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], float(r[8]))
                     for r in rows}
            ids = list(edges)
            for owner, count in self.conn.execute(
                    select(Evidence.relationship_id, func.count(Evidence.id))
                    .where(self._member(Evidence.relationship_id, ids), *self._evidence_scope())
                    .group_by(Evidence.relationship_id)):
                if owner is not None:
                    edges[owner].evidence = count
            if self.quotes:
                for rid, quote in self._quotes(Evidence.relationship_id, ids):
                    edges[rid].quotes.append(quote)
            yield from edges.values()
            last = rows[-1][0]

    # -- attributes --------------------------------------------------------------------
    def _attributes(self, nodes: dict[int, Node]) -> None:
        """The batch's literal attributes, with evidence counts (and quotes)."""
        ids = list(nodes)
        found = self.conn.execute(
            select(ConceptAttribute.id, ConceptAttribute.concept_id, ConceptAttribute.name,
                   ConceptAttribute.datatype, ConceptAttribute.value,
                   ConceptAttribute.normalised, func.count(AttributeEvidence.id))
            .join(AttributeEvidence, AttributeEvidence.attribute_id == ConceptAttribute.id)
            .where(self._member(ConceptAttribute.concept_id, ids), *self._attribute_scope())
            .group_by(ConceptAttribute.id, ConceptAttribute.concept_id, ConceptAttribute.name,
                      ConceptAttribute.datatype, ConceptAttribute.value,
                      ConceptAttribute.normalised)
            .order_by(ConceptAttribute.concept_id, ConceptAttribute.name,
                      ConceptAttribute.normalised)).all()
        by_id: dict[int, Attribute] = {}
        for aid, cid, name, datatype, value, normalised, count in found:
            by_id[aid] = Attribute(name, datatype, value, normalised, count)
            nodes[cid].attributes.append(by_id[aid])
        if self.quotes and by_id:
            for aid, quote in self._quotes(AttributeEvidence.attribute_id, list(by_id),
                                           AttributeEvidence):
                by_id[aid].quotes.append(quote)

    def attribute_columns(self, reserved: set[str]) -> list[AttributeColumn]:
        """Every attribute name the export will hold, as a declared property (one pass over
        the attributes, before the nodes); `reserved`: the format's own property names."""
        query = (select(ConceptAttribute.name, ConceptAttribute.datatype,
                        ConceptAttribute.concept_id, ConceptAttribute.normalised)
                 .where(ConceptAttribute.collection_id == self.collection,
                        exists().where(AttributeEvidence.attribute_id == ConceptAttribute.id,
                                       *self._attribute_scope()))
                 .order_by(ConceptAttribute.name, ConceptAttribute.concept_id))
        seen: dict[str, tuple[set[str], bool, set[str | None]]] = {}
        last: tuple[str, int] | None = None
        for name, datatype, concept_id, normalised in self.conn.execute(query):
            kinds, multi, numbers = seen.setdefault(name, (set(), False, set()))
            multi = multi or last == (name, concept_id)
            kinds.add(datatype)
            if datatype in ("number", "year"):
                numbers.add(_number_kind(normalised))
            else:
                numbers.add(None)
            seen[name] = (kinds, multi, numbers)
            last = (name, concept_id)
        columns = []
        for name, (kinds, multi, numbers) in seen.items():
            numeric = None
            if None not in numbers:
                numeric = "double" if "double" in numbers else "long"
            key = name if name not in reserved else f"attr_{name}"
            columns.append(AttributeColumn(name, key, kinds.pop() if len(kinds) == 1
                                           else "string", multi, numeric))
        return columns

    def _quotes(self, key: Any, ids: list[int],
                evidence: Any = Evidence) -> Iterator[tuple[int, Quote]]:
        scope = (self._evidence_scope() if evidence is Evidence
                 else [self._valid(evidence), *self._narrowing(evidence)])
        rows = self.conn.execute(
            select(key, evidence.quote, Document.path, evidence.char_start,
                   evidence.char_end, evidence.run_id, Document.id,
                   Document.source_map.is_not(None))
            .join(Chunk, Chunk.id == evidence.chunk_id)
            .join(Document, Document.id == Chunk.document_id)
            .where(self._member(key, ids), *scope)
            .order_by(key, evidence.id)).all()
        maps = self._source_maps({row[6] for row in rows if row[7]})
        for owner, quote, path, start, end, run_id, document_id, _mapped in rows:
            item = Quote(quote, path, start, end, run_id)
            index = maps.get(document_id)
            if index is not None:
                item.page, item.box = _place(index, start, end)
            yield owner, item

    def _source_maps(self, ids: set[int]) -> dict[int, sourcemap.Index | None]:
        """The source maps of a batch's OCR documents: from the cache, the rest in one query.
        (A JSON `null` passes `IS NOT NULL`: such a document is cached as having none.)"""
        found = {i: self._maps[i] for i in ids if i in self._maps}
        missing = [i for i in ids if i not in found]
        if missing:
            for document_id, source_map in self.conn.execute(
                    select(Document.id, Document.source_map)
                    .where(Document.collection_id == self.collection,
                           self._member(Document.id, missing))):
                found[document_id] = self._maps[document_id] = (
                    sourcemap.Index(source_map) if source_map else None)
        for i in found:
            self._maps.move_to_end(i)
        while len(self._maps) > MAPS_CACHED:
            self._maps.popitem(last=False)
        return found


def _place(index: sourcemap.Index, start: int,
           end: int) -> tuple[int | None, list[int] | None]:
    """The quote's first page and the union of its boxes there (one per line): the whole
    quote highlighted at once; no box for a page read as a whole (a text layer, a vision
    model's description)."""
    places = index.places(start, end)
    if not places:
        return None, None
    page = places[0].page
    boxes = [p.box for p in places if p.page == page and p.box is not None]
    if not boxes:
        return page, None
    return page, [min(b[0] for b in boxes), min(b[1] for b in boxes),
                  max(b[2] for b in boxes), max(b[3] for b in boxes)]
