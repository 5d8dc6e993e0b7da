"""`kg mcp`: the graph as tools for agents, with the official MCP Python SDK (stdio or
streamable HTTP).

Tools: `search` (query), `concept` (label), `neighbors` (label, depth), `evidence` (label),
`ask` (question; the profile's model answers with grounded citations, a `calls` row of kind
`ask`). Read-only, unless started with an admin token: then `rename`, `merge` and
`keep_apart` (curation, recorded under the token's name, undone with `kg curation undo`) are
offered too. Every tool works in one collection.
An expected failure (unknown concept, empty question, model down) is a tool error with kg's
one-line message; an unknown tool or malformed arguments are the SDK's errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

from kg import __version__, curation, graph, queries, retrieval
from kg import ask as kg_ask
from kg import search as kg_search
from kg import tokens as kg_tokens
from kg.db import Database
from kg.errors import KgError, UsageError
from kg.jsonable import json_default

READ = ToolAnnotations(readOnlyHint=True, openWorldHint=False)
WRITE = ToolAnnotations(readOnlyHint=False, destructiveHint=True, openWorldHint=False)
# Keeping a pair apart changes no concept: it only stops resolution from joining them.
RECORD = ToolAnnotations(readOnlyHint=False, destructiveHint=False, openWorldHint=False)
INSTRUCTIONS = """A knowledge graph extracted from documents: concepts, typed relationships and \
verbatim evidence quotes (document, character offsets). Start with `search`, then `concept`, \
`neighbors` or `evidence`; `ask` answers a question with citations of evidence ids."""


def admin_actor(db: Database, token: str | None) -> str | None:
    """The actor name of an admin token (curation tools on), None without one; a token that
    is not a live admin token is a UsageError."""
    if not token:
        return None
    with db.session() as session:
        principal = kg_tokens.authenticate(session, token.strip())
    if principal is None:
        raise UsageError("--token is not a live kg API token; see `kg admin tokens list`")
    if principal.scope is not kg_tokens.TokenScope.ADMIN:
        raise UsageError(f"token {principal.name} has the {principal.scope} scope; curation "
                         "tools need an admin token (or leave out --token: read-only)")
    if not principal.may_use(db.collection_id):
        raise UsageError(f"token {principal.name} may not use collection {db.collection}")
    return principal.actor


def _plain(data: Any) -> Any:
    """JSON-safe values (datetimes as ISO 8601) for the tools' structured output."""
    if isinstance(data, dict):
        return {str(k): _plain(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_plain(v) for v in data]
    if data is None or isinstance(data, str | int | float | bool):
        return data
    return json_default(data)


def _run(func: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    try:
        return dict(_plain(func(*args, **kwargs)))
    except KgError as exc:
        raise ToolError(exc.message) from None


def build(db: Database, *, actor: str | None = None,
          models_dir: Path | None = None) -> MCPServer:
    """The MCP server over one collection of `db`; `actor` (an admin token's) adds curation."""
    server: MCPServer = MCPServer(name="kg", version=__version__, instructions=INSTRUCTIONS)

    @server.tool(annotations=READ)
    def search(query: str, limit: int = 10) -> dict[str, Any]:
        """Full-text search over concept labels, aliases, descriptions, evidence quotes and
        chunk text; ranked hits with snippets."""
        return _run(db.read, kg_search.search, query, limit=_bounded(limit, 100))

    @server.tool(annotations=READ)
    def concept(label: str) -> dict[str, Any]:
        """One concept by label, alias or id: description, aliases, relationships both ways,
        and its first evidence quotes."""
        return _run(db.read, queries.concept_detail, label)

    @server.tool(annotations=READ)
    def neighbors(label: str, depth: int = 1) -> dict[str, Any]:
        """Concepts within `depth` relationships of a concept (1-3), with those relationships."""
        return _run(db.read, graph.neighbors, label, depth=_bounded(depth, 3), limit=200)

    @server.tool(annotations=READ)
    def evidence(label: str, limit: int = 20) -> dict[str, Any]:
        """The verbatim quotes supporting a concept: document, characters (and page)."""
        found = _run(db.read, queries.concept_detail, label,
                     evidence_limit=_bounded(limit, 200))
        return {"concept": found["label"], "evidence": found["evidence"]}

    @server.tool(annotations=ToolAnnotations(readOnlyHint=True, openWorldHint=False))
    def ask(question: str, no_llm: bool = False) -> dict[str, Any]:
        """An answer from the graph, each sentence citing evidence ids (the quotes are in
        `citations`); "not in the graph" when nothing answers it. `no_llm`: the retrieved
        subgraph and evidence only."""
        return _run(kg_ask.ask, db, question, no_llm=no_llm,
                    options=retrieval.Options(), models_dir=models_dir)

    if actor is not None:
        @server.tool(annotations=WRITE)
        def rename(old: str, new: str) -> dict[str, Any]:
            """Rename a concept (curation, recorded and undoable with `kg curation undo`)."""
            with db.session() as session:
                return _run(curation.rename, session, old, new, by=actor)

        @server.tool(annotations=WRITE)
        def merge(a: str, b: str) -> dict[str, Any]:
            """Merge concept `b` into concept `a` (curation, recorded and undoable)."""
            with db.session() as session:
                return _run(curation.merge, session, a, b, into=a, by=actor)

        @server.tool(annotations=RECORD)
        def keep_apart(a: str, b: str) -> dict[str, Any]:
            """Record that concepts `a` and `b` are not one thing: entity resolution never
            merges or proposes the pair again (curation, recorded and undoable)."""
            with db.session() as session:
                return _run(curation.keep_apart, session, a, b, by=actor)

    return server


def _bounded(value: int, upper: int) -> int:
    if not 1 <= value <= upper:
        raise ToolError(f"must be between 1 and {upper} (got {value})")
    return value
