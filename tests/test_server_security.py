"""`kg serve` against the probes of issue 19, each tried as an attacker would (on 127.0.0.1):
a page from another origin, a foreign `Host` (DNS rebinding), bodies of undeclared types,
numbers beyond the database, LIKE wildcards, FIFOs, rejected uploads, what an anonymous health
probe learns, secrets in URLs, /docs and the page's token.

Every state-changing route of the app is tried (the routes are read from the app, so a new
route is covered as soon as it exists); the database must be unchanged after each refusal.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from kg import tokens
from kg.db import Database
from kg.server import ServerConfig, create_app
from kg.server.guard import STATE_CHANGING
from kg.server.routes_health import NOT_OK
from kg.urls import redact, redact_url
from tests.browser import chromium, needs_browser
from tests.graph_seed import bulk_graph, ingest_story, rows, use_server
from tests.test_ingest import paragraphs
from tests.test_server import SMALL, ServerThread, assert_error, counts, serve

BEYOND = str(2**63)  # one more than the largest BIGINT
HUGE = "9" * 5000  # more digits than Python parses by default (4300)


PAGES = ["/", "/docs", "/openapi.json", "/static/app.js"]  # GET only, not in the schema


def operations(app: FastAPI) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path template, operation) of every API route, read from the app's OpenAPI
    schema: a route added later is covered without touching these tests."""
    return [(method.upper(), path, operation)
            for path, methods in app.openapi()["paths"].items()
            for method, operation in methods.items()]


def concrete(path: str) -> str:
    """A route's path with every parameter filled in (`1`)."""
    return re.sub(r"\{[^}]+\}", "1", path)


def open_app(db: Database, **options: Any) -> FastAPI:
    """The worst case for a drive-by: no token needed (open until the first token)."""
    for key, value in (("open_until_first_token", True), ("token_ttl_s", 0.0),
                       ("health_ttl_s", 0.0), ("metrics_ttl_s", 0.0), ("poll_s", 0.1)):
        options.setdefault(key, value)
    return create_app(db, ServerConfig(**options))


