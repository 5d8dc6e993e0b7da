"""Rebuild the recall dev set from pinned TRAINING splits of public ontology benchmarks.

    python benchmarks/recall/build_devset.py \\
        --text2kgbench /path/to/Text2KGBench --conll04 /path/to/TablERT-CNN

Each path is a clone (a work tree or a bare git directory) of the repository named in
SOURCES.md; files are read with `git show COMMIT:PATH` at the pinned commit, so a newer clone
gives the same set. Nothing is downloaded. Writes devset.jsonl (Text2KGBench, CC BY-SA 4.0) and
conll04.jsonl (CoNLL04; see SOURCES.md for its licence status) beside this script.

Only training files are ever opened: `_read_split` refuses any path that is not a train split,
because the product is judged on the benchmarks' held-out test data.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

TEXT2KG_COMMIT = "50a3d255371b8817cdff70fd88459ac82b339cfe"  # cenguix/Text2KGBench
CONLL04_COMMIT = "055333c2b0dfff48fbab8fa73367cc0766c89862"  # YoumiMa/TablERT-CNN

DBPEDIA = ("1_university", "2_musicalwork", "3_airport", "4_building", "5_athlete",
           "6_politician", "7_company", "8_celestialbody", "9_astronaut", "10_comicscharacter",
           "11_meanoftransportation", "12_monument", "13_food", "14_writtenwork",
           "15_sportsteam", "16_city", "17_artist", "18_scientist", "19_film")
WIKIDATA = ("1_movie", "2_music", "3_sport", "4_book", "5_military", "6_computer", "7_space",
            "8_politics", "9_nature", "10_culture")

SEED = "kg-issue-20"
PER_DBPEDIA = 8
PER_WIKIDATA = 5
CONLL04_PER_RELATION = 4
MAX_CHARS = 200  # short sentences: one chunk each, a few seconds per record for small models

# DBpedia ranges that are datatypes, spelled the one way kg's literal ranges will use.
DBPEDIA_DATATYPES = {"string": "string", "number": "number", "date": "date", "Date": "date",
                     "Year": "year"}
# Text2KGBench gives these Wikidata properties no range; their Wikidata datatype is a literal
# (time, quantity, monolingual text). Every other empty range stays open (null).
WIKIDATA_DATATYPES = {"P571": "date", "P580": "date", "P577": "date", "P622": "date",
                      "P2130": "number", "P1843": "string"}

# CoNLL04's relation constraints (Roth & Yih 2004); build() checks every train triple fits.
CONLL04_RELATIONS = (("Work_For", "Peop", "Org"), ("Kill", "Peop", "Peop"),
                     ("OrgBased_In", "Org", "Loc"), ("Live_In", "Peop", "Loc"),
                     ("Located_In", "Loc", "Loc"))

QUOTES = "\"'“”‘’«»`"
MOJIBAKE = re.compile(r"[ÃÂÅâ]")
HELD_OUT = re.compile(r"(test|valid|dev|ground_truth|unseen|baselines|selected)", re.IGNORECASE)


@dataclass(frozen=True)
class Source:
    repo: Path
    commit: str


def _git_show(source: Source, path: str) -> str:
    """A file at the pinned commit, from a work tree or a bare git directory."""
    bare = (source.repo / "HEAD").is_file() and (source.repo / "objects").is_dir()
    where = ["--git-dir", str(source.repo)] if bare else ["-C", str(source.repo)]
    done = subprocess.run(["git", *where, "show", f"{source.commit}:{path}"],
                          capture_output=True, text=True, encoding="utf-8")
    if done.returncode != 0:
        sys.exit(f"cannot read {path} at {source.commit[:12]} in {source.repo}: "
                 f"{done.stderr.strip()}")
    return done.stdout


def _read_split(source: Source, path: str) -> str:
    """A training split; anything that looks held out is refused before it is opened."""
    is_train = "/train/" in f"/{path}" or Path(path).name.endswith("_train.json")
    if HELD_OUT.search(path) or not is_train:
        raise SystemExit(f"refusing to read {path}: only training splits are allowed")
    return _git_show(source, path)


def _read_ontology(source: Source, path: str) -> dict[str, Any]:
    if "/ontologies/" not in path:
        raise SystemExit(f"refusing to read {path}: not an ontology file")
    return json.loads(_git_show(source, path))


def _fold(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def _grounded(value: str, text: str) -> bool:
    """The value (quote marks aside) stands in the text as whole words, any case: a span kg
    can extract ('Expedition 25' is not a span of 'Expedition 25/26')."""
    core = _fold(value).strip(QUOTES).strip()
    pattern = r"(?<![\w/])" + re.escape(core) + r"(?![\w/])"
    return bool(core) and re.search(pattern, _fold(text)) is not None


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


# -- ontologies ------------------------------------------------------------------------------

def _dbpedia_class(name: str) -> str | None:
    """A class name (capitalised); a lowercase or empty range is broken in the source: open."""
    name = name.strip()
    return name if name[:1].isupper() else None


def dbpedia_ontology(raw: dict[str, Any]) -> dict[str, Any]:
    """Concepts as spelled, plus classes a domain/range names but the list forgot."""
    concepts = _unique(c["label"].strip() for c in raw["concepts"])
    relations: dict[str, dict[str, str | None]] = {}
    for rel in raw["relations"]:
        domain = _dbpedia_class(rel["domain"])
        range_ = DBPEDIA_DATATYPES.get(rel["range"].strip()) or _dbpedia_class(rel["range"])
        for cls in (domain, range_):
            if cls and cls not in DBPEDIA_DATATYPES.values() and cls not in concepts:
                concepts.append(cls)
        relations.setdefault(rel["label"], {"label": rel["label"], "domain": domain,
                                            "range": range_})
    return {"concepts": concepts, "relations": list(relations.values())}


def wikidata_ontology(raw: dict[str, Any]) -> dict[str, Any]:
    """QIDs replaced by the ontology's labels; a QID it does not list stays open."""
    labels = {c["qid"]: c["label"].strip() for c in raw["concepts"]}
    relations: dict[str, dict[str, str | None]] = {}
    for rel in raw["relations"]:
        range_ = labels.get(rel["range"]) or WIKIDATA_DATATYPES.get(rel["pid"])
        relations.setdefault(rel["label"], {"label": rel["label"],
                                            "domain": labels.get(rel["domain"]),
                                            "range": range_})
    return {"concepts": _unique(labels.values()), "relations": list(relations.values())}


