"""The graph writer: chunk outcomes become concepts, aliases, relationships, evidence and calls.

A chunk's rows and its calls always share one transaction; everything that has landed when the
writer gets to it commits together, each chunk whole, in a handful of batched statements.

Any number of writers (threads, processes, machines) may share one database. Each commit first
takes the graph lock (PostgreSQL: a transaction-level advisory lock; SQLite: the database write
lock, taken because the commit's first statement is a write), then brings this writer's
in-memory index up to date with what others committed since (rows above its id watermarks; a
full reload when the graph epoch says rows were changed or removed, see `kg.db.locks`), and only
then resolves; new rows get their ids there, under the lock, so ids grow in commit order. So
every commit decides against the graph all earlier commits left, exactly as in a serial run;
and resolution does not depend on the order of commits (`label_rank` picks labels, descriptions
and search terms are merged order-free, confidences are maxima), so concurrent runs build the
graph a serial run builds. (One limit, shared with serial runs: fuzzy likeness is not
transitive, so three spellings A ~ B ~ C with A and C apart may group by arrival order.)

One lock for the whole graph rather than one per label: a fuzzy merge depends on every spelling
near the new one, and a group touches hundreds of labels; a commit holds the lock for
milliseconds while an LLM call takes seconds. Inserts still carry ON CONFLICT clauses: a row
written by anything that skipped the lock makes the commit start over with a fresh index
instead of failing, and a commit that keeps failing is split until only the chunk at fault is
recorded as failed.

Round trips, not rows, are what a commit costs on PostgreSQL: each wait for the server lets the
request threads take the GIL, and getting it back takes up to a switch interval (5 ms) while
they compute, so under load every statement costs milliseconds whatever it does. A commit there
is a fixed handful of round trips, whatever the group's size: the lock, the run's counters and
the newest ids in one pipeline; the rows other writers added, in one pipeline (only when there
are some); the stored details of known concepts that gained some (only then); every write of
the group in one pipeline, one statement per table whose rows travel as one JSON parameter
(`json_populate_recordset`: a fixed text the driver prepares, no per-row work in Python); the
COMMIT. The connection stays with the committing thread between commits (no ping to check it
out of the pool). SQLite, in process, keeps SQLAlchemy's executemany.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, cast

import psycopg
from sqlalchemy import (
    Connection,
    Integer,
    Table,
    Text,
    any_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    union,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.postgresql import psycopg as psycopg_dialect
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.sql.elements import ClauseElement

from kg.db import Database, curation_rules
from kg.db.locks import EPOCH, GRAPH_LOCK, GRAPH_LOCK_SQL, lock_graph
from kg.db.models import (
    AttributeEvidence,
    Call,
    ChunkExtraction,
    Concept,
    ConceptAlias,
    ConceptAttribute,
    Document,
    Evidence,
    Relationship,
    RelationshipTypeProposal,
    Run,
    utcnow,
)
from kg.db.scope import begin_scope
from kg.errors import DatabaseError
from kg.extraction.extract import ChunkOutcome
from kg.extraction.resolve import (
    ConceptIndex,
    EdgeKey,
    GroupPlan,
    merge_details,
)
from kg.extraction.validate import Validation, ValidLiteral
from kg.text import normalise_label

log = logging.getLogger(__name__)

CALLS = cast(Table, Call.__table__)
CONCEPTS = cast(Table, Concept.__table__)
DOCUMENTS = cast(Table, Document.__table__)
ALIASES = cast(Table, ConceptAlias.__table__)
EDGES = cast(Table, Relationship.__table__)
EVIDENCE = cast(Table, Evidence.__table__)
EXTRACTIONS = cast(Table, ChunkExtraction.__table__)
PROPOSALS = cast(Table, RelationshipTypeProposal.__table__)
RUNS = cast(Table, Run.__table__)
ATTRIBUTES = cast(Table, ConceptAttribute.__table__)
ATTRIBUTE_EVIDENCE = cast(Table, AttributeEvidence.__table__)
MAX_ATTEMPTS = 5
# Worth a second try with fresh state: serialization failure, deadlock, lock not available,
# a unique or foreign key violation (a row written or removed by a writer outside the lock).
RETRY_SQLSTATES = frozenset({"40001", "40P01", "55P03", "23505", "23503"})

# -- the statements of a commit, defined once for both databases ------------------------------
NEWEST = (select(func.max(CONCEPTS.c.id)).scalar_subquery(),
          select(func.max(ALIASES.c.id)).scalar_subquery(),
          select(func.max(EDGES.c.id)).scalar_subquery(),
          select(EPOCH.c.epoch).scalar_subquery())
# Counts the group's chunks into its run and reads the newest ids, the graph epoch and the
# run's outcomes so far (a `kg worker` knows from them whether the run may be done). On
# SQLite this write, the transaction's first statement, takes the database write lock (waiting
# up to busy_timeout); a read first would make SQLite refuse the upgrade. On PostgreSQL it
# starts after the graph lock is held, so it sees every earlier commit.
COUNT = update(RUNS).where(RUNS.c.id == bindparam("run")).values(
    heartbeat_at=bindparam("now"), chunks_ok=RUNS.c.chunks_ok + bindparam("ok"),
    chunks_failed=RUNS.c.chunks_failed + bindparam("failed")).returning(
    *NEWEST, RUNS.c.chunks_ok + RUNS.c.chunks_failed)
# Rows other writers added above this writer's watermarks. Concepts: new ones, and those that
# gained an alias (a relabel always turns the old label into an alias, so this is also how a
# changed label is seen). A UNION, not an OR: PostgreSQL reads `id > x OR id IN (...)` by
# scanning every concept (21 ms at 100k concepts, under the graph lock, at every commit after
# another writer's), the two halves by their indexes (0.1 ms).
_LABEL_COLUMNS = (CONCEPTS.c.id, CONCEPTS.c.label, CONCEPTS.c.norm_label, CONCEPTS.c.type)
# Each writer works in one collection (`collection`): resolution never crosses into another.
_NEW_LABELS = union(
    select(*_LABEL_COLUMNS).where(CONCEPTS.c.id > bindparam("concepts"),
                                  CONCEPTS.c.collection_id == bindparam("collection")),
    select(*_LABEL_COLUMNS).where(CONCEPTS.c.id.in_(select(ALIASES.c.concept_id).where(
        ALIASES.c.id > bindparam("aliases"),
        ALIASES.c.collection_id == bindparam("collection"))))).subquery()
NEW_LABELS = select(*_NEW_LABELS.c).order_by(_NEW_LABELS.c.id)
NEW_ALIASES = select(ALIASES.c.concept_id, ALIASES.c.alias, ALIASES.c.norm_alias).where(
    ALIASES.c.id > bindparam("aliases"),
    ALIASES.c.collection_id == bindparam("collection")).order_by(ALIASES.c.id)
NEW_EDGES = select(EDGES.c.id, EDGES.c.source_id, EDGES.c.type_id, EDGES.c.target_id,
                   EDGES.c.confidence).where(EDGES.c.id > bindparam("edges"),
                                             EDGES.c.collection_id == bindparam("collection"))
ADVANCE = text(" ".join(["SELECT", ", ".join(
    f"setval(pg_get_serial_sequence('{table}', 'id'), GREATEST(:{key}, COALESCE("
    f"pg_sequence_last_value(pg_get_serial_sequence('{table}', 'id')::regclass), 1)))"
    for table, key in (("concepts", "concepts"), ("relationships", "edges")))]))


@dataclass(frozen=True)
class _Sql:
    """A statement as psycopg's own text, for a pipeline, with the values SQLAlchemy bound
    itself (a LIMIT, a literal)."""

    text: str
    defaults: dict[str, Any]

    def params(self, **values: Any) -> dict[str, Any]:
        return {**self.defaults, **values}


def _for_psycopg(statement: ClauseElement) -> _Sql:
    compiled = statement.compile(dialect=psycopg_dialect.dialect())
    return _Sql(compiled.string, dict(compiled.params))


PG_LOCK = _Sql(GRAPH_LOCK_SQL, {"graph_lock": GRAPH_LOCK})
PG_COUNT = _for_psycopg(COUNT)
PG_STORED = _for_psycopg(select(literal(1)).where(
    EXTRACTIONS.c.run_id == bindparam("run"),
    EXTRACTIONS.c.chunk_id == any_(bindparam("chunks"))).limit(1))
PG_NEW = (_for_psycopg(NEW_LABELS), _for_psycopg(NEW_ALIASES), _for_psycopg(NEW_EDGES))
PG_ADVANCE = _for_psycopg(ADVANCE)


def _revive(table: Table, ids: Any) -> Any:
    """Rows that gained live evidence become live: a retracted concept or relationship seen
    again comes back (history keeps its earlier interval in the evidence), a staged one
    (made for a version not yet cut over) goes live with it."""
    return update(table).where(
        ids, or_(table.c.valid_to.is_not(None), table.c.valid_from.is_(None))).values(
        valid_to=None, valid_from=func.coalesce(
            table.c.valid_from, bindparam("now", type_=table.c.valid_from.type)))


PG_REVIVE = tuple(_for_psycopg(_revive(t, t.c.id == any_(bindparam("ids"))))
                  for t in (CONCEPTS, EDGES))
PG_DELETE_RETRIED = _for_psycopg(delete(EXTRACTIONS).where(
    EXTRACTIONS.c.run_id == bindparam("run"),
    EXTRACTIONS.c.chunk_id == any_(bindparam("chunks"))))
# Statements over a set of rows given as one JSON parameter (`x`): the rows of a group reach
# the server in one message whatever their number, and the text never changes (prepared).
PG_RELABEL = (f"UPDATE {CONCEPTS.name} AS c SET label = x.label, norm_label = x.norm_label "
              "FROM json_to_recordset(%s::json) AS x(id integer, label text, norm_label text, "
              "before text) WHERE c.id = x.id AND c.label = x.before")
PG_UNALIAS = (f"DELETE FROM {ALIASES.name} AS a USING json_to_recordset(%s::json) AS "
              "x(concept_id integer, alias text) WHERE a.concept_id = x.concept_id AND "
              "a.alias = x.alias RETURNING a.id")
PG_DETAILS = (f"UPDATE {CONCEPTS.name} AS c SET description = x.description, search_terms = "
              "x.search_terms FROM json_to_recordset(%s::json) AS x(cid integer, description "
              "text, search_terms json) WHERE c.id = x.cid")
PG_TYPES = (f'UPDATE {CONCEPTS.name} AS c SET "type" = x.ctype FROM json_to_recordset(%s::json) '
            'AS x(cid integer, ctype text) WHERE c.id = x.cid AND c."type" IS NULL')
PG_RAISES = (f"UPDATE {EDGES.name} AS r SET confidence = x.conf FROM json_to_recordset(%s::json)"
             " AS x(rid integer, conf double precision) WHERE r.id = x.rid AND r.confidence < "
             "x.conf")
# Attributes are found by their key (concept, name, normalised value), not by ids the writer
# caches: their evidence and revival join on it, inside the commit's transaction.
PG_ATTRIBUTE_EVIDENCE = (
    f"INSERT INTO {ATTRIBUTE_EVIDENCE.name} (collection_id, attribute_id, run_id, chunk_id, "
    "quote, char_start, char_end, value_start, value_end, valid_from) SELECT a.collection_id, "
    "a.id, x.run_id, x.chunk_id, x.quote, x.char_start, x.char_end, x.value_start, x.value_end, "
    "x.valid_from FROM json_to_recordset(%s::json) AS x(concept_id integer, name text, "
    "normalised text, run_id integer, chunk_id integer, quote text, char_start integer, "
    "char_end integer, value_start integer, value_end integer, valid_from timestamptz) "
    f"JOIN {ATTRIBUTES.name} a ON a.concept_id = x.concept_id AND a.name = x.name "
    "AND a.normalised = x.normalised")
PG_REVIVE_ATTRIBUTES = (
    f"UPDATE {ATTRIBUTES.name} AS a SET valid_to = NULL, valid_from = "
    "COALESCE(a.valid_from, x.now) FROM json_to_recordset(%s::json) AS x(concept_id integer, "
    "name text, normalised text, now timestamptz) WHERE a.concept_id = x.concept_id AND "
    "a.name = x.name AND a.normalised = x.normalised AND (a.valid_to IS NOT NULL OR "
    "a.valid_from IS NULL)")
# (SQLite: bound names differ from the columns', which SQLAlchemy keeps for itself: `b_`.)
_ATTRIBUTE_KEY = (ATTRIBUTES.c.concept_id == bindparam("b_concept_id"),
                  ATTRIBUTES.c.name == bindparam("b_name"),
                  ATTRIBUTES.c.normalised == bindparam("b_normalised"))
ATTRIBUTE_EVIDENCE_ROWS = insert(ATTRIBUTE_EVIDENCE).from_select(
    ["collection_id", "attribute_id", "run_id", "chunk_id", "quote", "char_start", "char_end",
     "value_start", "value_end", "valid_from"],
    select(ATTRIBUTES.c.collection_id, ATTRIBUTES.c.id, bindparam("b_run_id", type_=Integer),
           bindparam("b_chunk_id", type_=Integer), bindparam("b_quote", type_=Text),
           bindparam("b_char_start", type_=Integer), bindparam("b_char_end", type_=Integer),
           bindparam("b_value_start", type_=Integer), bindparam("b_value_end", type_=Integer),
           bindparam("b_valid_from", type_=ATTRIBUTE_EVIDENCE.c.valid_from.type))
    .where(*_ATTRIBUTE_KEY))
REVIVE_ATTRIBUTES = update(ATTRIBUTES).where(
    *_ATTRIBUTE_KEY, or_(ATTRIBUTES.c.valid_to.is_not(None), ATTRIBUTES.c.valid_from.is_(None))
).values(valid_to=None, valid_from=func.coalesce(
    ATTRIBUTES.c.valid_from, bindparam("b_now", type_=ATTRIBUTES.c.valid_from.type)))


def _bound(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{f"b_{k}": v for k, v in row.items()} for row in rows]
PROPOSALS_UPSERT = ("ON CONFLICT (name) DO UPDATE SET occurrences = "
                    f"{PROPOSALS.name}.occurrences + excluded.occurrences, "
                    "last_seen = excluded.last_seen")


@functools.cache
def _pg_insert_rows(table: str, columns: tuple[str, ...], tail: str = "") -> str:
    """INSERT of rows given as one JSON array of objects, typed by the table's own row type."""
    names = ", ".join(columns)
    return (f"INSERT INTO {table} ({names}) SELECT {names} FROM "
            f"json_populate_recordset(NULL::{table}, %s::json) {tail}").strip()


