"""`kg eval`: extract annotated documents and score them against gold, per category and overall.

Evaluation does not touch the graph: predictions are scored in memory and stored as an
evaluation (so two can be compared); its LLM calls are logged in `calls` like any other.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from kg.db import Database
from kg.db.models import Call, Evaluation, EvaluationDocument, utcnow
from kg.errors import NotFoundError, UsageError
from kg.extraction import loaders, vision
from kg.extraction.chunking import ChunkingOptions, chunk_text
from kg.extraction.extract import MALFORMED, CallStatus, ChunkOutcome
from kg.extraction.extractor import Extractor
from kg.extraction.extractor import build as build_extractor
from kg.extraction.store import call_rows
from kg.extraction.vocabulary import TypeInfo, Vocabulary
from kg.jsonable import read_jsonl
from kg.profiles.settings import ProviderSettings, output_settings
from kg.text import (
    datatype_of,
    known_datatypes,
    label_key,
    looks_like_datatype,
    normalise_label,
)

JSON_KINDS = {"not_json", "truncated", "thinking_only", "schema", MALFORMED}


@dataclass
class Gold:
    document: Path
    category: str
    concepts: list[tuple[str, list[str]]]
    relationships: list[tuple[str, str, str]]


@dataclass
class Prediction:
    """What a model extracted from one document, plus how the calls went."""

    concepts: list[str] = field(default_factory=list)
    relationships: list[tuple[str, str, str]] = field(default_factory=list)
    chunks: int = 0
    chunks_failed: int = 0
    first_try_json: int = 0
    first_try_usable: int = 0
    retries: int = 0
    quotes_verbatim: int = 0
    quotes_total: int = 0


def load_gold(gold_dir: Path) -> list[Gold]:
    """Every NAME.gold.json under gold_dir, with the document it annotates."""
    if not gold_dir.is_dir():
        raise UsageError(f"no such folder: {gold_dir}; give the folder holding *.gold.json files")
    items = []
    for path in sorted(gold_dir.rglob("*.gold.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            document = path.parent / data["document"]
            concepts = [(c["label"], list(c.get("aliases", []))) for c in data["concepts"]]
            rels = [(r["source"], r["type"], r["target"]) for r in data["relationships"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"gold file {path} is not valid ({exc}); it needs document, "
                             "concepts [{label, aliases}] and relationships "
                             "[{source, type, target}]") from None
        if not document.is_file():
            raise UsageError(f"gold file {path} names {data['document']!r}, which is missing")
        items.append(Gold(document, data.get("category") or path.parent.name, concepts, rels))
    if not items:
        raise UsageError(f"no *.gold.json files under {gold_dir}")
    return items


def concept_key(label: str) -> str:
    """Matching key: normalised label with simple plurals folded (layers ~ layer)."""
    words = normalise_label(label).split()
    return " ".join(re.sub(r"(?<=[a-z]{3})s$", "", w) for w in words)


def score(gold: Gold, pred: Prediction, symmetric: set[str]) -> dict[str, int]:
    """Counts for one document; metrics() turns summed counts into rates."""
    index: dict[str, int] = {}
    for i, (label, aliases) in enumerate(gold.concepts):
        for name in (label, *aliases):
            index.setdefault(concept_key(name), i)
    mapped: dict[str, int | None] = {p: index.get(concept_key(p)) for p in pred.concepts}
    matched = {i for i in mapped.values() if i is not None}
    unmatched = {concept_key(p) for p, i in mapped.items() if i is None}

    def edge(s: int, t: str, g: int) -> tuple[int, str, int]:
        return (min(s, g), t, max(s, g)) if t in symmetric else (s, t, g)

    gold_edges = {edge(index[concept_key(s)], t, index[concept_key(g)])
                  for s, t, g in gold.relationships}
    gold_pairs: dict[frozenset[int], set[str]] = defaultdict(set)
    for a, kind, b in gold_edges:
        gold_pairs[frozenset((a, b))].add(kind)
    pred_edges: set[Any] = set()
    pred_pairs: set[Any] = set()
    type_correct = type_total = 0
    for s, t, g in pred.relationships:
        si, gi = index.get(concept_key(s)), index.get(concept_key(g))
        if si is None or gi is None:
            pred_edges.add((concept_key(s), t, concept_key(g)))  # cannot match any gold edge
            pred_pairs.add((concept_key(s), concept_key(g)))
            continue
        pred_edges.add(edge(si, t, gi))
        pair = frozenset((si, gi))
        pred_pairs.add(pair)
        if pair in gold_pairs:
            type_total += 1
            type_correct += t in gold_pairs[pair]
    return {
        "concept_tp": len(matched), "concept_pred": len(matched) + len(unmatched),
        "concept_gold": len(gold.concepts),
        "rel_tp": len(pred_edges & gold_edges), "rel_pred": len(pred_edges),
        "rel_gold": len(gold_edges),
        "pair_tp": len(pred_pairs & set(gold_pairs)), "pair_pred": len(pred_pairs),
        "pair_gold": len(gold_pairs),
        "type_correct": type_correct, "type_total": type_total,
        "chunks": pred.chunks, "chunks_failed": pred.chunks_failed,
        "first_try_json": pred.first_try_json, "first_try_usable": pred.first_try_usable,
        "retries": pred.retries, "quotes_verbatim": pred.quotes_verbatim,
        "quotes_total": pred.quotes_total,
    }


def _prf(tp: int, pred: int, gold: int) -> tuple[float, float, float]:
    p = tp / pred if pred else (1.0 if gold == 0 else 0.0)
    r = tp / gold if gold else 1.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return round(p, 4), round(r, 4), round(f, 4)


def metrics(counts: dict[str, int]) -> dict[str, Any]:
    """Precision / recall / F1 and rates from summed counts (micro-averaged)."""
    c = counts
    cp, cr, cf = _prf(c["concept_tp"], c["concept_pred"], c["concept_gold"])
    rp, rr, rf = _prf(c["rel_tp"], c["rel_pred"], c["rel_gold"])
    up, ur, uf = _prf(c["pair_tp"], c["pair_pred"], c["pair_gold"])
    chunks = c["chunks"] or 1
    return {
        "concept_precision": cp, "concept_recall": cr, "concept_f1": cf,
        "relationship_precision": rp, "relationship_recall": rr, "relationship_f1": rf,
        "untyped_precision": up, "untyped_recall": ur, "untyped_f1": uf,
        "type_accuracy": round(c["type_correct"] / c["type_total"], 4) if c["type_total"]
        else None,
        "quotes_verbatim_rate": round(c["quotes_verbatim"] / c["quotes_total"], 4)
        if c["quotes_total"] else None,
        "valid_json_first_try": round(c["first_try_json"] / chunks, 4),
        "usable_first_try": round(c["first_try_usable"] / chunks, 4),
        "retries": c["retries"], "chunks": c["chunks"], "chunks_failed": c["chunks_failed"],
    }


def _add(total: dict[str, int], counts: dict[str, int]) -> None:
    for key, value in counts.items():
        total[key] = total.get(key, 0) + value


def prediction_from(outcomes: list[ChunkOutcome]) -> Prediction:
    """Merge chunk verdicts of one document (concepts deduplicated by normalised label)."""
    pred = Prediction()
    seen: set[str] = set()
    for outcome in outcomes:
        pred.chunks += 1
        pred.retries += max(0, len(outcome.attempts) - 1)
        first = outcome.attempts[0] if outcome.attempts else None
        if first is not None and first.status != CallStatus.ERROR and \
                first.error_kind not in JSON_KINDS:
            pred.first_try_json += 1
        if first is not None and first.status == CallStatus.OK:
            pred.first_try_usable += 1
        verdict = outcome.validation
        if verdict is None:
            pred.chunks_failed += 1
            continue
        fallbacks = verdict.dropped["quote_from_label"] + verdict.dropped["quote_from_sentence"]
        kept = len(verdict.concepts) + len(verdict.relationships) + len(verdict.literals)
        pred.quotes_verbatim += kept - fallbacks
        pred.quotes_total += kept + verdict.dropped["quote_not_found"]
        for c in verdict.concepts:
            if normalise_label(c.label) not in seen:
                seen.add(normalise_label(c.label))
                pred.concepts.append(c.label)
        pred.relationships += [(r.source, r.type.name, r.target) for r in verdict.relationships]
    return pred


@dataclass
class _Task:
    """One scored unit of an evaluation: a document or a record, its chunk texts, its scorer."""

    name: str
    category: str
    texts: list[str]
    extractor: Extractor
    score: Callable[[list[ChunkOutcome]], _Scored]


@dataclass
class _Scored:
    counts: dict[str, Any]
    predicted: dict[str, Any]


_Summary = tuple[dict[str, Any], dict[str, Any]]


def _profile_record(settings: ProviderSettings) -> dict[str, Any]:
    """What an evaluation keeps of its profile: identity plus every setting that changes output."""
    return {"name": settings.profile_name, "revision": settings.revision,
            "provider": settings.provider, "model": settings.model,
            **output_settings(settings)}


def _run_evaluation(
    db: Database,
    source: Path,
    tasks: Callable[[Extractor], Iterator[_Task]],
    summarise: Callable[[list[tuple[_Task, _Scored]]], _Summary],
    *,
    profile: str | None,
    models_dir: Path | None,
    on_document: Callable[[str], None] | None,
) -> int:
    """The one evaluator: extract each task's chunks, log the calls, score, store the evaluation.

    A fatal provider error stops the whole evaluation (its scores would be meaningless).
    """
    started = utcnow()
    with db.session() as session:
        base = build_extractor(session, profile, models_dir)
    settings = base.settings
    done: list[tuple[_Task, _Scored]] = []
    try:
        with ThreadPoolExecutor(max_workers=settings.max_parallel) as pool:
            for task in tasks(base):
                outcomes = list(pool.map(lambda t, x=task.extractor: x.extract(0, t), task.texts))
                fatal = next((o.fatal for o in outcomes if o.fatal is not None), None)
                if fatal is not None:
                    raise fatal
                with db.transaction() as conn:
                    calls = [r for o in outcomes for r in call_rows(None, None, o)]
                    if calls:
                        conn.execute(insert(Call), calls)
                done.append((task, task.score(outcomes)))
                if on_document:
                    on_document(task.name)
    finally:
        base.close()
    overall, by_category = summarise(done)
    with db.session() as session:
        evaluation = Evaluation(
            gold_dir=str(source.resolve()), profile=_profile_record(settings),
            started_at=started, finished_at=utcnow(), documents=len(done),
            overall=overall, by_category=by_category)
        session.add(evaluation)
        session.flush()
        for task, scored in done:
            session.add(EvaluationDocument(
                evaluation_id=evaluation.id, document=task.name, category=task.category,
                counts=scored.counts, predicted=scored.predicted))
        return evaluation.id


def _score_document(gold: Gold, outcomes: list[ChunkOutcome], symmetric: set[str]) -> _Scored:
    pred = prediction_from(outcomes)
    return _Scored(score(gold, pred, symmetric),
                   {"concepts": pred.concepts, "relationships": pred.relationships})


def _summarise_documents(done: list[tuple[_Task, _Scored]]) -> _Summary:
    overall: dict[str, int] = {}
    per_category: dict[str, dict[str, int]] = defaultdict(dict)
    for task, scored in done:
        _add(overall, scored.counts)
        _add(per_category[task.category], scored.counts)
    return ({**metrics(overall), "counts": overall},
            {k: {**metrics(v), "counts": v} for k, v in sorted(per_category.items())})


def evaluate(
    db: Database,
    gold_dir: Path,
    *,
    profile: str | None = None,
    models_dir: Path | None = None,
    chunking: ChunkingOptions | None = None,
    on_document: Callable[[str], None] | None = None,
) -> int:
    """Run extraction over the gold documents, score, store; returns the evaluation id."""
    golds = load_gold(gold_dir)
    opts = chunking or ChunkingOptions()

    def tasks(base: Extractor) -> Iterator[_Task]:
        symmetric = {t.name for t in base.vocabulary.types.values()
                     if t.direction == "symmetric"}
        # Images are read as a run of the profile reads them (its vision profile, else OCR).
        with vision.reader_for(db, [g.document for g in golds], models_dir,
                               profile) as reader:
            for gold in golds:
                loaded = reader.load(gold.document)
                if isinstance(loaded, loaders.Skipped):
                    raise UsageError(f"cannot evaluate {gold.document}: {loaded.reason}")
                texts = [c.text for c in chunk_text(loaded.text, opts, loaded.boundaries)]
                yield _Task(str(gold.document), gold.category, texts, base,
                            partial(_score_document, gold, symmetric=symmetric))

    return _run_evaluation(db, gold_dir, tasks, _summarise_documents, profile=profile,
                           models_dir=models_dir, on_document=on_document)


def get_evaluation(session: Session, evaluation_id: int) -> Evaluation:
    evaluation = session.get(Evaluation, evaluation_id)
    if evaluation is None:
        raise NotFoundError(f"no evaluation {evaluation_id}; see `kg eval list`")
    return evaluation


def summary(evaluation: Evaluation) -> dict[str, Any]:
    return {"id": evaluation.id, "gold_dir": evaluation.gold_dir, "profile": evaluation.profile,
            "started_at": evaluation.started_at, "finished_at": evaluation.finished_at,
            "documents": evaluation.documents,
            "overall": {k: v for k, v in evaluation.overall.items() if k != "counts"},
            "by_category": {c: {k: v for k, v in m.items() if k != "counts"}
                            for c, m in evaluation.by_category.items()}}


def record_details(session: Session, evaluation: Evaluation) -> list[dict[str, Any]]:
    """Each record of a JSONL evaluation: predicted triples beside gold ones, split into
    matched, missed and extra (relaxed ends, relation label case- and separator-insensitive)."""
    def key(t: list[str]) -> tuple[str, str, str]:
        return norm_triple_part(t[0], True), label_key(t[1]), norm_triple_part(t[2], True)

    rows = []
    for doc in session.scalars(select(EvaluationDocument).where(
            EvaluationDocument.evaluation_id == evaluation.id).order_by(EvaluationDocument.id)):
        predicted = [list(t) for t in doc.predicted.get("triples", [])]
        gold = [list(t) for t in doc.predicted.get("gold", [])]
        gold_keys, pred_keys = {key(t) for t in gold}, {key(t) for t in predicted}
        rows.append({"record": doc.document, "predicted": predicted, "gold": gold,
                     "matched": [t for t in predicted if key(t) in gold_keys],
                     "missed": [t for t in gold if key(t) not in pred_keys],
                     "extra": [t for t in predicted if key(t) not in gold_keys]})
    return rows


def list_evaluations(session: Session) -> list[dict[str, Any]]:
    return [{"id": e.id, "started_at": e.started_at, "profile": e.profile.get("name"),
             "model": e.profile.get("model"), "documents": e.documents,
             "concept_f1": e.overall.get("concept_f1"),
             "relationship_f1": e.overall.get("relationship_f1")}
            for e in session.scalars(select(Evaluation).order_by(Evaluation.id.desc()))]


COMPARED = ("concept_precision", "concept_recall", "concept_f1", "relationship_precision",
            "relationship_recall", "relationship_f1", "untyped_f1", "type_accuracy",
            "quotes_verbatim_rate", "valid_json_first_try", "usable_first_try", "retries",
            "chunks_failed")


def compare(a: Evaluation, b: Evaluation) -> list[dict[str, Any]]:
    """Side by side: every metric, overall and per category, with B minus A."""
    rows = []
    scopes = [("overall", a.overall, b.overall)] + [
        (c, a.by_category.get(c, {}), b.by_category.get(c, {}))
        for c in sorted(set(a.by_category) | set(b.by_category))]
    for scope, ma, mb in scopes:
        for metric in COMPARED:
            va, vb = ma.get(metric), mb.get(metric)
            delta = round(vb - va, 4) if isinstance(va, int | float) and isinstance(
                vb, int | float) else None
            rows.append({"scope": scope, "metric": metric, "a": va, "b": vb, "delta": delta})
    return rows


# -- ontology benchmarks: one JSONL record per text, each with its own ontology ------------------

QUOTE_CHARS = re.compile(r"[\"'“”‘’«»`]")


class _Relation(BaseModel):
    label: str = Field(min_length=1, max_length=64)
    domain: str | None = None
    range: str | None = None


class _RecordOntology(BaseModel):
    concepts: list[str] = Field(default_factory=list)
    relations: list[_Relation] = Field(min_length=1)


class Record(BaseModel):
    """One line of an ontology benchmark file."""

    id: str | int
    text: str = Field(min_length=1)
    ontology: _RecordOntology
    gold_triples: list[tuple[str, str, str]]


def load_records(path: Path) -> list[Record]:
    """Every record of a JSONL file, or UsageError naming the line and the problem."""
    return read_jsonl(path, Record, what="records", help='each line needs {"id", "text", '
                      '"ontology": {"concepts", "relations"}, "gold_triples"}')


def record_vocabulary(record: Record) -> Vocabulary:
    """The record's ontology as a strict in-memory vocabulary (nothing is stored)."""
    concepts = list(record.ontology.concepts)
    known = set(concepts)

    def end(name: str | None) -> str | None:
        # A datatype range makes literals; another name outside the record's concept list
        # cannot be checked: leave it open.
        if name and name not in known and looks_like_datatype(name) and not datatype_of(name):
            raise UsageError(f"record {record.id}: range {name!r} is a datatype kg does not "
                             f"know (known: {known_datatypes()})")
        return name if name in known or datatype_of(name) else None

    # Names as the ontology spells them: the benchmark compares relation labels as strings.
    types = [TypeInfo(0, r.label, "general", "directed", end(r.domain), end(r.range))
             for r in record.ontology.relations]
    return Vocabulary(types, concept_types=concepts, ontology=f"record:{record.id}"[:64],
                      mode="strict")


