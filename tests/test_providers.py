"""Providers through the official clients against protocol-exact Ollama and vLLM servers."""

from __future__ import annotations

import json
import socket

import pytest

from kg.errors import (
    AuthenticationFailed,
    ContextOverflow,
    MalformedReply,
    MissingApiKey,
    ModelNotFound,
    ProviderTimeout,
    ProviderUnavailable,
    ServerBusy,
    ServerFailure,
    ThinkingUnsupported,
)
from kg.profiles.settings import ProviderSettings
from kg.providers import build_provider
from kg.providers.base import split_think_tags
from kg.providers.ollama import think_value
from kg.urls import redact_url
from tests.fakes import FakeModel, FakeOllama, FakeVLLM, Reply

SCHEMA = {
    "type": "object",
    "properties": {"concepts": {"type": "array", "maxItems": 3,
                                "items": {"type": "string", "maxLength": 40}}},
    "required": ["concepts"],
}
MESSAGES = [{"role": "system", "content": "Extract concepts."},
            {"role": "user", "content": "Sherlock Holmes lives at Baker Street."}]


def settings(provider: str = "ollama", **overrides: object) -> ProviderSettings:
    base = dict(
        profile_name="t", revision=1, provider=provider, model="qwen3:8b", base_url=None,
        api_key_env=None, temperature=0.1, top_p=0.9, thinking_mode="off", gpu_layers=-1,
        num_threads=4, context_window=8192, max_output_tokens=1024, max_parallel=2,
        max_retries=2, timeout_s=5.0, keep_alive="10m",
    )
    base.update(overrides)
    return ProviderSettings(**base)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ollama_server():
    models = [FakeModel("qwen3:8b", ["completion", "thinking"]),
              FakeModel("llama3.2:3b", ["completion", "tools"], family="llama"),
              FakeModel("gpt-oss:20b", ["completion", "thinking"], family="gptoss")]
    with FakeOllama(models=models) as server:
        yield server


# -- Ollama ---------------------------------------------------------------------------------

def test_ollama_request_carries_schema_options_and_think(ollama_server: FakeOllama) -> None:
    ollama_server.queue.append(Reply(content='{"concepts": ["Sherlock Holmes"]}'))
    provider = build_provider(settings(base_url=ollama_server.url))
    completion = provider.complete(MESSAGES, SCHEMA)
    body = ollama_server.chat_bodies()[-1]
    assert body["format"] == SCHEMA
    assert body["stream"] is False
    assert body["think"] is False  # thinking-capable model, thinking off
    assert body["keep_alive"] == "10m"
    assert body["options"] == {"temperature": 0.1, "top_p": 0.9, "num_ctx": 8192,
                               "num_predict": 1024, "num_gpu": -1, "num_thread": 4}
    assert json.loads(completion.content) == {"concepts": ["Sherlock Holmes"]}
    assert completion.finish_reason == "stop"
    assert completion.prompt_tokens > 0 and completion.completion_tokens > 0
    assert completion.load_s == pytest.approx(0.574751416)
    assert completion.eval_s == pytest.approx(0.175)
    assert completion.model == "qwen3:8b"


def test_ollama_omits_think_for_models_without_thinking(ollama_server: FakeOllama) -> None:
    provider = build_provider(settings(base_url=ollama_server.url, model="llama3.2:3b",
                                       num_threads=None))
    provider.complete(MESSAGES, SCHEMA)
    body = ollama_server.chat_bodies()[-1]
    assert "think" not in body
    assert "num_thread" not in body["options"]


