"""The notebook API: `import kg; g = kg.open()` reads the CLI's settings, calls the same
functions, and gives the same answers, on both databases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

import kg as kg_package
from kg.errors import NotFoundError
from kg.extraction.chunking import ChunkingOptions
from tests.graph_seed import STORY, fake_ollama, rows, use_server


def test_open_ingest_read_export_and_networkx(kg, db, tmp_path: Path) -> None:
    doc = tmp_path / "story.md"
    doc.write_text(STORY, encoding="utf-8")
    with fake_ollama() as server:
        use_server(kg, server.url)  # the profile `test`, active
        assert kg("admin", "extraction", "set", "--profile", "other", "--provider", "ollama",
                  "--model", "qwen3:8b", "--base-url", "http://127.0.0.1:9",
                  "--activate").exit_code == 0  # active now points nowhere
        with kg_package.open() as g:  # KG_DATABASE_URL from the environment, like the CLI
            small = ChunkingOptions(target_tokens=60, min_tokens=20, max_tokens=120,
                                    overlap_tokens=0)
            summary = g.ingest(doc, profile="test", chunking=small)
            assert summary.status == "completed" and summary.chunks_ok >= 2
            assert server.chat_count == summary.calls

            holmes = g.concepts(search="holmes")
            assert [c["label"] for c in holmes] == ["Sherlock Holmes"]
            assert g.concept("sherlock holmes")["evidence"]
            cli_rows = json.loads(kg("relationships", "list", "--json").stdout)
            assert g.relationships() == cli_rows
            london = g.relationships(concept="London")
            assert london and all("London" in (r["source"], r["target"]) for r in london)
            near = g.neighbors("Sherlock Holmes", depth=1)
            assert {n["label"] for n in near["neighbors"]} == {"Baker Street", "London"}
            assert g.path("Baker Street", "Moriarty")["steps"]

            out = tmp_path / "graph.graphml"
            result = g.export("graphml", out)
            graph = g.to_networkx()
            (concepts,) = rows(db, "SELECT count(*) FROM concepts")[0]
            (edges,) = rows(db, "SELECT count(*) FROM relationships")[0]
            assert result.concepts == graph.number_of_nodes() == concepts
            assert result.relationships == graph.number_of_edges() == edges
            assert nx.read_graphml(out).number_of_edges() == edges
            ids = {label: cid for cid, label in rows(db, "SELECT id, label FROM concepts")}
            assert graph.nodes[ids["London"]]["label"] == "London"
            assert all("confidence" in d and d["type"] for _s, _t, d in graph.edges(data=True))

            decision = g.merge("Moriarty", "Professor Moriarty", into="Professor Moriarty")
            assert g.curation()[0]["id"] == decision["id"]
            assert g.to_networkx().number_of_nodes() == concepts - 1
            g.undo(decision["id"])
            assert g.to_networkx().number_of_nodes() == concepts
            with pytest.raises(NotFoundError, match="no concept named 'Nobody'"):
                g.neighbors("Nobody")
        assert "sqlite" in repr(g) or "postgresql" in repr(g)


def test_open_creates_the_default_database_like_the_cli(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KG_DATABASE_URL", raising=False)
    monkeypatch.setenv("KG_HOME", str(tmp_path / "home"))
    with kg_package.open() as g:
        assert g.concepts() == [] and g.documents() == []
    assert (tmp_path / "home" / "kg.db").stat().st_size > 0


def test_import_kg_stays_light() -> None:
    """`import kg` must not pull in the database layer: the CLI and completion import it."""
    code = "import sys, kg; print(sorted(m for m in ('sqlalchemy', 'kg.api') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert out.stdout.strip() == "[]"
    assert callable(kg_package.open) and kg_package.__version__