def norm_triple_part(value: str, relaxed: bool = False) -> str:
    """Lower-cased, spaces and underscores collapsed; relaxed also drops quote marks."""
    if relaxed:
        value = QUOTE_CHARS.sub("", value)
    return re.sub(r"[\s_]+", " ", value.casefold()).strip()


def _in_text(label: str, text: str) -> bool:
    return norm_triple_part(label, True) in norm_triple_part(text, True)


def score_record(record: Record, outcomes: list[ChunkOutcome]) -> dict[str, Any]:
    """Triple P/R/F1 (strict and relaxed), ontology conformance, end hallucination, chunks."""
    predicted: list[tuple[str, str, str]] = []
    proposed = 0
    for outcome in outcomes:
        verdict = outcome.validation
        if verdict is None:
            continue
        predicted += [(r.source, r.type.name, r.target) for r in verdict.relationships]
        predicted += [(lit.subject, lit.type.name, lit.value) for lit in verdict.literals]
        proposed += (len(verdict.relationships) + len(verdict.literals)
                     + verdict.dropped["unknown_type"])
    allowed = {label_key(r.label) for r in record.ontology.relations}
    scores: dict[str, Any] = {"id": record.id, "predicted": len(predicted),
                              "gold": len(record.gold_triples)}
    for name, relaxed in (("strict", False), ("relaxed", True)):
        def key(t: tuple[str, str, str], relaxed: bool = relaxed) -> tuple[str, ...]:
            return tuple(norm_triple_part(x, relaxed) for x in t)

        pred = {key(t) for t in predicted}
        gold = {key(t) for t in record.gold_triples}
        p, r, f = _prf(len(pred & gold), len(pred), len(gold))
        scores |= {f"{name}_precision": p, f"{name}_recall": r, f"{name}_f1": f}
    in_ontology = sum(label_key(t[1]) in allowed for t in predicted)
    scores["ontology_conformance"] = round(in_ontology / proposed, 4) if proposed else None
    scores["subject_hallucination"] = (round(sum(not _in_text(t[0], record.text)
                                                 for t in predicted) / len(predicted), 4)
                                       if predicted else None)
    scores["object_hallucination"] = (round(sum(not _in_text(t[2], record.text)
                                                for t in predicted) / len(predicted), 4)
                                      if predicted else None)
    scores |= _record_counts(record, predicted, outcomes)
    merged = prediction_from(outcomes)
    scores |= {"chunks": merged.chunks, "chunks_failed": merged.chunks_failed,
               "first_try_usable": merged.first_try_usable,
               "quotes_verbatim": merged.quotes_verbatim, "quotes_total": merged.quotes_total}
    scores["triples"] = [list(t) for t in predicted]
    return scores


