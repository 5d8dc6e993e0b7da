"""kg ask: retrieval (full text + graph neighbourhood + evidence within a budget) and answers
written by a real fake Ollama server whose citations come from the request's schema enum;
every model request is a `calls` row of kind `ask`; bad input writes nothing."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kg.db import Database
from kg.errors import UsageError
from tests.browser import chromium, needs_browser
from tests.fakes import FakeOllama, Reply, chunk_of, graph_reply
from tests.graph_seed import fake_ollama, ingest_story, rows, use_server


def citation_enum(body: dict[str, Any]) -> list[int] | None:
    """The evidence ids an ask request allows (None for an extraction request)."""
    fmt = body.get("format")
    if not isinstance(fmt, dict) or "sentences" not in fmt.get("properties", {}):
        return None
    return fmt["properties"]["sentences"]["items"]["properties"]["citations"]["items"]["enum"]


def quote_ids(body: dict[str, Any], word: str) -> list[int]:
    """Ids of the evidence lines of the prompt whose quote mentions `word`."""
    prompt = body["messages"][-1]["content"]
    return [int(m.group(1)) for m in re.finditer(r"^\[(\d+)\] about [^\n]*", prompt, re.M)
            if word in m.group(0)]


class Answering:
    """Extraction requests get the graph; ask requests get `answer(body, ids)` (or a grounded
    default citing the quotes that mention the question's last capitalised name)."""

    def __init__(self) -> None:
        self.replies: list[Any] = []

    def __call__(self, body: dict[str, Any]) -> Reply:
        ids = citation_enum(body)
        if ids is None:
            return Reply(graph_reply(chunk_of(body)))
        if self.replies:
            return Reply(json.dumps(self.replies.pop(0)(body, ids)))
        prompt = body["messages"][-1]["content"]
        name = re.findall(r"[A-Z][a-z]+", prompt.splitlines()[0])[-1]
        cited = [i for i in quote_ids(body, name) if i in ids][:3] or ids[:1]
        return Reply(json.dumps({"found": True, "sentences": [
            {"text": f"The graph says this about {name}.", "citations": cited}]}))


@pytest.fixture
def answering() -> Answering:
    return Answering()


@pytest.fixture
def server(answering: Answering) -> Iterator[FakeOllama]:
    with fake_ollama(answering) as fake:
        yield fake


@pytest.fixture
def story(kg, server: FakeOllama, tmp_path: Path) -> Path:
    use_server(kg, server.url)
    return ingest_story(kg, tmp_path)


def _ask(kg, *args: str) -> dict[str, Any]:
    result = kg("ask", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _ask_calls(db_url: str) -> list[tuple[Any, ...]]:
    return rows(Database(db_url), "SELECT status, prompt_tokens, run_id, chunk_id FROM calls "
                                  "WHERE kind = 'ask' ORDER BY id")


def test_ask_cites_retrieved_evidence_and_logs_one_call(kg, story: Path, server: FakeOllama,
                                                        db_url: str) -> None:
    before = len(server.chat_bodies())
    data = _ask(kg, "Who does Colonel Moran serve?")
    body = server.chat_bodies()[before]
    allowed = citation_enum(body)
    assert allowed == [e["id"] for e in data["retrieval"]["evidence"]]
    answer = data["answer"]
    assert answer["found"] and answer["sentences"]
    cited = [c["id"] for c in data["citations"]]
    assert cited and set(cited) <= set(allowed)
    for c in data["citations"]:
        text = story.read_text(encoding="utf-8")
        assert text[c["char_start"]:c["char_end"]] == c["quote"]  # verbatim, exact offsets
        assert c["document"] == str(story)
    assert [(s, r, ch) for s, _p, r, ch in _ask_calls(db_url)] == [("ok", None, None)]
    assert _ask_calls(db_url)[0][1] > 0
    table = kg("ask", "Who does Colonel Moran serve?")
    assert table.exit_code == 0
    assert "citations:" in table.stdout and "Moran" in table.stdout
    assert re.search(r"\d+-\d+", table.stdout)  # the characters of each quote


def test_ask_calls_count_in_analytics(kg, story: Path) -> None:
    _ask(kg, "Who is Professor Moriarty?")
    result = kg("admin", "extraction", "analytics", "--json")
    assert result.exit_code == 0, result.stderr
    calls = sum(r["calls"] for r in json.loads(result.stdout))
    chunks = len(json.loads(kg("runs", "show", "1", "--json").stdout).get("chunks", [])) or 0
    assert calls >= 1 + chunks


def test_retrieval_walks_the_graph_around_the_matches(kg, story: Path, server) -> None:
    before = len(server.chat_bodies())
    found = _ask(kg, "Tell me about Colonel Moran", "--no-llm", "--hops", "1")
    assert len(server.chat_bodies()) == before  # no model call
    assert found["answer"] is None
    labels = {c["label"]: c["distance"] for c in found["retrieval"]["concepts"]}
    assert labels["Colonel Moran"] == 0
    assert any(d == 1 for d in labels.values())  # a neighbour, reached by a relationship
    edges = found["retrieval"]["relationships"]
    assert edges and all(e["hop"] == 1 for e in edges)
    assert found["retrieval"]["tokens"] <= found["retrieval"]["budget"]
    assert found["retrieval"]["evidence"]
    flat = _ask(kg, "Tell me about Colonel Moran", "--no-llm", "--hops", "0")
    assert not flat["retrieval"]["relationships"]
    assert {c["distance"] for c in flat["retrieval"]["concepts"]} == {0}
    table = kg("ask", "Tell me about Colonel Moran", "--no-llm")
    assert table.exit_code == 0 and "evidence:" in table.stdout


def test_budget_bounds_the_evidence(kg, story: Path) -> None:
    small = _ask(kg, "Holmes Watson Hudson Lestrade Moriarty Moran London", "--no-llm",
                 "--budget", "100")["retrieval"]
    large = _ask(kg, "Holmes Watson Hudson Lestrade Moriarty Moran London", "--no-llm",
                 "--budget", "5000")["retrieval"]
    assert small["tokens"] <= 100 < large["tokens"] or len(small["evidence"]) < len(
        large["evidence"])


def test_not_in_the_graph(kg, story: Path, server: FakeOllama, answering: Answering,
                          db_url: str) -> None:
    before = len(server.chat_bodies())
    nothing = _ask(kg, "zebra unicorn quantum")
    assert nothing["answer"]["found"] is False
    assert nothing["answer"]["text"].startswith("not in the graph")
    assert len(server.chat_bodies()) == before and not _ask_calls(db_url)
    answering.replies.append(lambda body, ids: {"found": False, "sentences": []})
    said = kg("ask", "What does Professor Moriarty eat?")
    assert said.exit_code == 0 and said.stdout.startswith("not in the graph")
    assert [s for s, *_ in _ask_calls(db_url)] == ["ok"]


def test_a_citation_outside_the_evidence_is_sent_back(kg, story: Path, server: FakeOllama,
                                                      answering: Answering,
                                                      db_url: str) -> None:
    answering.replies.append(lambda body, ids: {"found": True, "sentences": [
        {"text": "Made up.", "citations": [max(ids) + 1000]}]})
    data = _ask(kg, "Who is Professor Moriarty?")
    assert {c["id"] for c in data["citations"]} <= {
        e["id"] for e in data["retrieval"]["evidence"]}
    assert [s for s, *_ in _ask_calls(db_url)] == ["invalid", "ok"]
    repair = server.chat_bodies()[-1]["messages"][-1]["content"]
    assert "not ids of the evidence given" in repair


def test_no_valid_answer_is_one_line_and_calls_are_kept(kg, story: Path,
                                                        answering: Answering,
                                                        db_url: str) -> None:
    answering.replies += [lambda body, ids: {"found": True, "sentences": []}] * 3
    result = kg("ask", "Who is Professor Moriarty?")
    assert result.exit_code == 4 and result.stderr.count("\n") == 1
    assert "no valid answer" in result.stderr
    assert [s for s, *_ in _ask_calls(db_url)] == ["invalid"] * 3


def test_unreachable_server_is_one_line_and_logged(kg, story: Path, server: FakeOllama,
                                                   db_url: str) -> None:
    server.kill()
    result = kg("ask", "Who is Professor Moriarty?")
    assert result.exit_code == 4 and result.stderr.count("\n") == 1
    assert [s for s, *_ in _ask_calls(db_url)] == ["error"]


@pytest.mark.parametrize("question", ["", "   \n", "x" * 100_001])
def test_bad_question_is_one_line_and_writes_nothing(kg, story: Path, server: FakeOllama,
                                                     db_url: str, question: str) -> None:
    before = len(server.chat_bodies())
    result = kg("ask", question)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert len(server.chat_bodies()) == before and not _ask_calls(db_url)


def test_unknown_profile_is_one_line(kg, story: Path) -> None:
    result = kg("ask", "Who is Moriarty?", "--profile", "nope")
    assert result.exit_code == 2 and "no extraction profile named 'nope'" in result.stderr


def test_ask_stays_in_its_collection(kg, story: Path, tmp_path: Path) -> None:
    assert kg("collections", "create", "other").exit_code == 0
    ingest_story(kg, tmp_path, "-o", "other", name="other.md",
                 content="Irene Adler sings at the opera in Warsaw.\n")
    assert not _ask(kg, "Irene Adler opera", "--no-llm")["retrieval"]["evidence"]
    other = _ask(kg, "Irene Adler opera", "--no-llm", "--collection", "other")["retrieval"]
    assert other["evidence"] and all(e["document"].endswith("other.md")
                                     for e in other["evidence"])


# -- over HTTP --------------------------------------------------------------------------------

def _sse(body: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in body.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            out.append((fields["event"], json.loads(fields["data"])))
    return out


def test_server_search_and_streamed_ask(kg, story: Path, db_url: str, tmp_path: Path) -> None:
    from tests.test_server import serve

    assert kg("collections", "create", "other").exit_code == 0
    ingest_story(kg, tmp_path, "-o", "other", name="other.md",
                 content="Irene Adler sings at the opera in Warsaw.\n")
    db = Database(db_url)
    try:
        with serve(db) as server, server.client() as client:
            found = client.get("/search", params={"q": "Moriarty"}).json()
            assert any(h["title"] == "Professor Moriarty" for h in found["hits"])
            assert not client.get("/search", params={"q": "Irene"}).json()["hits"]
            other = client.get("/c/other/search", params={"q": "Irene"}).json()
            assert any(h["title"] == "Irene Adler" for h in other["hits"])
            assert client.get("/search", params={"q": ""}).status_code == 422

            response = client.post("/ask", json={"question": "Who does Colonel Moran serve?"})
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = _sse(response.text)
            assert [e for e, _ in events] == ["retrieved", "answer", "done"]
            retrieved, answer = events[0][1], events[1][1]
            ids = {e["id"] for e in retrieved["evidence"]}
            assert answer["answer"]["found"]
            assert {c["id"] for c in answer["citations"]} <= ids
            shown = client.get(f"/evidence/{answer['citations'][0]['id']}").json()
            assert shown["chunk"][shown["quote_start"]:shown["quote_end"]] == shown["quote"]
            assert client.get("/c/other/evidence/" + str(shown["id"])).status_code == 404

            plain = _sse(client.post("/c/other/ask", json={"question": "Irene Adler opera",
                                                           "no_llm": True}).text)
            assert [e for e, _ in plain] == ["retrieved", "done"]
            assert all(e["document"].endswith("other.md") for e in plain[0][1]["evidence"])

            empty = client.post("/ask", json={"question": "  "})
            assert empty.status_code in (400, 422) and "error" in empty.json()
            nope = client.post("/ask", json={"question": "Who?", "profile": "nope"})
            assert nope.status_code == 404
        assert [s for s, *_ in _ask_calls(db_url)] == ["ok"]
    finally:
        db.dispose()


# -- kg eval ask --------------------------------------------------------------------------------

def test_eval_ask_scores_answers_citations_and_retrieval(kg, story: Path, tmp_path: Path,
                                                         db_url: str) -> None:
    from click.testing import CliRunner

    from kg.cli.ask import eval_ask

    questions = tmp_path / "questions.jsonl"
    lines = [
        {"id": "moran", "kind": "single", "question": "Whom does Colonel Moran serve?",
         "answer": "Moran", "document": story.name, "spans": ["Colonel Moran serves Moriarty"]},
        {"id": "zebra", "kind": "absent", "question": "Where do zebras sleep?",
         "answer": None, "document": None, "spans": []},
    ]
    questions.write_text("\n".join(json.dumps(q) for q in lines) + "\n", encoding="utf-8")
    result = CliRunner().invoke(eval_ask, [str(questions), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    overall = data["overall"]
    assert overall["answer_accuracy"] == 1.0 and overall["recall@10"] == 1.0
    row = data["rows"][0]  # a quote outside the gold span ("London") counts against it
    assert 0 < row["cited_gold"] <= row["cited"]
    assert overall["citation_precision"] == round(row["cited_gold"] / row["cited"], 4)
    assert overall["not_in_graph_precision"] == 1.0
    assert overall["tokens_per_answer"] > 0
    assert data["by_kind"]["absent"]["answer_accuracy"] == 1.0
    table = CliRunner().invoke(eval_ask, [str(questions), "--no-llm"], catch_exceptions=False)
    assert table.exit_code == 0 and "recall@10" in table.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\n', encoding="utf-8")
    refused = CliRunner().invoke(eval_ask, [str(bad)])  # kg's group turns it into one line
    assert isinstance(refused.exception, UsageError)
    assert "bad.jsonl:1: kind: Field required; see `kg eval ask --help`" in str(refused.exception)


# -- the page's Ask box ---------------------------------------------------------------------------

@needs_browser
def test_the_ask_box_answers_and_opens_a_citation_in_its_chunk(kg, story: Path, db_url: str,
                                                               dialect: str) -> None:
    if dialect != "sqlite":
        pytest.skip("the page does not depend on the database")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.test_server import serve

    def wait(driver: Any, condition: Any) -> Any:
        return WebDriverWait(driver, 20, poll_frequency=0.05).until(condition)

    db = Database(db_url)
    try:
        with serve(db) as server:
            for browser in chromium("--window-size=1440,900"):
                browser.get(server.url)
                wait(browser, lambda d: d.find_element(By.TAG_NAME, "body")
                     .get_attribute("data-ready"))
                browser.find_element(By.ID, "question").send_keys("Who does Colonel Moran serve?")
                browser.find_element(By.CSS_SELECTOR, "#ask-form button").click()
                wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#answer a.cite"))
                assert "Moran" in browser.find_element(By.ID, "answer").text
                cited = browser.find_elements(By.CSS_SELECTOR, "#answer-citations li")
                assert cited and "characters" in cited[0].text
                browser.find_element(By.CSS_SELECTOR, "#answer a.cite").click()
                wait(browser, lambda d: d.find_element(By.ID, "evidence-view").is_displayed())
                mark = browser.find_element(By.CSS_SELECTOR, "#evidence-text mark").text
                chunk = browser.find_element(By.ID, "evidence-text").text
                assert mark and mark in chunk and mark in story.read_text(encoding="utf-8")
                assert not [e["message"] for e in browser.get_log("browser")
                            if "Content Security Policy" in e["message"]]
    finally:
        db.dispose()