def refusals(text: str) -> float:
    """403 answers the request guard gave (before routing: route "(unmatched)")."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("kg_http_requests_total{") and 'status="403"' in line
               and 'route="(unmatched)"' in line)


def active_profile(db: Database) -> list[tuple[Any, ...]]:
    return rows(db, "SELECT name FROM extraction_profiles WHERE active")


# -- Host and Origin, on every route -------------------------------------------------------------

def test_every_route_refuses_foreign_hosts_other_origins_and_undeclared_bodies(
        kg, db, ollama, tmp_path) -> None:
    use_server(kg, ollama.url)
    root = tmp_path / "docs"
    root.mkdir()
    (root / "a.md").write_text(paragraphs(2), encoding="utf-8")
    app = open_app(db, roots=(root.resolve(),))
    every = [(method, path) for method, path, _op in operations(app)]
    every += [("GET", page) for page in PAGES]
    changing = [(method, path) for method, path in every if method in STATE_CHANGING]
    body = json.dumps({"paths": ["a.md"], "activate": True}).encode()
    before, active = counts(db), active_profile(db)
    with ServerThread(app) as server, server.client() as client:
        for method, path in every:
            answer = client.request(method, concrete(path), content=body, headers={
                "Host": "attacker.example", "Content-Type": "application/json"})
            assert_error(answer, 403, "does not answer to the host name 'attacker.example'")
        assert_error(client.get("/", headers={"Host": "localhost.attacker.example:80"}), 403)
        assert_error(client.get("/", headers={"Host": "127.0.0.1.attacker.example"}), 403)

        for method, template in changing:
            path = concrete(template)
            for origin in ("http://evil.example", "null", "http://127.0.0.1:1",
                           server.url.replace("127.0.0.1", "localhost")):
                answer = client.request(method, path, content=body, headers={
                    "Origin": origin, "Content-Type": "application/json"})
                assert_error(answer, 403, "cross-site request refused")
            for kind in ("text/plain", "application/x-www-form-urlencoded"):
                answer = client.request(method, path, content=body,
                                        headers={"Content-Type": kind})
                assert_error(answer, 415, kind)
            # A body without a type (fetch with a Blob sends none): refused too.
            assert_error(client.request(method, path, content=body), 415, "Content-Type")
        # Multipart only where it is declared (a page can send it without a preflight).
        for method, template in changing:
            if template not in ("/runs", "/c/{collection}/runs"):
                answer = client.request(method, concrete(template),
                                        files={"files": ("a.md", b"Sherlock Holmes")})
                assert_error(answer, 415, "multipart/form-data")
    assert counts(db) == before and active_profile(db) == active
    assert not rows(db, "SELECT id FROM runs")
    assert len(every) >= 20 and len(changing) >= 6
    print(f"\nHost checked on {len(every)} routes; Origin and content type on "
          f"{len(changing)} state-changing routes: {sorted(changing)}")


def test_same_origin_loopback_names_and_allowed_hosts_still_work(kg, db, ollama,
                                                                 tmp_path) -> None:
    use_server(kg, ollama.url)
    app = open_app(db, allowed_hosts=("kg.example.org",))
    with ServerThread(app) as server, server.client() as client:
        port = server.url.rsplit(":", 1)[1]
        for host in (f"localhost:{port}", f"[::1]:{port}", f"127.0.0.2:{port}",
                     "LOCALHOST.", "kg.example.org", f"KG.example.org:{port}"):
            assert client.get("/readyz", headers={"Host": host}).status_code == 200, host
        # Same origin (the page itself), and clients that send no Origin (CLI, curl).
        same = {"Origin": server.url}
        assert_error(client.post("/runs/999/cancel", headers=same), 404, "no run 999")
        assert_error(client.put("/profiles/test", json={"temperature": 7}, headers=same), 400,
                     "temperature")
        assert client.post("/profiles/default/activate", headers=same).json()["changed"]
        assert client.post("/profiles/test/activate").json()["changed"]
        assert client.post("/profiles/test/activate",
                           headers={"Content-Type": "application/json"}).status_code == 200
        proxied = {"Host": "kg.example.org", "Origin": "https://kg.example.org"}
        assert client.post("/profiles/test/activate", headers=proxied).status_code == 200
    with ServerThread(open_app(db, cors_origins=("http://tool.example",))) as server, \
            server.client() as client:
        answer = client.post("/runs/999/cancel", headers={"Origin": "http://tool.example"})
        assert_error(answer, 404, "no run 999")


# -- a page from another origin, in Chromium ----------------------------------------------------

ATTACK = """<!doctype html>
<html><body>
<iframe name="sink1"></iframe><iframe name="sink2"></iframe><iframe name="sink3"></iframe>
<script>
const kg = "%(kg)s";
const paths = JSON.stringify({paths: ["a.md"], force: true});
function post(form) {
  return new Promise((resolve) => {
    const frame = document.getElementsByName(form.target)[0];
    frame.addEventListener("load", resolve, {once: true});
    setTimeout(resolve, 5000);
    form.submit();
  });
}
function form(action, target, enctype, fields) {
  const f = document.createElement("form");
  f.method = "POST"; f.action = kg + action; f.target = target;
  if (enctype) f.enctype = enctype;
  for (const [name, value] of fields) {
    const input = document.createElement("input");
    input.type = "hidden"; input.name = name; input.value = value;
    f.appendChild(input);
  }
  document.body.appendChild(f);
  return f;
}
async function attack() {
  const upload = new FormData();
  upload.append("files", new Blob(["Agent Number1 met Director Alpha1 in City Beta1."],
                                  {type: "text/markdown"}), "drive-by.md");
  const tries = [
    // No preflight for any of these: text/plain, no type at all, no body, multipart.
    fetch(kg + "/runs", {method: "POST", mode: "no-cors", body: paths,
                         headers: {"Content-Type": "text/plain"}}),
    fetch(kg + "/runs", {method: "POST", mode: "no-cors", body: new Blob([paths])}),
    fetch(kg + "/profiles/default/activate", {method: "POST", mode: "no-cors"}),
    fetch(kg + "/runs", {method: "POST", mode: "no-cors", body: upload}),
    // Preflighted: CORS is off, so the browser never sends them.
    fetch(kg + "/profiles/default", {method: "PUT", body: JSON.stringify({activate: true}),
                                     headers: {"Content-Type": "application/json"}}),
    fetch(kg + "/profiles/test", {method: "DELETE"}),
  ];
  await Promise.allSettled(tries);
  // Plain HTML forms: a navigation, not fetch.
  await post(form("/profiles/default/activate", "sink1", null, []));
  await post(form("/runs", "sink2", "text/plain", [['{"paths": ["a.md"], "x": "', '"}']]));
  await post(form("/runs", "sink3", "application/x-www-form-urlencoded", [["paths", "a.md"]]));
  document.body.dataset.done = "true";
}
attack();
</script>
</body></html>
"""


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from chromium("--window-size=1280,800")


def wait_for(driver: Any, condition: Any, timeout: float = 30) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)


@needs_browser
@pytest.mark.parametrize("dialect", ["sqlite"], indirect=True)
def test_a_page_from_another_origin_changes_nothing(browser, kg, db, ollama,
                                                    tmp_path) -> None:
    use_server(kg, ollama.url)
    root = tmp_path / "docs"
    root.mkdir()
    (root / "a.md").write_text(paragraphs(2), encoding="utf-8")
    site = tmp_path / "attacker"
    site.mkdir()
    before, active = counts(db), active_profile(db)
    app = open_app(db, roots=(root.resolve(),), upload_dir=tmp_path / "uploads")
    with ServerThread(app) as server, server.client() as client:
        (site / "index.html").write_text(ATTACK % {"kg": server.url}, encoding="utf-8")
        attacker = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), partial(QuietHandler, directory=str(site)))
        threading.Thread(target=attacker.serve_forever, daemon=True).start()
        try:
            browser.get(f"http://127.0.0.1:{attacker.server_address[1]}/")
            wait_for(browser, lambda d: d.execute_script("return document.body.dataset.done"))
            time.sleep(1.0)  # a run would have been planned by now
            refused = refusals(client.get("/metrics").text)
        finally:
            attacker.shutdown()
            attacker.server_close()
    # The browser did send them (six reached the server), and the server refused each.
    assert refused >= 6, refused
    assert not rows(db, "SELECT id FROM runs")
    assert active_profile(db) == active
    assert counts(db) == before
    assert not (tmp_path / "uploads").exists() or not list((tmp_path / "uploads").iterdir())


@needs_browser
@pytest.mark.parametrize("dialect", ["sqlite"], indirect=True)
def test_the_url_token_moves_to_session_storage_and_docs_run_under_a_strict_csp(
        browser, kg, db, ollama, tmp_path) -> None:
    use_server(kg, ollama.url)
    ingest_story(kg, tmp_path)
    with db.session() as session:
        _row, secret = tokens.create(session, "kg-serve", "admin", by="tester")
    with serve(db) as server:
        browser.get(server.url + "/#token=" + secret)
        wait_for(browser, lambda d: d.execute_script(
            "return document.getElementById('whoami').textContent") == "kg-serve (admin)")
        assert browser.execute_script("return location.hash") == ""
        assert secret not in browser.current_url
        assert browser.execute_script("return sessionStorage.getItem('kg.token')") == secret
        assert browser.execute_script("return localStorage.getItem('kg.token')") is None
        browser.get_log("browser")  # start /docs with an empty console
        browser.get(server.url + "/docs")
        wait_for(browser, lambda d: d.execute_script(
            "return document.querySelectorAll('.opblock').length") > 10)
        csp = [e["message"] for e in browser.get_log("browser")
               if "Content Security Policy" in e["message"]]
        assert not csp, csp


def test_docs_page_has_a_csp_without_inline_script(db) -> None:
    with serve(db) as server, server.client() as client:
        docs = client.get("/docs")
        csp = docs.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert "<script>" not in docs.text and "/static/docs.js" in docs.text
        page = client.get("/static/app.js").text
        assert "localStorage.setItem" not in page and "sessionStorage.setItem" in page


# -- kg serve: no open mode --------------------------------------------------------------------

@pytest.mark.parametrize("dialect", ["sqlite"], indirect=True)
def test_kg_serve_creates_a_token_on_its_first_start_only(kg_env, db, tmp_path) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, **kg_env, "PYTHONPATH": str(root)}

    def start() -> tuple[subprocess.Popen[str], str, str]:
        proc = subprocess.Popen([sys.executable, "-m", "kg.cli", "serve", "--port", "0"],
                                cwd=root, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        first = proc.stderr.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", first)
        assert match, first
        url = match.group(0).rstrip("/")
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/readyz", timeout=5)
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        return proc, url, first

    def stop(proc: subprocess.Popen[str]) -> str:
        proc.terminate()
        _out, err = proc.communicate(timeout=30)
        return err

    proc, url, _first = start()
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        found = re.search(r"admin token kg-serve .* Open (\S+)#token=(kgt_\S+) ", line)
        assert found and found.group(1) == url + "/", line
        secret = found.group(2)
        assert_error(httpx.get(f"{url}/concepts"), 401, "needs a token")
        assert_error(httpx.post(f"{url}/profiles/default/activate"), 401)
        assert httpx.get(f"{url}/healthz").json() in ({"status": "ok"}, {"error": NOT_OK})
        owner = {"Authorization": f"Bearer {secret}"}
        assert httpx.get(f"{url}/whoami", headers=owner).json()["scope"] == "admin"
        assert_error(httpx.get(f"{url}/whoami", headers={**owner, "Host": "attacker.example"}),
                     403, "attacker.example")
    finally:
        stop(proc)
    proc, url, _first = start()
    err = stop(proc)
    assert "#token=" not in err and "kgt_" not in err  # shown once, at the first start
    assert rows(db, "SELECT name, scope FROM api_tokens") == [("kg-serve", "admin")]


# -- health -------------------------------------------------------------------------------------

def test_health_probes_without_a_token_say_only_ok_or_not_ok(kg, db, ollama) -> None:
    use_server(kg, ollama.url)
    with db.session() as session:
        _row, reader = tokens.create(session, "viewer", "read", by="tester")
    with serve(db) as server, server.client() as anyone, server.client(reader) as viewer:
        assert anyone.get("/healthz").json() == {"status": "ok"}
        assert anyone.get("/readyz").json() == {"status": "ok"}
        detail = viewer.get("/healthz").json()
        assert detail["status"] == "ok" and detail["backend"].startswith("test: ollama")
        assert_error(anyone.get("/healthz", headers={"Authorization": "Bearer kgt_no"}), 401)

        assert kg("admin", "extraction", "set", "--profile", "down", "--provider", "ollama",
                  "--model", "qwen3:8b", "--base-url", "http://127.0.0.1:9/?api_key=sekrit-42",
                  "--timeout", "2", "--activate").exit_code == 0
        hidden = assert_error(anyone.get("/healthz"), 503)
        assert hidden == NOT_OK
        shown = assert_error(viewer.get("/healthz"), 503, "backend:", "127.0.0.1:9")
        assert "sekrit-42" not in shown and "api_key=***" in shown


# -- numbers ------------------------------------------------------------------------------------

def int_params(operation: dict[str, Any]) -> list[tuple[str, str]]:
    """(in, name) of an operation's integer path and query parameters."""
    found = []
    for param in operation.get("parameters", []):
        schema = param.get("schema", {})
        kinds = {schema.get("type")} | {s.get("type") for s in schema.get("anyOf", [])}
        if "integer" in kinds and param["in"] in ("path", "query"):
            found.append((param["in"], param["name"]))
    return found


