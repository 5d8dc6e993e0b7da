"""The notebook API: `import kg; g = kg.open()`, then read, export and curate the graph.

`kg.open()` reads the same settings as the CLI (KG_DATABASE_URL, KG_HOME, KG_PROFILE,
KG_COLLECTION) and every method calls the same library function as the matching command, so a
notebook and a shell see the same graph the same way. A Graph works in one collection:
`kg.open(collection="slides")`.

It is also the one door through which the front ends start ingestions: the server's run
routes take the request, summary and progress types and `ingest` from here, never from
`kg.extraction` (an import-linter contract checks it).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

from kg import curation, graph, queries
from kg.db import Database, open_database
from kg.errors import KgError
from kg.export import ExportFilter, ExportResult, export_graph
from kg.export.source import GraphSource, snapshot
from kg.extraction.chunking import ChunkingOptions
from kg.extraction.ingest import (
    IngestRequest,
    IngestSummary,
    Interrupted,
    NoRun,
    Planning,
    Progress,
    ingest,
)
from kg.extraction.loaders import KINDS as FILE_KINDS
from kg.extraction.plan import discover as discover_files
from kg.settings import Settings, load_settings
from kg.training import TrainingResult, export_training

if TYPE_CHECKING:
    import networkx
    from sqlalchemy.orm import Session

# The door for front ends that start runs (with Graph and open, the public names).
__all__ = ["FILE_KINDS", "ChunkingOptions", "Graph", "IngestRequest", "IngestSummary",
           "Interrupted", "NoRun", "Planning", "Progress", "discover_files", "ingest", "open"]

log = logging.getLogger(__name__)
Rows = list[dict[str, Any]]


class Graph:
    """A handle on one collection of a kg database; close it (or use `with`) when done."""

    def __init__(self, database: Database, settings: Settings | None = None) -> None:
        self.database = database
        self.settings = settings or load_settings()
        self.by = os.environ.get("USER") or "notebook"

    # -- plumbing -------------------------------------------------------------------------
    @property
    def collection(self) -> str:
        """The name of the collection this graph is."""
        return self.database.collection

    def session(self) -> Session:
        """A SQLAlchemy session for queries of your own (commit or roll back yourself); its
        ORM queries see only this collection and its new rows go there."""
        return self.database.sessions()

    def close(self) -> None:
        self.database.dispose()

    def __enter__(self) -> Graph:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<kg.Graph {self.database.display_url} collection {self.collection!r}>"

    # -- writing --------------------------------------------------------------------------
    def ingest(self, paths: str | Path | Iterable[str | Path], profile: str | None = None, *,
               recursive: bool = True, force: bool = False, **options: Any) -> IngestSummary:
        """Extract concepts and relationships from files or folders (like `kg ingest`);
        `profile` picks a profile for this call only (default: $KG_PROFILE, else the active);
        `options` are further IngestRequest fields (chunking, fuzzy_threshold, resume, ...)."""
        items = [paths] if isinstance(paths, str | Path) else list(paths)
        request = IngestRequest(paths=[Path(p) for p in items], recursive=recursive,
                                profile=profile or self.settings.profile, force=force,
                                **options)
        return ingest(self.database, request, models_dir=self.settings.models_dir)

    # -- reading --------------------------------------------------------------------------
    def concepts(self, search: str | None = None, limit: int = 50) -> Rows:
        """Concepts, most mentioned first, optionally those whose label or alias has `search`."""
        return list(self.database.read(queries.list_concepts, search, limit))

    def concept(self, name: str) -> dict[str, Any]:
        """One concept by label, alias or id: aliases, relationships, evidence."""
        return dict(self.database.read(queries.concept_detail, name))

    def relationships(self, type: str | None = None, concept: str | None = None, *,
                      min_confidence: float | None = None, limit: int = 100) -> Rows:
        """Relationships, filtered by type name and/or one concept (either end)."""
        return list(self.database.read(graph.list_relationships, type=type, concept=concept,
                                       min_confidence=min_confidence, limit=limit))

    def neighbors(self, label: str, depth: int = 1, limit: int = 500) -> dict[str, Any]:
        """Concepts within `depth` relationships of `label`, and the relationships between."""
        return dict(self.database.read(graph.neighbors, label, depth=depth, limit=limit))

    def path(self, a: str, b: str, max_depth: int = 4) -> dict[str, Any]:
        """A shortest chain of relationships from `a` to `b` (`steps` empty if none)."""
        return dict(self.database.read(graph.path, a, b, max_depth=max_depth))

    def documents(self, search: str | None = None, limit: int = 100) -> Rows:
        return list(self.database.read(graph.list_documents, search=search, limit=limit))

    def document(self, path: str | Path) -> dict[str, Any]:
        return dict(self.database.read(graph.document_detail, str(path)))

    # -- out --------------------------------------------------------------------------------
    def export(self, format: str, path: str | Path | None = None, *, stream: TextIO | None = None,
               run: int | None = None, document: str | None = None,
               min_confidence: float | None = None, base_iri: str = "urn:kg:") -> ExportResult:
        """Write the graph as graphml, gexf, jsonl, csv (a folder), cypher or turtle."""
        scope = ExportFilter(run=run, document=document, min_confidence=min_confidence)
        return export_graph(self.database, format, Path(path) if path is not None else None,
                            scope=scope, base_iri=base_iri, stream=stream)

    def export_training(self, path: str | Path, *, min_confidence: float | None = None,
                        profile: str | None = None) -> TrainingResult:
        """Chat-format JSON Lines for fine-tuning (see `kg export training`)."""
        return export_training(self.database, Path(path), min_confidence=min_confidence,
                               profile=profile)

    def to_networkx(self, *, run: int | None = None, document: str | None = None,
                    min_confidence: float | None = None) -> networkx.MultiDiGraph:
        """The graph as a networkx MultiDiGraph: nodes are concept ids, edges keyed by
        relationship id, with the same attributes as the GraphML export."""
        try:
            import networkx as nx
        except ImportError:
            raise KgError("to_networkx needs networkx: pip install networkx") from None
        result: networkx.MultiDiGraph = nx.MultiDiGraph()
        scope = ExportFilter(run=run, document=document, min_confidence=min_confidence)
        with self.database.engine.connect() as conn:
            snapshot(conn, self.database)
            source = GraphSource(conn, scope)
            for n in source.nodes():
                result.add_node(n.id, label=n.label, description=n.description,
                                aliases=n.aliases, search_terms=n.search_terms,
                                evidence=n.evidence, documents=n.documents, type=n.type)
            for e in source.edges():
                result.add_edge(e.source_id, e.target_id, key=e.id, type=e.type,
                                category=e.category, direction=e.direction,
                                confidence=e.confidence, evidence=e.evidence)
            conn.rollback()
        return result

    # -- curation ---------------------------------------------------------------------------
    def merge(self, a: str, b: str, into: str | None = None) -> dict[str, Any]:
        with self.database.session() as session:
            return curation.merge(session, a, b, into=into, by=self.by)

    def rename(self, old: str, new: str) -> dict[str, Any]:
        with self.database.session() as session:
            return curation.rename(session, old, new, by=self.by)

    def delete_concept(self, label: str) -> dict[str, Any]:
        with self.database.session() as session:
            return curation.delete_concept(session, label, by=self.by)

    def delete_relationship(self, relationship_id: int) -> dict[str, Any]:
        with self.database.session() as session:
            return curation.delete_relationship(session, relationship_id, by=self.by)

    def curation(self, limit: int = 50) -> Rows:
        return list(self.database.read(curation.list_decisions, limit=limit))

    def keep_apart(self, a: str, b: str) -> dict[str, Any]:
        """Two concepts are not one: resolution never merges or proposes the pair again."""
        with self.database.session() as session:
            return curation.keep_apart(session, a, b, by=self.by)

    def undo(self, decision_id: int, cascade: bool = False) -> dict[str, Any]:
        """Revert a decision; a merge later merges built on needs `cascade=True` (undoes
        them too, newest first)."""
        with self.database.session() as session:
            return curation.undo(session, decision_id, by=self.by, cascade=cascade)

    def delete_document(self, path: str | Path) -> dict[str, Any]:
        """Remove a document, its chunks and evidence, and what is left without evidence."""
        with self.database.session() as session:
            return graph.delete_document(session, str(path))


def open(url: str | None = None, collection: str | None = None) -> Graph:
    """Open the kg database: `url`, else KG_DATABASE_URL, else $KG_HOME/kg.db (created and
    migrated on first use, like the CLI; other databases need `kg db upgrade`), working in
    `collection` (else KG_COLLECTION, else `default`; see `kg collections list`)."""
    settings = load_settings()
    database = open_database(url, collection=collection)
    if database.migrated is not None:
        log.info("migrated the kg database %s: %s -> %s", database.display_url,
                 *database.migrated)
    return Graph(database, settings)