def _record_counts(record: Record, predicted: list[tuple[str, str, str]],
                   outcomes: list[ChunkOutcome]) -> dict[str, int]:
    """Counts summed over records (micro-averaged): unordered end pairs, gold entities found,
    literal-range gold triples and how many literal values were right."""
    def end(value: str) -> str:
        return norm_triple_part(value, True)

    literal_relations = {label_key(r.label) for r in record.ontology.relations
                         if datatype_of(r.range)}
    gold = {(end(s), label_key(r), end(o)) for s, r, o in record.gold_triples}
    pred = {(end(s), label_key(r), end(o)) for s, r, o in predicted}
    gold_pairs = {frozenset((s, o)) for s, _, o in gold}
    pred_pairs = {frozenset((s, o)) for s, _, o in pred}
    gold_entities = {s for s, _, _ in gold} | {o for _, r, o in gold
                                                if r not in literal_relations}
    found = {end(c.label) for o in outcomes if o.validation for c in o.validation.concepts}
    found |= {x for s, _, o in pred for x in (s, o)}
    gold_literals = {t for t in gold if t[1] in literal_relations}
    pred_literals = {t for t in pred if t[1] in literal_relations}
    # A literal's accuracy: of the predicted values for a gold (subject, relation), how many
    # are the gold value (the literal's own recall is in gold_literal / literal_tp).
    asked = {(s, r) for s, r, _ in gold_literals}
    return {"pair_tp": len(gold_pairs & pred_pairs), "pair_pred": len(pred_pairs),
            "pair_gold": len(gold_pairs), "entity_gold": len(gold_entities),
            "entity_found": len(gold_entities & found), "literal_gold": len(gold_literals),
            "literal_pred": len(pred_literals),
            "literal_judged": sum((s, r) in asked for s, r, _ in pred_literals),
            "literal_tp": len(gold_literals & pred_literals)}


