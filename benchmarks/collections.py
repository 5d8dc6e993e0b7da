"""Collections: what a large neighbour costs a small collection's queries, and what the
0014 -> 0015 migration costs a large database.

(a) Query latency in a small collection (2,000 concepts) alone in its database, and beside a
    100,000-concept collection whose labels include all of the small one's: `kg concepts
    list`, `kg concepts list --search`, `kg graph neighbors --depth 2` (the kg.queries and
    kg.graph functions, through a session scoped to the small collection) and
    `kg collections list` (counts of every collection); median of repeated calls.
(b) `kg db upgrade` from 0014 to 0015 of a database holding a 100,000-concept graph (written
    straight into the 0014 tables; COPY on PostgreSQL).

PostgreSQL (KG_TEST_PG_URL, default postgresql+psycopg://postgres@127.0.0.1:5432/postgres) is
measured when it answers, in scratch databases that are dropped afterwards.

python -m benchmarks.collections [--dialect sqlite|postgresql|both] [--concepts N]
                                 [--relationships N] [--repetitions N]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    MetaData,
    Table,
    create_engine,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.orm import Session

from benchmarks.common import PG_ADMIN_URL, temp_database
from kg import graph, queries
from kg.db import Database, migrate
from kg.db import collections as store
from kg.db.models import (
    Chunk,
    Concept,
    ConceptAlias,
    Document,
    Evidence,
    Relationship,
    RelationshipType,
    Run,
    utcnow,
)
from kg.text import normalise_label

SMALL = 2_000
SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]  # 70


def name(i: int) -> str:
    """A distinct two-word label per index (the first SMALL are in both collections)."""
    first = SYLLABLES[i % 70] + SYLLABLES[(i // 70) % 70]
    second = SYLLABLES[(i // 4900) % 70] + SYLLABLES[(i * 7) % 70] + SYLLABLES[(i // 343) % 70]
    return f"{first.title()} {second.title()}"


# -- seeding ---------------------------------------------------------------------------------

def _as_stored(db: Database, model: Any) -> Table:
    """The model's table with only the columns the database has (at 0014: no collection_id,
    nor the columns of later migrations), Python defaults kept."""
    stored = {c["name"] for c in inspect(db.engine).get_columns(model.__tablename__)}
    columns: list[Column[Any]] = [c._copy() for c in model.__table__.columns
                                  if c.name in stored]
    return Table(model.__tablename__, MetaData(), *columns)


def _put(conn: Connection, table: Table, columns: list[str], rows: Iterator[tuple[Any, ...]]
         ) -> None:
    if conn.dialect.name == "postgresql":
        raw: Any = conn.connection.dbapi_connection
        with raw.cursor() as cursor, cursor.copy(
                f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(dict(zip(columns, row, strict=True)))
        if len(batch) == 10_000:
            conn.execute(insert(table), batch)
            batch = []
    if batch:
        conn.execute(insert(table), batch)


def seed(db: Database, concepts: int, relationships: int, *, collection_id: int | None,
         chunks: int = 1000) -> float:
    """A graph written straight into the tables: one run, one document, `chunks` chunks,
    `concepts` concepts with one alias each, `relationships` edges, one evidence row per
    concept and per edge. `collection_id` None: the 0014 schema (no such column). Seconds."""
    started = time.perf_counter()
    models = (Run, Document, Chunk, Concept, ConceptAlias, Relationship, Evidence)
    tables: dict[Any, Table] = {m: _as_stored(db, m) for m in models}
    extra = ["collection_id"] if collection_id is not None else []
    tag = [collection_id] if collection_id is not None else []
    pg = db.dialect == "postgresql"
    now = utcnow()
    with db.engine.begin() as conn:
        types = list(conn.scalars(select(RelationshipType.id).order_by(RelationshipType.id)))
        run_id = conn.execute(insert(tables[Run]).values(
            status="completed", started_at=now, finished_at=now, heartbeat_at=now,
            pid=os.getpid(), host=socket.gethostname(), profile_name="bench",
            profiles_used=[], options={}, documents=1, chunks_total=chunks, chunks_ok=chunks,
            chunks_failed=0, **({"collection_id": collection_id} if extra else {}))
            .returning(tables[Run].c.id)).scalar_one()
        doc_id = conn.execute(insert(tables[Document]).values(
            path=f"/bench/{run_id}.txt", sha256=f"{run_id:064d}", size_bytes=chunks * 100,
            kind="text", status="ingested", chunk_count=chunks, created_at=now,
            **({"collection_id": collection_id} if extra else {}))
            .returning(tables[Document].c.id)).scalar_one()

        def next_id(model: Any) -> int:
            return int(conn.scalar(select(tables[model].c.id).order_by(
                tables[model].c.id.desc()).limit(1)) or 0) + 1

        chunk0, concept0, edge0 = next_id(Chunk), next_id(Concept), next_id(Relationship)
        _put(conn, tables[Chunk], ["id", "document_id", "ordinal", "text", "char_start",
                                   "char_end", "token_estimate", *extra],
             ((chunk0 + i, doc_id, i, f"chunk {i}", i * 100, i * 100 + 8, 3, *tag)
              for i in range(chunks)))
        terms: Any = '["term"]' if pg else ["term"]
        _put(conn, tables[Concept], ["id", "label", "norm_label", "description",
                                     "search_terms", "created_at", *extra],
             ((concept0 + i, name(i), normalise_label(name(i)), f"About {name(i)}", terms,
               now, *tag) for i in range(concepts)))
        _put(conn, tables[ConceptAlias], ["concept_id", "alias", "norm_alias", *extra],
             ((concept0 + i, f"{name(i)} alias", f"{normalise_label(name(i))} alias", *tag)
              for i in range(concepts)))
        offsets = [1, 17, 4099, 7, 31, 101, 257, 1021]

        def edges() -> Iterator[tuple[Any, ...]]:
            for k in range(relationships):
                s, lap = k % concepts, k // concepts
                t = (s + offsets[lap % len(offsets)]) % concepts
                yield (edge0 + k, concept0 + s, types[(lap * 3 + s) % len(types)],
                       concept0 + t, 0.8, *tag)

        _put(conn, tables[Relationship], ["id", "source_id", "type_id", "target_id",
                                          "confidence", *extra], edges())
        columns = ["run_id", "chunk_id", "concept_id", "relationship_id", "quote",
                   "char_start", "char_end", *extra]
        _put(conn, tables[Evidence], columns,
             ((run_id, chunk0 + i % chunks, concept0 + i, None, name(i), 0, 5, *tag)
              for i in range(concepts)))
        _put(conn, tables[Evidence], columns,
             ((run_id, chunk0 + k % chunks, None, edge0 + k, "edge", 0, 5, *tag)
              for k in range(relationships)))
        if pg:  # COPY with explicit ids leaves the sequences behind
            for table in ("chunks", "concepts", "relationships"):
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                  f"(SELECT max(id) FROM {table}))"))
    if pg:
        with db.engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    return time.perf_counter() - started


# -- (a) queries -------------------------------------------------------------------------------

def _median_ms(func: Callable[[], object], repetitions: int) -> tuple[float, object]:
    answer = func()  # warm: caches, plans
    times = []
    for _ in range(repetitions):
        started = time.perf_counter()
        func()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2), answer


def _queries(db: Database, repetitions: int) -> dict[str, tuple[float, object]]:
    small = store.scope(db, "small")
    search = name(123).split()[1][:4].lower()
    start = name(0)

    def on_small(func: Callable[[Session], object]) -> Callable[[], object]:
        return lambda: small.read(func)

    def labels(rows: Any) -> list[str]:
        return [r["label"] for r in rows]

    figures = {
        "concepts list": on_small(lambda s: labels(queries.list_concepts(s, None, 50))),
        f"concepts list --search {search}": on_small(
            lambda s: labels(queries.list_concepts(s, search, 50))),
        "graph neighbors --depth 2": on_small(lambda s: sorted(
            n["label"] for n in graph.neighbors(s, start, depth=2, limit=500)["neighbors"])),
        "collections list": lambda: [(c["name"], c["concepts"])
                                     for c in db.read(store.list_all)],
    }
    return {label: _median_ms(func, repetitions) for label, func in figures.items()}


def query_latency(dialect: str, concepts: int, relationships: int,
                  repetitions: int) -> dict[str, Any]:
    """The small collection's query times alone, then beside a large collection."""
    result: dict[str, Any] = {"dialect": dialect}
    for setup in ("alone", "beside"):
        with temp_database(dialect) as db:
            if setup == "beside":
                with db.session() as session:
                    big = store.create(session, "big", by="benchmark")
                result["big_build_s"] = round(seed(db, concepts, relationships,
                                                  collection_id=big["id"]), 1)
            with db.session() as session:
                small = store.create(session, "small", by="benchmark")
            seed(db, SMALL, SMALL * 3, collection_id=small["id"], chunks=100)
            result[setup] = _queries(db, repetitions)
            if dialect == "sqlite":
                # kg never runs ANALYZE on SQLite (what users get is the first figure); with
                # statistics, for comparison. (An index on collection_id alone, in a first
                # version of 0015, made the planner scan whole collections without them.)
                with db.engine.begin() as conn:
                    conn.exec_driver_sql("ANALYZE")
                db.engine.dispose()
                result[f"{setup} analyzed"] = _queries(db, repetitions)
    return result