def test_ollama_thinking_on_raises_budget_and_separates_thinking(
    ollama_server: FakeOllama,
) -> None:
    ollama_server.queue.append(Reply(content='{"concepts": []}',
                                     thinking="Let me think about Holmes. " * 20))
    provider = build_provider(settings(base_url=ollama_server.url, thinking_mode="medium"))
    completion = provider.complete(MESSAGES, SCHEMA)
    body = ollama_server.chat_bodies()[-1]
    assert body["think"] is True
    assert body["options"]["num_predict"] == 4096  # 1024 + 4096, capped at half the context
    assert completion.thinking.startswith("Let me think")
    assert completion.content == '{"concepts": []}'
    assert completion.thinking_tokens > 0
    assert "Holmes" not in completion.content


@pytest.mark.parametrize(("mode", "expected"), [("off", "low"), ("low", "low"), ("high", "high")])
def test_ollama_gpt_oss_gets_levels(ollama_server: FakeOllama, mode: str, expected: str) -> None:
    provider = build_provider(settings(base_url=ollama_server.url, model="gpt-oss:20b",
                                       thinking_mode=mode))
    provider.complete(MESSAGES, SCHEMA)
    assert ollama_server.chat_bodies()[-1]["think"] == expected


def test_think_value_mapping() -> None:
    assert think_value("off", capable=True, gpt_oss=False) is False
    assert think_value("high", capable=True, gpt_oss=False) is True
    assert think_value("off", capable=False, gpt_oss=False) is None


def test_ollama_thinking_requested_on_non_thinking_model(ollama_server: FakeOllama) -> None:
    provider = build_provider(settings(base_url=ollama_server.url, model="llama3.2:3b",
                                       thinking_mode="low"))
    with pytest.raises(ThinkingUnsupported, match="--thinking-mode off"):
        provider.check()
    assert ollama_server.chat_bodies() == []


def test_ollama_server_side_thinking_400_is_mapped(ollama_server: FakeOllama) -> None:
    ollama_server.queue.append(Reply(status=400, error='"qwen3:8b" does not support thinking'))
    provider = build_provider(settings(base_url=ollama_server.url, thinking_mode="low"))
    with pytest.raises(ThinkingUnsupported, match="--thinking-mode off"):
        provider.complete(MESSAGES, SCHEMA)


def test_ollama_unknown_model(ollama_server: FakeOllama) -> None:
    provider = build_provider(settings(base_url=ollama_server.url, model="nope:1b"))
    with pytest.raises(ModelNotFound) as err:
        provider.check()
    assert "run `ollama pull nope:1b`" in str(err.value)
    assert ollama_server.url in str(err.value)


def test_ollama_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    provider = build_provider(settings(base_url=url))
    with pytest.raises(ProviderUnavailable, match=f"no Ollama at {url}; start it or fix"):
        provider.check()
    assert ProviderUnavailable.fatal


def test_ollama_busy_and_failures_are_transient(ollama_server: FakeOllama) -> None:
    ollama_server.queue.append(Reply(status=503, error="server busy, please try again.  "
                                                       "maximum pending requests exceeded"))
    ollama_server.queue.append(Reply(status=500, error="llama runner process has terminated"))
    provider = build_provider(settings(base_url=ollama_server.url))
    with pytest.raises(ServerBusy) as busy:
        provider.complete(MESSAGES, SCHEMA)
    assert busy.value.transient
    with pytest.raises(ServerFailure) as failed:
        provider.complete(MESSAGES, SCHEMA)
    assert failed.value.transient


def test_ollama_timeout(ollama_server: FakeOllama) -> None:
    ollama_server.queue.append(Reply(delay=1.5))
    provider = build_provider(settings(base_url=ollama_server.url, timeout_s=0.5))
    with pytest.raises(ProviderTimeout) as err:
        provider.complete(MESSAGES, SCHEMA)
    assert err.value.transient and "--timeout" in str(err.value)


def test_ollama_truncation_is_reported(ollama_server: FakeOllama) -> None:
    ollama_server.queue.append(Reply(content='{"concepts": ["Sher', done_reason="length"))
    completion = build_provider(settings(base_url=ollama_server.url)).complete(MESSAGES, SCHEMA)
    assert completion.finish_reason == "length"


