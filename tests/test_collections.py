"""Collections from the CLI and the notebook API, on both databases: `kg collections ...`,
--collection / -o / KG_COLLECTION on graph commands, and no read command showing another
collection's rows."""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import kg as kg_package
from kg.db import Database
from kg.db import collections as store
from kg.db.models import Evaluation, Run, utcnow
from kg.errors import NotFoundError
from tests.graph_seed import SMALL_CHUNKS, fake_ollama, rows, use_server
from tests.terminal import run_in_pty

# Overlapping labels on purpose (Sherlock Holmes, London, Baker Street are in both), and
# labels only one collection has (Mrs Hudson, Moriarty / Irene Adler, Bohemia).
STORY_A = """# Baker Street

Sherlock Holmes lives at Baker Street in London with Doctor Watson. Mrs Hudson keeps the house.

# Enemies

Professor Moriarty runs a criminal network across London.
"""
STORY_B = """# Bohemia

Sherlock Holmes leaves Baker Street in London for Bohemia. Irene Adler outwits the King.

# Aftermath

Irene Adler keeps the photograph. Godfrey Norton marries Irene Adler.
"""
ONLY_B = ("Irene Adler", "The Woman", "Bohemia", "Godfrey Norton", "b-story.md")

# Every read command of the leak test (each run with `--collection A`), with what the `id` of
# its JSON rows is; keep it in step with the commands that get --collection
# (kg.cli.main.NOT_IN_A_COLLECTION lists those that do not).
READ_COMMANDS: list[tuple[list[str], str | None]] = [
    (["concepts", "list", "--limit", "1000", "--json"], "concepts"),
    (["concepts", "list", "--search", "Holmes", "--json"], "concepts"),
    (["concepts", "show", "Sherlock Holmes", "--json"], "concepts"),
    (["relationships", "list", "--json"], "relationships"),
    (["relationships", "list", "--concept", "Sherlock Holmes", "--json"], "relationships"),
    (["graph", "neighbors", "Sherlock Holmes", "--depth", "3", "--json"], None),
    (["graph", "path", "Sherlock Holmes", "London", "--json"], None),
    (["documents", "list", "--json"], "documents"),
    (["documents", "show", "{dir}/a-story.md", "--json"], None),
    (["runs", "list", "--json"], "runs"),
    (["logs", "--all", "--json"], "calls"),
    (["curation", "list", "--json"], None),
    (["eval", "list", "--json"], None),
    (["admin", "extraction", "analytics", "--json"], None),
    (["export", "--format", "jsonl"], None),
    (["export", "--format", "graphml"], None),
    (["export", "training"], None),
]
ID_KEYS = {"concepts": "concept_id", "relationships": "relationship_id", "runs": "run_id",
           "documents": "document_id", "calls": "call_id"}


def _json(result: Any) -> Any:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _one_line_error(result: Any, code: int = 2) -> str:
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    return str(result.stderr)


# -- kg collections ---------------------------------------------------------------------------