# -- Text2KGBench records ---------------------------------------------------------------------

def _dbpedia_entity(value: str) -> str:
    """DBpedia resource names use underscores for spaces; quote marks are kept as given."""
    return re.sub(r"\s+", " ", value.replace("_", " ")).strip()


def _usable(text: str, triples: list[list[str]], relations: set[str]) -> bool:
    return (len(text) <= MAX_CHARS and not MOJIBAKE.search(text) and bool(triples)
            and all(r in relations and _grounded(s, text) and _grounded(o, text)
                    for s, r, o in triples))


def _sample(candidates: list[dict[str, Any]], key: str, count: int) -> list[dict[str, Any]]:
    """`count` records in a seeded order, never two with the same set of gold triples
    (WebNLG verbalises one triple set several times)."""
    order = list(candidates)
    random.Random(f"{SEED}:{key}").shuffle(order)
    chosen, seen = [], set()
    for record in order:
        facts = frozenset(map(tuple, record["gold_triples"]))
        if facts not in seen:
            seen.add(facts)
            chosen.append(record)
        if len(chosen) == count:
            break
    if len(chosen) < count:
        sys.exit(f"{key}: only {len(chosen)} usable records, {count} wanted")
    return sorted(chosen, key=lambda r: _id_number(r["id"]))


def _id_number(record_id: str) -> int:
    return int(record_id.rsplit("_", 1)[1])


