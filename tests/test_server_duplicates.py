"""The grey zone over HTTP (issue #24): `GET /duplicates`, `POST /duplicates/accept` (a merge)
and `/duplicates/reject` (kept apart), then `GET /curation` and `POST /curation/{id}/undo`,
against a real uvicorn server on both databases: token scopes, the cross-site and content-type
guards, one-line errors, and the curation rows."""

from __future__ import annotations

from typing import Any

from kg import tokens
from kg.db import Database
from tests.graph_seed import add_concepts, concept_labels, rows
from tests.test_server import assert_error, serve

GREY = (("Ludwig Boltzmann", "person"), ("Boltzmann", "person"), ("coral reef", None),
        ("coral", None), ("Sherlock Holmes", "person"))


def _pair(listed: list[dict[str, Any]], a: str, b: str) -> dict[str, Any]:
    found = [p for p in listed if {p["a_label"], p["b_label"]} == {a, b}]
    assert len(found) == 1, listed
    return found[0]


def test_accept_merges_reject_keeps_apart_with_scopes_and_guards(db: Database) -> None:
    ids = add_concepts(db, *GREY)
    with db.session() as session:
        _row, reader = tokens.create(session, "viewer", "read", by="tester")
        _row, admin = tokens.create(session, "ops", "admin", by="tester")
    with serve(db) as server, server.client(reader) as viewer, server.client(admin) as ops:
        listed = viewer.get("/duplicates").json()
        boltzmann = _pair(listed, "Ludwig Boltzmann", "Boltzmann")
        coral = _pair(listed, "coral reef", "coral")
        assert {boltzmann["a"], boltzmann["b"]} == {ids["Ludwig Boltzmann"], ids["Boltzmann"]}
        assert boltzmann["a_type"] == boltzmann["b_type"] == "person"
        assert 0.8 <= boltzmann["score"] < 0.9 and boltzmann["signals"]
        assert viewer.get("/c/default/duplicates").json() == listed
        assert viewer.get("/duplicates", params={"limit": 1}).json() == listed[:1]
        assert viewer.get("/duplicates", params={"low": 0.95, "high": 0.99}).json() == []
        assert_error(viewer.get("/duplicates", params={"low": 0.95, "high": 0.5}), 400,
                     "is above --high")
        assert_error(viewer.get("/duplicates", params={"high": 2}), 422, "high")
        assert_error(viewer.get("/c/nowhere/duplicates"), 404, "no collection 'nowhere'")

        pair = {"a": boltzmann["a"], "b": boltzmann["b"]}
        before = rows(db, "SELECT count(*) FROM curation_decisions")
        assert_error(viewer.post("/duplicates/accept", json=pair), 403, "admin")
        assert_error(ops.post("/duplicates/accept", json=pair,
                              headers={"Origin": "http://evil.example"}), 403, "cross-site")
        assert_error(ops.post("/duplicates/accept", content=b'{"a": 1, "b": 2}',
                              headers={"Content-Type": "text/plain"}), 415, "application/json")
        assert_error(ops.post("/duplicates/accept", json={"a": pair["a"]}), 422,
                     "body field b is required")
        assert_error(ops.post("/duplicates/accept", json={**pair, "into": 3}), 422, "into")
        assert_error(ops.post("/duplicates/reject", json={"a": pair["a"], "b": pair["a"]}),
                     400, "one concept")
        assert_error(ops.post("/duplicates/accept", json={"a": pair["a"], "b": 999_999}),
                     404, "no concept 999999")
        assert rows(db, "SELECT count(*) FROM curation_decisions") == before

        merged = ops.post("/duplicates/accept", json=pair,
                          headers={"Origin": server.url})  # the page's own origin
        assert merged.status_code == 200, merged.text
        decision = merged.json()
        assert decision["action"] == "merge" and decision["by"] == "token:ops"
        assert "Boltzmann" not in concept_labels(db) and "Ludwig Boltzmann" in concept_labels(db)
        assert rows(db, "SELECT a.alias FROM concept_aliases a JOIN concepts c ON "
                        "c.id = a.concept_id WHERE c.label = 'Ludwig Boltzmann'") == [
            ("Boltzmann",)]
        assert_error(ops.post("/duplicates/accept", json=pair), 404, "merged or deleted")

        kept = ops.post("/duplicates/reject", json={"a": coral["a"], "b": coral["b"]})
        assert kept.status_code == 200, kept.text
        assert kept.json()["action"] == "keep_apart" and kept.json()["by"] == "token:ops"
        assert {"coral", "coral reef"} <= concept_labels(db)
        assert_error(ops.post("/duplicates/reject", json={"a": coral["b"], "b": coral["a"]}),
                     409, "already kept apart")
        assert viewer.get("/duplicates").json() == []

        decisions = viewer.get("/curation").json()
        assert [(d["action"], d["by"]) for d in decisions] == [
            ("keep_apart", "token:ops"), ("merge", "token:ops")]  # newest first
        assert viewer.get("/curation", params={"limit": 1}).json() == decisions[:1]
        assert_error(viewer.get("/curation", params={"limit": 0}), 422, "limit")
        kept_id, merge_id = decisions[0]["id"], decisions[1]["id"]
        assert_error(viewer.post(f"/curation/{merge_id}/undo"), 403, "admin")
        assert_error(ops.post(f"/curation/{merge_id}/undo", json={"cascade": "maybe"}), 422,
                     "cascade")
        assert_error(ops.post("/curation/999999/undo"), 404, "no curation decision 999999")
        assert concept_labels(db) >= {"Ludwig Boltzmann"} and "Boltzmann" not in concept_labels(db)

        undone = ops.post(f"/curation/{merge_id}/undo")  # no body: cascade off
        assert undone.status_code == 200, undone.text
        assert undone.json()["id"] == merge_id and undone.json()["also_undone"] == []
        assert {"Ludwig Boltzmann", "Boltzmann"} <= concept_labels(db)
        assert_error(ops.post(f"/curation/{merge_id}/undo"), 400, "already undone")
        assert ops.post(f"/curation/{kept_id}/undo", json={"cascade": True}).status_code == 200
        # The pair kept apart is in the grey zone again; a merge undone is a split, and
        # resolution does not offer a split pair again.
        relisted = viewer.get("/duplicates").json()
        assert [(p["a_label"], p["b_label"]) for p in relisted] == [
            (coral["a_label"], coral["b_label"])]
        assert viewer.get("/curation", params={"include_undone": False}).json() == []
    assert rows(db, "SELECT action, created_by, undone_by FROM curation_decisions "
                    "ORDER BY id") == [("merge", "token:ops", "token:ops"),
                                       ("keep_apart", "token:ops", "token:ops")]
