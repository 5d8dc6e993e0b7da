"""Prometheus metrics computed from the database, so they are right whichever process did the
work (the CLI, workers, this server) and survive restarts.

A scrape runs a few aggregate queries over `calls`, `chunk_extractions`, `runs` and the graph
tables (cached for `ttl_s`, so several scrapers cost one set of queries); every figure from the
database has a `collection` label (the collection's name). They are Core statements, which no
collection filter touches: one scrape covers every collection. The server's own HTTP traffic is
counted in memory: it is about this process only.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any, cast

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Table, case, func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kg.db import Database
from kg.db.models import (
    Call,
    ChunkExtraction,
    Collection,
    Concept,
    Document,
    Evidence,
    Relationship,
    Run,
)
from kg.db.runstate import RunStatus, effective_status

CALLS = cast(Table, Call.__table__)
# Seconds; LLM calls range from a cached tiny model to minutes of thinking.
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
CALL_LABELS = ["collection", "provider", "model", "profile"]
COLLECTION = "collection"
# The graph's size per collection: gauge name, table, help.
GRAPH_ROWS = (("kg_documents", Document, "Documents, by collection."),
              ("kg_concepts", Concept, "Concepts, by collection."),
              ("kg_relationships", Relationship, "Relationships, by collection."),
              ("kg_evidence", Evidence, "Evidence rows (quotes), by collection."))
Names = dict[int, str]


def _name(names: Names, collection_id: int) -> str:
    return names.get(collection_id, f"#{collection_id}")  # deleted since the names were read
# Columns that arrive with fallback profiles and the call cache; counted when they exist.
OPTIONAL_FLAGS = {"fallback": "LLM requests sent to a fallback profile.",
                  "cached": "Requests answered from the call cache (no LLM call made)."}


def _calls(conn: Connection, names: Names) -> list[Metric]:
    calls = CounterMetricFamily("kg_llm_calls", "LLM requests, by outcome.",
                                labels=[*CALL_LABELS, "status"])
    retries = CounterMetricFamily("kg_llm_retries", "LLM requests that repeated a chunk's "
                                  "earlier attempt (attempt > 1).", labels=CALL_LABELS)
    tokens = CounterMetricFamily("kg_llm_tokens", "Tokens, by kind (prompt, completion, "
                                 "thinking).", labels=[*CALL_LABELS, "kind"])
    latency = HistogramMetricFamily("kg_llm_call_latency_seconds", "LLM request latency.",
                                    labels=CALL_LABELS)
    flags = {name: (column, CounterMetricFamily(f"kg_llm_{name}_calls", doc, labels=CALL_LABELS))
             for name, doc in OPTIONAL_FLAGS.items()
             if (column := CALLS.c.get(name)) is not None}
    buckets = [func.sum(case((Call.latency_ms <= b * 1000, 1), else_=0)) for b in LATENCY_BUCKETS]
    flag_sums = [func.sum(case((column.is_(True), 1), else_=0)) for column, _f in flags.values()]
    query = (select(Call.collection_id, Call.provider, Call.model, Call.profile_name,
                    Call.status,
                    func.count(Call.id), func.sum(case((Call.attempt > 1, 1), else_=0)),
                    func.coalesce(func.sum(Call.prompt_tokens), 0),
                    func.coalesce(func.sum(Call.completion_tokens), 0),
                    func.coalesce(func.sum(Call.thinking_tokens), 0),
                    func.coalesce(func.sum(Call.latency_ms), 0), *flag_sums, *buckets)
             .group_by(Call.collection_id, Call.provider, Call.model, Call.profile_name,
                       Call.status))
    per_group: dict[tuple[str, str, str, str], list[float]] = defaultdict(
        lambda: [0.0] * (len(LATENCY_BUCKETS) + 2))
    for collection_id, *row in conn.execute(query):
        provider, model, profile, status, count, again = row[:6]
        labels = [_name(names, collection_id), provider, model, profile]
        calls.add_metric([*labels, status], int(count))
        retries.add_metric(labels, int(again or 0))  # one sample per status: summed below
        for kind, value in zip(("prompt", "completion", "thinking"), row[6:9], strict=True):
            tokens.add_metric([*labels, kind], int(value))
        for (_column, family), value in zip(flags.values(), row[10:10 + len(flags)],
                                            strict=True):
            family.add_metric(labels, int(value or 0))
        acc = per_group[(labels[0], provider, model, profile)]
        acc[0] += int(count)
        acc[1] += float(row[9]) / 1000
        for i, value in enumerate(row[10 + len(flags):]):
            acc[2 + i] += int(value or 0)
    for group, acc in per_group.items():
        cumulative = [(f"{b:g}", acc[2 + i]) for i, b in enumerate(LATENCY_BUCKETS)]
        latency.add_metric(list(group), [*cumulative, ("+Inf", acc[0])], acc[1])
    return [calls, _merge(retries), _merge(tokens), latency,
            *(_merge(family) for _column, family in flags.values())]


def _merge(family: CounterMetricFamily) -> CounterMetricFamily:
    """Sum samples that share their labels (queries group by more than the family shows)."""
    totals: dict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(float)
    for sample in family.samples:
        totals[(sample.name, tuple(sample.labels.items()))] += sample.value
    merged = CounterMetricFamily(family.name, family.documentation,
                                 labels=list(family.samples[0].labels) if family.samples else [])
    for (_name, labels), value in totals.items():
        merged.add_metric([v for _k, v in labels], value)
    return merged


def _chunks(conn: Connection, names: Names) -> list[Metric]:
    """Chunks by outcome, profile and model: a chunk counts for the model of the profile
    revision that extracted it (from the run's snapshots; hot reload can change it)."""
    chunks = CounterMetricFamily("kg_chunks", "Chunks committed (ok) or recorded as failed.",
                                 labels=[COLLECTION, "profile", "model", "status"])
    snapshots: dict[int, tuple[str, str, list[dict[str, Any]]]] = {
        run_id: (_name(names, collection_id), profile, used or [])
        for run_id, collection_id, profile, used in conn.execute(
            select(Run.id, Run.collection_id, Run.profile_name, Run.profiles_used))}
    totals: dict[tuple[str, str, str, str], int] = defaultdict(int)
    for run_id, revision, status, count in conn.execute(
            select(ChunkExtraction.run_id, ChunkExtraction.profile_revision,
                   ChunkExtraction.status, func.count(ChunkExtraction.id))
            .group_by(ChunkExtraction.run_id, ChunkExtraction.profile_revision,
                      ChunkExtraction.status)):
        collection, profile, used = snapshots.get(run_id, ("?", "?", []))
        model = "?"
        for snap in used:
            if snap.get("revision") == revision:
                profile, model = snap.get("profile", profile), snap.get("model", model)
        totals[(collection, profile, model, status)] += int(count)
    for labels, value in sorted(totals.items()):
        chunks.add_metric(list(labels), value)
    return [chunks]


def _runs(conn: Connection, names: Names) -> list[Metric]:
    runs = GaugeMetricFamily("kg_runs", "Ingestion runs by status (a running run whose process "
                             "is gone counts as interrupted).", labels=[COLLECTION, "status"])
    live = GaugeMetricFamily("kg_runs_in_progress", "Runs in progress, by profile.",
                             labels=[COLLECTION, "profile"])
    # Every collection shows every status, 0 included: a dashboard need not guess.
    by_status: dict[tuple[str, str], int] = {(n, s.value): 0 for n in names.values()
                                             for s in RunStatus}
    for collection_id, status, count in conn.execute(
            select(Run.collection_id, Run.status, func.count(Run.id))
            .where(Run.status != RunStatus.RUNNING).group_by(Run.collection_id, Run.status)):
        key = (_name(names, collection_id), status)
        by_status[key] = by_status.get(key, 0) + int(count)
    in_progress: dict[tuple[str, str], int] = defaultdict(int)
    for run in conn.execute(select(Run.collection_id, Run.status, Run.heartbeat_at, Run.pid,
                                   Run.host, Run.profile_name)
                            .where(Run.status == RunStatus.RUNNING)):
        status = effective_status(run)
        collection = _name(names, run.collection_id)
        by_status[(collection, status.value)] = by_status.get((collection, status.value), 0) + 1
        if status == RunStatus.RUNNING:
            in_progress[(collection, run.profile_name)] += 1
    for labels, count in sorted(by_status.items()):
        runs.add_metric(list(labels), count)
    for labels, count in sorted(in_progress.items()):
        live.add_metric(list(labels), count)
    return [runs, live]


def _graph(conn: Connection, names: Names) -> list[Metric]:
    families: list[Metric] = []
    for metric, model, doc in GRAPH_ROWS:
        family = GaugeMetricFamily(metric, doc, labels=[COLLECTION])
        counts = dict.fromkeys(names, 0)
        for collection_id, count in conn.execute(
                select(model.collection_id, func.count()).group_by(model.collection_id)):
            counts[collection_id] = int(count)
        for collection_id, count in sorted(counts.items()):
            family.add_metric([_name(names, collection_id)], count)
        families.append(family)
    return families


class DatabaseCollector(Collector):
    """Reads every kg metric from the database at scrape time (cached for `ttl_s`)."""

    def __init__(self, db: Database, ttl_s: float = 5.0) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Metric]] | None = None

    def describe(self) -> Iterable[Metric]:
        return []  # no query at registration time

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > self.ttl_s:
                with self.db.engine.connect() as conn:
                    names: Names = {i: n for i, n in conn.execute(
                        select(Collection.id, Collection.name))}
                    families = [*_calls(conn, names), *_chunks(conn, names),
                                *_runs(conn, names), *_graph(conn, names)]
                    conn.rollback()
                self._cached = (now, families)
            families = self._cached[1]
        yield from families


class HttpCounters:
    """This server's own HTTP figures (in memory: they are about this process)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("kg_http_requests", "HTTP requests answered by this server.",
                                ["method", "route", "status"], registry=registry)
        self.seconds = Histogram("kg_http_request_duration_seconds",
                                 "Time to the first byte of the answer.", ["route"],
                                 registry=registry)


class HttpMetrics:
    """Counts requests by method, route template and status."""

    def __init__(self, app: ASGIApp, counters: HttpCounters) -> None:
        self.app = app
        self.requests = counters.requests
        self.seconds = counters.seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def observe(message: Message) -> None:
            if message["type"] == "http.response.start":
                route = scope.get("route")
                template = getattr(route, "path", None) or "(unmatched)"
                self.requests.labels(scope["method"], template, str(message["status"])).inc()
                self.seconds.labels(template).observe(time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, observe)


def registry_for(db: Database, ttl_s: float = 5.0) -> CollectorRegistry:
    """A registry with kg's database metrics and this process's own (CPU, memory, fds)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(db, ttl_s))
    ProcessCollector(registry=registry)
    return registry
