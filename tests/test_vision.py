"""The vision profile: images and scanned pages described by a vision model over Ollama's and
OpenAI's image protocols (fake servers that check base64 and answer a blind model's real
error), the describe reader in ingest, the `calls` rows of both readers, both databases."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import httpx
import pytest
from PIL import Image

from kg.extraction import ocr
from kg.profiles.settings import ProviderSettings
from kg.providers import build_provider
from kg.providers.base import Image as ProviderImage
from kg.providers.base import VisionUnsupported
from kg.providers.registry import spec
from tests.fakes import FakeCompat, FakeModel, FakeOllama, FakeVLLM, Reply, chunk_of, graph_reply
from tests.test_ingest import rows, use_server
from tests.test_ocr import SLIDE, save, scanned_pdf, slide

DESCRIPTION = ("Marie Curie discovered Polonium\nShe worked in Paris with Pierre Curie\n\n"
               "Shown: a slide with two lines of text and a box labelled Radium Institute.")
VISION_MODEL = "qwen2.5vl:7b"


def png(size: tuple[int, int] = (64, 32)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, "white").save(out, format="PNG")
    return out.getvalue()


def settings(provider: str, model: str, base_url: str | None) -> ProviderSettings:
    return ProviderSettings(profile_name="eyes", revision=1, provider=provider, model=model,
                            base_url=base_url, timeout_s=5)


def answer(body: dict[str, Any]) -> Reply:
    """A description for requests with an image, a graph for extraction requests."""
    images = any(m.get("images") or isinstance(m.get("content"), list)
                 for m in body.get("messages") or [])
    return Reply(DESCRIPTION) if images else Reply(graph_reply(chunk_of(body)))


@pytest.fixture
def server():
    with FakeOllama(models=[FakeModel("qwen3:8b", ["completion"]),
                            FakeModel(VISION_MODEL, ["completion", "vision"])],
                    responder=answer) as fake:
        yield fake


@pytest.fixture(autouse=True)
def _fresh_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ocr, "_ready", set())


# -- the fakes speak the image protocols exactly -------------------------------------------

def test_fake_ollama_takes_plain_base64_and_refuses_images_for_a_blind_model(server) -> None:
    data = png()
    ok = httpx.post(f"{server.url}/api/chat", json={
        "model": VISION_MODEL, "stream": False,
        "messages": [{"role": "user", "content": "what?",
                      "images": [base64.b64encode(data).decode()]}]})
    assert ok.status_code == 200 and server.images == [data]
    prefixed = httpx.post(f"{server.url}/api/chat", json={
        "model": VISION_MODEL, "stream": False,
        "messages": [{"role": "user", "content": "what?", "images": [
            "data:image/png;base64," + base64.b64encode(data).decode()]}]})
    assert prefixed.status_code == 400
    assert prefixed.json()["error"].startswith("illegal base64 data at input byte 4")
    blind = httpx.post(f"{server.url}/api/chat", json={
        "model": "qwen3:8b", "stream": False,
        "messages": [{"role": "user", "content": "what?",
                      "images": [base64.b64encode(data).decode()]}]})
    assert blind.status_code == 500
    assert blind.json() == {"error": "this model is missing data required for image input"}
    shown = httpx.post(f"{server.url}/api/show", json={"model": VISION_MODEL}).json()
    assert "vision" in shown["capabilities"]


def test_fake_openai_servers_take_data_urls_and_answer_their_own_refusals() -> None:
    data = png()
    part = {"type": "image_url",
            "image_url": {"url": "data:image/png;base64," + base64.b64encode(data).decode()}}
    body = {"model": "Qwen/Qwen2.5-VL-7B-Instruct", "max_tokens": 16, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "what?"}, part]}]}
    with FakeVLLM(served_model="Qwen/Qwen2.5-VL-7B-Instruct", vision=True) as seeing:
        assert httpx.post(f"{seeing.base_url}/chat/completions", json=body).status_code == 200
        assert seeing.images == [data]
        bad = {**body, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,%%%"}}]}]}
        assert httpx.post(f"{seeing.base_url}/chat/completions", json=bad).status_code == 400
    with FakeVLLM(served_model="Qwen/Qwen2.5-VL-7B-Instruct") as blind:
        refused = httpx.post(f"{blind.base_url}/chat/completions", json=body)
        assert refused.status_code == 400
        assert refused.json()["error"]["message"] == ("At most 0 image(s) may be provided in "
                                                      "one prompt.")
    with FakeCompat("llama-server") as no_projector:
        refused = httpx.post(f"{no_projector.base_url}/chat/completions", json=body)
        assert refused.status_code == 400 and "mmproj" in refused.json()["error"]["message"]


# -- providers -----------------------------------------------------------------------------

def test_specs_declare_images() -> None:
    assert spec("ollama").images and spec("vllm").images and spec("openai").images
    assert not spec("llamacpp").images
    assert spec("ollama").as_dict()["images"] is True


def test_ollama_describe_sends_the_image_and_refuses_a_blind_model_before_chat(server) -> None:
    data = png()
    provider = build_provider(settings("ollama", VISION_MODEL, server.url))
    try:
        completion = provider.describe("Read this image.", ProviderImage(data))  # type: ignore[attr-defined]
        assert completion.content == DESCRIPTION and completion.prompt_tokens > 0
        assert server.images == [data]
        assert provider.vision_check().status == "ok"  # type: ignore[attr-defined]
    finally:
        provider.close()
    blind = build_provider(settings("ollama", "qwen3:8b", server.url))
    chats = server.chat_count
    try:
        with pytest.raises(VisionUnsupported, match=r"cannot see images .capabilities: "
                                                    r"completion.; give the vision profile"):
            blind.describe("Read this image.", ProviderImage(data))  # type: ignore[attr-defined]
    finally:
        blind.close()
    assert server.chat_count == chats  # /api/show said so: no chat request was sent


def test_ollama_blind_model_that_claims_vision_gets_the_servers_error(server) -> None:
    provider = build_provider(settings("ollama", "qwen3:8b", server.url))
    # A stale /api/show (the model was replaced since): the chat answers the runner's error.
    provider.show()["capabilities"].append("vision")  # type: ignore[attr-defined]
    try:
        with pytest.raises(VisionUnsupported, match="missing data required for image input"):
            provider.describe("Read this image.", ProviderImage(png()))  # type: ignore[attr-defined]
    finally:
        provider.close()


@pytest.mark.parametrize("flavour", ["vllm", "llama-server", "lmstudio"])
def test_openai_compatible_describe_and_blind_models(flavour: str) -> None:
    data = png()
    model = "Qwen/Qwen2.5-VL-7B-Instruct"
    make = (lambda **kw: FakeVLLM(served_model=model, **kw)) if flavour == "vllm" else (
        lambda **kw: FakeCompat(flavour, served_model=model, **kw))
    provider_name = "vllm" if flavour == "vllm" else "openai"
    with make(vision=True, responder=lambda b: Reply("A white rectangle.")) as seeing:
        provider = build_provider(settings(provider_name, model, seeing.base_url))
        try:
            completion = provider.describe("Read this image.", ProviderImage(data))  # type: ignore[attr-defined]
            assert completion.content == "A white rectangle." and seeing.images == [data]
            part = seeing.chat_bodies()[0]["messages"][0]["content"][1]
            assert part["image_url"]["url"].startswith("data:image/png;base64,")
            assert provider.vision_check().status == "ok"  # type: ignore[attr-defined]
        finally:
            provider.close()
    with make() as blind:
        provider = build_provider(settings(provider_name, model, blind.base_url))
        try:
            with pytest.raises(VisionUnsupported, match="cannot see images"):
                provider.vision_check()  # type: ignore[attr-defined]
        finally:
            provider.close()


# -- the setting, the preflight --------------------------------------------------------------

def vision_profile(kg, url: str, model: str = VISION_MODEL) -> None:
    made = kg("admin", "extraction", "set", "--profile", "eyes", "--provider", "ollama",
              "--model", model, "--base-url", url, "--timeout", "5")
    assert made.exit_code == 0, made.stderr
    named = kg("admin", "extraction", "set", "--profile", "test", "--vision-profile", "eyes")
    assert named.exit_code == 0, named.stderr


def test_vision_profile_is_a_setting_and_the_preflight_checks_it(kg, db, server) -> None:
    use_server(kg, server.url)
    vision_profile(kg, server.url)
    shown = json.loads(kg("admin", "extraction", "show", "--json").stdout)
    assert shown["vision_profile"] == "eyes"
    test = kg("admin", "extraction", "test")
    assert test.exit_code == 0, test.stdout + test.stderr
    [line] = [x for x in test.stdout.splitlines() if "vision" in x.split()[1:2]]
    assert line.startswith("OK") and "eyes" in line
    kg("admin", "extraction", "set", "--profile", "eyes", "--model", "qwen3:8b")
    failed = kg("admin", "extraction", "test")
    assert failed.exit_code == 1
    [line] = [x for x in failed.stdout.splitlines() if "vision" in x.split()[1:2]]
    assert line.startswith("FAIL") and "cannot see images" in line
    cleared = kg("admin", "extraction", "set", "--vision-profile", "")
    assert cleared.exit_code == 0, cleared.stderr
    assert json.loads(kg("admin", "extraction", "show", "--json").stdout)["vision_profile"] \
        is None
    too_long = kg("admin", "extraction", "set", "--vision-profile", "x" * 65)
    assert too_long.exit_code == 2 and "vision_profile" in too_long.stderr


def test_missing_vision_profile_is_one_line_before_any_run(kg, db, server, tmp_path) -> None:
    use_server(kg, server.url)
    kg("admin", "extraction", "set", "--vision-profile", "ghost")
    path = save(slide(SLIDE), tmp_path / "slide.png")
    result = kg("ingest", str(path))
    assert result.exit_code == 2 and result.stderr.strip().count("\n") == 0
    assert "vision profile 'ghost', which does not exist" in result.stderr
    assert rows(db, "SELECT count(*) FROM runs") == [(0,)]


# -- ingest through the describe reader -------------------------------------------------------

def test_images_and_scans_are_described_with_calls_rows(kg, db, server, tmp_path) -> None:
    use_server(kg, server.url)
    vision_profile(kg, server.url)
    folder = tmp_path / "docs"
    folder.mkdir()
    save(slide(SLIDE, box="Radium Institute"), folder / "slide.png")
    (folder / "scan.pdf").write_bytes(scanned_pdf([slide(["Ada Lovelace"])]))
    result = kg("ingest", str(folder), "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "completed" and summary["documents"] == 2
    texts: dict[str, list[str]] = {}
    for kind, text in rows(db, "SELECT d.kind, c.text FROM chunks c JOIN documents d "
                               "ON d.id = c.document_id ORDER BY d.id, c.ordinal"):
        texts.setdefault(kind, []).append(text)
    # An image, and a scanned page of few words, is read block by block: the text on it,
    # then what it shows.
    assert texts["image"] == texts["pdf"] == DESCRIPTION.split("\n\n")
    for (source_map,) in rows(db, "SELECT source_map FROM documents"):
        data = json.loads(source_map) if isinstance(source_map, str) else source_map
        assert [p["reader"] for p in data["pages"]] == ["describe"] and data["words"] == []
    assert len(server.images) == 2 and all(i.startswith(b"\x89PNG") for i in server.images)
    calls = rows(db, "SELECT kind, provider, model, profile_name, prompt_tokens, chunk_id, "
                     "run_id FROM calls WHERE kind = 'describe'")
    assert len(calls) == 2
    assert {c[:4] for c in calls} == {("describe", "ollama", VISION_MODEL, "eyes")}
    assert all(c[4] > 0 and c[5] is None and c[6] == summary["run_id"] for c in calls)
    # Evidence points at the page as a whole.
    shown = json.loads(kg("concepts", "show", "Pierre Curie", "--json").stdout)
    places = [p for e in shown["evidence"] for p in e["places"]]
    assert places and all(p["page"] == 1 and p["box"] is None for p in places)
    by_kind = json.loads(kg("admin", "extraction", "analytics", "--by", "kind", "--json").stdout)
    kinds = {r["kind"]: r for r in by_kind}
    assert kinds["describe"]["calls"] == 2 and kinds["describe"]["prompt_tokens"] > 0
    assert kinds["extract"]["chunks"] >= 1


def test_a_blind_vision_model_skips_images_and_the_run_goes_on(kg, db, server,
                                                                tmp_path) -> None:
    use_server(kg, server.url)
    vision_profile(kg, server.url, model="qwen3:8b")
    folder = tmp_path / "docs"
    folder.mkdir()
    save(slide(SLIDE), folder / "a.png")
    save(slide(SLIDE), folder / "b.png")
    (folder / "notes.txt").write_text("Sherlock Holmes lives in London.", encoding="utf-8")
    result = kg("ingest", str(folder), "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "completed" and summary["documents"] == 1
    reasons = [reason for _path, reason in summary["skipped"]]
    assert len(reasons) == 2 and all("cannot see images" in r and "\n" not in r
                                     for r in reasons)
    assert rows(db, "SELECT kind FROM documents") == [("text",)]
    assert rows(db, "SELECT count(*) FROM calls WHERE kind = 'describe'") == [(0,)]
    assert server.images == []


def test_ocr_pages_are_calls_rows_too(kg, db, server, tmp_path) -> None:
    use_server(kg, server.url)
    path = save(slide(SLIDE), tmp_path / "slide.png")
    result = kg("ingest", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    [(kind, provider, model, profile, tokens, latency)] = rows(
        db, "SELECT kind, provider, model, profile_name, prompt_tokens + completion_tokens, "
            "latency_ms FROM calls WHERE kind = 'ocr'")
    assert (kind, provider, model, profile, tokens) == ("ocr", "tesseract", "tesseract",
                                                        "test", 0)
    assert latency > 0


def test_the_vision_profiles_fallback_describes_when_it_is_down(kg, db, server,
                                                                 tmp_path) -> None:
    use_server(kg, server.url)
    down = "http://127.0.0.1:9"  # nothing listens on the discard port
    for name, url in (("eyes", down), ("spare", server.url)):
        made = kg("admin", "extraction", "set", "--profile", name, "--provider", "ollama",
                  "--model", VISION_MODEL, "--base-url", url, "--timeout", "5")
        assert made.exit_code == 0, made.stderr
    kg("admin", "extraction", "set", "--profile", "eyes", "--fallback-profile", "spare")
    kg("admin", "extraction", "set", "--profile", "test", "--vision-profile", "eyes")
    path = save(slide(SLIDE), tmp_path / "slide.png")
    result = kg("ingest", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["documents"] == 1
    assert rows(db, "SELECT profile_name, fallback FROM calls WHERE kind = 'describe'") == [
        ("spare", True)]


def test_describer_sends_upright_png_on_white_and_is_reusable(server) -> None:
    from kg.extraction.vision import Describer

    clear = Image.new("RGBA", (300, 100), (0, 0, 0, 0))  # transparent black underneath
    out = io.BytesIO()
    clear.save(out, format="PNG")
    describer = Describer([settings("ollama", VISION_MODEL, server.url)])
    try:
        [(page, call)] = describer.read_image(out.getvalue())
    finally:
        describer.close()
    assert page.text == DESCRIPTION and (page.width, page.height) == (300, 100)
    assert call.kind == "describe" and call.model == VISION_MODEL and call.prompt_tokens > 0
    sent = Image.open(io.BytesIO(server.images[0]))
    assert sent.format == "PNG" and sent.convert("RGB").getpixel((0, 0)) == (255, 255, 255)


def test_a_vision_profile_whose_provider_cannot_send_images(kg, db, server, tmp_path) -> None:
    use_server(kg, server.url)
    made = kg("admin", "extraction", "set", "--profile", "eyes", "--provider", "llamacpp")
    assert made.exit_code == 0, made.stderr
    kg("admin", "extraction", "set", "--profile", "test", "--vision-profile", "eyes")
    path = save(slide(SLIDE), tmp_path / "slide.png")
    (tmp_path / "notes.txt").write_text("Sherlock Holmes lives in London.", encoding="utf-8")
    result = kg("ingest", str(path), str(tmp_path / "notes.txt"), "--json")
    assert result.exit_code == 0, result.stderr
    [(_path, reason)] = json.loads(result.stdout)["skipped"]
    assert reason.startswith("vision profile eyes uses provider llamacpp, which cannot send "
                             "images; give it one that can (ollama, vllm, openai)")
    test = kg("admin", "extraction", "test")
    [line] = [x for x in test.stdout.splitlines() if "vision" in x.split()[1:2]]
    assert line.startswith("FAIL") and "cannot send images" in line