def test_ollama_load_unload_status_models(ollama_server: FakeOllama) -> None:
    provider = build_provider(settings(base_url=ollama_server.url, keep_alive="-1"))
    assert provider.status() == []
    provider.load()
    load_body = ollama_server.chat_bodies()[-1]
    assert load_body["messages"] == [] and load_body["keep_alive"] == -1
    assert load_body["options"]["num_ctx"] == 8192
    loaded = provider.status()
    assert [m.name for m in loaded] == ["qwen3:8b"] and loaded[0].context_length == 8192
    provider.unload()
    assert ollama_server.chat_bodies()[-1]["keep_alive"] == 0
    assert provider.status() == []
    names = [m.name for m in provider.models()]
    assert names == ["qwen3:8b", "llama3.2:3b", "gpt-oss:20b"]


def test_ollama_check_and_context_length(ollama_server: FakeOllama) -> None:
    provider = build_provider(settings(base_url=ollama_server.url))
    results = provider.check()
    assert [r.name for r in results] == ["server", "model", "thinking"]
    assert all(r.status == "ok" for r in results)
    assert provider.context_length() == 40960


# -- vLLM / OpenAI-compatible -------------------------------------------------------------

def vllm_settings(server: FakeVLLM, **overrides: object) -> ProviderSettings:
    return settings("vllm", base_url=server.base_url, model="Qwen/Qwen3-8B", **overrides)


