"""Real HTTP servers on 127.0.0.1 that speak Ollama's and vLLM's protocols (../shared/PROTOCOLS.md).

They are scripted per test: a responder maps each chat request to a `Reply` (content, thinking,
done reason, status, delay). They record every request body and the peak number of requests in
flight, and serve at most `slots` requests at once (the rest wait), like the real servers.

Images: Ollama takes `images` (plain base64) on a message and a model without `vision` in its
capabilities answers 500 "this model is missing data required for image input"; the OpenAI
servers take `image_url` parts with a data: URL and a model without a vision encoder answers
its server's own refusal (vLLM, llama.cpp's server without --mmproj, LM Studio). Decoded images
are kept in `server.images`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import string
import sys
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


_B64 = set(string.ascii_letters + string.digits + "+/=")
# What an image costs in prompt tokens on the fakes (real servers: a few hundred per tile).
IMAGE_TOKENS = 256


def _tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-request (kg closing a provider, a killed process) is
        normal here; the default handler would print a traceback into the stderr of the
        command under test, which the tests read."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError | OSError):
            return
        super().handle_error(request, client_address)


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
        # Capacity mode: above this many requests in service, chat answers 503 at once
        # (Ollama with OLLAMA_MAX_QUEUE full, a proxy in front of a saturated server).
        self.capacity: int | None = None
        self.busy_answers = 0
        self.killed = False  # see kill()
        self.images: list[bytes] = []  # decoded images of the chat requests, in order
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

    def kill(self) -> None:
        """Die like a killed process: no new connection, and requests being served get their
        connection closed without an answer."""
        self.killed = True
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
                if self.capacity is not None and self.in_flight >= self.capacity:
                    self.busy_answers += 1
                    return Reply(status=503, error="server busy, please try again.  maximum "
                                                   "pending requests exceeded")
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
                if server.killed:  # died while serving: the client sees the connection drop
                    self.close_connection = True
                    return
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
        images = self._images(messages)
        if isinstance(images, tuple):
            return images
        if images and "vision" not in model.capabilities:
            # The runner of a model without a projector (ollama model.ErrNoVisionModel); the
            # chat handler passes it on as a 500.
            return self._err(500, "this model is missing data required for image input")
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
        with self._lock:
            self.images.extend(images)
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

    def _images(self, messages: list[Any]) -> list[bytes] | tuple[int, str, str]:
        """The images of the messages: `images` is a list of plain base64 strings (Go decodes
        them into []byte: a data: URL or bad padding is a 400 naming the byte)."""
        found: list[bytes] = []
        for message in messages:
            for item in (message or {}).get("images") or []:
                if not isinstance(item, str):
                    return self._err(400, "json: cannot unmarshal number into Go struct field "
                                          "Message.messages.images of type api.ImageData")
                try:
                    found.append(base64.b64decode(item, validate=True))
                except (binascii.Error, ValueError):
                    bad = next((i for i, c in enumerate(item) if c not in _B64), len(item))
                    return self._err(400, f"illegal base64 data at input byte {bad}")
        return found

    def _mark_loaded(self, model: FakeModel, body: dict[str, Any]) -> None:
        ctx = (body.get("options") or {}).get("num_ctx") or 4096
        expires = datetime.now(UTC) + timedelta(minutes=5)
        self.loaded[model.name] = {
            "name": model.name, "model": model.name, "size": model.size, "digest": "a" * 64,
            "details": self._details(model), "expires_at": expires.isoformat(),
            "size_vram": model.size, "context_length": ctx,
        }


def _enum_values(node: Any) -> int:
    """How many enum values a JSON Schema lists, all enums together."""
    if isinstance(node, dict):
        own = len(node["enum"]) if isinstance(node.get("enum"), list) else 0
        return own + sum(_enum_values(v) for v in node.values())
    if isinstance(node, list):
        return sum(_enum_values(v) for v in node)
    return 0


class FakeVLLM(FakeServer):
    """vLLM's OpenAI-compatible server: /v1/chat/completions, /v1/models, /health, /metrics."""

    chat_paths = ("/v1/chat/completions",)

    def __init__(self, served_model: str = "Qwen/Qwen3-8B", max_model_len: int = 8192,
                 reasoning_parser: bool = True, api_key: str | None = None,
                 vision: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.vision = vision  # the served model has a vision encoder (llama.cpp: --mmproj)
        self.served_model = served_model
        self.max_model_len = max_model_len
        self.reasoning_parser = reasoning_parser
        self.api_key = api_key
        self.healthy = True
        # Broken-server mode: /v1/models answers 200 with this body (a dict is sent as JSON).
        self.models_body: dict[str, Any] | str | None = None
        # Limited-grammar mode: a schema with more enum values in all is refused with a 400.
        self.max_enum_values: int | None = None

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
        values = _enum_values(fmt.get("json_schema", {}).get("schema")) if isinstance(
            fmt, dict) else 0
        if self.max_enum_values is not None and values > self.max_enum_values:
            return self._err(400, f"too many enum values ({values} > "
                             f"{self.max_enum_values})", "BadRequestError")
        parts = self._parts(body.get("messages") or [])
        if len(parts) == 3:  # an error answer (status, type, body)
            return parts
        prompt, images = parts
        if images and not self.vision:
            return self._no_vision()
        prompt_tokens = _tokens(prompt) + IMAGE_TOKENS * len(images)
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
        with self._lock:
            self.images.extend(images)
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


    def _no_vision(self):
        # vLLM's multimodal limits for a model without a vision encoder.
        return self._err(400, "At most 0 image(s) may be provided in one prompt.",
                         "BadRequestError")

    def _parts(self, messages: list[Any]) -> tuple[str, list[bytes]] | tuple[int, str, str]:
        """The text and the decoded images of the messages: `content` is a string or a list of
        parts, {"type": "text", "text"} or {"type": "image_url", "image_url": {"url"}} with
        a data:<type>;base64,<data> URL (the only kind a server without network access takes)."""
        text: list[str] = []
        images: list[bytes] = []
        for message in messages:
            content = (message or {}).get("content")
            if content is None or isinstance(content, str):
                text.append(content or "")
                continue
            if not isinstance(content, list):
                return self._err(400, "content must be a string or a list of parts",
                                 "BadRequestError")
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text":
                    text.append(str(part.get("text") or ""))
                elif kind == "image_url":
                    url = (part.get("image_url") or {}).get("url") or ""
                    match = re.fullmatch(r"data:(image/[\w.+-]+);base64,(.*)", url, re.DOTALL)
                    if not match:
                        return self._err(400, "Invalid image URL: only data:image/...;base64 "
                                              "URLs are accepted here", "BadRequestError")
                    try:
                        images.append(base64.b64decode(match.group(2), validate=True))
                    except (binascii.Error, ValueError):
                        return self._err(400, "Invalid base64-encoded image data",
                                         "BadRequestError")
                else:
                    return self._err(400, f"Unknown part type: {kind}", "BadRequestError")
        return "".join(text), images


class FakeCompat(FakeVLLM):
    """Other OpenAI-compatible servers, each with its own structured-output validation and
    error bodies (as their sources and bug reports show them):

    - `sglang`: response_format text / json_object / json_schema / structural_tag; errors are
      flat `{"object": "error", "message", "type", "param", "code"}`.
    - `llama-server` (llama.cpp): json_schema, json_object (+ `schema`), top-level
      `json_schema` / `grammar`; `legacy=True` is a build before json_schema support that answers
      it with 500 `response_format type must be one of "text" or "json_object", but got: ...`.
      Serves its one model under any name.
    - `llama-cpp-python` (`python -m llama_cpp.server`): text / json_object (+ `schema`);
      json_schema fails with HTTP 500 (internal_server_error); any model name; no /health.
    - `lmstudio`: json_schema or text; else 400 `{"error": "'response_format.type' must be
      'json_schema' or 'text'"}` (a string, not an object).
    - `openai-plain`: a strict server without structured output: only text; else 400
      invalid_request_error naming `response_format.type`.
    """

    FLAVOURS = ("sglang", "llama-server", "llama-cpp-python", "lmstudio", "openai-plain")

    def __init__(self, flavour: str, legacy: bool = False, **kwargs: Any) -> None:
        if flavour not in self.FLAVOURS:
            raise ValueError(f"unknown flavour {flavour!r}")
        super().__init__(**kwargs)
        self.flavour = flavour
        self.legacy = legacy
        self.rejected = 0  # requests refused for their response_format
        # A server that takes no style at all (a proxy in front that insists on something
        # kg does not send): every chat request is refused naming response_format.
        self.refuse_all = False

    def _err(self, status: int, message: str, kind: str, param: str | None = None):
        if self.flavour == "sglang":
            return status, "application/json", json.dumps(
                {"object": "error", "message": message, "type": kind, "param": param,
                 "code": status})
        if self.flavour == "llama-server":
            return status, "application/json", json.dumps(
                {"error": {"code": status, "message": message,
                           "type": "server_error" if status >= 500 else "invalid_request_error"}})
        if self.flavour == "lmstudio":
            return status, "application/json", json.dumps({"error": message})
        return super()._err(status, message, kind, param)

    def _no_vision(self):
        if self.flavour in ("llama-server", "llama-cpp-python"):
            return self._err(400, "image input is not supported - hint: if this is unexpected, "
                             "you may need to provide the mmproj", "invalid_request_error")
        if self.flavour == "lmstudio":
            return self._err(400, "Model does not support images. Please use a model that "
                             "does.", "")
        return super()._no_vision()

    def route(self, method: str, path: str, body: Any, headers: dict[str, str]):
        if path == "/health" and self.flavour in ("llama-cpp-python", "lmstudio",
                                                  "openai-plain"):
            return 404, "application/json", json.dumps({"detail": "Not Found"})
        return super().route(method, path, body, headers)

    def _format_error(self, body: dict[str, Any]):
        fmt = body.get("response_format")
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if self.refuse_all:
            return self._err(400, f"response_format {kind or 'missing'} is not accepted here",
                             "BadRequestError", "response_format")
        if self.flavour == "sglang":
            if kind not in (None, "text", "json_object", "json_schema", "structural_tag"):
                return self._err(400, "1 validation error for ChatCompletionRequest\n"
                                 "response_format.type\n  Input should be 'text', 'json_object',"
                                 " 'json_schema' or 'structural_tag'", "BadRequestError")
            if kind == "json_schema" and not (fmt.get("json_schema") or {}).get("schema"):
                return self._err(400, "json_schema.schema is required for response_format "
                                 "json_schema", "BadRequestError")
        elif self.flavour == "llama-server":
            if "json_schema" in body and "grammar" in body:
                return self._err(400, 'Either "json_schema" or "grammar" can be specified, but '
                                 "not both", "")
            allowed = ("text", "json_object") if self.legacy else ("text", "json_object",
                                                                   "json_schema")
            if kind is not None and kind not in allowed:
                return self._err(500, 'response_format type must be one of "text" or '
                                 f'"json_object", but got: {kind}', "")
        elif self.flavour == "llama-cpp-python":
            if kind not in (None, "text", "json_object"):
                return 500, "application/json", json.dumps({"error": {
                    "message": "1 validation error for CreateChatCompletionRequest\n"
                               "response_format.type\n  Input should be 'text' or "
                               f"'json_object' [type=literal_error, input_value='{kind}']",
                    "type": "internal_server_error", "param": None, "code": None}})
        elif self.flavour == "lmstudio":
            if kind not in (None, "text", "json_schema"):
                return self._err(400, "'response_format.type' must be 'json_schema' or 'text'",
                                 "")
        elif kind not in (None, "text"):
            return super()._err(400, f"Invalid value: '{kind}'. Supported values are: 'text'.",
                                "invalid_request_error", "response_format.type")
        return None

    def _chat(self, body: dict[str, Any]):
        error = self._format_error(body)
        if error is not None:
            with self._lock:
                self.rejected += 1
            return error
        if self.flavour in ("llama-server", "llama-cpp-python"):
            body = {**body, "model": self.served_model}  # one model, any name
        return super()._chat(body)


NAME = re.compile(r"\b[A-Z][a-z]+(?: [A-Z][a-z]+)*\b")
TYPES = ["causes", "part_of", "uses", "related_to", "supports", "precedes", "depends_on",
         "similar_to", "produces", "located_in"]


def chunk_of(body: dict[str, Any]) -> str:
    """The chunk text inside a kg extraction request (the first user message)."""
    for message in body.get("messages") or []:
        content = message.get("content")
        if (message.get("role") == "user" and isinstance(content, str)
                and content.startswith("Text:\n")):
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
    parser.add_argument("--capacity", type=int, default=None,
                        help="answer 503 above this many requests in service")
    args = parser.parse_args(argv)
    responder = graph_responder(args.delay)
    server: FakeServer = (FakeOllama(responder=responder, slots=args.slots)
                          if args.kind == "ollama"
                          else FakeVLLM(responder=responder, slots=args.slots))
    server.capacity = args.capacity
    with server:
        print(server.url if args.kind == "ollama" else f"{server.url}/v1", flush=True)
        signal.sigwait({signal.SIGTERM, signal.SIGINT})


if __name__ == "__main__":
    serve()
