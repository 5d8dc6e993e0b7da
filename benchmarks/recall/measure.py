"""One table row of issue 20's recall figures: run `kg eval FILE.jsonl --json`, score its stored
predictions with the benchmark's string rules, print the row.

    python -m benchmarks.recall.measure [FILE.jsonl] [--limit N] [--profile NAME]
        [--set KEY=VALUE ...] [--gold-server [--gold-types]] [--kg-src DIR] [--kg-home DIR]
        [--max-minutes M] [--rescore] [--misses] [--expressible] [--json OUT]

kg runs in a subprocess with a throwaway KG_HOME under /tmp (or --kg-home), from the source tree
--kg-src (default: this checkout; give an exported commit to measure it while the tree is being
edited). --gold-server answers every request with the record's gold triples (the pipeline's
ceiling), in the shape the request's schema asks for (graph or triples); its concepts are
untyped, as the gold is (--gold-types states each end's first domain/range as its type).
--set KEY=VALUE is passed to `kg admin extraction set --profile NAME --KEY VALUE` before the
run (e.g. --set grounding=off), so an ablation is one command. --max-minutes stops a slow
run and scores the records it finished from their stored calls (--rescore does that for an
existing --kg-home without running anything).

How it scores (micro-averaged over all records; a record's predictions are deduplicated):
- ends: case-folded with whitespace and underscores removed (Text2KGBench's normalize_triple);
  relaxed ends also drop quote marks.
- typed strict: ends as above and the relation label exactly as the ontology spells it
  (spaces = underscores, case-sensitive: Text2KGBench keeps only system triples whose relation
  string is one of the gold relations). Typed relaxed: relation case-folded, punctuation,
  spaces and underscores removed, ends relaxed.
- untyped pair: the unordered {subject, object} pair with relaxed ends, relation ignored.
- pred/gold: predicted triples over gold triples.
- conformance: predicted triples whose relation is spelled as an ontology relation (strict).
- hallucination: predicted subjects (objects) whose relaxed form is not a substring of the
  record's text plus its concept names, relaxed the same way (the benchmark also stems; this
  does not, so it is a little stricter).
- first-try usable: kg eval's usable_first_try (chunks whose first call was usable).
- s/record: wall-clock seconds of the `kg eval` process (model load included) per record.
The JSON output adds Text2KGBench's own macro F1 (per-record F1 over system triples whose
relation is a gold relation of the record, averaged), LLM seconds per record and counts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
QUOTES = re.compile(r"[\"'“”‘’«»`]")
LITERAL_RANGES = {"string", "number", "date", "year"}
COLUMNS = ("run", "records", "pred/gold", "untyped F1", "strict F1", "relaxed F1",
           "conformance", "subj halluc", "obj halluc", "first-try usable", "s/record")

Triple = tuple[str, str, str]


# -- normalisation ---------------------------------------------------------------------------

def end_key(value: str, relaxed: bool = False) -> str:
    """Text2KGBench: lower case, no whitespace, no underscores; relaxed: no quote marks."""
    if relaxed:
        value = QUOTES.sub("", value)
    return re.sub(r"[\s_]+", "", value).casefold()


def relation_key(label: str, relaxed: bool = False) -> str:
    """Strict: the label as spelled, spaces as underscores; relaxed: letters and digits only."""
    if relaxed:
        return re.sub(r"[\W_]+", "", label).casefold()
    return label.strip().replace(" ", "_")


def triple_key(t: Triple, relaxed: bool) -> tuple[str, str, str]:
    return end_key(t[0], relaxed), relation_key(t[1], relaxed), end_key(t[2], relaxed)


def pair_key(t: Triple) -> frozenset[str]:
    return frozenset((end_key(t[0], True), end_key(t[2], True)))


# -- records and their balanced subset -------------------------------------------------------

def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def balanced(records: list[dict[str, Any]], limit: int | None) -> list[dict[str, Any]]:
    """The first `limit` records taking one per ontology in turn (file order within each),
    in that order: a run stopped half-way has still covered every ontology evenly."""
    if limit is None or limit >= len(records):
        return records
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(str(r.get("ontology_id", "")), []).append(r)
    chosen: list[dict[str, Any]] = []
    depth = 0
    while len(chosen) < limit:
        chosen += [g[depth] for g in groups.values() if depth < len(g)][:limit - len(chosen)]
        depth += 1
    return chosen


# -- running kg ------------------------------------------------------------------------------

@dataclass
class Run:
    """What one `kg eval` left: its summary, stored predictions, calls, wall time."""

    summary: dict[str, Any]
    predicted: dict[str, list[Triple]]
    calls: dict[str, list[dict[str, Any]]]
    wall_s: float | None  # None: stopped before the end, scored from its stored calls


def kg_env(home: Path, kg_src: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("KG_DATABASE_URL", "KG_PROFILE", "PYTHONPATH")}
    return {**env, "KG_HOME": str(home), "PYTHONPATH": str(kg_src)}


def kg(args: list[str], env: dict[str, str]) -> str:
    """The kg CLI of --kg-src (not the installed entry point, which follows the work tree)."""
    done = subprocess.run([sys.executable, "-c", "from kg.cli.main import main; main()", *args],
                          env=env, capture_output=True, text=True, cwd="/tmp")
    if done.returncode != 0:
        sys.exit(f"kg {' '.join(args[:3])} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def configure(profile: str | None, settings: list[str], env: dict[str, str],
              extra: list[str]) -> None:
    """`kg admin extraction set --profile NAME --KEY VALUE ...` when anything is to be set."""
    flags = list(extra)
    for item in settings:
        key, _, value = item.partition("=")
        flags += [f"--{key.replace('_', '-')}", value]
    if flags:
        kg(["admin", "extraction", "set", *(["--profile", profile] if profile else []),
            *flags, "--by", "recall-benchmark"], env)


def last_call_id(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT coalesce(max(id), 0) FROM calls").fetchone()[0]


def evaluate(path: Path, profile: str | None, env: dict[str, str], db: Path,
             max_minutes: float | None, kg_src: Path) -> Run:
    """`kg eval`; past max_minutes it is stopped and the records it finished are scored from
    their stored calls (kg stores an evaluation only at its end, but each record's calls as
    soon as the record is done)."""
    before = last_call_id(db)
    started = time.perf_counter()
    args = ["eval", str(path), "--json", *(["--profile", profile] if profile else [])]
    proc = subprocess.Popen([sys.executable, "-c", "from kg.cli.main import main; main()",
                             *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd="/tmp")
    try:
        out, err = proc.communicate(timeout=max_minutes * 60 if max_minutes else None)
    except subprocess.TimeoutExpired:
        proc.kill()  # only the kg process this harness started
        proc.communicate()
        return rescore(db, load(path), kg_src, before)
    if proc.returncode != 0:
        sys.exit(f"kg eval failed ({proc.returncode}): {err.strip()}")
    wall = time.perf_counter() - started
    summary = json.loads(out)
    predicted, calls = read_store(db, summary["id"], before)
    return Run(summary, predicted, calls, wall)


def rescore(db: Path, records: list[dict[str, Any]], kg_src: Path, after_call: int = 0) -> Run:
    """A stopped evaluation: each finished record's verdict rebuilt by kg's own validator (of
    kg_src) from its last usable reply, as the extractor would have judged it."""
    _, calls = read_store(db, -1, after_call)
    validate = _validator(kg_src)
    predicted: dict[str, list[Triple]] = {}
    firsts = []
    for record in records:
        own = calls.get(str(record["id"]))
        if not own:
            continue
        firsts.append(min(own, key=lambda c: c["attempt"])["status"] == "ok")
        call = _reply_call(own)
        usable = call is not None and call["status"] == "ok"
        predicted[str(record["id"])] = validate(record, call) if usable else []
    summary = {"id": None, "overall": {
        "usable_first_try": sum(firsts) / len(firsts) if firsts else None,
        "records": len(predicted)}}
    return Run(summary, predicted, calls, None)


def _validator(kg_src: Path) -> Any:
    sys.path.insert(0, str(kg_src))
    from kg.evaluation import Record, record_vocabulary
    from kg.extraction.schema import bounds_for_budget
    from kg.extraction.validate import validate_reply

    def triples(record: dict[str, Any], call: dict[str, Any]) -> list[Triple]:
        verdict = validate_reply(
            call["response"], record["text"], record_vocabulary(Record.model_validate(record)),
            bounds_for_budget(1024), finish_reason=call.get("finish_reason"),
            descriptions="evidence", resolve_ends=call.get("grounding") == "on")
        return ([(r.source, r.type.name, r.target) for r in verdict.relationships]
                + [(lit.subject, lit.type.name, lit.value)
                   for lit in getattr(verdict, "literals", [])])

    return triples


def read_store(db: Path, evaluation_id: int,
               after_call: int) -> tuple[dict[str, list[Triple]], dict[str, list[dict]]]:
    """Predicted triples per record (evaluation_documents.predicted) and each record's calls
    (calls.ontology is 'record:ID'; an evaluation's calls carry no run id)."""
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        docs = conn.execute("SELECT document, predicted FROM evaluation_documents "
                            "WHERE evaluation_id = ?", (evaluation_id,)).fetchall()
        rows = conn.execute("SELECT * FROM calls WHERE id > ? ORDER BY id",
                            (after_call,)).fetchall()
    predicted = {d["document"]: stored_triples(json.loads(d["predicted"])) for d in docs}
    calls: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        name = (row["ontology"] or "").removeprefix("record:")
        calls.setdefault(name, []).append(dict(row))
    return predicted, calls


def stored_triples(predicted: dict[str, Any]) -> list[Triple]:
    """Every [s, r, o] list kg stored: relationships, and literal attributes once it has them."""
    found: list[Triple] = []
    for key in ("triples", "relationships", "attributes", "literals"):
        for item in predicted.get(key) or []:
            if isinstance(item, list | tuple) and len(item) == 3:
                found.append((str(item[0]), str(item[1]), str(item[2])))
    return found


# -- the gold server -------------------------------------------------------------------------

GOLD_TYPES = False  # --gold-types: type each end by its first relation's domain/range


def gold_reply(record: dict[str, Any]) -> str:
    """The record's gold triples in kg's reply shape. The gold has no entity types, so by
    default the ends are left untyped (kg infers them from the ontology, as it does for a
    model's unlisted ends); --gold-types states the first relation's domain/range as the
    type instead (a literal or open end has no type), which is how the baseline was run."""
    relations = {r["label"]: r for r in record["ontology"]["relations"]}
    concepts_known = set(record["ontology"]["concepts"])
    concepts: dict[str, str | None] = {}
    rels = []
    for s, r, o in record["gold_triples"]:
        rel = relations.get(r, {})
        for end, kind in ((s, rel.get("domain")), (o, rel.get("range"))):
            typed = GOLD_TYPES and kind in concepts_known
            concepts.setdefault(end, kind if typed else None)
        rels.append({"source": s, "type": r, "target": o, "confidence": 0.9,
                     "quote": span_of(s, record["text"])})
    items = [{"label": c, "description": "", "search_terms": [],
              "quote": span_of(c, record["text"]), "type": t} for c, t in concepts.items()]
    return json.dumps({"concepts": items, "relationships": rels})


def gold_triples_reply(record: dict[str, Any] | None) -> str:
    """The record's gold in the `triples` shape (--set shape=triples)."""
    rows = [{"quote": span_of(s, record["text"]), "subject": s, "relation": r, "object": o}
            for s, r, o in (record or {}).get("gold_triples", [])]
    return json.dumps({"triples": rows})


def span_of(value: str, text: str) -> str:
    """The text's own spelling of a value (any case, quote marks aside), else the value."""
    core = QUOTES.sub("", value).strip()
    match = re.search(re.escape(core), text, re.IGNORECASE) if core else None
    return match.group() if match else value


@contextmanager
def gold_server(records: list[dict[str, Any]]) -> Iterator[str]:
    """tests.fakes.FakeOllama answering each chunk with its record's gold."""
    sys.path.append(str(ROOT))  # appended: kg itself must come from --kg-src
    from tests.fakes import FakeOllama, Reply, chunk_of

    by_text = {r["text"].strip(): r for r in records}

    def respond(body: dict[str, Any]) -> Any:
        chunk = chunk_of(body).strip()
        record = by_text.get(chunk) or next(
            (r for t, r in by_text.items() if chunk and chunk in t), None)
        if "triples" in (body.get("format") or {}).get("properties", {}):
            return Reply(gold_triples_reply(record))
        return Reply(gold_reply(record) if record else '{"concepts": [], "relationships": []}')

    with FakeOllama(responder=respond) as server:
        yield server.url


# -- scoring ---------------------------------------------------------------------------------

@dataclass
class Tally:
    gold: int = 0
    pred: int = 0
    strict_tp: int = 0
    relaxed_tp: int = 0
    pair_gold: int = 0
    pair_pred: int = 0
    pair_tp: int = 0
    conformant: int = 0
    subj_halluc: int = 0
    obj_halluc: int = 0
    bench_f1: list[float] = field(default_factory=list)


def prf(tp: int, pred: int, gold: int) -> tuple[float, float, float]:
    p = tp / pred if pred else 0.0
    r = tp / gold if gold else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def dedupe(triples: list[Triple]) -> list[Triple]:
    return list({triple_key(t, False): t for t in triples}.values())


def score_record(tally: Tally, record: dict[str, Any], predicted: list[Triple]) -> None:
    gold = dedupe([tuple(t) for t in record["gold_triples"]])  # type: ignore[misc]
    pred = dedupe(predicted)
    tally.gold += len(gold)
    tally.pred += len(pred)
    for relaxed in (False, True):
        hits = {triple_key(t, relaxed) for t in gold} & {triple_key(t, relaxed) for t in pred}
        if relaxed:
            tally.relaxed_tp += len(hits)
        else:
            tally.strict_tp += len(hits)
    gold_pairs, pred_pairs = {pair_key(t) for t in gold}, {pair_key(t) for t in pred}
    tally.pair_gold += len(gold_pairs)
    tally.pair_pred += len(pred_pairs)
    tally.pair_tp += len(gold_pairs & pred_pairs)
    labels = {relation_key(r["label"]) for r in record["ontology"]["relations"]}
    tally.conformant += sum(relation_key(t[1]) in labels for t in pred)
    context = end_key(record["text"] + " " + " ".join(record["ontology"]["concepts"]), True)
    tally.subj_halluc += sum(end_key(t[0], True) not in context for t in pred)
    tally.obj_halluc += sum(end_key(t[2], True) not in context for t in pred)
    tally.bench_f1.append(benchmark_f1(gold, pred))


def benchmark_f1(gold: list[Triple], pred: list[Triple]) -> float:
    """Text2KGBench's per-sentence F1: system triples whose relation is a gold relation."""
    relations = {relation_key(t[1]) for t in gold}
    kept = {triple_key(t, False) for t in pred if relation_key(t[1]) in relations}
    return prf(len(kept & {triple_key(t, False) for t in gold}), len(kept), len(gold))[2]


def figures(records: list[dict[str, Any]], run: Run) -> dict[str, Any]:
    if run.wall_s is None:  # stopped: only the records it finished
        records = [r for r in records if str(r["id"]) in run.predicted]
    tally = Tally()
    for record in records:
        score_record(tally, record, run.predicted.get(str(record["id"]), []))
    ids = {str(r["id"]) for r in records}
    llm_ms = sum(c["latency_ms"] or 0 for name, calls in run.calls.items() if name in ids
                 for c in calls)
    overall = run.summary.get("overall", {})
    n = len(records)
    # A stopped run has no wall time: its LLM time per record stands in (marked in the row).
    wall = run.wall_s if run.wall_s is not None else llm_ms / 1000
    return {
        "records": n, "gold": tally.gold, "predicted": tally.pred,
        "pred_per_gold": tally.pred / tally.gold if tally.gold else 0.0,
        "untyped_f1": prf(tally.pair_tp, tally.pair_pred, tally.pair_gold)[2],
        "strict": prf(tally.strict_tp, tally.pred, tally.gold),
        "relaxed": prf(tally.relaxed_tp, tally.pred, tally.gold),
        "conformance": tally.conformant / tally.pred if tally.pred else None,
        "subject_hallucination": tally.subj_halluc / tally.pred if tally.pred else None,
        "object_hallucination": tally.obj_halluc / tally.pred if tally.pred else None,
        "first_try_usable": overall.get("usable_first_try"),
        "seconds_per_record": wall / n if n else 0.0, "stopped": run.wall_s is None,
        "llm_seconds_per_record": llm_ms / 1000 / n if n else 0.0,
        "text2kgbench_macro_f1": sum(tally.bench_f1) / n if n else 0.0,
        "kg_eval_overall": overall, "evaluation_id": run.summary.get("id"),
    }


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def table_row(name: str, f: dict[str, Any]) -> str:
    cells = [name, str(f["records"]), f"{f['pred_per_gold']:.2f} ({f['predicted']}/{f['gold']})",
             _fmt(f["untyped_f1"]), _fmt(f["strict"][2]), _fmt(f["relaxed"][2]),
             _fmt(f["conformance"]), _fmt(f["subject_hallucination"]),
             _fmt(f["object_hallucination"]),
             "n/a" if f["first_try_usable"] is None else f"{f['first_try_usable']:.1%}",
             f"{f['seconds_per_record']:.1f}" + (" (LLM only)" if f["stopped"] else "")]
    return "| " + " | ".join(cells) + " |"


# -- why gold triples were missed ------------------------------------------------------------

def misses(records: list[dict[str, Any]], run: Run, kg_src: Path) -> dict[str, Any]:
    """Each gold triple the run missed (relaxed), by the stage that lost it, from the stored
    reply of the record's last usable call, re-validated one relationship at a time with
    kg's own validator (of --kg-src)."""
    sys.path.insert(0, str(kg_src))
    from kg.evaluation import Record, record_vocabulary
    from kg.extraction import schema
    from kg.extraction.validate import validate_reply

    # The bounds class was renamed (Bounds -> OutputBounds); measure either tree.
    bounds_class = getattr(schema, "OutputBounds", None) or schema.Bounds
    to_graph = getattr(schema, "triples_to_graph", None)

    def check(record: dict[str, Any], data: dict[str, Any], rel: Any, grounding: bool) -> str:
        model = Record.model_validate(record)
        vocab = record_vocabulary(model)

        def run_one(rels: list[Any]) -> Any:
            return validate_reply(json.dumps({"concepts": data.get("concepts", []),
                                              "relationships": rels}), record["text"], vocab,
                                  bounds_class(60, 60), descriptions="evidence",
                                  resolve_ends=grounding)

        base, one = run_one([]), run_one([rel])
        if one.relationships or getattr(one, "literals", None):
            return "kept on re-check"
        lost = one.dropped - base.dropped
        for reason in ("schema", "unknown_end", "self_loop", "unknown_type", "domain_range",
                       "literal_not_in_text", "quote_not_found", "duplicate"):
            if lost[reason]:
                return reason
        return "dropped (other)"

    if run.wall_s is None:
        records = [r for r in records if str(r["id"]) in run.predicted]
    reasons: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    strict_only = Counter[str]()
    for record in records:
        pred = run.predicted.get(str(record["id"]), [])
        relaxed = {triple_key(t, True) for t in pred}
        strict = {triple_key(t, False) for t in pred}
        ranges = {r["label"]: r["range"] for r in record["ontology"]["relations"]}
        call = _reply_call(run.calls.get(str(record["id"]), []))
        data = _parse(call["response"]) if call else None
        if data is not None and "triples" in data and to_graph is not None:
            data = to_graph(data)  # the triples shape, read as validation reads it
        for s, r, o in record["gold_triples"]:
            if triple_key((s, r, o), True) in relaxed:
                if triple_key((s, r, o), False) not in strict:
                    strict_only[_strict_miss((s, r, o), pred)] += 1
                continue
            reason = _why(data, (s, r, o), call, record, check)
            if ranges.get(r) in LITERAL_RANGES:
                reason += " [literal range]"
            reasons[reason] += 1
            examples.setdefault(reason, [])
            if len(examples[reason]) < 3:
                examples[reason].append(f"{record['id']}: {s} -{r}-> {o}")
    return {"missed": dict(reasons.most_common()), "strict_only_misses": dict(strict_only),
            "examples": examples}


def _strict_miss(gold: Triple, pred: list[Triple]) -> str:
    """Why a relaxed hit is no strict hit: the relation's spelling, or the ends' quote marks."""
    twins = [t for t in pred if triple_key(t, True) == triple_key(gold, True)]
    if all(relation_key(t[1]) != relation_key(gold[1]) for t in twins):
        return "relation spelled otherwise"
    return "quote marks on an end"


def _reply_call(calls: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The call whose reply the record's verdict came from: the last usable one, else the last
    one with any reply."""
    answered = [c for c in calls if c.get("response")]
    usable = [c for c in answered if c.get("status") == "ok"]
    return (usable or answered or [None])[-1]


def _parse(response: str) -> dict[str, Any] | None:
    text = re.sub(r"^\s*```(?:json)?|```\s*$", "", response.strip())
    try:
        data = json.loads(text, strict=False)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _why(data: dict[str, Any] | None, gold: Triple, call: dict[str, Any] | None,
         record: dict[str, Any], check: Any) -> str:
    if data is None:
        return "no usable reply"
    pair = {end_key(gold[0], True), end_key(gold[2], True)}
    rels = [x for x in data.get("relationships") or [] if isinstance(x, dict)]
    same_pair = [x for x in rels if {end_key(str(x.get("source", "")), True),
                                     end_key(str(x.get("target", "")), True)} == pair]
    if not same_pair:
        labels = {end_key(str(c.get("label", "")), True) for c in data.get("concepts") or []
                  if isinstance(c, dict)}
        return ("never proposed (both ends listed as concepts)" if pair <= labels
                else "never proposed")
    right = [x for x in same_pair
             if relation_key(str(x.get("type", "")), True) == relation_key(gold[1], True)
             and end_key(str(x.get("source", "")), True) == end_key(gold[0], True)]
    if not right:
        return "proposed with another relation or direction"
    grounding = (call or {}).get("grounding") in ("on", None)
    return "dropped: " + check(record, data, right[0], grounding)


# -- what the grammar lets a model write ----------------------------------------------------

def expressible(records: list[dict[str, Any]], kg_src: Path) -> dict[str, Any]:
    """Gold triples the grounded `triples` grammar (of kg_src, bundled-model bounds) can
    write: some row offers the subject, the relation and the object (relaxed ends). Offline:
    no model runs. Also the mean number of relations a row offers."""
    sys.path.insert(0, str(kg_src))
    from kg.evaluation import Record, record_vocabulary
    from kg.extraction.grounding import grounded_schema
    from kg.extraction.schema import bounds_for_budget, triples_schema

    bounds = bounds_for_budget(1024)
    fits = pairs = total = 0
    offered: list[int] = []
    for record in records:
        vocab = record_vocabulary(Record.model_validate(record))
        node = grounded_schema(triples_schema(bounds, tuple(vocab.types)), record["text"],
                               max_label=bounds.label_len, max_quote=bounds.quote_len,
                               **({"kinds": vocab.kinds()} if hasattr(vocab, "kinds") else {})
                               ).schema["properties"]["triples"]
        branches = [b["properties"] for row in node.get("prefixItems") or [node["items"]]
                    for b in row.get("anyOf", [row])]
        offered += [len(b["relation"].get("enum") or vocab.types) for b in branches]
        for s, r, o in record["gold_triples"]:
            total += 1
            ends = [b for b in branches
                    if end_key(s, True) in {end_key(v, True) for v in b["subject"]["enum"]}
                    and end_key(o, True) in {end_key(v, True) for v in b["object"]["enum"]}]
            pairs += bool(ends)
            fits += any(r in (b["relation"].get("enum") or [r]) for b in ends)
    return {"gold": total, "pair_expressible": pairs, "triple_expressible": fits,
            "mean_relations_per_row": sum(offered) / len(offered) if offered else 0.0}


# -- main ------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.recall.measure",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("file", nargs="?", type=Path, default=HERE / "devset.jsonl")
    parser.add_argument("--limit", type=int, help="first N records, one per ontology in turn")
    parser.add_argument("--profile", help="profile to evaluate (default: the active one)")
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        metavar="KEY=VALUE", help="profile setting changed before the run")
    parser.add_argument("--gold-server", action="store_true",
                        help="a fake Ollama answering each record's gold (the ceiling)")
    parser.add_argument("--gold-types", action="store_true",
                        help="the gold server states each end's type (first relation's "
                             "domain/range) instead of leaving it to kg's inference")
    parser.add_argument("--kg-src", type=Path, default=ROOT,
                        help="source tree whose kg runs (holding kg/ and migrations/)")
    parser.add_argument("--kg-home", type=Path, help="KG_HOME (default: a new one under /tmp)")
    parser.add_argument("--name", help="the row's name (default: profile or gold-server)")
    parser.add_argument("--max-minutes", type=float,
                        help="stop kg eval after this long; score the records it finished")
    parser.add_argument("--rescore", action="store_true",
                        help="run nothing: score the calls already stored in --kg-home")
    parser.add_argument("--misses", action="store_true", help="why gold triples were missed")
    parser.add_argument("--expressible", action="store_true",
                        help="run nothing: gold triples the grounded triples grammar can write")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--no-header", action="store_true")
    args = parser.parse_args()
    global GOLD_TYPES
    GOLD_TYPES = args.gold_types

    records = balanced(load(args.file), args.limit)
    if args.expressible:
        print(json.dumps(expressible(records, args.kg_src.resolve()), indent=1))
        return
    home = args.kg_home or Path(tempfile.mkdtemp(prefix="kg-recall-", dir="/tmp"))
    home.mkdir(parents=True, exist_ok=True)
    subset = home / f"{args.file.stem}-{len(records)}.jsonl"
    subset.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                      encoding="utf-8")
    env = kg_env(home, args.kg_src.resolve())
    db = home / "kg.db"
    if args.rescore:
        run = rescore(db, records, args.kg_src.resolve())
    elif args.gold_server:
        profile = args.profile or "recall-gold"
        with gold_server(records) as url:
            configure(profile, args.settings, env, [
                "--provider", "ollama", "--model", "qwen3:8b", "--base-url", url,
                "--max-retries", "0", "--max-parallel", "4"])
            run = evaluate(subset, profile, env, db, args.max_minutes, args.kg_src.resolve())
    else:
        configure(args.profile, args.settings, env, [])
        run = evaluate(subset, args.profile, env, db, args.max_minutes,
                       args.kg_src.resolve())
    result = figures(records, run)
    name = args.name or ("gold server" if args.gold_server else args.profile or "active profile")
    if not args.no_header:
        print("| " + " | ".join(COLUMNS) + " |")
        print("|" + "---|" * len(COLUMNS))
    print(table_row(name, result))
    if args.misses:
        result["misses"] = misses(records, run, args.kg_src.resolve())
        print(json.dumps(result["misses"], indent=1, ensure_ascii=False))
    if args.json:
        args.json.write_text(json.dumps({"name": name, "kg_home": str(home), **result},
                                        indent=1, ensure_ascii=False, default=str))
    print(f"KG_HOME {home}; evaluation {run.summary.get('id')}", file=sys.stderr)


if __name__ == "__main__":
    main()