def test_create_list_show_rename_pin_delete(kg) -> None:
    made = kg("collections", "create", "slides", "--description", "lecture slides")
    assert made.exit_code == 0, made.stderr
    assert "created collection slides" in made.stdout and "kg ingest -o slides" in made.stdout
    listed = _json(kg("collections", "list", "--json"))
    assert [(c["name"], c["concepts"], c["documents"]) for c in listed] == [
        ("default", 0, 0), ("slides", 0, 0)]
    assert listed[1]["description"] == "lecture slides" and listed[1]["created_by"] == "tester"
    table = kg("collections", "list")
    assert table.exit_code == 0
    assert table.stdout.split()[:7] == ["NAME", "DOCUMENTS", "CONCEPTS", "RELATIONSHIPS", "RUNS",
                                        "PINNED", "DESCRIPTION"]
    assert "lecture slides" in table.stdout
    shown = kg("collections", "show", "slides")
    assert "lecture slides" in shown.stdout and "not pinned" in shown.stdout
    assert _json(kg("collections", "show", "slides", "--json"))["name"] == "slides"

    assert kg("collections", "rename", "slides", "decks").stdout.strip() == \
        "renamed collection slides to decks"
    assert [c["name"] for c in _json(kg("collections", "list", "--json"))] == ["default", "decks"]

    pinned = _json(kg("collections", "pin", "decks", "--profile", "default", "--json"))
    assert (pinned["profile"], pinned["ontology"]) == ("default", None)
    decks = next(line for line in kg("collections", "list").stdout.splitlines()
                 if line.startswith("decks"))
    assert decks.split()[5] == "default"  # PINNED
    cleared = _json(kg("collections", "pin", "decks", "--clear", "--json"))
    assert (cleared["profile"], cleared["ontology"]) == (None, None)

    gone = kg("collections", "delete", "decks", "--yes")
    assert gone.exit_code == 0, gone.stderr
    assert gone.stdout.startswith("deleted collection decks: 0 documents, 0 concepts")
    assert [c["name"] for c in _json(kg("collections", "list", "--json"))] == ["default"]
    made = _json(kg("collections", "create", "pinned", "--profile", "default", "--json"))
    assert made["profile"] == "default"


def test_bad_names_and_refusals_are_one_line_errors(kg) -> None:
    assert kg("collections", "create", "slides").exit_code == 0
    duplicate = _one_line_error(kg("collections", "create", " slides "))
    assert "'slides' exists already" in duplicate
    unknown = _one_line_error(kg("collections", "show", "nope"))
    assert "no collection 'nope'; existing: default, slides" in unknown
    for command in (["concepts", "list", "--collection", "nope"],
                    ["collections", "delete", "nope", "--yes"],
                    ["collections", "rename", "nope", "x"],
                    ["collections", "pin", "nope", "--clear"]):
        assert "existing: default, slides" in _one_line_error(kg(*command)), command
    assert "'/'" in _one_line_error(kg("collections", "create", "a/b"))
    assert "longer than 64" in _one_line_error(kg("collections", "create", "x" * 65))
    assert "needs a name" in _one_line_error(kg("collections", "create", "  "))
    assert "needs a collection name" in _one_line_error(kg("concepts", "list",
                                                           "--collection", " "))
    assert "exists already" in _one_line_error(kg("collections", "rename", "slides", "default"))
    assert "keeps its name" in _one_line_error(kg("collections", "rename", "default", "x"))
    assert "cannot be deleted" in _one_line_error(kg("collections", "delete", "default",
                                                     "--yes"))
    assert "no profile 'nope'" in _one_line_error(kg("collections", "pin", "slides",
                                                     "--profile", "nope"))
    assert "no ontology 'nope'" in _one_line_error(kg("collections", "create", "other",
                                                      "--ontology", "nope"))
    assert "--clear" in _one_line_error(kg("collections", "pin", "slides"))
    # Without a terminal to ask on, delete says what it would drop and wants --yes.
    refused = _one_line_error(kg("collections", "delete", "slides"))
    assert "0 documents" in refused and "--yes" in refused
    assert "slides" in [c["name"] for c in _json(kg("collections", "list", "--json"))]


def test_delete_is_refused_while_a_run_of_the_collection_is_going(kg, db: Database) -> None:
    assert kg("collections", "create", "busy").exit_code == 0
    with store.scope(db, "busy").session() as session:
        run = Run(status="running", pid=os.getpid(), host=socket.gethostname(),
                  profile_name="default")
        session.add(run)
        session.flush()
        run_id = run.id
    refused = _one_line_error(kg("collections", "delete", "busy", "--yes"))
    assert f"has run {run_id} still going" in refused
    with db.session() as session:
        assert session.get(Run, run_id) is None  # the default collection's session: not seen
    with store.scope(db, "busy").session() as session:
        row = session.get(Run, run_id)
        assert row is not None
        row.status = "interrupted"
    assert kg("collections", "delete", "busy", "--yes").exit_code == 0