def test_numbers_beyond_the_database_are_404_or_422_never_500(db, seeded) -> None:
    app = open_app(db)
    tried = 0
    with ServerThread(app) as server, server.client() as client:
        for method, template, operation in operations(app):
            for kind, name in int_params(operation):
                for number in (BEYOND, HUGE):
                    params = {"format": "jsonl", "center": "Sherlock Holmes"}
                    if kind == "path":
                        path = concrete(template.replace("{" + name + "}", number))
                    else:
                        path = concrete(template)
                        params[name] = number
                    answer = client.request(method, path, params=params)
                    assert answer.status_code in (404, 422), (method, path, name,
                                                              answer.text[:200])
                    assert_error(answer, answer.status_code)
                    tried += 1
        for path in (f"/concepts/{BEYOND}", f"/concepts/{HUGE}"):
            assert_error(client.get(path), 404, "no concept named")
        assert_error(client.get("/graph", params={"center": BEYOND}), 404)
        assert_error(client.get("/relationships", params={"concept": BEYOND}), 404)
        assert_error(client.get("/runs/1/events", headers={"Last-Event-ID": HUGE[:90]}),
                     422, "Last-Event-ID")
        assert_error(client.get("/runs/1/events", headers={"Last-Event-ID": BEYOND}),
                     422, "Last-Event-ID")
        assert_error(client.get("/runs/1/events", headers={"Last-Event-ID": HUGE}), 422)
    assert tried >= 20


