"""`kg eval ask FILE`: how well `kg ask` answers a question set with gold answers and spans.

FILE is JSON Lines, one question per line: `id`, `kind` (single, two_hop, absent), `question`,
`answer` (the gold answer's key words; null for `absent`: not in the corpus), `document` (the
path the gold spans are in, as a suffix of the ingested path) and `spans` (verbatim text of
the document that supports the answer). Reports:

- answer accuracy: every key word of the gold answer is in the answer (an `absent` question
  is right when the answer is "not in the graph");
- citation precision: cited quotes that overlap a gold span (same document, characters);
- retrieval recall@k: answerable questions with a gold span in the first k quotes retrieved;
- "not in the graph" precision: of the answers saying so, those that are right;
- tokens per answer (prompt + completion of the `calls` rows of kind `ask`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.orm import Session

from kg import ask as kg_ask
from kg import retrieval, search
from kg.db import Database
from kg.db.scope import collection_of
from kg.errors import KgError, UsageError
from kg.jsonable import read_jsonl
from kg.providers import build_provider
from kg.providers.base import Provider

_WORD = re.compile(r"[^\W_]+", re.UNICODE)


class GoldQuestion(BaseModel):
    id: str = Field(min_length=1, max_length=64)
    kind: Literal["single", "two_hop", "absent"]
    question: str = Field(min_length=1, max_length=kg_ask.MAX_QUESTION_BYTES)
    answer: str | None = None
    document: str | None = None
    spans: list[str] = Field(default_factory=list)


def load(path: Path) -> list[GoldQuestion]:
    """The questions of a JSON Lines file; a bad line is a UsageError naming it."""
    return read_jsonl(path, GoldQuestion, what="questions",
                      help="see `kg eval ask --help` for the format")


def _words(value: str) -> set[str]:
    return {w.casefold() for w in _WORD.findall(value)}


def gold_ranges(session: Session, q: GoldQuestion) -> list[tuple[int, int, int]]:
    """(document id, start, end) of each gold span in the ingested text of its document."""
    if not q.document:
        return []
    cid = collection_of(session)
    ids = [d for d, path in session.execute(text(
        f"SELECT id, path FROM documents d WHERE collection_id = :cid AND {search.live('d')}"),
        {"cid": cid})
        if path == q.document or path.endswith("/" + q.document)]
    if not ids:
        return []
    rows = session.execute(text(
        "SELECT document_id, text, char_start FROM chunks WHERE collection_id = :cid AND "
        f"document_id IN ({', '.join(str(int(i)) for i in ids)}) ORDER BY document_id, ordinal"),
        {"cid": cid}).all()
    found = []
    for span in q.spans:
        for document_id, chunk, start in rows:
            at = chunk.find(span)
            if at >= 0:
                found.append((document_id, start + at, start + at + len(span)))
                break
    return found


def _overlaps(evidence: dict[str, Any], gold: Iterable[tuple[int, int, int]]) -> bool:
    return any(evidence["document_id"] == d and evidence["char_start"] < e
               and evidence["char_end"] > s for d, s, e in gold)


def evaluate(db: Database, questions: list[GoldQuestion], *, profile: str | None = None,
             no_llm: bool = False, k: int = 10, models_dir: Path | None = None,
             options: retrieval.Options | None = None,
             on_question: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Ask every question; the scores overall and by kind, and one row per question."""
    # One provider for every question: a local model is loaded once, not per question.
    provider = None if no_llm else build_provider(kg_ask.settings_for(db, profile), models_dir)
    try:
        rows = [_one(db, q, profile, no_llm, k, models_dir, options, provider)
                for q in _each(questions, on_question)]
    finally:
        if provider is not None:
            provider.close()
    return {"questions": len(rows), "k": k, "no_llm": no_llm,
            "overall": _summary(rows, k),
            "by_kind": {kind: _summary([r for r in rows if r["kind"] == kind], k)
                        for kind in ("single", "two_hop", "absent")},
            "rows": rows}


def _each(questions: list[GoldQuestion],
          on_question: Callable[[str], None] | None) -> Iterator[GoldQuestion]:
    for q in questions:
        yield q
        if on_question is not None:
            on_question(q.id)


def _one(db: Database, q: GoldQuestion, profile: str | None, no_llm: bool, k: int,
         models_dir: Path | None, options: retrieval.Options | None,
         provider: Provider | None) -> dict[str, Any]:
    """The scores of one question."""
    gold = db.read(gold_ranges, q)
    if q.kind != "absent" and not gold:
        raise UsageError(f"question {q.id}: its gold span is not in an ingested document "
                         f"{q.document!r}; ingest the corpus into this collection first")
    before = _ask_tokens(db)
    try:
        result = kg_ask.ask(db, q.question, profile=profile, no_llm=no_llm,
                            options=options, models_dir=models_dir, provider=provider)
        error = None
    except KgError as exc:  # one failed question does not void the evaluation
        result, error = None, exc.message
    row: dict[str, Any] = {"id": q.id, "kind": q.kind, "error": error,
                           "tokens": _ask_tokens(db) - before}
    if result is not None:
        retrieved = result["retrieval"]["evidence"][:k]
        row["recalled"] = (any(_overlaps(e, gold) for e in retrieved)
                           if q.kind != "absent" else None)
        answer = result["answer"]
        if answer is not None:
            said_absent = not answer["found"]
            row["said_absent"] = said_absent
            if q.kind == "absent":
                row["correct"] = said_absent
            else:
                row["correct"] = not said_absent and _words(q.answer or "") <= _words(
                    answer["text"])
            row["cited"] = len(result["citations"])
            row["cited_gold"] = sum(_overlaps(e, gold) for e in result["citations"])
    return row


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _summary(rows: list[dict[str, Any]], k: int) -> dict[str, Any]:
    answered = [r for r in rows if "correct" in r]
    recall = [r for r in rows if r.get("recalled") is not None]
    absent = [r for r in answered if r["said_absent"]]
    cited = sum(r.get("cited", 0) for r in rows)
    return {
        "questions": len(rows), "errors": sum(r["error"] is not None for r in rows),
        "answer_accuracy": _ratio(sum(r["correct"] for r in answered), len(answered)),
        "citation_precision": _ratio(sum(r.get("cited_gold", 0) for r in rows), cited),
        f"recall@{k}": _ratio(sum(r["recalled"] for r in recall), len(recall)),
        "not_in_graph_precision": _ratio(sum(r["kind"] == "absent" for r in absent),
                                         len(absent)),
        "tokens_per_answer": round(sum(r["tokens"] for r in answered) / len(answered), 1)
        if answered else None,
    }


def _ask_tokens(db: Database) -> int:
    with db.session() as session:
        return int(session.execute(text(
            "SELECT coalesce(sum(prompt_tokens + completion_tokens), 0) FROM calls "
            "WHERE kind = 'ask' AND collection_id = :cid"),
            {"cid": collection_of(session)}).scalar_one())