MICRO_COUNTS = ("predicted", "gold", "pair_tp", "pair_pred", "pair_gold", "entity_gold",
                "entity_found", "literal_gold", "literal_pred", "literal_judged", "literal_tp")


def _micro(records: list[dict[str, Any]]) -> dict[str, Any]:
    total = {k: sum(r.get(k, 0) for r in records) for k in MICRO_COUNTS}
    _, _, pair_f1 = _prf(total["pair_tp"], total["pair_pred"], total["pair_gold"])
    return {
        "predicted_triples": total["predicted"], "gold_triples": total["gold"],
        "untyped_pair_f1": pair_f1,
        "entity_recall": round(total["entity_found"] / total["entity_gold"], 4)
        if total["entity_gold"] else None,
        "literal_accuracy": round(total["literal_tp"] / total["literal_judged"], 4)
        if total["literal_judged"] else None,
        "literal_recall": round(total["literal_tp"] / total["literal_gold"], 4)
        if total["literal_gold"] else None,
    }


RECORD_METRICS = ("strict_precision", "strict_recall", "strict_f1", "relaxed_precision",
                  "relaxed_recall", "relaxed_f1", "ontology_conformance",
                  "subject_hallucination", "object_hallucination")


def average(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-record scores averaged (records without a value for a metric are left out)."""
    out: dict[str, Any] = {}
    for metric in RECORD_METRICS:
        values = [r[metric] for r in records if r.get(metric) is not None]
        out[metric] = round(sum(values) / len(values), 4) if values else None
    chunks = sum(r["chunks"] for r in records) or 1
    quotes = sum(r["quotes_total"] for r in records)
    out["usable_first_try"] = round(sum(r["first_try_usable"] for r in records) / chunks, 4)
    out["chunks_failed"] = sum(r["chunks_failed"] for r in records)
    out["quotes_verbatim_rate"] = (round(sum(r["quotes_verbatim"] for r in records) / quotes, 4)
                                   if quotes else None)
    out["records"] = len(records)
    out |= _micro(records)
    return out


def _score_record_task(record: Record, outcomes: list[ChunkOutcome]) -> _Scored:
    result = score_record(record, outcomes)
    # Gold kept beside the prediction: `kg eval show ID --records` lists both.
    return _Scored({k: v for k, v in result.items() if k != "triples"},
                   {"triples": result["triples"],
                    "gold": [list(t) for t in record.gold_triples]})


def _summarise_records(done: list[tuple[_Task, _Scored]]) -> _Summary:
    return average([scored.counts for _task, scored in done]), {}


def evaluate_jsonl(
    db: Database,
    path: Path,
    *,
    profile: str | None = None,
    models_dir: Path | None = None,
    chunking: ChunkingOptions | None = None,
    on_document: Callable[[str], None] | None = None,
) -> int:
    """Extract every record with its own ontology, score, store; returns the evaluation id."""
    records = load_records(path)
    opts = chunking or ChunkingOptions()

    def tasks(base: Extractor) -> Iterator[_Task]:
        for record in records:
            yield _Task(str(record.id), "record", [c.text for c in chunk_text(record.text, opts)],
                        base.with_vocabulary(record_vocabulary(record)),
                        partial(_score_record_task, record))

    return _run_evaluation(db, path, tasks, _summarise_records, profile=profile,
                           models_dir=models_dir, on_document=on_document)
