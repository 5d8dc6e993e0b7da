"""`openai` profiles against every OpenAI-compatible server kg meets, through the openai client.

Each test server validates `response_format` the way the real one does and answers with its
own error body; kg must find the style each one takes, remember it, and never retry a refusal
per chunk.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from kg.errors import ProviderError, ServerFailure
from kg.providers import build_provider
from kg.providers.styles import MEMO, StructuredOutputRejected, Style, is_format_rejection
from tests.fakes import FakeCompat, FakeVLLM, Reply, chunk_of, graph_reply
from tests.test_ingest import STORY, paragraphs, rows, small_chunks, use_server, write
from tests.test_providers import MESSAGES, SCHEMA, settings

# flavour -> the style it ends up with, and how many refusals it took to get there
EXPECTED = {
    "sglang": (Style.JSON_SCHEMA, 0),
    "llama-server": (Style.JSON_SCHEMA, 0),
    "lmstudio": (Style.JSON_SCHEMA, 0),
    "llama-cpp-python": (Style.JSON_OBJECT_SCHEMA, 1),
    "openai-plain": (Style.PLAIN, 2),
}


@pytest.fixture(autouse=True)
def _fresh_memo() -> Iterator[None]:
    MEMO.forget()
    yield
    MEMO.forget()


def compat_settings(server: FakeVLLM, **overrides: object):
    return settings("openai", base_url=server.base_url, model=server.served_model, **overrides)


@pytest.mark.parametrize("flavour", sorted(EXPECTED))
def test_each_server_gets_the_style_it_takes(flavour: str) -> None:
    style, refusals = EXPECTED[flavour]
    with FakeCompat(flavour, responder=lambda b: Reply('{"concepts": ["Holmes"]}')) as server:
        provider = build_provider(compat_settings(server))
        first = provider.complete(MESSAGES, SCHEMA)
        second = provider.complete(MESSAGES, SCHEMA)
        bodies = server.chat_bodies()
    assert first.content == second.content == '{"concepts": ["Holmes"]}'
    assert server.rejected == refusals  # probed once ...
    assert len(bodies) == refusals + 2  # ... and the second request goes straight through
    last = bodies[-1]
    if style == Style.JSON_SCHEMA:
        assert last["response_format"]["json_schema"]["schema"] == SCHEMA
    elif style == Style.JSON_OBJECT_SCHEMA:
        assert last["response_format"] == {"type": "json_object", "schema": SCHEMA}
    else:
        assert "response_format" not in last
        assert json.dumps(SCHEMA, separators=(",", ":")) in last["messages"][0]["content"]
    assert provider.style == style  # type: ignore[attr-defined]


def test_legacy_llama_server_500_is_adapted_not_retried() -> None:
    with FakeCompat("llama-server", legacy=True) as server:
        provider = build_provider(compat_settings(server))
        provider.complete(MESSAGES, SCHEMA)
        kinds = [b.get("response_format", {}).get("type") for b in server.chat_bodies()]
    assert kinds == ["json_schema", "json_object"]


def test_a_server_refusing_every_style_is_one_fatal_line() -> None:
    with FakeCompat("openai-plain") as server:
        server.refuse_all = True
        provider = build_provider(compat_settings(server))
        with pytest.raises(StructuredOutputRejected) as caught:
            provider.complete(MESSAGES, SCHEMA)
    assert caught.value.fatal and server.rejected == 3
    assert "rejected every structured-output style" in caught.value.message
    assert "\n" not in caught.value.message


def test_other_errors_are_not_mistaken_for_a_style_refusal() -> None:
    assert not is_format_rejection(400, "This model's maximum context length is 8192 tokens.")
    assert not is_format_rejection(503, "response_format busy")  # overload, not a refusal
    assert is_format_rejection(422, "response_format.type: Input should be 'text'")
    with FakeCompat("sglang") as server:
        server.queue.append(Reply(status=500, error="CUDA out of memory"))
        provider = build_provider(compat_settings(server))
        with pytest.raises(ProviderError) as caught:
            provider.complete(MESSAGES, SCHEMA)
    assert isinstance(caught.value, ServerFailure)  # a real failure stays transient
    assert MEMO.get(server.base_url, server.served_model) is None


def test_llama_cpp_python_ingest_one_call_per_chunk_and_the_style_is_stored(
        kg, db, tmp_path) -> None:
    responder = lambda body: Reply(graph_reply(chunk_of(body)))  # noqa: E731
    with FakeCompat("llama-cpp-python", responder=responder) as server:
        use_server(kg, server.base_url, "openai", server.served_model, "--max-parallel", "1")
        result = kg("ingest", str(write(tmp_path, "a.txt", paragraphs(4))), *small_chunks(),
                    "--json")
        assert result.exit_code == 0, result.stderr
        summary = json.loads(result.stdout)
        assert summary["status"] == "completed"
        # Every chunk: one call. The one refusal was the probe of the first request.
        assert summary["calls"] == summary["chunks_total"] >= 3
        assert server.rejected == 1
        assert rows(db, "SELECT style FROM endpoint_styles WHERE base_url = :u",
                    u=server.base_url) == [("json_object+schema",)]
        # A later run (a fresh process: nothing in memory) starts with the stored style.
        MEMO.forget()
        again = kg("ingest", str(write(tmp_path, "b.txt", STORY)), "--json")
        assert again.exit_code == 0, again.stderr
        assert server.rejected == 1


def test_a_server_that_takes_nothing_stops_the_run_before_the_second_chunk(
        kg, db, tmp_path) -> None:
    with FakeCompat("lmstudio") as server:
        server.refuse_all = True
        use_server(kg, server.base_url, "openai", server.served_model, "--max-parallel", "1")
        result = kg("ingest", str(write(tmp_path, "a.txt", paragraphs(4))), *small_chunks())
        chats = len(server.chat_bodies())
    assert result.exit_code == 4
    assert "rejected every structured-output style" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert chats == 3  # one chunk, three styles: no second chunk, no retry per chunk
    assert rows(db, "SELECT count(*) FROM calls WHERE status = 'ok'") == [(0,)]