@pytest.mark.slow
@pytest.mark.parametrize("dialect", ["sqlite"])
def test_delete_asks_on_a_terminal(kg, kg_env: dict[str, str]) -> None:
    assert kg("collections", "create", "slides").exit_code == 0
    env = {**os.environ, **kg_env, "NO_COLOR": "1"}
    code, screen = run_in_pty(["collections", "delete", "slides"], env, answers="n\n")
    assert code == 1, screen
    assert "drops 0 documents" in screen and "Delete? [y/N]" in screen
    assert "delete cancelled; nothing changed" in screen
    code, screen = run_in_pty(["collections", "delete", "slides"], env, answers="y\n")
    assert code == 0, screen
    assert [c["name"] for c in _json(kg("collections", "list", "--json"))] == ["default"]


def test_commands_outside_collections_ignore_kg_collection(
        kg, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KG_COLLECTION", "nope")
    assert "existing: default" in _one_line_error(kg("concepts", "list"))
    for command in (["collections", "list"], ["admin", "extraction", "list"],
                    ["vocab", "list"], ["ontology", "list"], ["db", "current"]):
        assert kg(*command).exit_code == 0, command


def test_every_graph_command_takes_collection_and_the_rest_do_not(kg) -> None:
    from kg.cli.main import NOT_IN_A_COLLECTION, cli

    def leaves(command: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
        subs = getattr(command, "commands", None)
        if subs is None or getattr(command, "invoke_without_command", False):
            yield path, command
        for name, sub in (subs or {}).items():
            yield from leaves(sub, (*path, name))

    ctx = cli.make_context("kg", [], resilient_parsing=True)
    seen = set()
    for name in cli.list_commands(ctx):
        for path, command in leaves(cli.get_command(ctx, name), (name,)):
            has = any(p.name == "collection" for p in command.params)
            expected = name not in NOT_IN_A_COLLECTION or path == ("admin", "extraction",
                                                                    "analytics")
            assert has == expected, path
            seen.add(path)
    assert ("ingest",) in seen and ("export", "training") in seen
    assert "-o, --collection NAME" in kg("ingest", "--help").stdout
    # Every read command of the leak test takes the option.
    for command, _rows_are in READ_COMMANDS:
        path = tuple(a for a in command if not a.startswith("-"))
        assert any(path[:len(p)] == p for p in seen), command


# -- the graph in two collections ----------------------------------------------------------------

@pytest.fixture
def two_collections(kg, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Collections A and B, each with one story ingested (through `kg ingest -o`), a curation
    decision and an evaluation; the default collection stays empty."""
    with fake_ollama() as server:
        use_server(kg, server.url)
        for name, text, file in (("A", STORY_A, "a-story.md"), ("B", STORY_B, "b-story.md")):
            assert kg("collections", "create", name).exit_code == 0
            doc = tmp_path / file
            doc.write_text(text, encoding="utf-8")
            short = ["-o", name] if name == "A" else ["--collection", name]
            done = kg("ingest", str(doc), *SMALL_CHUNKS, *short, "--json")
            assert done.exit_code == 0, done.stderr
        yield {"server": server, "dir": tmp_path}


def _ids(kg, collection: str) -> dict[str, set[Any]]:
    c = ["--collection", collection, "--json"]
    return {
        "concepts": {r["id"] for r in _json(kg("concepts", "list", "--limit", "1000", *c))},
        "relationships": {r["id"] for r in _json(kg("relationships", "list", *c))},
        "runs": {r["id"] for r in _json(kg("runs", "list", *c))},
        "documents": {r["id"] for r in _json(kg("documents", "list", *c))},
        "calls": {r["id"] for r in _json(kg("logs", "--all", *c))},
    }


def _leaks(output: str, rows_are: str | None, b_ids: dict[str, set[Any]]) -> list[str]:
    """What of B's shows in an output of A: B-only labels or paths, or B's row ids (as a
    row's `id`, or as its `run_id`, `concept_id`, ... anywhere in the JSON)."""
    found = [text for text in ONLY_B if text in output]

    def walk(value: Any, kind: str | None) -> None:
        if isinstance(value, list):
            for item in value:
                walk(item, kind)
        elif isinstance(value, dict):
            if kind is not None and value.get("id") in b_ids[kind]:
                found.append(f"{kind} {value['id']}")
            for name, key in ID_KEYS.items():
                if value.get(key) in b_ids[name]:
                    found.append(f"{key} {value[key]}")
            for item in value.values():
                walk(item, None)

    with contextlib.suppress(ValueError):  # not JSON: graphml, JSON Lines
        walk(json.loads(output), rows_are)
    return found


def test_ingest_files_into_the_named_collection(kg, two_collections) -> None:
    listed = {c["name"]: c for c in _json(kg("collections", "list", "--json"))}
    assert listed["default"]["documents"] == listed["default"]["concepts"] == 0
    assert listed["A"]["documents"] == listed["B"]["documents"] == 1
    assert listed["A"]["concepts"] > 0 and listed["B"]["concepts"] > 0
    a = {c["label"] for c in _json(kg("concepts", "list", "--collection", "A", "--json"))}
    b = {c["label"] for c in _json(kg("concepts", "list", "--collection", "B", "--json"))}
    assert {"Sherlock Holmes", "London", "Baker Street"} <= a & b  # one concept per collection
    assert "Mrs Hudson" in a - b and "Irene Adler" in b - a
    assert _json(kg("concepts", "list", "--json")) == []  # default


def test_no_read_command_of_one_collection_shows_another(kg, db: Database,
                                                         two_collections) -> None:
    b = ["--collection", "B"]
    # Rows of B that only some commands read: a curation decision and an evaluation.
    assert kg("concepts", "rename", "Irene Adler", "The Woman", *b).exit_code == 0
    with store.scope(db, "B").session() as session:
        session.add(Evaluation(gold_dir="/gold/b-story.md", profile={"name": "test"},
                               started_at=utcnow(), finished_at=utcnow(), documents=1,
                               overall={}, by_category={}))
    b_ids = _ids(kg, "B")
    assert all(b_ids.values()), b_ids
    leaks: dict[str, list[str]] = {}
    for command, rows_are in READ_COMMANDS:
        where = str(two_collections["dir"])
        result = kg(*(a.replace("{dir}", where) for a in command), "--collection", "A")
        assert result.exit_code == 0, (command, result.stderr)
        found = _leaks(result.stdout, rows_are, b_ids)
        if found:
            leaks[" ".join(command)] = found
    assert not leaks, leaks
    a_calls = len(_ids(kg, "A")["calls"])
    analytics = _json(kg("admin", "extraction", "analytics", "--collection", "A", "--json"))
    assert sum(r["calls"] for r in analytics) == a_calls, analytics
    # A's own rows are there (the commands did read something).
    assert "Mrs Hudson" in kg("export", "--format", "jsonl", "--collection", "A").stdout
    detail = _json(kg("concepts", "show", "Sherlock Holmes", "--collection", "A", "--json"))
    assert {e["document"] for e in detail["evidence"]} <= {
        str(two_collections["dir"] / "a-story.md")}
    # B's rows, asked for by name or id from A, do not exist there.
    b_run, b_doc = min(b_ids["runs"]), str(two_collections["dir"] / "b-story.md")
    for command in (["concepts", "show", "Irene Adler"], ["documents", "show", b_doc],
                    ["runs", "show", str(b_run)], ["graph", "neighbors", "Bohemia"],
                    ["relationships", "delete", str(min(b_ids["relationships"]))],
                    ["concepts", "delete", "Bohemia"]):
        result = kg(*command, "--collection", "A")
        assert result.exit_code == 2, (command, result.stdout, result.stderr)
    assert "Bohemia" in {c["label"] for c in _json(kg("concepts", "list", *b, "--json"))}


def test_deleting_a_collection_drops_its_graph_only(kg, db: Database, two_collections) -> None:
    before = _json(kg("collections", "show", "A", "--json"))
    b = _json(kg("collections", "show", "B", "--json"))
    gone = _json(kg("collections", "delete", "B", "--yes", "--json"))
    assert gone["concepts"] == b["concepts"] > 0 and gone["runs"] == 1
    left = rows(db, "SELECT collection_id, count(*) FROM concepts GROUP BY collection_id")
    assert left == [(before["id"], before["concepts"])]
    for table in ("documents", "chunks", "relationships", "evidence", "runs", "calls",
                  "curation_decisions", "concept_aliases"):
        assert rows(db, f"SELECT count(*) FROM {table} WHERE collection_id = :c",
                    c=b["id"]) == [(0,)], table
    assert _json(kg("collections", "show", "A", "--json")) == before


def test_kg_collection_picks_the_collection_and_the_option_wins(
        kg, two_collections, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KG_COLLECTION", "B")
    labels = {c["label"] for c in _json(kg("concepts", "list", "--json"))}
    assert "Irene Adler" in labels and "Mrs Hudson" not in labels
    labels = {c["label"] for c in _json(kg("concepts", "list", "--collection", "A", "--json"))}
    assert "Mrs Hudson" in labels and "Irene Adler" not in labels
    # `kg export --collection A training`: the group's option reaches the subcommand.
    out = kg("export", "--collection", "A", "training")
    assert out.exit_code == 0 and "Irene Adler" not in out.stdout


def test_api_opens_a_collection(kg, db_url: str, two_collections) -> None:
    with kg_package.open(db_url, collection="A") as g:
        assert g.collection == "A" and "collection 'A'" in repr(g)
        labels = {c["label"] for c in g.concepts(limit=1000)}
        assert "Mrs Hudson" in labels and "Irene Adler" not in labels
        assert all("Irene Adler" not in (r["source"], r["target"]) for r in g.relationships())
        graph = g.to_networkx()
        assert "Irene Adler" not in {d["label"] for _n, d in graph.nodes(data=True)}
        assert graph.number_of_nodes() == len(g.concepts(limit=1000))
    with kg_package.open(db_url) as g:
        assert g.collection == "default" and g.concepts() == []
    with pytest.raises(NotFoundError, match="existing: default, A, B"):
        kg_package.open(db_url, collection="nope")


@pytest.mark.parametrize("dialect", ["postgresql"])
def test_queued_ingest_plans_in_the_collection(kg, db: Database, tmp_path: Path) -> None:
    with fake_ollama() as server:
        use_server(kg, server.url)
        assert kg("collections", "create", "A").exit_code == 0
        doc = tmp_path / "a-story.md"
        doc.write_text(STORY_A, encoding="utf-8")
        queued = _json(kg("ingest", "--queue", "-o", "A", str(doc), *SMALL_CHUNKS, "--json"))
    run_id = queued["run_id"]
    assert _json(kg("runs", "show", str(run_id), "--collection", "A", "--json"))["id"] == run_id
    assert kg("runs", "show", str(run_id)).exit_code == 2  # not in default
    with db.session() as session:
        assert session.get(Run, run_id) is None


def test_completion_follows_the_collection(kg, kg_env, db: Database) -> None:
    import click

    from kg.cli.context import COLLECTION, complete_collection_names, complete_run_ids

    assert kg("collections", "create", "slides").exit_code == 0
    with store.scope(db, "slides").session() as session:
        run = Run(pid=1, host="h", profile_name="default", status="completed")
        session.add(run)
        session.flush()
        run_id = run.id
    ctx = click.Context(click.Command("x"))
    param = click.Option(["--collection"])
    assert complete_collection_names(ctx, param, "") == ["default", "slides"]
    assert complete_collection_names(ctx, param, "sl") == ["slides"]
    assert complete_run_ids(ctx, param, "") == []  # default has no run
    ctx.meta[COLLECTION] = "slides"
    assert complete_run_ids(ctx, param, "") == [str(run_id)]
    ctx.meta[COLLECTION] = "nope"
    assert complete_run_ids(ctx, param, "") == []
