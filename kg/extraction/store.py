"""The graph writer: chunk outcomes become concepts, aliases, relationships, evidence and calls.

A chunk's rows and its calls always share one transaction; everything that has landed when the
writer gets to it commits together, each chunk whole, in a handful of batched statements.

Any number of writers (threads, processes, machines) may share one database. Each commit first
takes the graph lock (PostgreSQL: a transaction-level advisory lock; SQLite: the database write
lock, taken because the commit's first statement is a write), then brings this writer's
in-memory index up to date with what others committed since (rows above its id watermarks; a
full reload when the graph epoch says rows were changed or removed, see `lock_graph`), and only
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
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Connection,
    Table,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Mapped, mapped_column

from kg import curation
from kg.db import Database
from kg.db.models import (
    Base,
    Call,
    ChunkExtraction,
    Concept,
    ConceptAlias,
    Evidence,
    Relationship,
    RelationshipTypeProposal,
    Run,
    utcnow,
)
from kg.errors import DatabaseError
from kg.extraction.extract import ChunkOutcome
from kg.extraction.resolve import (
    ConceptIndex,
    EdgeKey,
    GroupPlan,
    merge_details,
    normalise_label,
)
from kg.extraction.validate import Validation

log = logging.getLogger(__name__)



class GraphEpoch(Base):
    """One row, bumped by every change that rewrites or removes graph rows (`lock_graph`)."""

    __tablename__ = "graph_epoch"
    __table_args__ = (CheckConstraint("id = 1", name="ck_graph_epoch_one_row"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    epoch: Mapped[int] = mapped_column(BigInteger, default=0)


CALLS = cast(Table, Call.__table__)
CONCEPTS = cast(Table, Concept.__table__)
ALIASES = cast(Table, ConceptAlias.__table__)
EDGES = cast(Table, Relationship.__table__)
EVIDENCE = cast(Table, Evidence.__table__)
EXTRACTIONS = cast(Table, ChunkExtraction.__table__)
PROPOSALS = cast(Table, RelationshipTypeProposal.__table__)
RUNS = cast(Table, Run.__table__)
EPOCH = cast(Table, GraphEpoch.__table__)
GRAPH_LOCK = int.from_bytes(b"kg-graph", "big")  # the pg_advisory_xact_lock key
MAX_ATTEMPTS = 5
# Worth a second try with fresh state: serialization failure, deadlock, lock not available,
# a unique or foreign key violation (a row written or removed by a writer outside the lock).
RETRY_SQLSTATES = frozenset({"40001", "40P01", "55P03", "23505", "23503"})


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


class _Stale(Exception):
    """A row the caches did not know about turned up: start over with a fresh index."""


class _Unstorable(Exception):
    """Every attempt failed; the message is the last database error."""

    def __init__(self, message: str, row_conflict: bool) -> None:
        super().__init__(message)
        self.row_conflict = row_conflict  # a row at fault (not a lock): worth splitting the group


def lock_graph(conn: Connection, *, rewrites: bool = False) -> None:
    """Hold the graph lock until the transaction ends (on SQLite the transaction's first write
    holds the whole database). Anything besides GraphWriter that writes concepts, aliases or
    relationships takes it first; with `rewrites` (the transaction changes or removes existing
    rows: curation's merge, rename, delete, undo) every writer reloads its caches afterwards."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": GRAPH_LOCK})
    if rewrites:
        conn.execute(update(EPOCH).values(epoch=EPOCH.c.epoch + 1))


class GraphWriter:
    """Commits chunk outcomes; its caches are brought up to date inside each commit's lock."""

    def __init__(self, db: Database, fuzzy_threshold: float = 92.0) -> None:
        self.db = db
        self.fuzzy_threshold = fuzzy_threshold
        self.index: ConceptIndex | None = None
        self.edges: dict[EdgeKey, tuple[int, float]] = {}
        self.marks = (0, 0, 0)  # highest concept, alias and relationship id the caches hold
        self.epoch = -1  # the graph epoch the caches were loaded at
        self.rules = curation.Rules()  # what curation decided, read with the caches
        self.failed_before: dict[int, set[int]] = {}  # run -> chunks with a failure row
        self.retries = 0  # commits started over (figures and tests)
        self._insert: Callable[..., Any] = (
            pg_insert if db.dialect == "postgresql" else sqlite_insert)

    # -- the transaction ---------------------------------------------------------------------
    def commit(self, run_id: int, items: list[tuple[ChunkRef, ChunkOutcome]]) -> list[Committed]:
        """Write the outcomes in one transaction, each chunk whole.

        A commit that keeps failing on conflicts is split; a chunk that fails alone is recorded
        as failed (its calls kept) and the run goes on.
        """
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

    def record_calls(self, run_id: int, chunk: ChunkRef, outcome: ChunkOutcome) -> None:
        """Keep the calls of a chunk that a fatal error stopped; the chunk itself stays pending."""
        with self.db.transaction() as conn:
            conn.execute(insert(CALLS), call_rows(run_id, chunk.id, outcome))

    def _commit_retrying(self, run_id: int,
                         items: list[tuple[ChunkRef, ChunkOutcome]]) -> list[Committed]:
        if run_id not in self.failed_before:
            with self.db.engine.connect() as conn:
                self.failed_before[run_id] = set(conn.scalars(
                    select(EXTRACTIONS.c.chunk_id).where(EXTRACTIONS.c.run_id == run_id,
                                                         EXTRACTIONS.c.status == "failed")))
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                with self.db.engine.begin() as conn:
                    results = self._write(conn, run_id, items)
            except (_Stale, DBAPIError) as exc:
                self._forget()  # the caches may hold what was rolled back
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

    def _lock(self, conn: Connection, run_id: int, ok: int,
              failed: int) -> Sequence[Any]:
        """Take the graph lock, count the group's chunks into its run, and read the newest
        concept, alias and relationship ids and the graph epoch (one round trip)."""
        lock_graph(conn)
        newest = (select(func.max(CONCEPTS.c.id)).scalar_subquery(),
                  select(func.max(ALIASES.c.id)).scalar_subquery(),
                  select(func.max(EDGES.c.id)).scalar_subquery(),
                  select(EPOCH.c.epoch).scalar_subquery())
        # On SQLite this write, the transaction's first statement, takes the database write
        # lock (waiting up to busy_timeout); a read first would make SQLite refuse the upgrade.
        # On PostgreSQL it starts after the lock is held, so it sees every earlier commit.
        row = conn.execute(update(RUNS).where(RUNS.c.id == run_id).values(
            heartbeat_at=utcnow(), chunks_ok=RUNS.c.chunks_ok + ok,
            chunks_failed=RUNS.c.chunks_failed + failed).returning(*newest)).first()
        return row if row is not None else conn.execute(select(*newest)).one()

    def _sync(self, conn: Connection, newest: Sequence[Any]) -> tuple[int, int]:
        """Bring the caches up to date with every commit so far; returns the next free ids."""
        top = (newest[0] or 0, newest[1] or 0, newest[2] or 0)
        if self.index is None or newest[3] != self.epoch:
            # Rows were changed or removed (not only added) since: new rows would not tell.
            self.epoch = newest[3]
            self.rules = curation.rules(conn)
            self.index = ConceptIndex.load(conn, self.fuzzy_threshold)
            self.edges = {}
            self.marks = (top[0], top[1], 0)  # edges: all of them, below
        index = self.index
        concepts, aliases, edges = self.marks
        if top[0] > concepts or top[1] > aliases:
            # Concepts created since, and those that gained an alias: a relabel always turns
            # the old label into an alias, so this is also how a changed label is seen.
            for cid, label, norm in conn.execute(
                select(CONCEPTS.c.id, CONCEPTS.c.label, CONCEPTS.c.norm_label).where(or_(
                    CONCEPTS.c.id > concepts,
                    CONCEPTS.c.id.in_(select(ALIASES.c.concept_id).where(
                        ALIASES.c.id > aliases)))).order_by(CONCEPTS.c.id)):
                index.add_label(norm, cid, label)
            for cid, alias, norm in conn.execute(
                select(ALIASES.c.concept_id, ALIASES.c.alias, ALIASES.c.norm_alias)
                .where(ALIASES.c.id > aliases).order_by(ALIASES.c.id)):
                index.add_alias(norm, cid, alias)
        if top[2] > edges:
            for rid, s, t, g, conf in conn.execute(select(
                    EDGES.c.id, EDGES.c.source_id, EDGES.c.type_id, EDGES.c.target_id,
                    EDGES.c.confidence).where(EDGES.c.id > edges)):
                self.edges[(s, t, g)] = (rid, conf)
        self.marks = top
        return top[0] + 1, top[2] + 1

    # -- one commit -------------------------------------------------------------------------
    def _write(self, conn: Connection, run_id: int,
               items: list[tuple[ChunkRef, ChunkOutcome]]) -> list[Committed]:
        failed_before = self.failed_before[run_id]
        retried = [chunk.id for chunk, _o in items if chunk.id in failed_before]
        ok_count = sum(1 for _c, o in items if o.validation is not None)
        newest = self._lock(conn, run_id, ok_count, len(items) - ok_count - len(retried))
        next_concept, next_edge = self._sync(conn, newest)
        assert self.index is not None
        plan = GroupPlan(self.index, self.edges, next_concept, next_edge, self.rules.renamed)

        calls: list[dict[str, Any]] = []
        extractions: list[dict[str, Any]] = []
        evidence: list[dict[str, Any]] = []
        proposals: dict[str, tuple[int, str]] = {}
        results: list[Committed] = []
        for chunk, outcome in items:
            calls += call_rows(run_id, chunk.id, outcome)
            row = {"run_id": run_id, "chunk_id": chunk.id, "attempts": len(outcome.attempts),
                   "profile_revision": outcome.settings.revision, "finished_at": utcnow(),
                   "ontology": outcome.ontology, "ontology_revision": outcome.ontology_revision}
            verdict = outcome.validation
            if verdict is None:
                extractions.append({**row, "status": "failed", "concepts": 0,
                                    "relationships": 0, "dropped": {}, "error": outcome.error})
                results.append(Committed(ok=False))
                continue
            concepts_before, edges_before = len(plan.new_concepts), len(plan.new_edges)
            dropped = Counter(verdict.dropped)
            evidence += self._plan_chunk(plan, run_id, chunk, verdict, dropped)
            extractions.append({**row, "status": "ok", "concepts": len(verdict.concepts),
                                "relationships": len(verdict.relationships),
                                "dropped": dict(dropped), "error": None})
            results.append(Committed(True, len(plan.new_concepts) - concepts_before,
                                     len(plan.new_edges) - edges_before))
            for name, example in verdict.proposals:
                count, first = proposals.get(name[:64], (0, example))
                proposals[name[:64]] = (count + 1, first)

        if calls:
            conn.execute(insert(CALLS), calls)
        if retried:
            # A resumed run retries chunks that failed before: replace their failure records.
            conn.execute(delete(EXTRACTIONS).where(EXTRACTIONS.c.run_id == run_id,
                                                   EXTRACTIONS.c.chunk_id.in_(retried)))
        self._write_concepts(conn, plan)
        self._write_edges(conn, plan)
        if evidence:
            conn.execute(insert(EVIDENCE), evidence)
        if proposals:
            self._write_proposals(conn, proposals)
        conn.execute(insert(EXTRACTIONS), extractions)
        _advance(conn, plan)
        # What this commit added is in the caches already: the next sync starts above it.
        self.marks = (plan.next_concept - 1, self.marks[1], plan.next_edge - 1)
        return results

    # -- planning (caches only, no statement) -------------------------------------------------
    def _plan_chunk(self, plan: GroupPlan, run_id: int, chunk: ChunkRef, verdict: Validation,
                    dropped: Counter[str]) -> list[dict[str, Any]]:
        """Resolve one chunk's concepts and edges; returns its evidence rows. What curation
        deleted is not created again: counted in `dropped` instead."""
        index = self.index
        assert index is not None
        ids: dict[str, int] = {}
        evidence = []
        for c in verdict.concepts:
            norm = normalise_label(c.label)
            if norm in self.rules.suppressed_labels and norm not in index.exact:
                dropped["suppressed"] += 1
                continue
            cid = plan.concept(c.label[:200], norm)
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
        return evidence

    # -- writing ----------------------------------------------------------------------------
    def _write_concepts(self, conn: Connection, plan: GroupPlan) -> None:
        current: dict[int, tuple[str, list[str]]] = {}
        known = [cid for cid, seen in plan.seen.items()
                 if cid not in plan.new_concepts and any(d or t for d, t in seen)]
        if known:
            current = {cid: (description, list(terms or [])) for cid, description, terms in
                       conn.execute(select(CONCEPTS.c.id, CONCEPTS.c.description,
                                           CONCEPTS.c.search_terms)
                                    .where(CONCEPTS.c.id.in_(known)))}
        if plan.new_concepts:
            rows = []
            for cid, row in plan.new_concepts.items():
                description, terms = merge_details("", [], plan.seen.get(cid, []))
                rows.append({**row, "description": description, "search_terms": terms,
                             "type": plan.types.get(cid)})
            stored = conn.execute(
                self._insert(CONCEPTS).on_conflict_do_nothing(index_elements=["norm_label"])
                .returning(CONCEPTS.c.id), rows).all()
            if len(stored) != len(rows):
                raise _Stale("a concept was created outside the graph lock")
        for cid, (label, norm, before) in plan.relabels.items():
            # Only from the label the cache knows: a concept renamed by hand stays renamed.
            changed = conn.execute(update(CONCEPTS).where(
                CONCEPTS.c.id == cid, CONCEPTS.c.label == before).values(
                label=label, norm_label=norm))
            if changed.rowcount != 1:
                raise _Stale(f"concept {cid} changed outside the graph lock")
        alias_mark = self.marks[1]
        if plan.unalias:
            gone = conn.execute(delete(ALIASES).where(or_(*(
                (ALIASES.c.concept_id == cid) & (ALIASES.c.alias == alias)
                for cid, alias in plan.unalias))).returning(ALIASES.c.id)).scalars().all()
            if gone:  # SQLite hands a deleted top id out again: look from below it next time
                alias_mark = min(alias_mark, min(gone) - 1)
        if plan.aliases:
            added = conn.execute(
                self._insert(ALIASES).on_conflict_do_nothing(
                    index_elements=["concept_id", "alias"]).returning(ALIASES.c.id),
                [{"concept_id": cid, "alias": alias, "norm_alias": norm}
                 for (cid, alias), norm in plan.aliases.items()]).scalars().all()
            if added:  # each above every id that exists: none was missed below them
                alias_mark = max(added)
        self.marks = (self.marks[0], alias_mark, self.marks[2])
        changes = []
        for cid, (description, terms) in current.items():
            merged = merge_details(description, terms, plan.seen[cid])
            if merged != (description, terms):
                changes.append({"cid": cid, "description": merged[0], "search_terms": merged[1]})
        if changes:
            conn.execute(update(CONCEPTS).where(CONCEPTS.c.id == bindparam("cid")).values(
                description=bindparam("description"), search_terms=bindparam("search_terms")),
                changes)
        typed = [{"cid": cid, "ctype": t} for cid, t in plan.types.items()
                 if cid not in plan.new_concepts]
        if typed:  # a concept keeps the first type it was given
            conn.execute(update(CONCEPTS).where(CONCEPTS.c.id == bindparam("cid"),
                                                CONCEPTS.c.type.is_(None))
                         .values(type=bindparam("ctype")), typed)

    def _write_edges(self, conn: Connection, plan: GroupPlan) -> None:
        if plan.new_edges:
            rows = list(plan.new_edges.values())
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
                    else_=EDGES.c.confidence)),
                [{"rid": rid, "conf": conf} for rid, conf in plan.raises.items()])

    def _write_proposals(self, conn: Connection, proposals: dict[str, tuple[int, str]]) -> None:
        now = utcnow()
        statement = self._insert(PROPOSALS)
        conn.execute(statement.on_conflict_do_update(
            index_elements=["name"],
            set_={"occurrences": PROPOSALS.c.occurrences + statement.excluded.occurrences,
                  "last_seen": statement.excluded.last_seen}),
            [{"name": name, "occurrences": count, "example": example[:300],
              "first_seen": now, "last_seen": now}
             for name, (count, example) in sorted(proposals.items())])


def _advance(conn: Connection, plan: GroupPlan) -> None:
    """Ids were given out under the lock (max + 1): move PostgreSQL's sequences past them, for
    whatever inserts with the default."""
    if conn.dialect.name != "postgresql" or not (plan.new_concepts or plan.new_edges):
        return
    conn.execute(ADVANCE, {"concepts": plan.next_concept - 1, "edges": plan.next_edge - 1})


ADVANCE = text(" ".join(["SELECT", ", ".join(
    f"setval(pg_get_serial_sequence('{table}', 'id'), GREATEST(:{key}, COALESCE("
    f"pg_sequence_last_value(pg_get_serial_sequence('{table}', 'id')::regclass), 1)))"
    for table, key in (("concepts", "concepts"), ("relationships", "edges")))]))


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
