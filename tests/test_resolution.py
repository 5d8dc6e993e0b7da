"""Entity resolution (issue #24): signals, bands, order-free grouping, the `kg resolve` pass
through curation (undoable, incremental), `kg concepts duplicates`, and `kg eval resolve`, on
both databases."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from kg.db import Database
from kg.db.models import Concept, ConceptAlias, CurationDecision
from kg.errors import UsageError
from kg.matching.candidates import candidate_pairs, distinct, entity, signals
from kg.matching.decide import Pair, Thresholds, group
from kg.matching.scoring import score
from kg.resolution.evaluate import Mention, bcubed, cluster, pairwise
from kg.text import normalise_label
from tests.graph_seed import add_concepts, concept_labels


def _score(a: str, b: str, ta: str | None = None, tb: str | None = None) -> float:
    return score(signals(entity(1, a, ta, [normalise_label(a)]),
                         entity(2, b, tb, [normalise_label(b)])))


def ok(result: Any) -> Any:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout) if result.stdout.lstrip().startswith(("{", "[")) else None


# -- signals and bands ------------------------------------------------------------------------

def test_rules_join_what_one_fuzzy_threshold_keeps_apart() -> None:
    high = Thresholds().high
    assert _score("IBM", "International Business Machines") >= high
    assert _score("M. Curie", "Marie Curie") >= high
    assert _score("Dr. Marie Curie", "Marie Curie") == 1.0  # titles fold away
    assert _score("Kurt Gödel", "Kurt Godel") == 1.0  # accents fold away
    assert _score("Boltzmann", "Boltzmnan") >= high  # one swapped pair of letters


def test_types_and_numbers_keep_apart() -> None:
    assert _score("Paris", "Paris", "place", "person") == 0.0
    assert _score("Paris", "Paris", "place", None) == 1.0  # an unknown type allows it
    assert _score("Type 1 diabetes", "Type 2 diabetes") < Thresholds().low
    assert _score("Iceland", "Ireland") < Thresholds().high  # a changed letter is no typo


def test_thresholds_out_of_range_or_crossed_are_one_line_errors() -> None:
    with pytest.raises(UsageError, match="--high must be between 0 and 1"):
        Thresholds(1.5, 0.5)
    with pytest.raises(UsageError, match=r"--low \(0.9\) is above --high \(0.5\)"):
        Thresholds(0.5, 0.9)
    assert Thresholds(0.9, 0.8).band(0.85).value == "review"


def test_grouping_is_order_free_and_never_joins_incompatible_types() -> None:
    # 'Paris' (place) ~ 'paris' (unknown) ~ 'Paris' (person): the chain must not make one.
    names = [(1, "Paris", "place"), (2, "paris", None), (3, "Paris", "person"),
             (4, "Marie Curie", "person"), (5, "M. Curie", "person"),
             (6, "Curie, Marie", "person")]
    results = set()
    for seed in range(5):
        shuffled = names[:]
        random.Random(seed).shuffle(shuffled)
        entities = {i: entity(i, label, kind, [normalise_label(label)])
                    for i, label, kind in shuffled}
        pairs = [Pair(a, b, score(signals(a, b)), signals(a, b))
                 for a, b in candidate_pairs(entities.values())]
        accepted = [p for p in pairs if p.score >= 0.9]
        results.add(tuple(tuple(c) for c in group(entities, accepted)))
    assert len(results) == 1
    components = next(iter(results))
    assert (4, 5, 6) in components
    assert not any({1, 3} <= set(c) for c in components)


def _components(names: list[tuple[int, str, str | None]], seed: int) -> list[list[int]]:
    shuffled = names[:]
    random.Random(seed).shuffle(shuffled)
    entities = {i: entity(i, label, kind, [normalise_label(label)]) for i, label, kind in shuffled}
    pairs = [Pair(a, b, score(signals(a, b)), signals(a, b))
             for a, b in candidate_pairs(entities.values())]
    return group(entities, [p for p in pairs if p.score >= Thresholds().high])


def test_conflict_rule_never_joins_two_known_distinct_names() -> None:
    # 'J. Smith' fits John and Jane equally: it joins neither, and they never become one.
    smiths = [(1, "John Smith", "person"), (2, "J. Smith", "person"), (3, "Jane Smith", "person"),
              (4, "Mr John Smith", "person")]
    assert {tuple(tuple(c) for c in _components(smiths, seed)) for seed in range(4)} == {
        ((1, 4),)}
    # With only one of them around, the initial is no longer ambiguous.
    assert _components([(1, "John Smith", "person"), (2, "J. Smith", "person")], 0) == [[1, 2]]
    # Numbers and other first words are known-distinct too; typos and transliterations not.
    assert distinct(entity(1, "x", None, ["first law of thermodynamics"]),
                    entity(2, "y", None, ["second law of thermodynamics"]))
    assert distinct(entity(1, "x", None, ["apollo 11"]), entity(2, "y", None, ["apollo 13"]))
    for a, b in [("fyodor dostoevsky", "fedor dostoevsky"), ("madame curie", "marie curie"),
                 ("sherloock holmes", "sheerlock holmes"), ("j smith", "john smith")]:
        assert not distinct(entity(1, a, None, [a]), entity(2, b, None, [b])), (a, b)
    # A chain through an exact alias does not smuggle two distinct names into one group.
    john = entity(1, "John Smith", "person", ["john smith", "j smith"])
    jane = entity(2, "Jane Smith", "person", ["jane smith", "j smith"])
    link = Pair(john, jane, 1.0, signals(john, jane))
    assert group({1: john, 2: jane}, [link]) == []


def test_incremental_candidates_touch_only_new_concepts() -> None:
    entities = [entity(i, n, None, [normalise_label(n)])
                for i, n in enumerate(["Marie Curie", "Marie Curie Institute", "M. Curie"], 1)]
    pairs = candidate_pairs(entities, new={3})
    assert pairs and all(3 in (a.id, b.id) for a, b in pairs)


# -- metrics ----------------------------------------------------------------------------------

def test_pairwise_and_bcubed_on_a_worked_example() -> None:
    gold = [frozenset({"a", "b", "c"}), frozenset({"d"})]
    predicted = [frozenset({"a", "b"}), frozenset({"c", "d"})]
    # Predicted pairs ab, cd; gold pairs ab, ac, bc: one hit.
    assert pairwise(predicted, gold) == {"precision": 0.5, "recall": 0.3333, "f1": 0.4}
    b = bcubed(predicted, gold)
    # Precision per mention: a 1, b 1, c 1/2, d 1/2; recall: a 2/3, b 2/3, c 1/3, d 1.
    assert b["precision"] == 0.75 and b["recall"] == round((2 / 3 * 2 + 1 / 3 + 1) / 4, 4)


def test_cluster_merges_sure_pairs_and_asks_the_judge_only_in_the_grey_zone() -> None:
    mentions = [Mention(id="1", text="Ludwig Boltzmann", cluster="b", type="person"),
                Mention(id="2", text="Boltzmann", cluster="b", type="person"),
                Mention(id="3", text="L. Boltzmann", cluster="b", type="person")]
    alone, stats = cluster(mentions, Thresholds())
    assert frozenset({"1", "3"}) in alone and frozenset({"2"}) in alone
    asked: list[tuple[str, str]] = []

    def judge(a: Any, b: Any) -> bool:
        asked.append((a.label, b.label))
        return True

    judged, stats = cluster(mentions, Thresholds(), judge)
    assert judged == [frozenset({"1", "2", "3"})]
    assert stats["judge_calls"] == len(asked) == stats["grey"] >= 1


def test_eval_resolve_scores_a_file_and_rejects_a_bad_one(kg, tmp_path: Path) -> None:
    rows = [{"id": "1", "text": "IBM", "cluster": "ibm", "type": "organization"},
            {"id": "2", "text": "International Business Machines", "cluster": "ibm",
             "type": "organization"},
            {"id": "3", "text": "Paris", "cluster": "city", "type": "place"},
            {"id": "4", "text": "Paris", "cluster": "prince", "type": "person"}]
    path = tmp_path / "set.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = ok(kg("eval", "resolve", str(path), "--json"))
    assert data["pairwise"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert data["bcubed"]["f1"] == 1.0 and data["predicted_clusters"] == 3
    table = kg("eval", "resolve", str(path))
    assert table.exit_code == 0 and "bcubed" in table.stdout
    path.write_text('{"id": "1"}\n')
    bad = kg("eval", "resolve", str(path))
    assert bad.exit_code != 0 and "set.jsonl:1: not a mention line" in bad.stderr
    assert "Traceback" not in bad.stderr
    crossed = kg("eval", "resolve", str(path), "--low", "0.95")
    assert crossed.exit_code != 0 and "--low (0.95) is above --high (0.9)" in crossed.stderr


def test_built_set_has_500_mentions_in_clusters_with_same_name_traps() -> None:
    from benchmarks.resolution.build_set import build

    mentions = build()
    assert len(mentions) >= 500
    kinds: dict[str, set[str]] = {}
    for m in mentions:
        kinds.setdefault(str(m["text"]), set()).add(str(m["type"]))
    assert kinds["Paris"] == {"place", "person"}
    assert build() == mentions  # deterministic


# -- the pass over a stored graph -------------------------------------------------------------

def test_resolve_merges_through_curation_incrementally_and_undoably(kg, db: Database) -> None:
    add_concepts(db, ("International Business Machines", "organization"), ("IBM", "organization"),
         ("Marie Curie", "person"), ("M. Curie", "person"), ("Turkey", "place"),
         ("turkeys", "animal"), ("Ludwig Boltzmann", "person"), ("Boltzmann", "person"))
    before = concept_labels(db)
    dry = ok(kg("resolve", "--dry-run", "--json"))
    assert {(m["survivor_label"], m["merged_label"]) for m in dry["merged"]} == {
        ("International Business Machines", "IBM"), ("Marie Curie", "M. Curie")}
    shown = kg("resolve", "--dry-run")
    assert shown.exit_code == 0 and "would merge 2 concepts" in shown.stdout
    assert "M. Curie" in shown.stdout
    assert concept_labels(db) == before  # a dry run changes nothing

    done = ok(kg("resolve", "--json"))
    assert len(done["merged"]) == 2 and done["review"] >= 1
    assert concept_labels(db) == before - {"IBM", "M. Curie"}
    listed = ok(kg("curation", "list", "--json"))
    assert sum(row["action"] == "merge" for row in listed) == 2
    with db.session() as s:
        notes = [d.data["note"] for d in s.query(CurationDecision)]
    assert all(n["pass"] == "resolve" and n["score"] >= 0.9 and "acronym" in n["signals"]
               for n in notes)

    duplicates = ok(kg("concepts", "duplicates", "--json"))
    assert {(d["a_label"], d["b_label"]) for d in duplicates} == {
        ("Ludwig Boltzmann", "Boltzmann")}
    listed_table = kg("concepts", "duplicates")
    assert listed_table.exit_code == 0 and "Ludwig Boltzmann" in listed_table.stdout
    assert {"Turkey", "turkeys"} <= concept_labels(db)  # types keep them apart

    again = ok(kg("resolve", "--json"))  # nothing changed since: nothing to look at
    assert again["examined"] == 0 and again["merged"] == []

    ibm = next(m for m in done["merged"] if m["merged_label"] == "IBM")
    ok(kg("curation", "undo", str(ibm["decision"])))
    assert "IBM" in concept_labels(db)
    full = ok(kg("resolve", "--full", "--json"))  # an undone merge is not made again
    assert full["merged"] == []

    add_concepts(db, ("Internatonal Business Machines", "organization"))
    late = ok(kg("resolve", "--json"))
    assert late["examined"] == 1
    assert [(m["survivor_label"], m["merged_label"]) for m in late["merged"]] == [
        ("International Business Machines", "Internatonal Business Machines")]

    table = kg("resolve", "--dry-run")
    assert table.exit_code == 0 and "would merge 0 concepts" in table.stdout
    bad = kg("resolve", "--high", "2")
    assert bad.exit_code != 0 and "--high must be between 0 and 1" in bad.stderr


def test_judge_decides_the_grey_zone_with_one_logged_call_per_pair(kg, db: Database) -> None:
    from tests.fakes import Reply
    from tests.graph_seed import fake_ollama, rows, use_server

    def answer(body: dict[str, Any]) -> Reply:
        prompt = body["messages"][-1]["content"]
        # Boltzmann is one person; 'coral' is not the reef.
        return Reply(json.dumps({"answer": "yes" if "Boltzmann" in prompt else "no"}))

    add_concepts(db, ("Ludwig Boltzmann", "person"), ("Boltzmann", "person"),
         ("coral reef", None), ("coral", None))
    with fake_ollama(answer) as server:
        use_server(kg, server.url)
        data = ok(kg("resolve", "--judge", "--json"))
        asked = server.chat_bodies()
    assert [(m["survivor_label"], m["merged_label"], m["judge"]) for m in data["merged"]] == [
        ("Ludwig Boltzmann", "Boltzmann", "yes")]
    assert data["judged"] == {"yes": 1, "no": 1, "unsure": 0} and data["review"] == 1
    assert len(asked) == 2 and asked[0]["format"]["properties"]["answer"]["enum"] == [
        "yes", "no", "unsure"]
    assert rows(db, "SELECT kind, status FROM calls ORDER BY id") == [
        ("resolve", "ok"), ("resolve", "ok")]
    assert {"coral reef", "coral"} <= concept_labels(db)


def test_resolve_qualifies_same_name_concepts_of_incompatible_types(kg, db: Database) -> None:
    # A graph where 'Paris' labels a place and is an alias of a person (and of an untyped
    # concept, which decides nothing); a person's own choice of label stays.
    add_concepts(db, ("Paris", "place"), ("Paris of Troy", "person"), ("Mercury", "planet"),
         ("Mercury (element)", "element"), ("Freddie Mercury", "person"))
    with db.session() as s:
        ids = {c.label: c.id for c in s.query(Concept)}
        for concept, alias in (("Paris of Troy", "Paris"), ("Mercury (element)", "Mercury"),
                               ("Freddie Mercury", "Mercury")):
            s.add(ConceptAlias(concept_id=ids[concept], alias=alias,
                               norm_alias=normalise_label(alias)))
    ok(kg("concepts", "rename", "Mercury", "Mercury the planet"))
    ok(kg("concepts", "rename", "Mercury the planet", "Mercury"))  # chosen by a person
    dry = ok(kg("resolve", "--dry-run", "--json"))
    assert [(q["label"], q["qualified"]) for q in dry["qualified"]] == [
        ("Paris", "Paris (place)")]
    assert "Paris" in concept_labels(db)
    shown = kg("resolve")
    assert shown.exit_code == 0 and "qualified 1 same-name labels" in shown.stdout
    assert {"Paris (place)", "Paris of Troy", "Mercury"} <= concept_labels(db)
    found = ok(kg("concepts", "show", "Paris (place)", "--json"))
    assert "Paris" in found["aliases"]  # still found by its plain name
    listed = ok(kg("curation", "list", "--json"))
    assert any(r["action"] == "rename" and "Paris (place)" in r["summary"] for r in listed)
    assert ok(kg("resolve", "--json"))["qualified"] == []  # done once


@pytest.mark.parametrize("floor", [0.8, 0.9])
def test_pairs_below_a_floor_are_skipped_without_changing_the_others(floor: float) -> None:
    # The benchmark's 1,275 mentions (typos, initials, acronyms, transliterations, titles,
    # same-name traps, context words as neighbours): the bound never drops a pair that scores
    # at least the floor.
    from kg.resolution.evaluate import load_mentions
    from kg.resolution.passes import score_pairs

    mentions = load_mentions(Path(__file__).parent.parent / "benchmarks/resolution/set.jsonl")
    words: dict[str, int] = {}
    entities = {
        n: entity(n, m.text, m.type, [normalise_label(m.text)],
                  [words.setdefault(normalise_label(w), -len(words) - 1) for w in m.context])
        for n, m in enumerate(mentions, 1)}
    every = score_pairs(entities)
    above = score_pairs(entities, floor=floor)
    assert [(p.a.id, p.b.id, p.score) for p in above] == [
        (p.a.id, p.b.id, p.score) for p in every if p.score >= floor]
    assert len(above) > 100 and len(every) > len(above)


def test_a_pass_reads_neighbours_only_for_pairs_that_need_them_and_scores_alike(
        db: Database) -> None:
    # Near names with edges between them: scoring with neighbours read per pair gives the
    # pairs (and shared-neighbour signals) of loading every concept's neighbours first.
    from kg.resolution.passes import load_entities, score_pairs, session_pairs
    from tests.graph_seed import bulk_graph

    rng = random.Random(5)
    base = ["Marie Curie", "Pierre Curie", "Ludwig Boltzmann", "International Business "
            "Machines", "Sherlock Holmes", "Coral Reef", "Second Law of Thermodynamics"]
    labels = list(dict.fromkeys(
        name if rng.random() < 0.5 else name[:i] + name[i + 1:]
        for name in base * 12 for i in [rng.randrange(1, len(name))]))
    bulk_graph(db, len(labels), 4 * len(labels), labels=labels, chunk_count=4, aliases_per=0)
    with db.session() as s:
        full = load_entities(s)
        lazy = load_entities(s, neighbours=False)
        expected = [p for p in score_pairs(full, floor=0.0) if p.score >= 0.8]
        got = session_pairs(s, lazy, None, 0.8)
    assert [(p.a.id, p.b.id, p.score, p.signals) for p in got] == [
        (p.a.id, p.b.id, p.score, p.signals) for p in expected]
    assert any(p.signals["neighbours"] > 0 for p in got) and len(got) > 10