# -- search, FIFOs, uploads ---------------------------------------------------------------------

def test_search_is_a_substring_never_a_pattern(kg, db, seeded) -> None:
    bulk_graph(db, 2, 0, labels=["snake_case name", "back\\slash"])
    with serve(db) as server, server.client() as client:
        def labels(text: str) -> set[str]:
            return {c["label"] for c in client.get("/concepts", params={
                "search": text, "limit": 1000}).json()}

        assert "Sherlock Holmes" in labels("holmes")
        assert labels("%") == set()
        assert labels("_") == {"snake_case name"}
        assert labels("\\") == set()
        docs = client.get("/documents", params={"search": "%"}).json()
        assert docs == []
        assert client.get("/documents", params={"search": seeded.name}).json()
    listed = kg("concepts", "list", "--search", "%", "--json")
    assert listed.exit_code == 0 and json.loads(listed.stdout) == []


def test_a_fifo_named_in_a_run_is_refused_at_once(kg, db, ollama, tmp_path) -> None:
    use_server(kg, ollama.url)
    root = tmp_path / "docs"
    root.mkdir()
    os.mkfifo(root / "pipe.md")
    before = counts(db)
    with serve(db, roots=(root.resolve(),)) as server, server.client() as client:
        started = time.monotonic()
        answer = client.post("/runs", json={"paths": ["pipe.md"]}, timeout=10)
        assert time.monotonic() - started < 5
        assert_error(answer, 400, "pipe.md: not a regular file (a FIFO)")
        # In a folder, a FIFO is no document: left out, like hidden files.
        (root / "a.md").write_text(paragraphs(2), encoding="utf-8")
        run = client.post("/runs", json={"paths": [str(root)], "chunking": SMALL}, timeout=10)
        assert run.status_code == 202, run.text
    assert counts(db)["runs"] == before["runs"] + 1
    assert [Path(p).name for (p,) in rows(db, "SELECT path FROM documents")] == ["a.md"]