def dbpedia_records(source: Source, name: str) -> list[dict[str, Any]]:
    ontology = dbpedia_ontology(_read_ontology(
        source, f"data/dbpedia_webnlg/ontologies/{name}_ontology.json"))
    allowed = {r["label"] for r in ontology["relations"]}
    candidates = []
    for line in _read_split(source, f"data/dbpedia_webnlg/train/ont_{name}_train.jsonl") \
            .splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        triples = [[_dbpedia_entity(t["sub"]), t["rel"], _dbpedia_entity(t["obj"])]
                   for t in row["triples"]]
        triples = [list(t) for t in dict.fromkeys(map(tuple, triples))]
        if _usable(row["sent"], triples, allowed):
            candidates.append(_record(row["id"], "text2kgbench/dbpedia_webnlg", f"ont_{name}",
                                      row["sent"], triples, ontology))
    return _sample(candidates, f"dbpedia:{name}", PER_DBPEDIA)


def wikidata_records(source: Source, name: str) -> list[dict[str, Any]]:
    """TekGen rows hold one triple each: rows of the same sentence make one record."""
    ontology = wikidata_ontology(_read_ontology(
        source, f"data/wikidata_tekgen/ontologies/{name}_ontology.json"))
    allowed = {r["label"] for r in ontology["relations"]}
    by_sentence: dict[str, tuple[str, list[list[str]]]] = {}
    for line in _read_split(source, f"data/wikidata_tekgen/train/ont_{name}_train.jsonl") \
            .splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        _first_id, triples = by_sentence.setdefault(row["sent"], (row["id"], []))
        triple = [row["sub_label"].strip(), row["rel_label"], row["obj_label"].strip()]
        if triple not in triples:
            triples.append(triple)
    candidates = [
        _record(record_id, "text2kgbench/wikidata_tekgen", f"ont_{name}", text, triples,
                ontology)
        for text, (record_id, triples) in by_sentence.items()
        if _usable(text, triples, allowed) and _plain_sentence(text)]
    return _sample(candidates, f"wikidata:{name}", PER_WIKIDATA)


def _plain_sentence(text: str) -> bool:
    """TekGen sentences are cut from Wikipedia; skip fragments (lowercase start, a lone ')')."""
    return text[:1].isupper() and text.count("(") == text.count(")")


def _record(record_id: str, benchmark: str, ontology_id: str, text: str,
            triples: list[list[str]], ontology: dict[str, Any]) -> dict[str, Any]:
    return {"id": record_id, "benchmark": benchmark, "ontology_id": ontology_id,
            "text": text, "gold_triples": triples, "ontology": ontology}


# -- CoNLL04 ---------------------------------------------------------------------------------

NO_SPACE_BEFORE = {",", ".", ";", ":", "?", "!", "%", ")", "'s", "'"}
NO_SPACE_AFTER = {"(", "$"}
HEADER_TOKENS = {"`", "--", "-LCB-", "-RCB-", "-LRB-", "-RRB-"}


