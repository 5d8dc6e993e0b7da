"""The quality harness: scorer exactness, corpus, `kg eval`, eval compare, `kg runs diff`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kg.evaluation import Gold, Prediction, load_gold, metrics, score
from tests.fakes import FakeModel, FakeOllama, Reply, chunk_of
from tests.test_ingest import use_server

ROOT = Path(__file__).resolve().parent.parent
SYMMETRIC = {"similar_to", "contrasts_with", "equivalent_to", "analogous_to", "related_to"}

GOLD = Gold(Path("doc.txt"), "test",
            [("Alpha", ["a1"]), ("Beta", []), ("Gamma", []), ("Delta", [])],
            [("Alpha", "causes", "Beta"), ("Beta", "part_of", "Gamma"),
             ("Gamma", "similar_to", "Delta")])


def test_gold_against_itself_scores_one() -> None:
    pred = Prediction(concepts=[c for c, _ in GOLD.concepts],
                      relationships=list(GOLD.relationships), chunks=1)
    m = metrics(score(GOLD, pred, SYMMETRIC))
    for key in ("concept_precision", "concept_recall", "concept_f1", "relationship_precision",
                "relationship_recall", "relationship_f1", "untyped_f1", "type_accuracy"):
        assert m[key] == 1.0, key


def test_partial_prediction_scores_the_hand_computed_values() -> None:
    pred = Prediction(
        concepts=["a1", "Beta", "Xenon", "alphas"],  # alias, exact, wrong, plural of Alpha
        relationships=[("a1", "causes", "Beta"),      # right
                       ("Beta", "uses", "Gamma"),     # right pair, wrong type
                       ("Delta", "similar_to", "Gamma"),  # symmetric: reversed is right
                       ("Xenon", "causes", "Beta")],  # unknown end
        chunks=2, first_try_json=1, first_try_usable=1, retries=1, quotes_verbatim=3,
        quotes_total=4)
    m = metrics(score(GOLD, pred, SYMMETRIC))
    # concepts: Alpha and Beta found (a1 and alphas are both Alpha), Xenon wrong:
    # P = 2/3, R = 2/4, F1 = 2PR/(P+R) = 0.5714
    assert (m["concept_precision"], m["concept_recall"], m["concept_f1"]) == (0.6667, 0.5,
                                                                              0.5714)
    # typed: 2 of 4 predicted right, 2 of 3 gold found: P 0.5, R 0.6667, F1 0.5714
    assert (m["relationship_precision"], m["relationship_recall"],
            m["relationship_f1"]) == (0.5, 0.6667, 0.5714)
    # untyped pairs: 3 of 4 right, all 3 gold found: P 0.75, R 1, F1 0.8571
    assert (m["untyped_precision"], m["untyped_recall"], m["untyped_f1"]) == (0.75, 1.0,
                                                                              0.8571)
    assert m["type_accuracy"] == 0.6667  # 2 of the 3 predicted gold pairs carry a gold type
    assert (m["quotes_verbatim_rate"], m["valid_json_first_try"], m["retries"]) == (0.75, 0.5,
                                                                                     1)


def test_the_corpus_is_complete_and_consistent() -> None:
    golds = load_gold(ROOT / "corpus")
    assert len(golds) >= 40
    by_category: dict[str, int] = {}
    for gold in golds:
        by_category[gold.category] = by_category.get(gold.category, 0) + 1
        labels = {c for c, _ in gold.concepts}
        assert gold.concepts and all(s in labels and g in labels
                                     for s, _t, g in gold.relationships), gold.document
    assert set(by_category) == {"technical", "academic", "conversational", "structured",
                                "edge_cases"}
    assert min(by_category.values()) >= 8


def write_gold(folder: Path, category: str, name: str, text: str, concepts: list[str],
               rels: list[tuple[str, str, str]]) -> None:
    target = folder / category
    target.mkdir(parents=True, exist_ok=True)
    (target / f"{name}.txt").write_text(text, encoding="utf-8")
    (target / f"{name}.gold.json").write_text(json.dumps({
        "document": f"{name}.txt", "category": category,
        "concepts": [{"label": c, "aliases": []} for c in concepts],
        "relationships": [{"source": s, "type": t, "target": g} for s, t, g in rels]}))


def gold_responder(gold_dir: Path):
    """Answers with the gold annotation of the document the chunk comes from; the model
    called 'lossy' forgets every relationship."""
    golds = load_gold(gold_dir)
    texts = {g.document: g.document.read_text(encoding="utf-8") for g in golds}

    def respond(body: dict) -> Reply:
        chunk = chunk_of(body)
        gold = next(g for g in golds if chunk in texts[g.document])
        present = [c for c, _ in gold.concepts if re.search(re.escape(c), chunk, re.I)]
        concepts = [{"label": c, "description": "", "search_terms": [], "quote": c}
                    for c in present]
        rels = [] if body["model"] == "lossy" else [
            {"source": s, "type": t, "target": g, "confidence": 0.9, "quote": s}
            for s, t, g in gold.relationships if s in present and g in present]
        return Reply(json.dumps({"concepts": concepts, "relationships": rels}))

    return respond


@pytest.fixture
def gold_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "gold"
    write_gold(folder, "science", "water",
               "Evaporation lifts water from the Ocean into Clouds. Rain returns it.\n",
               ["Evaporation", "Ocean", "Clouds", "Rain"],
               [("Evaporation", "produces", "Clouds"), ("Rain", "follows", "Clouds")])
    write_gold(folder, "history", "press",
               "Gutenberg built the Printing Press in Mainz. The Reformation used it.\n",
               ["Gutenberg", "Printing Press", "Mainz", "Reformation"],
               [("Printing Press", "created_by", "Gutenberg"),
                ("Printing Press", "located_in", "Mainz"),
                ("Reformation", "uses", "Printing Press")])
    return folder


def test_eval_end_to_end_and_compare_profiles(kg, db, gold_dir: Path) -> None:
    models = [FakeModel("good"), FakeModel("lossy")]
    with FakeOllama(models=models, responder=gold_responder(gold_dir)) as server:
        use_server(kg, server.url, "ollama", "good")
        kg("admin", "extraction", "set", "--profile", "lossy", "--provider", "ollama",
           "--model", "lossy", "--base-url", server.url)
        result = kg("eval", str(gold_dir), "--json")
        assert result.exit_code == 0, result.stderr
        data = json.loads(result.stdout)
        compared = kg("eval", "compare", "test", "lossy", "--gold", str(gold_dir), "--json")
    overall = data["overall"]
    assert overall["concept_f1"] == 1.0 and overall["relationship_f1"] == 1.0
    assert overall["type_accuracy"] == 1.0 and overall["valid_json_first_try"] == 1.0
    assert set(data["by_category"]) == {"science", "history"}
    rows = {(r["scope"], r["metric"]): r for r in json.loads(compared.stdout)["rows"]}
    assert rows[("overall", "relationship_f1")]["delta"] == -1.0
    assert rows[("overall", "concept_f1")]["delta"] == 0.0
    assert rows[("history", "relationship_recall")]["b"] == 0.0
    listed = json.loads(kg("eval", "list", "--json").stdout)
    assert len(listed) == 3  # one direct run and two for the comparison
    again = kg("eval", "compare", str(listed[-1]["id"]), str(listed[0]["id"]), "--json")
    assert again.exit_code == 0
    shown = kg("eval", "show", str(data["id"]))
    header = shown.stdout.splitlines()[1].split()
    assert header == ["METRIC", "OVERALL", "HISTORY", "SCIENCE"]


def test_eval_profile_option_before_the_folder_and_from_kg_profile(kg, db, gold_dir: Path,
                                                                   monkeypatch) -> None:
    models = [FakeModel("good"), FakeModel("lossy")]
    with FakeOllama(models=models, responder=gold_responder(gold_dir)) as server:
        use_server(kg, server.url, "ollama", "good")  # active: "test"
        kg("admin", "extraction", "set", "--profile", "lossy", "--provider", "ollama",
           "--model", "lossy", "--base-url", server.url)
        first = kg("eval", "--profile", "lossy", str(gold_dir), "--json")
        assert first.exit_code == 0, first.stderr
        assert json.loads(first.stdout)["profile"]["name"] == "lossy"
        monkeypatch.setenv("KG_PROFILE", "lossy")
        second = kg("eval", str(gold_dir), "--json")
        assert json.loads(second.stdout)["profile"]["name"] == "lossy"
        assert {b["model"] for b in server.chat_bodies()} == {"lossy"}
    active = json.loads(kg("admin", "extraction", "show", "--json").stdout)
    assert active["name"] == "test"  # chosen for one evaluation, never activated
    assert kg("eval", "--help").exit_code == 0


@pytest.mark.parametrize(("args", "needle"), [
    (["eval", "/nonexistent/gold"], "no such folder"),
    (["eval", "compare", "1", "profile"], "not one of each"),
    (["eval", "compare", "a", "b"], "needs --gold"),
    (["eval", "show", "42"], "no evaluation 42"),
    (["runs", "diff", "1", "2"], "no run 1"),
])
def test_eval_and_diff_bad_input(kg, db, args: list[str], needle: str) -> None:
    result = kg(*args)
    assert result.exit_code == 2 and needle in result.stderr
    assert result.stderr.count("\n") == 1


def test_runs_diff_between_two_runs_on_the_same_document(kg, db, tmp_path: Path) -> None:
    doc = tmp_path / "doc.txt"
    doc.write_text("Alice met Bob in Paris. Carol stayed home.\n", encoding="utf-8")

    def reply(concepts: list[str], rels: list[tuple[str, str, str]]) -> Reply:
        return Reply(json.dumps({
            "concepts": [{"label": c, "description": "", "search_terms": [], "quote": c}
                         for c in concepts],
            "relationships": [{"source": s, "type": t, "target": g, "confidence": 0.9,
                               "quote": s} for s, t, g in rels]}))

    with FakeOllama() as server:
        use_server(kg, server.url)
        server.queue.append(reply(["Alice", "Bob", "Paris"],
                                  [("Alice", "related_to", "Bob"),
                                   ("Alice", "located_in", "Paris")]))
        first = json.loads(kg("ingest", str(doc), "--json").stdout)["run_id"]
        server.queue.append(reply(["Alice", "Bob", "Carol"],
                                  [("Alice", "similar_to", "Bob"),
                                   ("Carol", "related_to", "Alice")]))
        second = json.loads(kg("ingest", str(doc), "--force", "--json").stdout)["run_id"]
    diff = json.loads(kg("runs", "diff", str(first), str(second), "--json").stdout)
    assert diff["same_documents"] is True
    assert diff["concepts_added"] == ["Carol"] and diff["concepts_removed"] == ["Paris"]
    assert diff["relationships_added"] == [["Alice", "related_to", "Carol"]]  # symmetric
    assert diff["relationships_removed"] == [["Alice", "located_in", "Paris"]]
    assert diff["relationships_changed"] == [
        {"source": "Alice", "target": "Bob", "types_a": ["related_to"],
         "types_b": ["similar_to"]}]
    human = kg("runs", "diff", str(first), str(second)).stdout
    assert "+ concept Carol" in human and "~ Alice -> Bob: related_to -> similar_to" in human


# -- ontology benchmarks (JSONL) ------------------------------------------------------------

ONTOLOGY_EVAL = Path(__file__).parent / "data" / "ontology_eval.jsonl"


def record_responder(body: dict) -> Reply:
    """Answers with a record's gold triples, ends typed by the relation's domain and range;
    the pharma record also gets a relation outside its ontology, the book record's title
    comes without its quotation marks."""
    chunk = chunk_of(body)
    records = [json.loads(line) for line in ONTOLOGY_EVAL.read_text().splitlines()]
    record = next(r for r in records if chunk.strip() in r["text"])
    ranges = {r["label"]: (r["domain"], r["range"]) for r in record["ontology"]["relations"]}
    concepts: dict[str, str] = {}
    rels = []
    for s, t, g in record["gold_triples"]:
        s = s.strip('"')
        concepts.setdefault(s, ranges[t][0])
        concepts.setdefault(g, ranges[t][1])
        rels.append({"source": s, "type": t, "target": g, "confidence": 0.9, "quote": s})
    if record["id"] == "pharma-3":
        rels.append({"source": "Drug Velox", "type": "prevents", "target": "nausea",
                     "confidence": 0.5, "quote": "Drug Velox"})
    items = [{"label": c, "description": "", "search_terms": [], "quote": c, "type": t}
             for c, t in concepts.items()]
    return Reply(json.dumps({"concepts": items, "relationships": rels}))


def test_eval_jsonl_scores_each_record_with_its_own_ontology(kg, db) -> None:
    with FakeOllama(responder=record_responder) as server:
        use_server(kg, server.url)
        result = kg("eval", str(ONTOLOGY_EVAL), "--json")
        bodies = server.chat_bodies()
    assert result.exit_code == 0, result.stderr
    overall = json.loads(result.stdout)["overall"]
    assert overall["records"] == 5 and overall["chunks_failed"] == 0
    assert overall["strict_f1"] == 0.9  # the title without its quotes: 1/2 for that record
    assert overall["relaxed_f1"] == 1.0
    assert overall["ontology_conformance"] == round((4 + 2 / 3) / 5, 4)
    assert overall["subject_hallucination"] == 0.0 and overall["object_hallucination"] == 0.0
    first = bodies[0]["format"]["properties"]
    assert first["relationships"]["items"]["properties"]["type"]["enum"] == [
        "founded_by", "located_in", "employs"]
    assert first["concepts"]["items"]["properties"]["type"]["enum"] == [
        "person", "company", "city"]
    shown = kg("eval", "show", str(json.loads(result.stdout)["id"])).stdout
    assert "relaxed_f1" in shown and "ontology_conformance" in shown


def test_eval_jsonl_bad_record_names_the_line(kg, db, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(ONTOLOGY_EVAL.read_text().splitlines()[0] + "\n" + '{"id": 2, "text": "x"}\n')
    result = kg("eval", str(bad))
    assert result.exit_code == 2 and f"{bad}:2: ontology" in result.stderr


LITERAL_RECORD = {
    "id": "uni-1", "text": "Mendrisio Academy was established in 1996 in Switzerland.",
    "ontology": {"concepts": ["University", "Country"],
                 "relations": [{"label": "established", "domain": "University",
                                "range": "date"},
                               {"label": "countryOfSeat", "domain": "University",
                                "range": "Country"}]},
    "gold_triples": [["Mendrisio Academy", "established", "1996"],
                     ["Mendrisio Academy", "countryOfSeat", "Switzerland"]]}


def literal_responder(body: dict) -> Reply:
    """Untyped ends only (kg infers them); relation names in another spelling."""
    rels = [{"source": "Mendrisio Academy", "type": "ESTABLISHED", "target": "1996",
             "confidence": 0.9, "quote": "established in 1996"},
            {"source": "Mendrisio Academy", "type": "country_of_seat", "target": "Switzerland",
             "confidence": 0.9, "quote": "in Switzerland"}]
    return Reply(json.dumps({"concepts": [], "relationships": rels}))


def test_eval_jsonl_scores_literals_and_lists_records(kg, db, tmp_path: Path) -> None:
    path = tmp_path / "lit.jsonl"
    path.write_text(json.dumps(LITERAL_RECORD) + "\n")
    with FakeOllama(responder=literal_responder) as server:
        use_server(kg, server.url)
        result = kg("eval", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    overall = json.loads(result.stdout)["overall"]
    assert overall["strict_f1"] == 1.0  # names come back as the ontology spells them
    assert (overall["predicted_triples"], overall["gold_triples"]) == (2, 2)
    assert overall["untyped_pair_f1"] == 1.0 and overall["entity_recall"] == 1.0
    assert overall["literal_accuracy"] == 1.0 and overall["literal_recall"] == 1.0
    evaluation = str(json.loads(result.stdout)["id"])
    records = json.loads(kg("eval", "show", evaluation, "--records", "--json").stdout)
    assert records[0]["record"] == "uni-1" and records[0]["missed"] == []
    assert sorted(records[0]["matched"]) == sorted(LITERAL_RECORD["gold_triples"])
    shown = kg("eval", "show", evaluation, "--records")
    assert shown.exit_code == 0 and "Switzerland" in shown.stdout


def triples_responder(body: dict) -> Reply:
    """The `triples` shape: rows of (quote, subject, relation, object)."""
    assert "triples" in body["format"]["properties"]
    rows = [{"quote": LITERAL_RECORD["text"], "subject": "Mendrisio Academy",
             "relation": "established", "object": "1996"},
            {"quote": LITERAL_RECORD["text"], "subject": "Mendrisio Academy",
             "relation": "countryOfSeat", "object": "Switzerland"},
            {"quote": LITERAL_RECORD["text"], "subject": "Mendrisio Academy",
             "relation": "established", "object": "1997"}]  # not in the text: dropped
    return Reply(json.dumps({"triples": rows}))


def test_triples_shape_derives_concepts_and_scores_like_the_graph(kg, db,
                                                                 tmp_path: Path) -> None:
    path = tmp_path / "lit.jsonl"
    path.write_text(json.dumps(LITERAL_RECORD) + "\n")
    with FakeOllama(responder=triples_responder) as server:
        use_server(kg, server.url)
        assert kg("admin", "extraction", "set", "--profile", "test", "--shape",
                  "triples").exit_code == 0
        result = kg("eval", str(path), "--json")
        body = server.chat_bodies()[0]
    assert result.exit_code == 0, result.stderr
    assert "Extract facts from the user's text as triples" in body["messages"][0]["content"]
    rows = [[branch["properties"] for branch in row["anyOf"]]
            for row in body["format"]["properties"]["triples"]["prefixItems"]]
    assert "Mendrisio Academy" in {s for r in rows[0] for s in r["subject"]["enum"]}  # grounded
    # the sentence echoes `established`: its first row offers that, its second the rest
    assert [{tuple(b["relation"]["enum"]) for b in row} for row in rows] == [
        {("established",)}, {("countryOfSeat",)}]
    overall = json.loads(result.stdout)["overall"]
    assert overall["strict_f1"] == 1.0 and overall["predicted_triples"] == 2
    bad = kg("admin", "extraction", "set", "--profile", "test", "--shape", "table")
    assert bad.exit_code == 2 and "graph" in bad.stderr