def test_rejected_uploads_are_deleted_and_earlier_ones_kept(kg, db, ollama, tmp_path) -> None:
    use_server(kg, ollama.url)
    uploads = tmp_path / "uploads"
    kept = paragraphs(2).encode()
    with serve(db, upload_dir=uploads) as server, server.client() as client:
        first = client.post("/runs", files={"files": ("kept.md", kept)})
        assert first.status_code == 202, first.text
        stored = set(uploads.iterdir())
        assert len(stored) == 1
        # Nothing to read: an empty file. The server does not keep it.
        assert_error(client.post("/runs", files={"files": ("empty.md", b"  \n")}), 400,
                     "empty file")
        assert set(uploads.iterdir()) == stored
        assert kg("admin", "extraction", "set", "--profile", "down", "--provider", "ollama",
                  "--model", "qwen3:8b", "--base-url", "http://127.0.0.1:9", "--timeout", "2",
                  "--activate").exit_code == 0
        # Refused (the backend is down): the new file goes, the earlier document's stays.
        refused = client.post("/runs", files=[("files", ("new.md", paragraphs(3).encode())),
                                              ("files", ("again.md", kept))])
        assert_error(refused, 502, "127.0.0.1:9")
        assert set(uploads.iterdir()) == stored


# -- secrets in URLs ----------------------------------------------------------------------------

@pytest.mark.parametrize("url, shown", [
    ("http://gpu:11434", "http://gpu:11434"),
    ("http://user:pw@gpu:11434/v1", "http://***@gpu:11434/v1"),
    ("http://tok@[::1]:8000/v1", "http://***@[::1]:8000/v1"),
    ("https://h/v1?api_key=abc&model=x", "https://h/v1?api_key=***&model=x"),
    ("https://h/v1?API_KEY=abc", "https://h/v1?API_KEY=***"),
    ("https://h/v1?key=abc&monkey=1&keyword=2", "https://h/v1?key=***&monkey=1&keyword=2"),
    ("https://h/o?X-Amz-Signature=abc&X-Amz-Credential=c&X-Amz-Date=1",
     "https://h/o?X-Amz-Signature=***&X-Amz-Credential=***&X-Amz-Date=1"),
    ("https://h/?access_token=a&accessToken=b&token=c&sig=d&secret=e&password=f",
     "https://h/?access_token=***&accessToken=***&token=***&sig=***&secret=***&password=***"),
    ("https://u:p@h/?client_secret=s#token=kgt_x", "https://***@h/?client_secret=***#token=***"),
])
def test_urls_shown_lose_user_info_and_secret_parameters(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_log_lines_and_database_urls_lose_secret_parameters() -> None:
    from kg.db.session import safe_url

    assert redact("POST https://h/v1?apiKey=s3cret failed") == \
        "POST https://h/v1?apiKey=*** failed"
    assert safe_url("postgresql+psycopg://kg:pw@db/kg?password=pw2&sslmode=require") == \
        "postgresql+psycopg://kg:***@db/kg?password=***&sslmode=require"