def test_vllm_request_and_reasoning_field() -> None:
    with FakeVLLM() as server:
        server.queue.append(Reply(content='{"concepts": ["Holmes"]}', thinking="hmm " * 30))
        provider = build_provider(vllm_settings(server, thinking_mode="low"))
        completion = provider.complete(MESSAGES, SCHEMA)
        body = server.chat_bodies()[-1]
    assert body["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "extraction", "schema": SCHEMA, "strict": True}}
    assert body["chat_template_kwargs"] == {"enable_thinking": True}
    assert body["reasoning_effort"] == "low"
    assert body["max_tokens"] == 1024 + 1024
    assert body["temperature"] == 0.1 and body["top_p"] == 0.9
    assert completion.content == '{"concepts": ["Holmes"]}'
    assert completion.thinking.startswith("hmm")
    assert completion.thinking_tokens > 0
    assert completion.finish_reason == "stop"


def test_vllm_thinking_off_and_generic_openai_fields() -> None:
    with FakeVLLM() as server:
        build_provider(vllm_settings(server)).complete(MESSAGES, SCHEMA)
        vllm_body = server.chat_bodies()[-1]
        build_provider(settings("openai", base_url=server.base_url,
                                model="Qwen/Qwen3-8B")).complete(MESSAGES, SCHEMA)
        generic_body = server.chat_bodies()[-1]
    assert vllm_body["chat_template_kwargs"] == {"enable_thinking": False}
    assert "reasoning_effort" not in vllm_body
    assert "chat_template_kwargs" not in generic_body


def test_vllm_without_reasoning_parser_strips_think_tags() -> None:
    with FakeVLLM(reasoning_parser=False) as server:
        server.queue.append(Reply(content='{"concepts": []}', thinking="pondering"))
        completion = build_provider(vllm_settings(server, thinking_mode="low")).complete(
            MESSAGES, SCHEMA
        )
    assert completion.content == '{"concepts": []}'
    assert completion.thinking == "pondering"


def test_split_think_tags_variants() -> None:
    assert split_think_tags("<think>a</think>\n{}") == ("{}", "a")
    assert split_think_tags("a b</think>{}") == ("{}", "a b")
    assert split_think_tags("{}") == ("{}", "")


def test_vllm_errors_map_to_one_line_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeVLLM(max_model_len=600) as server:
        with pytest.raises(ModelNotFound, match="not served"):
            build_provider(settings("vllm", base_url=server.base_url, model="other")).complete(
                MESSAGES, SCHEMA)
        with pytest.raises(ContextOverflow, match="maximum context length is 600"):
            build_provider(vllm_settings(server)).complete(MESSAGES, SCHEMA)
        server.max_model_len = 8192
        server.queue.append(Reply(status=503, error="busy"))
        with pytest.raises(ServerBusy):
            build_provider(vllm_settings(server)).complete(MESSAGES, SCHEMA)
        server.queue.append(Reply(delay=1.0))
        with pytest.raises(ProviderTimeout):
            build_provider(vllm_settings(server, timeout_s=0.3)).complete(MESSAGES, SCHEMA)
    with pytest.raises(ProviderUnavailable, match="start it or fix --base-url"):
        build_provider(settings("vllm", base_url=f"http://127.0.0.1:{free_port()}/v1",
                                model="m")).complete(MESSAGES, SCHEMA)


def test_api_key_comes_from_the_named_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeVLLM(api_key="s3cret-value") as server:
        monkeypatch.delenv("TEST_SERVER_API_KEY", raising=False)
        keyless = build_provider(vllm_settings(server, api_key_env="TEST_SERVER_API_KEY"))
        with pytest.raises(AuthenticationFailed) as err:
            keyless.complete(MESSAGES, SCHEMA)
        assert "$TEST_SERVER_API_KEY" in str(err.value) and "s3cret" not in str(err.value)
        monkeypatch.setenv("TEST_SERVER_API_KEY", "s3cret-value")
        provider = build_provider(vllm_settings(server, api_key_env="TEST_SERVER_API_KEY"))
        provider.complete(MESSAGES, SCHEMA)
        assert server.headers[-1]["authorization"] == "Bearer s3cret-value"
        assert "s3cret" not in repr(provider.settings.model_dump())


def test_vllm_models_and_check() -> None:
    with FakeVLLM() as server:
        provider = build_provider(vllm_settings(server))
        assert [(m.name, m.details["max_model_len"]) for m in provider.models()] == [
            ("Qwen/Qwen3-8B", 8192)]
        assert [r.name for r in provider.check()] == ["server", "model"]
        with pytest.raises(ModelNotFound, match="served: Qwen/Qwen3-8B"):
            build_provider(settings("vllm", base_url=server.base_url, model="x")).check()
        server.healthy = False
        with pytest.raises(ServerFailure, match="unhealthy"):
            provider.check()


# -- HTTP 200 replies the client cannot read ------------------------------------------------

OLLAMA_BROKEN_CHATS = [
    Reply(raw="Ollama is running"),                        # not JSON
    Reply(raw="[1, 2, 3]"),                                # JSON, not an object
    Reply(raw='{"model": "qwen3:8b", "message": "hi", "done": true}'),  # message not an object
    Reply(raw='{"model": "qwen3:8b", "done": true, '
              '"message": {"role": "assistant", "content": 5}}'),       # content not text
    Reply(raw="<html>proxy error</html>", raw_type="text/html"),
]


@pytest.mark.parametrize("reply", OLLAMA_BROKEN_CHATS, ids=range(len(OLLAMA_BROKEN_CHATS)))
def test_ollama_unreadable_chat_reply_is_malformed_reply(ollama_server: FakeOllama,
                                                         reply: Reply) -> None:
    ollama_server.queue.append(reply)
    provider = build_provider(settings(base_url=ollama_server.url))
    with pytest.raises(MalformedReply) as err:
        provider.complete(MESSAGES, SCHEMA)
    assert err.value.transient and not err.value.fatal  # retried like a malformed extraction
    assert "\n" not in err.value.message and ollama_server.url in err.value.message


@pytest.mark.parametrize("body", [
    {"modelfile": "FROM x", "capabilities": ["completion"]},  # no model_info
    {"modelfile": "FROM x", "model_info": None, "capabilities": ["completion"]},
    "not json",
    "[]",
])
def test_ollama_unreadable_show_is_malformed_reply(ollama_server: FakeOllama, body) -> None:
    ollama_server.show_body = body
    provider = build_provider(settings(base_url=ollama_server.url))
    with pytest.raises(MalformedReply):
        provider.check()
    with pytest.raises(MalformedReply):
        build_provider(settings(base_url=ollama_server.url)).complete(MESSAGES, SCHEMA)


def test_ollama_unreadable_version_is_malformed_reply(ollama_server: FakeOllama) -> None:
    ollama_server.version_body = "<html>login</html>"
    with pytest.raises(MalformedReply, match="/api/version"):
        build_provider(settings(base_url=ollama_server.url)).check()


VLLM_BROKEN_CHATS = [
    Reply(raw="hello", raw_type="text/plain"),       # the client hands back a plain string
    Reply(raw="{not json"),                          # JSON content type, broken body
    Reply(raw='{"id": "x", "object": "chat.completion"}'),             # no choices
    Reply(raw='{"id": "x", "choices": []}'),                           # empty choices
    Reply(raw='{"id": "x", "choices": "none"}'),                       # choices not a list
    Reply(raw='{"id": "x", "choices": [{"index": 0, "message": null}]}'),
    Reply(raw='{"id": "x", "choices": [{"message": {"content": ["a"]}}]}'),
    Reply(raw='[]'),
]


@pytest.mark.parametrize("reply", VLLM_BROKEN_CHATS, ids=range(len(VLLM_BROKEN_CHATS)))
def test_vllm_unreadable_chat_reply_is_malformed_reply(reply: Reply) -> None:
    with FakeVLLM() as server:
        server.queue.append(reply)
        with pytest.raises(MalformedReply) as err:
            build_provider(vllm_settings(server)).complete(MESSAGES, SCHEMA)
    assert err.value.transient and "\n" not in err.value.message


def test_vllm_unreadable_model_list_is_malformed_reply() -> None:
    with FakeVLLM() as server:
        server.models_body = {"object": "list", "data": 5}
        with pytest.raises(MalformedReply):
            build_provider(vllm_settings(server)).check()
        server.models_body = "<html>"
        with pytest.raises(MalformedReply):
            build_provider(vllm_settings(server)).models()


# -- OLLAMA_HOST, credentials, the API key variable -------------------------------------------

def test_ollama_host_is_used_when_the_profile_has_no_base_url(
    ollama_server: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    host, port = ollama_server.httpd.server_address[:2]
    monkeypatch.setenv("OLLAMA_HOST", f"{host}:{port}")  # the ollama CLI's short form
    provider = build_provider(settings(base_url=None))
    assert provider.host == ollama_server.url
    provider.complete(MESSAGES, SCHEMA)
    assert len(ollama_server.chat_bodies()) == 1
    monkeypatch.setenv("OLLAMA_HOST", "http://elsewhere:1")
    explicit = build_provider(settings(base_url=ollama_server.url))
    assert explicit.host == ollama_server.url  # a base URL in the profile wins
    monkeypatch.delenv("OLLAMA_HOST")
    assert build_provider(settings(base_url=None)).host == "http://localhost:11434"


def test_unset_api_key_variable_stops_before_any_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_MISSING_API_KEY", raising=False)
    with FakeVLLM() as server:
        provider = build_provider(vllm_settings(server, api_key_env="TEST_MISSING_API_KEY"))
        with pytest.raises(MissingApiKey, match=r"\$TEST_MISSING_API_KEY") as err:
            provider.check()
        assert err.value.fatal
        assert server.requests == []


def test_redact_url() -> None:
    assert redact_url("http://user:pw@gpu:8000/v1") == "http://***@gpu:8000/v1"
    assert redact_url("http://gpu:8000/v1") == "http://gpu:8000/v1"
    assert redact_url(None) is None