# -- (b) migration -----------------------------------------------------------------------------

def migration(dialect: str, concepts: int, relationships: int) -> dict[str, Any]:
    """Seconds of `kg db upgrade` 0014 -> 0015 over a graph of this size."""
    with temp_database(dialect, "0014") as db:
        build_s = seed(db, concepts, relationships, collection_id=None)
        with db.engine.connect() as conn:
            before = conn.scalar(text("SELECT count(*) FROM concepts"))
        started = time.perf_counter()
        steps = migrate.upgrade(db, "0015")
        seconds = time.perf_counter() - started
        with db.engine.connect() as conn:
            in_default = conn.scalar(text("SELECT count(*) FROM concepts "
                                          "WHERE collection_id = 1"))
            size = (conn.scalar(text("SELECT pg_database_size(current_database())"))
                    if dialect == "postgresql" else
                    sum(os.path.getsize(f"{db.sqlite_path}{suffix}") for suffix in ("", "-wal")
                        if os.path.exists(f"{db.sqlite_path}{suffix}")))
    assert before == in_default == concepts, (before, in_default)
    return {"dialect": dialect, "steps": steps, "build_s": round(build_s, 1),
            "seconds": round(seconds, 1), "database_mb": round((size or 0) / 1e6),
            "rows": concepts * 3 + relationships * 2}


