"""kg mcp: the graph's tools through the official MCP SDK's own client, in process and over
stdio (a real `kg mcp` subprocess); read-only unless started with an admin token."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

from kg import tokens
from kg.db import Database
from kg.errors import UsageError
from kg.server.mcp import admin_actor, build
from tests import test_ask
from tests.graph_seed import rows

# test_ask's fixtures: a fake Ollama server that extracts and answers, and the story ingested.
answering, server, story = test_ask.answering, test_ask.server, test_ask.story


def _call(target: Any, calls: list[tuple[str, dict[str, Any]]]) -> tuple[list[str], list[Any]]:
    async def main() -> tuple[list[str], list[Any]]:
        async with Client(target) as client:
            names = sorted(t.name for t in (await client.list_tools()).tools)
            results = [await client.call_tool(name, args) for name, args in calls]
            return names, results
    return anyio.run(main)


def test_read_tools_through_the_sdk_client(story: Path, db_url: str) -> None:
    db = Database(db_url)
    try:
        names, (found, concept, near, quotes, answer, plain) = _call(build(db), [
            ("search", {"query": "Moriarty"}),
            ("concept", {"label": "Colonel Moran"}),
            ("neighbors", {"label": "Colonel Moran", "depth": 2}),
            ("evidence", {"label": "Colonel Moran"}),
            ("ask", {"question": "Who does Colonel Moran serve?"}),
            ("ask", {"question": "Who does Colonel Moran serve?", "no_llm": True}),
        ])
    finally:
        db.dispose()
    assert names == ["ask", "concept", "evidence", "neighbors", "search"]
    assert not any(r.is_error for r in (found, concept, near, quotes, answer, plain))
    assert any(h["title"] == "Professor Moriarty" for h in found.structured_content["hits"])
    assert concept.structured_content["label"] == "Colonel Moran"
    assert near.structured_content["neighbors"]
    assert quotes.structured_content["evidence"][0]["quote"]
    cited = {c["id"] for c in answer.structured_content["citations"]}
    retrieved = {e["id"] for e in answer.structured_content["retrieval"]["evidence"]}
    assert cited and cited <= retrieved
    assert plain.structured_content["answer"] is None
    assert [s for (s,) in rows(Database(db_url),
                               "SELECT status FROM calls WHERE kind = 'ask'")] == ["ok"]


def test_bad_calls_are_errors_and_write_nothing(story: Path, db_url: str) -> None:
    db = Database(db_url)
    try:
        _names, results = _call(build(db), [
            ("concept", {"label": "Nobody"}),
            ("ask", {"question": "   "}),
            ("search", {"query": 42, "limit": "many"}),
            ("neighbors", {"label": "Colonel Moran", "depth": 9}),
            ("rename", {"old": "Colonel Moran", "new": "X"}),
        ])
    finally:
        db.dispose()
    assert all(r.is_error for r in results)
    texts = [r.content[0].text for r in results]
    assert "no concept named 'Nobody'" in texts[0]
    assert "question is empty" in texts[1]
    assert not rows(Database(db_url), "SELECT id FROM calls WHERE kind = 'ask'")
    assert rows(Database(db_url), "SELECT label FROM concepts WHERE label = 'X'") == []


def test_admin_token_adds_curation(story: Path, db_url: str) -> None:
    db = Database(db_url)
    try:
        with db.session() as session:
            _row, admin = tokens.create(session, "agent", "admin", by="test")
            _row, reader = tokens.create(session, "reader", "read", by="test")
        for bad in (reader, "kgt_nope"):
            try:
                admin_actor(db, bad)
                raise AssertionError("accepted " + bad)
            except UsageError:
                pass
        names, (renamed, apart, again, itself) = _call(build(db, actor=admin_actor(db, admin)), [
            ("rename", {"old": "Colonel Moran", "new": "Sebastian Moran"}),
            ("keep_apart", {"a": "Sherlock Holmes", "b": "Sebastian Moran"}),
            ("keep_apart", {"a": "Sebastian Moran", "b": "Sherlock Holmes"}),
            ("keep_apart", {"a": "Sherlock Holmes", "b": "Sherlock Holmes"})])
    finally:
        db.dispose()
    assert {"merge", "rename", "keep_apart"} <= set(names) and not renamed.is_error
    assert not apart.is_error and apart.structured_content["action"] == "keep_apart"
    assert again.is_error and "already kept apart" in again.content[0].text
    assert itself.is_error and "one concept" in itself.content[0].text
    assert rows(Database(db_url), "SELECT action, created_by FROM curation_decisions "
                                  "ORDER BY id") == [("rename", "token:agent"),
                                                     ("keep_apart", "token:agent")]


def test_kg_mcp_over_stdio(story: Path, kg_env: dict[str, str]) -> None:
    root = Path(__file__).resolve().parent.parent
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "kg.cli", "mcp"], cwd=str(root),
        env={**os.environ, **kg_env, "PYTHONPATH": str(root)})
    names, (found,) = _call(params, [("search", {"query": "Moriarty"})])
    assert "search" in names and "rename" not in names
    assert found.structured_content["hits"]


def test_kg_mcp_over_streamable_http(story: Path, kg_env: dict[str, str]) -> None:
    import socket
    import subprocess
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root = Path(__file__).resolve().parent.parent
    process = subprocess.Popen(
        [sys.executable, "-m", "kg.cli", "mcp", "--http", "--port", str(port)], cwd=root,
        env={**os.environ, **kg_env, "PYTHONPATH": str(root)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        names, (found, unknown) = _call(f"http://127.0.0.1:{port}/mcp", [
            ("search", {"query": "Moriarty"}), ("nope", {})])
    finally:
        process.terminate()
        process.wait(10)
    assert names == ["ask", "concept", "evidence", "neighbors", "search"]
    assert found.structured_content["hits"] and unknown.is_error