def _rows_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, default=_json_value, ensure_ascii=False, separators=(",", ":"))


def _json_value(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} cannot be sent as JSON")


@contextmanager
def _pipeline(conn: Connection) -> Iterator[psycopg.Connection[Any]]:
    """psycopg's pipeline mode on the transaction of `conn`: the statements go out together
    and their results come back in one round trip (read them after the block). A failure comes
    out as SQLAlchemy's exception, as from any other statement."""
    driver = cast("psycopg.Connection[Any]", conn.connection.driver_connection)
    try:
        with driver.pipeline():
            yield driver
    except psycopg.Error as exc:
        raise DBAPIError.instance("(pipelined statements)", None, exc, psycopg.Error,
                                  connection_invalidated=driver.broken) from None


@dataclass
class _GroupRows:
    """The rows of a group that do not depend on resolution."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    extractions: list[dict[str, Any]] = field(default_factory=list)
    evidence: list[dict[str, Any]] = field(default_factory=list)
    proposals: dict[str, tuple[int, str]] = field(default_factory=dict)
    retried: list[int] = field(default_factory=list)  # chunks whose failure rows go
    now: datetime = field(default_factory=utcnow)  # valid_from of what goes live now
    live_concepts: set[int] = field(default_factory=set)  # with live evidence in the group
    live_edges: set[int] = field(default_factory=set)
    # Literal values (issue #20): one row per sighting, keyed by (concept, name, normalised).
    literals: list[dict[str, Any]] = field(default_factory=list)

    def attributes(self) -> list[dict[str, Any]]:
        """One attribute row per key (the first sighting's verbatim value); live when any
        sighting is, else staged (its version not cut over yet)."""
        rows: dict[tuple[int, str, str], dict[str, Any]] = {}
        for lit in self.literals:
            key = (lit["concept_id"], lit["name"], lit["normalised"])
            row = rows.setdefault(key, {
                "concept_id": key[0], "name": key[1], "normalised": key[2],
                "datatype": lit["datatype"], "value": lit["value"], "created_at": self.now,
                "valid_from": None})
            if lit["valid_from"] is not None:
                row["valid_from"] = self.now
        return list(rows.values())

    def attribute_evidence(self) -> list[dict[str, Any]]:
        return [{k: v for k, v in lit.items() if k not in ("datatype", "value")}
                for lit in self.literals]

    def live_attributes(self) -> list[dict[str, Any]]:
        """Keys with live evidence in the group: revived if retracted or staged."""
        keys = {(lit["concept_id"], lit["name"], lit["normalised"])
                for lit in self.literals if lit["valid_from"] is not None}
        return [{"concept_id": c, "name": n, "normalised": v, "now": self.now}
                for c, n, v in sorted(keys)]

    def note_live(self) -> None:
        for row in self.evidence:
            if row["valid_from"] is not None:
                if row["concept_id"] is not None:
                    self.live_concepts.add(row["concept_id"])
                else:
                    self.live_edges.add(row["relationship_id"])


class LiveIndex(ConceptIndex):
    """The index, knowing which concepts are retracted (issue #22): a spelling that is the
    retracted concept's own brings it back (its label is unique anyway), a merely similar
    one makes a new concept, as in a graph that never held the retracted one. Retraction and
    revival by a cutover bump the graph epoch, so the set is reloaded with the index."""

    def __init__(self, threshold: float = 92.0) -> None:
        super().__init__(threshold)
        self.retracted: set[int] = set()

    def find(self, norm: str, type_: str | None = None) -> tuple[int, str] | None:
        hit = super().find(norm, type_)
        if hit is not None and hit[1] == "fuzzy" and hit[0] in self.retracted:
            return None
        return hit


@dataclass(frozen=True)
class ChunkRef:
    id: int
    document_id: int
    char_start: int


@dataclass
class Committed:
    ok: bool
    new_concepts: int = 0
    new_relationships: int = 0
    run_outcomes: int | None = None  # the run's chunks with an outcome, this commit's included


class _Stale(Exception):
    """A row the caches did not know about turned up: start over with a fresh index."""


class _Unstorable(Exception):
    """Every attempt failed; the message is the last database error."""

    def __init__(self, message: str, row_conflict: bool) -> None:
        super().__init__(message)
        self.row_conflict = row_conflict  # a row at fault (not a lock): worth splitting the group


class AlreadyStored(Exception):
    """A chunk of the group has an outcome in this run already (a `kg worker` job that ran
    before, its worker killed after committing)."""


class GraphWriter:
    """Commits chunk outcomes; its caches are brought up to date inside each commit's lock.

    `worker` (a `kg worker`'s name) makes it name the worker on each chunk's outcome row and
    store a chunk at most once per run: a group with a chunk stored already raises
    AlreadyStored, checked under the lock, so every earlier commit of it is visible.
    """

    def __init__(self, db: Database, fuzzy_threshold: float = 92.0,
                 worker: str | None = None) -> None:
        self.db = db
        self.fuzzy_threshold = fuzzy_threshold
        self.worker = worker
        self.index: ConceptIndex | None = None
        self.edges: dict[EdgeKey, tuple[int, float]] = {}
        self.marks = (0, 0, 0)  # highest concept, alias and relationship id the caches hold
        self.epoch = -1  # the graph epoch the caches were loaded at
        self.rules = curation_rules.Rules()  # what curation decided, read with the caches
        # Documents whose evidence waits for a cutover (a new version of a live document,
        # valid_from NULL until kg.extraction.versions promotes it); fixed until then.
        self.staged: dict[int, bool] = {}
        self.failed_before: dict[int, set[int]] = {}  # run -> chunks with a failure row
        self.retries = 0  # commits started over (figures and tests)
        self.pg = db.dialect == "postgresql"
        self._insert: Callable[..., Any] = pg_insert if self.pg else sqlite_insert
        # Each committing thread keeps its connection between commits: one from the pool
        # costs a ping, one more round trip per commit. (`kg worker` commits from several.)
        self._kept = threading.local()
        self._connections: list[Connection] = []
        self._connections_lock = threading.Lock()
        # Commits from several threads of one process (`kg worker --concurrency`) wait for
        # the graph lock anyway; waiting here as well keeps one thread from dropping the
        # caches (a failed attempt) while another plans with them.
        self._committing = threading.RLock()

    def close(self) -> None:
        """Give back the connections kept between commits (the writer stays usable)."""
        with self._connections_lock:
            kept, self._connections = self._connections, []
        for conn in kept:
            conn.close()
        self._kept = threading.local()

    def _connection(self) -> Connection:
        conn: Connection | None = getattr(self._kept, "conn", None)
        if conn is None or conn.closed or conn.invalidated:
            conn = self.db.engine.connect()
            # Rows inserted through SQLAlchemy take their collection from here (column default).
            begin_scope(conn, self.db.collection_id)
            self._kept.conn = conn
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    def _drop_connection(self) -> None:
        """The kept connection broke (the server restarted, say): the next commit gets a new
        one, as a pool checkout after its ping would."""
        conn: Connection | None = getattr(self._kept, "conn", None)
        self._kept.conn = None
        if conn is None:
            return
        with self._connections_lock:
            if conn in self._connections:
                self._connections.remove(conn)
        with contextlib.suppress(DBAPIError):
            conn.invalidate()

    # -- the transaction ---------------------------------------------------------------------
    def commit(self, run_id: int, items: list[tuple[ChunkRef, ChunkOutcome]]) -> list[Committed]:
        """Write the outcomes in one transaction, each chunk whole.

        A commit that keeps failing on conflicts is split; a chunk that fails alone is recorded
        as failed (its calls kept) and the run goes on.
        """
        self._learn_staged({chunk.document_id for chunk, _o in items})
        try:
            return self._commit_retrying(run_id, items)
        except _Unstorable as exc:
            if not exc.row_conflict:
                raise DatabaseError(f"database error at {self.db.display_url}: {exc}") from None
            if len(items) > 1:
                return [done for item in items for done in self.commit(run_id, [item])]
            chunk, outcome = items[0]
            log.warning("chunk %s: results not stored: %s", chunk.id, exc)
            failed = replace(outcome, validation=None,
                             error=f"its results could not be stored: {exc}")
            try:
                return self._commit_retrying(run_id, [(chunk, failed)])
            except _Unstorable as again:
                raise DatabaseError(f"database error at {self.db.display_url}: {again}") from None

    def _learn_staged(self, documents: set[int]) -> None:
        unknown = documents - self.staged.keys()
        if not unknown:
            return
        with self.db.transaction() as conn:
            staged = set(conn.scalars(select(DOCUMENTS.c.id).where(
                DOCUMENTS.c.id.in_(unknown), DOCUMENTS.c.valid_from.is_(None))))
        self.staged.update({d: d in staged for d in unknown})

    def record_calls(self, run_id: int, chunk: ChunkRef, outcome: ChunkOutcome) -> None:
        """Keep the calls of a chunk that a fatal error stopped; the chunk itself stays pending."""
        with self.db.transaction() as conn:
            conn.execute(insert(CALLS), call_rows(run_id, chunk.id, outcome))

    def _commit_retrying(self, run_id: int,
                         items: list[tuple[ChunkRef, ChunkOutcome]]) -> list[Committed]:
        with self._committing:
            return self._attempts(run_id, items)

    def _attempts(self, run_id: int,
                  items: list[tuple[ChunkRef, ChunkOutcome]]) -> list[Committed]:
        reconnected = False
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                conn = self._connection()
                if run_id not in self.failed_before:
                    with conn.begin():
                        self.failed_before[run_id] = set(conn.scalars(
                            select(EXTRACTIONS.c.chunk_id).where(
                                EXTRACTIONS.c.run_id == run_id,
                                EXTRACTIONS.c.status == "failed")))
                with conn.begin():
                    results = self._write(conn, run_id, items)
            except (_Stale, DBAPIError) as exc:
                self._forget()  # the caches may hold what was rolled back
                if isinstance(exc, DBAPIError) and exc.connection_invalidated and not reconnected:
                    reconnected = True  # once: a server that stays away is an error below
                    self._drop_connection()
                    continue
                if isinstance(exc, DBAPIError) and not _retryable(exc):
                    if isinstance(exc, OperationalError):
                        raise DatabaseError(f"database error at {self.db.display_url}: "
                                            f"{_first_line(exc)}") from None
                    raise
                if attempt == MAX_ATTEMPTS:
                    conflict = isinstance(exc, _Stale | IntegrityError)
                    raise _Unstorable(_first_line(exc), conflict) from None
                self.retries += 1
                log.info("commit attempt %d: %s; starting over", attempt, _first_line(exc))
                time.sleep(random.uniform(0, 0.01 * 2 ** attempt))
                continue
            except AlreadyStored:
                raise  # found before anything was planned: the caches are sound
            except BaseException:
                self._forget()
                raise
            failed = self.failed_before[run_id]
            for (chunk, _outcome), result in zip(items, results, strict=True):
                (failed.add if not result.ok else failed.discard)(chunk.id)
            return results
        raise AssertionError("unreachable")

    def _forget(self) -> None:
        self.index = None
        self.epoch = -1
        self.edges = {}
        self.marks = (0, 0, 0)

    def _lock(self, conn: Connection, run_id: int, ok: int, failed: int,
              chunk_ids: list[int]) -> tuple[Sequence[Any], int | None]:
        """Take the graph lock, count the group's chunks into its run, and read the newest
        concept, alias and relationship ids and the graph epoch (one round trip); and the
        run's outcomes so far (None without a run row)."""
        values = {"run": run_id, "now": utcnow(), "ok": ok, "failed": failed,
                  "chunks": chunk_ids}
        if self.pg:
            # One pipeline: each statement starts once the one before it is done, so the
            # counting UPDATE reads the newest ids after the lock is held.
            with _pipeline(conn) as driver:
                driver.execute(PG_LOCK.text, PG_LOCK.params())
                stored = (driver.execute(PG_STORED.text, PG_STORED.params(**values))
                          if self.worker else None)
                counted = driver.execute(PG_COUNT.text, PG_COUNT.params(**values))
            if stored is not None and stored.fetchone() is not None:
                raise AlreadyStored(f"run {run_id}: chunk already stored")
            row = counted.fetchone()
        else:
            lock_graph(conn)
            row = conn.execute(COUNT, values).first()
            if self.worker and conn.scalar(select(literal(1)).where(
                    EXTRACTIONS.c.run_id == run_id,
                    EXTRACTIONS.c.chunk_id.in_(chunk_ids)).limit(1)):
                raise AlreadyStored(f"run {run_id}: chunk already stored")
        if row is None:
            return conn.execute(select(*NEWEST)).one(), None
        return row[:4], row[4]

    def _sync(self, conn: Connection, newest: Sequence[Any]) -> tuple[int, int]:
        """Bring the caches up to date with every commit so far; returns the next free ids."""
        top = (newest[0] or 0, newest[1] or 0, newest[2] or 0)
        if self.index is None or newest[3] != self.epoch:
            # Rows were changed or removed (not only added) since: new rows would not tell.
            self.epoch = newest[3]
            self.rules = curation_rules.rules(conn)
            index = LiveIndex.load(conn, self.fuzzy_threshold)
            assert isinstance(index, LiveIndex)
            self.index = index
            index.retracted = set(conn.scalars(select(CONCEPTS.c.id).where(
                CONCEPTS.c.collection_id == self.db.collection_id,
                CONCEPTS.c.valid_to.is_not(None))))
            self.edges = {}
            self.marks = (top[0], top[1], 0)  # edges: all of them, below
        index = self.index
        concepts, aliases, edges = self.marks
        since = {"concepts": concepts, "aliases": aliases, "edges": edges,
                 "collection": self.db.collection_id}
        wanted = (top[0] > concepts or top[1] > aliases, top[1] > aliases, top[2] > edges)
        if any(wanted):
            labels, spellings, links = self._read(conn, wanted, since)
            for cid, label, norm, kind in labels:
                index.add_label(norm, cid, label, kind)
            for cid, alias, norm in spellings:
                index.add_alias(norm, cid, alias)
            for rid, s, t, g, conf in links:
                self.edges[(s, t, g)] = (rid, conf)
        self.marks = top
        return top[0] + 1, top[2] + 1

    def _read(self, conn: Connection, wanted: tuple[bool, bool, bool],
              since: dict[str, int]) -> list[Sequence[Any]]:
        """The new labels, aliases and edges asked for (`wanted`), in one round trip on
        PostgreSQL."""
        if not self.pg:
            return [conn.execute(query, since).all() if want else []
                    for query, want in zip((NEW_LABELS, NEW_ALIASES, NEW_EDGES), wanted,
                                           strict=True)]
        with _pipeline(conn) as driver:
            cursors = [driver.execute(sql.text, sql.params(**since)) if want else None
                       for sql, want in zip(PG_NEW, wanted, strict=True)]
        return [cursor.fetchall() if cursor is not None else [] for cursor in cursors]

    # -- one commit -------------------------------------------------------------------------
    def _write(self, conn: Connection, run_id: int,
               items: list[tuple[ChunkRef, ChunkOutcome]]) -> list[Committed]:
        failed_before = self.failed_before[run_id]
        group = _GroupRows(retried=[chunk.id for chunk, _o in items if chunk.id in failed_before])
        ok_count = sum(1 for _c, o in items if o.validation is not None)
        newest, outcomes = self._lock(conn, run_id, ok_count,
                                      len(items) - ok_count - len(group.retried),
                                      [chunk.id for chunk, _o in items])
        next_concept, next_edge = self._sync(conn, newest)
        assert self.index is not None
        plan = GroupPlan(self.index, self.edges, next_concept, next_edge, self.rules.renamed)

        results: list[Committed] = []
        for chunk, outcome in items:
            group.calls += call_rows(run_id, chunk.id, outcome)
            row = {"run_id": run_id, "chunk_id": chunk.id, "attempts": len(outcome.attempts),
                   "profile_revision": outcome.settings.revision, "finished_at": utcnow(),
                   "ontology": outcome.ontology, "ontology_revision": outcome.ontology_revision,
                   "worker": self.worker}
            verdict = outcome.validation
            if verdict is None:
                group.extractions.append({**row, "status": "failed", "concepts": 0,
                                          "relationships": 0, "dropped": {},
                                          "error": outcome.error})
                results.append(Committed(ok=False, run_outcomes=outcomes))
                continue
            concepts_before, edges_before = len(plan.new_concepts), len(plan.new_edges)
            dropped = Counter(verdict.dropped)
            staged = self.staged.get(chunk.document_id, False)
            literals: list[dict[str, Any]] = []
            group.evidence += [{**e, "valid_from": None if staged else group.now}
                               for e in self._plan_chunk(plan, run_id, chunk, verdict, dropped,
                                                         literals)]
            group.literals += [{**lit, "valid_from": None if staged else group.now}
                               for lit in literals]
            group.extractions.append({**row, "status": "ok", "concepts": len(verdict.concepts),
                                      "relationships": len(verdict.relationships),
                                      "dropped": dict(dropped), "error": None})
            results.append(Committed(True, len(plan.new_concepts) - concepts_before,
                                     len(plan.new_edges) - edges_before, outcomes))
            for name, example in verdict.proposals:
                count, first = group.proposals.get(name[:64], (0, example))
                group.proposals[name[:64]] = (count + 1, first)

        group.note_live()
        changes = self._changed_details(conn, plan)
        if self.pg:
            self._store_pipelined(conn, run_id, plan, group, changes)
        else:
            self._store(conn, run_id, plan, group, changes)
        # What this commit added is in the caches already: the next sync starts above it.
        self.marks = (plan.next_concept - 1, self.marks[1], plan.next_edge - 1)
        return results

    # -- planning (caches only, no statement) -------------------------------------------------
    def _plan_chunk(self, plan: GroupPlan, run_id: int, chunk: ChunkRef, verdict: Validation,
                    dropped: Counter[str],
                    literals: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """Resolve one chunk's concepts and edges; returns its evidence rows (and adds its
        literal values, as attribute sightings, to `literals`). What curation deleted is not
        created again: counted in `dropped` instead."""
        index = self.index
        assert index is not None
        ids: dict[str, int] = {}
        evidence = []
        for c in verdict.concepts:
            norm = normalise_label(c.label)
            if norm in self.rules.suppressed_labels and norm not in index.exact:
                dropped["suppressed"] += 1
                continue
            cid = plan.concept(c.label[:200], norm, c.type)
            ids[c.label] = cid
            plan.seen.setdefault(cid, []).append((c.description, c.search_terms))
            if c.type is not None:
                plan.types.setdefault(cid, c.type)
            evidence.append({"run_id": run_id, "chunk_id": chunk.id, "concept_id": cid,
                             "relationship_id": None, "quote": c.quote,
                             "char_start": chunk.char_start + c.start,
                             "char_end": chunk.char_start + c.end})
        for r in verdict.relationships:
            if r.source not in ids or r.target not in ids:
                dropped["suppressed_end"] += 1
                continue
            source, target = ids[r.source], ids[r.target]
            if source == target:
                continue  # two spellings that resolved to one concept
            if r.type.direction == "symmetric" and source > target:
                source, target = target, source
            if (source, r.type.id, target) in self.rules.suppressed_edges:
                dropped["suppressed"] += 1
                continue
            evidence.append({"run_id": run_id, "chunk_id": chunk.id, "concept_id": None,
                             "relationship_id": plan.edge((source, r.type.id, target),
                                                          r.confidence),
                             "quote": r.quote, "char_start": chunk.char_start + r.start,
                             "char_end": chunk.char_start + r.end})
        if literals is not None:
            literals += _literal_rows(run_id, chunk, verdict.literals, ids, dropped)
        return evidence

    def _changed_details(self, conn: Connection, plan: GroupPlan) -> list[dict[str, Any]]:
        """Known concepts whose description or search terms the group changes (their stored
        details read first: other writers may have merged theirs since)."""
        known = [cid for cid, seen in plan.seen.items()
                 if cid not in plan.new_concepts and any(d or t for d, t in seen)]
        if not known:
            return []
        changes = []
        for cid, description, terms in conn.execute(
                select(CONCEPTS.c.id, CONCEPTS.c.description, CONCEPTS.c.search_terms)
                .where(CONCEPTS.c.id.in_(known))):
            stored = (description, list(terms or []))
            merged = merge_details(*stored, plan.seen[cid])
            if merged != stored:
                changes.append({"cid": cid, "description": merged[0], "search_terms": merged[1]})
        return changes

    # -- writing ----------------------------------------------------------------------------
    def _store(self, conn: Connection, run_id: int, plan: GroupPlan, group: _GroupRows,
               changes: list[dict[str, Any]]) -> None:
        """The group's rows through SQLAlchemy, one executemany per table (SQLite)."""
        if group.calls:
            conn.execute(insert(CALLS), group.calls)
        if group.retried:
            # A resumed run retries chunks that failed before: replace their failure records.
            conn.execute(delete(EXTRACTIONS).where(EXTRACTIONS.c.run_id == run_id,
                                                   EXTRACTIONS.c.chunk_id.in_(group.retried)))
        new_concepts = _new_concept_rows(plan, group)
        if new_concepts:
            stored = conn.execute(
                self._insert(CONCEPTS).on_conflict_do_nothing(
                    index_elements=["collection_id", "norm_label"])
                .returning(CONCEPTS.c.id), new_concepts).all()
            if len(stored) != len(new_concepts):
                raise _Stale("a concept was created outside the graph lock")
        for cid, (label, norm, before) in plan.relabels.items():
            # Only from the label the cache knows: a concept renamed by hand stays renamed.
            changed = conn.execute(update(CONCEPTS).where(
                CONCEPTS.c.id == cid, CONCEPTS.c.label == before).values(
                label=label, norm_label=norm))
            if changed.rowcount != 1:
                raise _Stale(f"concept {cid} changed outside the graph lock")
        gone: Sequence[int] = []
        if plan.unalias:
            gone = conn.execute(delete(ALIASES).where(or_(*(
                (ALIASES.c.concept_id == cid) & (ALIASES.c.alias == alias)
                for cid, alias in plan.unalias))).returning(ALIASES.c.id)).scalars().all()
        added: Sequence[int] = []
        if plan.aliases:
            added = conn.execute(
                self._insert(ALIASES).on_conflict_do_nothing(
                    index_elements=["concept_id", "alias"]).returning(ALIASES.c.id),
                _alias_rows(plan)).scalars().all()
        self._mark_aliases(gone, added)
        if changes:
            conn.execute(update(CONCEPTS).where(CONCEPTS.c.id == bindparam("cid")).values(
                description=bindparam("description"), search_terms=bindparam("search_terms")),
                changes)
        typed = _typed_rows(plan)
        if typed:  # a concept keeps the first type it was given
            conn.execute(update(CONCEPTS).where(CONCEPTS.c.id == bindparam("cid"),
                                                CONCEPTS.c.type.is_(None))
                         .values(type=bindparam("ctype")), typed)
        if plan.new_edges:
            rows = _new_edge_rows(plan, group)
            stored = conn.execute(
                self._insert(EDGES).on_conflict_do_nothing(
                    index_elements=["source_id", "type_id", "target_id"])
                .returning(EDGES.c.id), rows).all()
            if len(stored) != len(rows):
                raise _Stale("a relationship was created outside the graph lock")
        if plan.raises:
            conn.execute(
                update(EDGES).where(EDGES.c.id == bindparam("rid")).values(confidence=case(
                    (EDGES.c.confidence < bindparam("conf"), bindparam("conf")),
                    else_=EDGES.c.confidence)), _raised_rows(plan))
        if group.evidence:
            conn.execute(insert(EVIDENCE), group.evidence)
        if group.literals:
            conn.execute(self._insert(ATTRIBUTES).on_conflict_do_nothing(
                index_elements=["concept_id", "name", "normalised"]), group.attributes())
            conn.execute(ATTRIBUTE_EVIDENCE_ROWS, _bound(group.attribute_evidence()))
            revive = group.live_attributes()
            if revive:
                conn.execute(REVIVE_ATTRIBUTES, _bound(revive))
        self._revived(group)
        for table, ids in ((CONCEPTS, group.live_concepts - plan.new_concepts.keys()),
                           (EDGES, group.live_edges - _new_edge_ids(plan))):
            if ids:
                conn.execute(_revive(table, table.c.id.in_(sorted(ids))), {"now": group.now})
        if group.proposals:
            statement = self._insert(PROPOSALS)
            conn.execute(statement.on_conflict_do_update(
                index_elements=["name"],
                set_={"occurrences": PROPOSALS.c.occurrences + statement.excluded.occurrences,
                      "last_seen": statement.excluded.last_seen}),
                _proposal_rows(group.proposals))
        conn.execute(insert(EXTRACTIONS), group.extractions)

    def _store_pipelined(self, conn: Connection, run_id: int, plan: GroupPlan,
                         group: _GroupRows, changes: list[dict[str, Any]]) -> None:
        """The same writes, in the same order, as `_store`, in one PostgreSQL pipeline: one
        statement per table, its rows one JSON parameter; the results are checked once the
        pipeline is back (a failure anywhere rolls the whole commit back, as before)."""
        new_concepts = _new_concept_rows(plan, group)
        new_edges = _new_edge_rows(plan, group)
        collection = self.db.collection_id
        with _pipeline(conn) as driver:
            def rows(table: Table, batch: list[dict[str, Any]], tail: str = "") -> Any:
                if not batch:
                    return None
                if "collection_id" in table.c:  # the JSON rows get no Python defaults
                    batch = [{**row, "collection_id": collection} for row in batch]
                sql = _pg_insert_rows(table.name, tuple(batch[0]), tail)
                return driver.execute(sql, (_rows_json(batch),))

            def each(sql: str, batch: list[dict[str, Any]]) -> Any:
                return driver.execute(sql, (_rows_json(batch),)) if batch else None

            rows(CALLS, group.calls)
            if group.retried:
                driver.execute(PG_DELETE_RETRIED.text,
                               PG_DELETE_RETRIED.params(run=run_id, chunks=group.retried))
            concepts = rows(CONCEPTS, new_concepts,
                            "ON CONFLICT (collection_id, norm_label) DO NOTHING")
            relabeled = each(PG_RELABEL, [
                {"id": cid, "label": label, "norm_label": norm, "before": before}
                for cid, (label, norm, before) in plan.relabels.items()])
            unaliased = each(PG_UNALIAS, [{"concept_id": cid, "alias": alias}
                                          for cid, alias in plan.unalias])
            aliased = rows(ALIASES, _alias_rows(plan),
                           "ON CONFLICT (concept_id, alias) DO NOTHING RETURNING id")
            each(PG_DETAILS, changes)
            each(PG_TYPES, _typed_rows(plan))
            edges = rows(EDGES, new_edges,
                         "ON CONFLICT (source_id, type_id, target_id) DO NOTHING")
            each(PG_RAISES, _raised_rows(plan))
            rows(EVIDENCE, group.evidence)
            rows(ATTRIBUTES, group.attributes(),
                 "ON CONFLICT (concept_id, name, normalised) DO NOTHING")
            each(PG_ATTRIBUTE_EVIDENCE, group.attribute_evidence())
            each(PG_REVIVE_ATTRIBUTES, group.live_attributes())
            self._revived(group)
            for sql, ids in zip(PG_REVIVE, (group.live_concepts - plan.new_concepts.keys(),
                                            group.live_edges - _new_edge_ids(plan)), strict=True):
                if ids:
                    driver.execute(sql.text, sql.params(ids=sorted(ids), now=group.now))
            rows(PROPOSALS, _proposal_rows(group.proposals), PROPOSALS_UPSERT)
            rows(EXTRACTIONS, group.extractions)
            if new_concepts or new_edges:
                # Ids were given out under the lock (max + 1): move the sequences past them,
                # for whatever inserts with the default.
                driver.execute(PG_ADVANCE.text, PG_ADVANCE.params(
                    concepts=plan.next_concept - 1, edges=plan.next_edge - 1))
        if concepts is not None and concepts.rowcount != len(new_concepts):
            raise _Stale("a concept was created outside the graph lock")
        if relabeled is not None and relabeled.rowcount != len(plan.relabels):
            # Only from the label the cache knows: a concept renamed by hand stays renamed.
            raise _Stale("a concept changed outside the graph lock")
        if edges is not None and edges.rowcount != len(new_edges):
            raise _Stale("a relationship was created outside the graph lock")
        self._mark_aliases([r[0] for r in unaliased.fetchall()] if unaliased else [],
                           [r[0] for r in aliased.fetchall()] if aliased else [])

    def _revived(self, group: _GroupRows) -> None:
        """Concepts this commit brings back are no longer retracted for fuzzy matching (a
        failed commit drops the whole index, so this never outlives its transaction)."""
        if isinstance(self.index, LiveIndex):
            self.index.retracted -= group.live_concepts

    def _mark_aliases(self, gone: Sequence[int], added: Sequence[int]) -> None:
        """Where the next sync looks for new aliases from."""
        mark = self.marks[1]
        if gone:  # SQLite hands a deleted top id out again: look from below it next time
            mark = min(mark, min(gone) - 1)
        if added:  # each above every id that exists: none was missed below them
            mark = max(added)
        self.marks = (self.marks[0], mark, self.marks[2])


def _literal_rows(run_id: int, chunk: ChunkRef, literals: list[ValidLiteral],
                  ids: dict[str, int], dropped: Counter[str]) -> list[dict[str, Any]]:
    """A chunk's literal values as attribute sightings of their subjects' concepts (a subject
    curation deleted is counted, as a relationship's end is)."""
    rows = []
    for lit in literals:
        cid = ids.get(lit.subject)
        if cid is None:
            dropped["suppressed_end"] += 1
            continue
        rows.append({"concept_id": cid, "name": lit.type.name[:64], "datatype": lit.datatype,
                     "value": lit.value, "normalised": lit.normalised[:300], "run_id": run_id,
                     "chunk_id": chunk.id, "quote": lit.quote,
                     "char_start": chunk.char_start + lit.start,
                     "char_end": chunk.char_start + lit.end,
                     "value_start": chunk.char_start + lit.value_start,
                     "value_end": chunk.char_start + lit.value_end})
    return rows


def _new_concept_rows(plan: GroupPlan, group: _GroupRows) -> list[dict[str, Any]]:
    """New concepts; one only a staged version mentions stays hidden until its cutover."""
    rows = []
    for cid, row in plan.new_concepts.items():
        description, terms = merge_details("", [], plan.seen.get(cid, []))
        rows.append({**row, "description": description, "search_terms": terms,
                     "type": plan.types.get(cid),
                     "valid_from": group.now if cid in group.live_concepts else None})
    return rows


def _new_edge_rows(plan: GroupPlan, group: _GroupRows) -> list[dict[str, Any]]:
    return [{**row, "valid_from": group.now if row["id"] in group.live_edges else None}
            for row in plan.new_edges.values()]


def _new_edge_ids(plan: GroupPlan) -> set[int]:
    return {row["id"] for row in plan.new_edges.values()}


def _alias_rows(plan: GroupPlan) -> list[dict[str, Any]]:
    return [{"concept_id": cid, "alias": alias, "norm_alias": norm}
            for (cid, alias), norm in plan.aliases.items()]


def _typed_rows(plan: GroupPlan) -> list[dict[str, Any]]:
    """Known concepts given a type (a concept keeps the first type it was given)."""
    return [{"cid": cid, "ctype": t} for cid, t in plan.types.items()
            if cid not in plan.new_concepts]


def _raised_rows(plan: GroupPlan) -> list[dict[str, Any]]:
    return [{"rid": rid, "conf": conf} for rid, conf in plan.raises.items()]


def _proposal_rows(proposals: dict[str, tuple[int, str]]) -> list[dict[str, Any]]:
    now = utcnow()
    return [{"name": name, "occurrences": count, "example": example[:300],
             "first_seen": now, "last_seen": now}
            for name, (count, example) in sorted(proposals.items())]


def _retryable(exc: DBAPIError) -> bool:
    """A conflict with another writer (worth a fresh attempt), not a broken database."""
    if getattr(exc.orig, "sqlstate", None) in RETRY_SQLSTATES:
        return True
    message = str(exc.orig).lower()
    return isinstance(exc, IntegrityError) or "database is locked" in message


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return lines[0] if lines else type(orig).__name__


def call_rows(run_id: int | None, chunk_id: int | None,
              outcome: ChunkOutcome) -> list[dict[str, Any]]:
    """`calls` rows for every attempt of an outcome (run and chunk are None in evaluations)."""
    s = outcome.settings
    return [
        {
            "run_id": run_id, "chunk_id": chunk_id, "attempt": a.attempt,
            "provider": s.provider, "model": a.model, "profile_name": s.profile_name,
            "profile_revision": s.revision, "status": a.status, "error_kind": a.error_kind,
            "finish_reason": a.finish_reason, "prompt_tokens": a.prompt_tokens,
            "completion_tokens": a.completion_tokens, "thinking_tokens": a.thinking_tokens,
            "latency_ms": a.latency_ms, "load_ms": a.load_ms,
            "prompt_eval_ms": a.prompt_eval_ms, "eval_ms": a.eval_ms, "error": a.error,
            "response": a.response, "started_at": a.started_at,
            "ontology": outcome.ontology, "ontology_revision": outcome.ontology_revision,
            "grounding": a.grounding,
            "endpoint": a.endpoint or outcome.endpoint, "fallback": outcome.fallback,
            "rule_id": outcome.rule_id, "cached": a.endpoint == "cache",
        }
        for a in outcome.attempts
    ]
