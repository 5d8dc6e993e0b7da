"""`kg ask "QUESTION"`: an answer from the graph, each sentence citing verbatim evidence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from kg import ask as kg_ask
from kg import retrieval
from kg.cli import context
from kg.cli.render import emit, emit_object, json_option, table, text_block


@click.command(name="ask")
@click.argument("question")
@click.option("--profile", shell_complete=context.complete_profile_names,
              help="Answer with this profile (default: $KG_PROFILE, the collection's, the "
                   "active one).")
@click.option("--no-llm", is_flag=True,
              help="Show the retrieved subgraph and evidence only; no model is called.")
@click.option("--hops", default=1, show_default=True, type=click.IntRange(0, retrieval.MAX_HOPS),
              help="How far from the matching concepts the graph is walked.")
@click.option("--budget", default=retrieval.DEFAULT_BUDGET, show_default=True,
              type=click.IntRange(100, 100_000), metavar="TOKENS",
              help="Tokens of evidence handed to the model.")
@json_option
def ask(question: str, profile: str | None, no_llm: bool, hops: int, budget: int,
        output: str) -> None:
    """Answer QUESTION from the graph's evidence; every sentence cites the quotes it rests on
    (document and characters shown). "Not in the graph" is an answer too."""
    question = kg_ask.check_question(question)  # before the database is opened
    db = context.database()
    try:
        data = kg_ask.ask(db, question, profile=context.profile_choice(profile), no_llm=no_llm,
                          options=retrieval.Options(budget=budget, hops=hops),
                          models_dir=context.settings().models_dir)
    finally:
        db.dispose()
    if output != "table":
        emit_object(data, output)
        return
    if data["answer"] is None:
        _show_retrieval(data["retrieval"])
        return
    answer = data["answer"]
    if not answer["found"]:
        emit(answer["text"] if answer["text"].startswith("not in the graph")
             else f"not in the graph: {answer['text']}")
        return
    emit(text_block("\n".join(f"{s['text']} " + "".join(f"[{c}]" for c in s["citations"])
                              for s in answer["sentences"])))
    emit("\ncitations:")
    emit(table([_citation(e) for e in data["citations"]],
               ["id", "quote", "document", "characters", "page", "about"]))


def _citation(e: dict[str, Any]) -> dict[str, Any]:
    return {"id": e["id"], "quote": e["quote"], "document": e["document"],
            "characters": f"{e['char_start']}-{e['char_end']}",
            "page": ", ".join(str(p) for p in e.get("pages", [])) or None,
            "about": e["subject"]}


def _show_retrieval(found: dict[str, Any]) -> None:
    if not found["evidence"] and not found["concepts"]:
        emit("not in the graph: nothing matches the question")
        return
    emit(f"{len(found['concepts'])} concept(s), {len(found['relationships'])} relationship(s), "
         f"{len(found['evidence'])} evidence quote(s) ({found['tokens']} of {found['budget']} "
         "tokens)")
    emit(table(found["concepts"], ["id", "label", "distance"]))
    if found["relationships"]:
        emit("\nrelationships:")
        emit(table(found["relationships"],
                   ["id", "source", "type", "target", "confidence", "evidence", "hop"]))
    if found.get("attributes"):
        emit("\nvalues:")
        emit(table(found["attributes"], ["concept", "name", "value", "normalised", "evidence"]))
    emit("\nevidence:")
    emit(table([_citation(e) for e in found["evidence"]],
               ["id", "quote", "document", "characters", "page", "about"]))


@click.command(name="ask")
@click.argument("questions", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                metavar="FILE")
@click.option("--profile", shell_complete=context.complete_profile_names,
              help="Answer with this profile (default: $KG_PROFILE, the collection's, the "
                   "active one).")
@click.option("--no-llm", is_flag=True, help="Score retrieval only (recall@k); no model.")
@click.option("--k", "k", default=10, show_default=True, type=click.IntRange(1, 100),
              help="Quotes counted for retrieval recall@k.")
@click.option("--hops", default=1, show_default=True, type=click.IntRange(0, retrieval.MAX_HOPS),
              help="How far from the matching concepts the graph is walked.")
@json_option
def eval_ask(questions: Path, profile: str | None, no_llm: bool, k: int, hops: int,
             output: str) -> None:
    """Score `kg ask` on a question set (JSON Lines: id, kind single|two_hop|absent,
    question, answer, document, spans; see benchmarks/ask_questions.jsonl): answer accuracy,
    citation precision, retrieval recall@k, "not in the graph" precision, tokens per answer.
    The corpus must be ingested in the collection first."""
    from kg import ask_eval

    gold = ask_eval.load(questions)
    db = context.database()
    try:
        data = ask_eval.evaluate(db, gold, profile=context.profile_choice(profile),
                                 no_llm=no_llm, k=k, models_dir=context.settings().models_dir,
                                 options=retrieval.Options(hops=hops))
    finally:
        db.dispose()
    if output != "table":
        emit_object(data, output)
        return
    scopes = {"overall": data["overall"], **data["by_kind"]}
    metrics = [m for m in data["overall"] if m != "questions"]
    emit(f"{data['questions']} question(s)" + (" (retrieval only)" if no_llm else ""))
    emit(table([{"metric": m, **{s: v.get(m) for s, v in scopes.items()}}
                for m in ["questions", *metrics]], ["metric", *scopes]))