def _detokenise(tokens: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """Readable text and each token's character span in it (entity text stays verbatim)."""
    text, spans = "", []
    for i, token in enumerate(tokens):
        if i and token not in NO_SPACE_BEFORE and tokens[i - 1] not in NO_SPACE_AFTER:
            text += " "
        spans.append((len(text), len(text) + len(token)))
        text += token
    return text, spans


def _bilou_entities(tags: list[str]) -> list[tuple[int, int, str]]:
    """(first token, last token + 1, type) in order: relations index this list."""
    entities, start = [], 0
    for i, tag in enumerate(tags):
        prefix, _, kind = tag.partition("-")
        if prefix in ("B", "U"):
            start = i
        if prefix in ("L", "U"):
            entities.append((start, i + 1, kind))
    return entities


def conll04_records(source: Source) -> list[dict[str, Any]]:
    types = json.loads(_git_show(source, "data/datasets/conll04/conll04_types.json"))
    ontology = {"concepts": list(types["entities"]),
                "relations": [{"label": r, "domain": d, "range": g}
                              for r, d, g in CONLL04_RELATIONS]}
    fits = {(r, d, g) for r, d, g in CONLL04_RELATIONS}
    candidates: list[dict[str, Any]] = []
    data = json.loads(_read_split(source, "data/datasets/conll04/conll04_train.json"))
    for row in data:
        entities = _bilou_entities(row["tags"])
        text, spans = _detokenise(row["tokens"])
        triples, kinds = [], []
        for rel in row["relations"]:
            head, tail = entities[rel["head"]], entities[rel["tail"]]
            if (rel["type"], head[2], tail[2]) not in fits:
                sys.exit(f"CoNLL04 {row['orig_id']}: {rel['type']} does not fit its ends")
            triple = [text[spans[head[0]][0]:spans[head[1] - 1][1]], rel["type"],
                      text[spans[tail[0]][0]:spans[tail[1] - 1][1]]]
            if triple not in triples:
                triples.append(triple)
                kinds.append(rel["type"])
        if triples and len(text) <= MAX_CHARS and not HEADER_TOKENS & set(row["tokens"]):
            record = _record(f"conll04_train_{row['orig_id']}", "conll04", "conll04", text,
                             triples, ontology)
            candidates.append({**record, "_kinds": kinds})
    return _conll04_sample(candidates)


def _conll04_sample(candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same number of sentences for each relation (by a relation the sentence holds)."""
    order = list(candidates)
    random.Random(f"{SEED}:conll04").shuffle(order)
    chosen: list[dict[str, Any]] = []
    for relation, _domain, _range in CONLL04_RELATIONS:
        pool = (r for r in order if relation in r["_kinds"] and r not in chosen)
        chosen += [next(pool) for _ in range(CONLL04_PER_RELATION)]
    return [{k: v for k, v in r.items() if k != "_kinds"}
            for r in sorted(chosen, key=lambda r: _id_number(r["id"]))]


# -- output ----------------------------------------------------------------------------------

def _write(path: Path, records: list[dict[str, Any]]) -> None:
    lines = (json.dumps(r, ensure_ascii=False) for r in records)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def _summary(records: list[dict[str, Any]]) -> Iterator[str]:
    """Records and gold triples per ontology, and how many gold triples have a literal range."""
    literal = {"string", "number", "date", "year"}
    groups: dict[str, list[int]] = {}
    for r in records:
        ranges = {x["label"]: x["range"] for x in r["ontology"]["relations"]}
        row = groups.setdefault(f"{r['benchmark']}/{r['ontology_id']}", [0, 0, 0])
        row[0] += 1
        row[1] += len(r["gold_triples"])
        row[2] += sum(ranges.get(t[1]) in literal for t in r["gold_triples"])
    for name, (n, triples, literals) in groups.items():
        yield f"{name:46} {n:3} records {triples:4} triples {literals:3} literal-range"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--text2kgbench", type=Path, required=True,
                        help="clone of github.com/cenguix/Text2KGBench")
    parser.add_argument("--conll04", type=Path,
                        help="clone of github.com/YoumiMa/TablERT-CNN (CoNLL04 train split)")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    text2kg = Source(args.text2kgbench, TEXT2KG_COMMIT)
    records = [r for name in DBPEDIA for r in dbpedia_records(text2kg, name)]
    records += [r for name in WIKIDATA for r in wikidata_records(text2kg, name)]
    _write(args.out / "devset.jsonl", records)
    print("\n".join(_summary(records)))
    print(f"devset.jsonl: {len(records)} records, "
          f"{sum(len(r['gold_triples']) for r in records)} gold triples")
    if args.conll04 is not None:
        conll = conll04_records(Source(args.conll04, CONLL04_COMMIT))
        _write(args.out / "conll04.jsonl", conll)
        print("\n".join(_summary(conll)))


if __name__ == "__main__":
    main()