# -- main ----------------------------------------------------------------------------------------

def _postgresql_answers() -> bool:
    engine = create_engine(PG_ADMIN_URL)
    try:
        with engine.connect():
            return True
    except Exception:
        return False
    finally:
        engine.dispose()


def _ratio(a: float, b: float) -> str:
    return f"{a / b if b else 0:>6.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.collections")
    parser.add_argument("--dialect", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--concepts", type=int, default=100_000)
    parser.add_argument("--relationships", type=int, default=300_000)
    parser.add_argument("--repetitions", type=int, default=30)
    args = parser.parse_args()
    dialects = ["sqlite", "postgresql"] if args.dialect == "both" else [args.dialect]
    if "postgresql" in dialects and not _postgresql_answers():
        print(f"(PostgreSQL at {PG_ADMIN_URL} does not answer: SQLite only)")
        dialects.remove("postgresql")
    started = time.perf_counter()
    for dialect in dialects:
        q = query_latency(dialect, args.concepts, args.relationships, args.repetitions)
        print(f"{dialect}: small collection ({SMALL:,} concepts, {SMALL * 3:,} relationships) "
              f"alone vs beside {args.concepts:,} concepts / {args.relationships:,} "
              f"relationships (built in {q['big_build_s']}s); median ms of "
              f"{args.repetitions}")
        analyzed = "alone analyzed" in q
        print(f"  {'query':34} {'alone':>8} {'beside':>8} {'ratio':>6}"
              + (f" {'alone*':>8} {'beside*':>8} {'ratio*':>6}" if analyzed else "")
              + "  same answer")
        for label, (alone_ms, answer) in q["alone"].items():
            beside_ms, beside_answer = q["beside"][label]
            same = "n/a (counts differ)" if label == "collections list" else (
                "yes" if answer == beside_answer else "NO")
            line = f"  {label:34} {alone_ms:>8} {beside_ms:>8} {_ratio(beside_ms, alone_ms)}"
            if analyzed:
                a, b = q["alone analyzed"][label][0], q["beside analyzed"][label][0]
                line += f" {a:>8} {b:>8} {_ratio(b, a)}"
            print(f"{line}  {same}")
        if analyzed:
            print("  (* after ANALYZE, which kg does not run on SQLite)")
    for dialect in dialects:
        m = migration(dialect, args.concepts, args.relationships)
        print(f"{dialect}: upgrade {m['steps'][0]} -> {m['steps'][1]} of {args.concepts:,} "
              f"concepts, {args.relationships:,} relationships, {m['rows']:,} graph rows "
              f"({m['database_mb']} MB, built in {m['build_s']}s): {m['seconds']}s")
    print(f"({time.perf_counter() - started:.0f}s on this machine)")


if __name__ == "__main__":
    main()
