"""Real HTTP servers on 127.0.0.1 that speak Ollama's and vLLM's protocols (../shared/PROTOCOLS.md).

They are scripted per test: a responder maps each chat request to a `Reply` (content, thinking,
done reason, status, delay). They record every request body and the peak number of requests in
flight, and serve at most `slots` requests at once (the rest wait), like the real servers.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """What the fake model answers to one chat request."""

    content: str = '{"concepts": [], "relationships": []}'
    thinking: str = ""
    done_reason: str = "stop"
    status: int = 200
    error: str | None = None
    delay: float = 0.0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    raw: str | None = None  # sent as the whole 200 body instead of a protocol reply (malformed)
    raw_type: str = "application/json"  # the Content-Type sent with `raw`


Responder = Callable[[dict[str, Any]], Reply]


@dataclass
class FakeModel:
    name: str
    capabilities: list[str] = field(default_factory=lambda: ["completion"])
    family: str = "qwen3"
    context_length: int = 40960
    size: int = 5_200_000_000


def _tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class FakeServer:
    """Base: thread, request log, concurrency accounting, scripted replies."""

    def __init__(self, responder: Responder | None = None, slots: int = 64) -> None:
        self.responder: Responder = responder or (lambda body: Reply())
        self.queue: list[Reply] = []  # replies used first, in order, before the responder
        self.requests: list[tuple[str, str, dict[str, Any] | None]] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(slots)
        self.in_flight = 0
        self.max_in_flight = 0
        self.chat_count = 0
        handler = self._handler_class()
        self.httpd = _Server(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def chat_bodies(self) -> list[dict[str, Any]]:
        return [b for (_m, p, b) in self.requests if p in self.chat_paths and b is not None]

    def next_reply(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            if self.queue:
                return self.queue.pop(0)
        return self.responder(body)

    def serve_chat(self, body: dict[str, Any]) -> Reply:
        """Count the request as in flight while it holds a slot and waits its delay."""
        reply = self.next_reply(body)
        with self._slots:
            with self._lock:
                self.in_flight += 1
                self.chat_count += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                if reply.delay:
                    time.sleep(reply.delay)
            finally:
                with self._lock:
                    self.in_flight -= 1
        return reply

    chat_paths: tuple[str, ...] = ()

    def route(self, method: str, path: str, body: Any, headers: dict[str, str]):
        raise NotImplementedError

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes; with Nagle on, the second waits for the
            # client's delayed ACK (~40 ms). Real servers set TCP_NODELAY too.
            disable_nagle_algorithm = True

            def log_message(self, *args: object) -> None:
                pass

            def _dispatch(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body: Any = None
                bad_json = False
                if raw:
                    try:
                        body = json.loads(raw)
                    except json.JSONDecodeError:
                        bad_json = True
                path = self.path.split("?", 1)[0]
                headers = {k.lower(): v for k, v in self.headers.items()}
                with server._lock:
                    server.requests.append((method, path, body if isinstance(body, dict) else None))
                    server.headers.append(headers)
                if bad_json:
                    status, ctype, payload = server.bad_json()
                else:
                    status, ctype, payload = server.route(method, path, body, headers)
                if isinstance(payload, list):  # streamed lines
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for line in payload:
                        data = line.encode()
                        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                    return
                data = payload.encode() if isinstance(payload, str) else payload
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._dispatch("GET")

            def do_POST(self) -> None:
                self._dispatch("POST")

            def do_HEAD(self) -> None:
                self._dispatch("HEAD")

        return Handler

    def bad_json(self) -> tuple[int, str, str]:
        return 400, "application/json", json.dumps({"error": "invalid character in request body"})


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class FakeOllama(FakeServer):
    """Ollama's /api surface: chat (plain and streamed), show, tags, ps, version."""

    chat_paths = ("/api/chat",)
    THINK_LEVELS = ("low", "medium", "high", "max")

    def __init__(self, models: list[FakeModel] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.models = {m.name: m for m in (models or [FakeModel("qwen3:8b", ["completion",
                                                                           "thinking"])])}
        self.loaded: dict[str, dict[str, Any]] = {}
        # Broken-server modes: /api/show answers 200 with this body (a dict is sent as JSON),
        # e.g. a reply without model_info; /api/version likewise.
        self.show_body: dict[str, Any] | str | None = None
        self.version_body: dict[str, Any] | str | None = None

    def _raw(self, body: dict[str, Any] | str) -> tuple[int, str, str]:
        if isinstance(body, str):
            return 200, "application/json", body
        return self._ok(body)

    def _err(self, status: int, message: str) -> tuple[int, str, str]:
        return status, "application/json", json.dumps({"error": message})

    def _ok(self, data: Any) -> tuple[int, str, str]:
        return 200, "application/json", json.dumps(data)

    def _details(self, m: FakeModel) -> dict[str, Any]:
        return {"parent_model": "", "format": "gguf", "family": m.family, "families": [m.family],
                "parameter_size": "8.2B", "quantization_level": "Q4_K_M"}

    def route(self, method: str, path: str, body: Any, headers: dict[str, str]):
        if method == "GET" and path == "/":
            return 200, "text/plain; charset=utf-8", "Ollama is running"
        if method == "GET" and path == "/api/version":
            if self.version_body is not None:
                return self._raw(self.version_body)
            return self._ok({"version": "0.12.6"})
        if method == "GET" and path == "/api/tags":
            return self._ok({"models": [
                {"name": m.name, "model": m.name, "modified_at": _now(), "size": m.size,
                 "digest": "a" * 64, "details": self._details(m)} for m in self.models.values()
            ]})
        if method == "GET" and path == "/api/ps":
            return self._ok({"models": list(self.loaded.values())})
        if method == "POST" and path == "/api/show":
            name = (body or {}).get("model") or (body or {}).get("name")
            if name not in self.models:
                return self._err(404, f"model '{name}' not found")
            if self.show_body is not None:
                return self._raw(self.show_body)
            m = self.models[name]
            return self._ok({
                "modelfile": f"FROM {m.name}", "parameters": "temperature 0.6",
                "template": "{{ .Prompt }}", "details": self._details(m),
                "model_info": {"general.architecture": m.family,
                               f"{m.family}.context_length": m.context_length},
                "capabilities": m.capabilities, "modified_at": _now(),
            })
        if method == "POST" and path == "/api/chat":
            return self._chat(body or {})
        return 404, "text/plain", "404 page not found"

    def _chat(self, body: dict[str, Any]):
        name = body.get("model")
        if not name:
            return self._err(400, "model is required")
        fmt = body.get("format")
        if fmt not in (None, "", "json") and not isinstance(fmt, dict):
            return self._err(400, "invalid format")
        if name not in self.models:
            return self._err(404, f"model '{name}' not found")
        model = self.models[name]
        think = body.get("think")
        if isinstance(think, str) and think not in self.THINK_LEVELS:
            return self._err(400, f"invalid think value: {think!r}")
        if think not in (None, False) and "thinking" not in model.capabilities:
            return self._err(400, f'"{name}" does not support thinking')
        messages = body.get("messages") or []
        keep_alive = body.get("keep_alive")
        if not messages:
            if keep_alive == 0 or keep_alive == "0":
                self.loaded.pop(name, None)
                reason = "unload"
            else:
                self._mark_loaded(model, body)
                reason = "load"
            return self._ok({"model": name, "created_at": _now(),
                             "message": {"role": "assistant", "content": ""},
                             "done_reason": reason, "done": True})
        reply = self.serve_chat(body)
        if reply.raw is not None:
            return 200, reply.raw_type, reply.raw
        if reply.status != 200:
            return self._err(reply.status, reply.error or "internal error")
        self._mark_loaded(model, body)
        prompt = "".join(m.get("content", "") for m in messages)
        prompt_tokens = reply.prompt_tokens or _tokens(prompt)
        eval_count = reply.completion_tokens or (_tokens(reply.content) + _tokens(reply.thinking))
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.thinking:
            message["thinking"] = reply.thinking
        final: dict[str, Any] = {
            "model": name, "created_at": _now(), "message": message, "done": True,
            "done_reason": reply.done_reason, "total_duration": 2_254_970_291,
            "load_duration": 574_751_416, "prompt_eval_count": prompt_tokens,
            "prompt_eval_duration": 150_200_000, "eval_count": eval_count,
            "eval_duration": 175_000_000,
        }
        if body.get("stream", True) is False:
            return self._ok(final)
        lines = []
        for piece in (reply.thinking[i:i + 16] for i in range(0, len(reply.thinking), 16)):
            lines.append(json.dumps({"model": name, "created_at": _now(), "message": {
                "role": "assistant", "content": "", "thinking": piece}, "done": False}) + "\n")
        for piece in (reply.content[i:i + 16] for i in range(0, len(reply.content), 16)):
            lines.append(json.dumps({"model": name, "created_at": _now(), "message": {
                "role": "assistant", "content": piece}, "done": False}) + "\n")
        final["message"] = {"role": "assistant", "content": ""}
        lines.append(json.dumps(final) + "\n")
        return 200, "application/x-ndjson", lines

    def _mark_loaded(self, model: FakeModel, body: dict[str, Any]) -> None:
        ctx = (body.get("options") or {}).get("num_ctx") or 4096
        expires = datetime.now(UTC) + timedelta(minutes=5)
        self.loaded[model.name] = {
            "name": model.name, "model": model.name, "size": model.size, "digest": "a" * 64,
            "details": self._details(model), "expires_at": expires.isoformat(),
            "size_vram": model.size, "context_length": ctx,
        }


class FakeVLLM(FakeServer):
    """vLLM's OpenAI-compatible server: /v1/chat/completions, /v1/models, /health, /metrics."""

    chat_paths = ("/v1/chat/completions",)

    def __init__(self, served_model: str = "Qwen/Qwen3-8B", max_model_len: int = 8192,
                 reasoning_parser: bool = True, api_key: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.served_model = served_model
        self.max_model_len = max_model_len
        self.reasoning_parser = reasoning_parser
        self.api_key = api_key
        self.healthy = True
        # Broken-server mode: /v1/models answers 200 with this body (a dict is sent as JSON).
        self.models_body: dict[str, Any] | str | None = None

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def _err(self, status: int, message: str, kind: str, param: str | None = None):
        return status, "application/json", json.dumps(
            {"error": {"message": message, "type": kind, "param": param, "code": status}}
        )

    def bad_json(self):
        return self._err(400, "Invalid JSON in request body", "BadRequestError")

    def route(self, method: str, path: str, body: Any, headers: dict[str, str]):
        if path == "/health":
            return (200, "text/plain", "") if self.healthy else (503, "text/plain", "")
        if path == "/metrics":
            text = (f'vllm:num_requests_running{{model_name="{self.served_model}"}} '
                    f"{float(self.in_flight)}\n"
                    f'vllm:num_requests_waiting{{model_name="{self.served_model}"}} 0.0\n')
            return 200, "text/plain; version=0.0.4", text
        if (path.startswith("/v1/") and self.api_key is not None
                and headers.get("authorization") != f"Bearer {self.api_key}"):
            return 401, "application/json", json.dumps({"error": "Unauthorized"})
        if method == "GET" and path == "/v1/models" and self.models_body is not None:
            body = self.models_body
            return 200, "application/json", body if isinstance(body, str) else json.dumps(body)
        if method == "GET" and path == "/v1/models":
            return 200, "application/json", json.dumps({"object": "list", "data": [{
                "id": self.served_model, "object": "model", "created": 1700000000,
                "owned_by": "vllm", "root": self.served_model, "parent": None,
                "max_model_len": self.max_model_len, "permission": []}]})
        if method == "POST" and path == "/v1/chat/completions":
            return self._chat(body or {})
        return 404, "application/json", json.dumps({"detail": "Not Found"})

    def _chat(self, body: dict[str, Any]):
        model = body.get("model")
        if model != self.served_model:
            return self._err(404, f"The model `{model}` does not exist.", "NotFoundError", "model")
        fmt = body.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and not fmt.get(
            "json_schema"
        ):
            return self._err(400, "json_schema must be provided", "BadRequestError")
        prompt = "".join(m.get("content") or "" for m in body.get("messages") or [])
        prompt_tokens = _tokens(prompt)
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or 0
        if prompt_tokens + max_tokens > self.max_model_len:
            return self._err(
                400,
                f"This model's maximum context length is {self.max_model_len} tokens. However, "
                f"you requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the "
                f"messages, {max_tokens} in the completion). Please reduce the length of the "
                "messages or completion.",
                "BadRequestError",
            )
        reply = self.serve_chat(body)
        if reply.raw is not None:
            return 200, reply.raw_type, reply.raw
        if reply.status != 200:
            kinds = {503: "ServiceUnavailableError", 500: "InternalServerError",
                     429: "RateLimitError"}
            return self._err(reply.status, reply.error or "error", kinds.get(reply.status, "Error"))
        message: dict[str, Any] = {"role": "assistant", "content": reply.content,
                                   "tool_calls": [], "refusal": None}
        if reply.thinking:
            if self.reasoning_parser:
                message["reasoning"] = reply.thinking
            else:
                message["content"] = f"<think>{reply.thinking}</think>\n\n{reply.content}"
        completion = reply.completion_tokens or (_tokens(reply.content) + _tokens(reply.thinking))
        return 200, "application/json", json.dumps({
            "id": f"chatcmpl-{self.chat_count}", "object": "chat.completion",
            "created": int(time.time()), "model": self.served_model,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": reply.done_reason, "stop_reason": None}],
            "usage": {"prompt_tokens": reply.prompt_tokens or prompt_tokens,
                      "completion_tokens": completion,
                      "total_tokens": (reply.prompt_tokens or prompt_tokens) + completion},
        })


NAME = re.compile(r"\b[A-Z][a-z]+(?: [A-Z][a-z]+)*\b")
TYPES = ["causes", "part_of", "uses", "related_to", "supports", "precedes", "depends_on",
         "similar_to", "produces", "located_in"]


def chunk_of(body: dict[str, Any]) -> str:
    """The chunk text inside a kg extraction request (the first user message)."""
    for message in body.get("messages") or []:
        if message.get("role") == "user" and message.get("content", "").startswith("Text:\n"):
            return message["content"][len("Text:\n"):]
    return ""


def graph_reply(text: str, concepts: int = 10, relationships: int = 10) -> str:
    """A deterministic, valid extraction of a chunk: capitalised names, linked in a chain."""
    names: list[str] = []
    for match in NAME.finditer(text):
        name = match.group()
        if name not in names and len(name) <= 60:
            names.append(name)
        if len(names) == concepts:
            break
    items = [{"label": n, "description": f"{n} as mentioned in the text.",
              "search_terms": [n.split()[-1].lower()], "quote": n} for n in names]
    rels = [{"source": names[i], "type": TYPES[i % len(TYPES)], "target": names[i + 1],
             "confidence": 0.8, "quote": names[i]}
            for i in range(min(relationships, max(0, len(names) - 1)))]
    return json.dumps({"concepts": items, "relationships": rels})


def graph_responder(delay: float = 0.0) -> Responder:
    """Answers every extraction request with graph_reply of its chunk."""
    return lambda body: Reply(content=graph_reply(chunk_of(body)), delay=delay)


def serve(argv: list[str] | None = None) -> None:
    """Run a fake server in its own process (benchmarks): prints its URL, serves until killed.

    python -m tests.fakes ollama|vllm [--delay S] [--slots N]
    """
    import argparse
    import signal

    parser = argparse.ArgumentParser(prog="python -m tests.fakes")
    parser.add_argument("kind", choices=["ollama", "vllm"])
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--slots", type=int, default=64)
    args = parser.parse_args(argv)
    responder = graph_responder(args.delay)
    server: FakeServer = (FakeOllama(responder=responder, slots=args.slots)
                          if args.kind == "ollama"
                          else FakeVLLM(responder=responder, slots=args.slots))
    with server:
        print(server.url if args.kind == "ollama" else f"{server.url}/v1", flush=True)
        signal.sigwait({signal.SIGTERM, signal.SIGINT})


if __name__ == "__main__":
    serve()
