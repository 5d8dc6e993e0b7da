"""The web page in a real browser: Debian's headless Chromium driven by selenium through the
system chromedriver, against a real `kg serve` app on 127.0.0.1 with a seeded graph.

Skipped (with the reason) only when chromium or chromium-driver is not installed; CI installs
them (apt-get install chromium chromium-driver).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kg import queries, tokens
from tests.browser import chromium, needs_browser
from tests.fakes import NAME, TYPES, FakeOllama, Reply, chunk_of
from tests.graph_seed import ingest_story, rows, use_server
from tests.test_ingest import paragraphs
from tests.test_server import serve, slow_ollama

pytestmark = needs_browser

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

SHERLOCK = """# The household

Sherlock Holmes lives at Baker Street in London with Doctor Watson. Mrs Hudson keeps the house
and Inspector Lestrade of Scotland Yard often calls for help with a difficult case.

# Enemies

Professor Moriarty runs a criminal network across London. Colonel Moran serves Moriarty.
Irene Adler outwits Sherlock Holmes in Bohemia. Mycroft Holmes works for the British Government
in Whitehall. Doctor Watson served in Afghanistan before he met Sherlock Holmes.
"""


@pytest.fixture
def dialect() -> str:
    """The page does not depend on the database: SQLite keeps the browser tests quick."""
    return "sqlite"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from chromium("--window-size=1440,900", "--hide-scrollbars")


def wait_for(driver: Any, condition: Callable[[Any], Any], timeout: float = 20) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)


def open_page(driver: Any, url: str) -> None:
    driver.get(url)
    wait_for(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))


def text_of(driver: Any, element_id: str) -> str:
    """The element's text as the page set it (CSS may change its case on screen)."""
    return str(driver.find_element(By.ID, element_id).get_attribute("textContent")).strip()


def click_node(driver: Any, label: str) -> None:
    """A real mouse click on the node's place on the canvas."""
    x, y, width, height = driver.execute_script(  # brought into view first, as a user would
        "const node = kg.cy.nodes().filter(n => n.data('label') === arguments[0])[0];"
        "kg.cy.center(node); const p = node.renderedPosition(); const box = kg.cy.container();"
        "return [p.x, p.y, box.clientWidth, box.clientHeight];", label)
    canvas = driver.find_element(By.ID, "graph")
    ActionChains(driver).move_to_element_with_offset(
        canvas, int(x - width / 2), int(y - height / 2)).click().perform()


def search(driver: Any, text: str) -> None:
    """Search like a user and wait until the graph drawn for this search is on screen."""
    drawn = driver.find_element(By.ID, "graph").get_attribute("data-drawn") or "0"
    driver.find_element(By.ID, "search").send_keys(text, Keys.ENTER)
    wait_for(driver, lambda d: (d.find_element(By.ID, "graph").get_attribute("data-drawn")
                                or "0") != drawn)


def csp_violations(driver: Any) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser")
            if "Content Security Policy" in entry["message"]]


def test_search_click_a_node_and_read_its_evidence(browser, kg, db, ollama, tmp_path) -> None:
    use_server(kg, ollama.url)
    doc = ingest_story(kg, tmp_path, content=SHERLOCK)
    text = doc.read_text(encoding="utf-8")
    with serve(db) as server:
        open_page(browser, server.url)
        search(browser, "holmes")
        assert "within 2 of Sherlock Holmes" in text_of(browser, "graph-status")
        results = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#result-list li")]
        assert any(r.startswith("Sherlock Holmes") for r in results)
        assert any(r.startswith("Mycroft Holmes") for r in results)
        labels = set(browser.execute_script("return kg.cy.nodes().map(n => n.data('label'))"))
        assert {"Sherlock Holmes", "Baker Street", "London"} <= labels

        click_node(browser, "London")
        wait_for(browser, lambda d: text_of(d, "detail-label") == "London")
        quotes = browser.find_elements(By.CSS_SELECTOR, "#detail-evidence li")
        assert quotes
        for item in quotes:
            quote = item.find_element(By.CSS_SELECTOR, "blockquote").text
            where = item.find_element(By.CSS_SELECTOR, ".where").text
            match = re.search(r"^(.+) · characters (\d+)–(\d+) · run (\d+)$", where)
            assert match, where
            assert Path(match.group(1)) == doc.resolve()
            assert text[int(match.group(2)):int(match.group(3))] == quote
        relations = [e.text for e in browser.find_elements(By.CSS_SELECTOR,
                                                           "#detail-relationships li")]
        with db.session() as session:
            expected = queries.concept_detail(session, "London")["relationships"]
        assert len(relations) == len(expected) > 0
        assert all(any(r["concept"] in line and r["type"] in line for line in relations)
                   for r in expected)

        # Filters: hiding a relation type hides its edges.
        visible = "return kg.cy.edges().filter(e => !e.hasClass('hidden')).length"
        shown = browser.execute_script(visible)
        box = browser.find_element(By.CSS_SELECTOR, "#type-filters input")
        hidden_type = box.get_attribute("value")
        box.click()
        fewer = browser.execute_script(visible)
        of_type = browser.execute_script(
            "return kg.cy.edges().filter(e => e.data('type') === arguments[0]).length",
            hidden_type)
        assert fewer == shown - of_type < shown
        slider = browser.find_element(By.ID, "min-confidence")
        browser.execute_script("arguments[0].value = 1; arguments[0].dispatchEvent("
                               "new Event('input'))", slider)
        assert browser.execute_script(visible) == 0  # every edge has confidence 0.8

        browser.execute_script("arguments[0].value = 0; arguments[0].dispatchEvent("
                               "new Event('input'))", slider)
        box.click()
        assert browser.execute_script(visible) == shown

        # Expanding London adds its neighbours that the view around Holmes did not reach.
        in_view = set(browser.execute_script("return kg.cy.nodes().map(n => n.data('label'))"))
        missing = {r["concept"] for r in expected} - in_view
        assert missing
        browser.find_element(By.ID, "expand").click()
        wait_for(browser, lambda d: missing <= set(d.execute_script(
            "return kg.cy.nodes().map(n => n.data('label'))")))
        assert not csp_violations(browser)


def test_a_run_started_on_the_page_shows_live_progress(browser, kg, db, tmp_path) -> None:
    with slow_ollama(0.6) as ollama:
        use_server(kg, ollama.url)
        assert kg("admin", "extraction", "set", "--max-parallel", "1").exit_code == 0
        doc = tmp_path / "report.md"
        doc.write_text(paragraphs(40), encoding="utf-8")
        with serve(db, poll_s=0.1) as server:
            open_page(browser, server.url)
            browser.find_element(By.ID, "run-files").send_keys(str(doc))
            browser.find_element(By.CSS_SELECTOR, "#run-form button").click()
            seen: list[str] = []
            deadline = time.monotonic() + 90
            status = ""
            while status != "completed":
                assert time.monotonic() < deadline, seen
                items = browser.find_elements(By.CSS_SELECTOR, "#run-list li.run")
                if items:
                    status = items[0].find_element(By.CSS_SELECTOR, ".status").text
                    counts = items[0].find_element(By.CSS_SELECTOR, ".counts").text
                    if counts and (not seen or seen[-1] != counts):
                        seen.append(counts)
                time.sleep(0.05)
    ((run_id, total),) = rows(db, "SELECT id, chunks_total FROM runs")
    assert total >= 4
    done = [int(s.split("/")[0]) for s in seen]
    # Progress arrived chunk by chunk while the run went, not only at its end.
    assert any(0 < d < total for d in done) and done == sorted(done)
    assert seen[-1] == f"{total}/{total} chunks"
    log = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#run-log li")]
    assert sum(1 for line in log if line.startswith(f"run {run_id}: ") and "chunk" in line) \
        == total
    assert any(line.startswith(f"run {run_id} completed") for line in log)
    assert not csp_violations(browser)


def test_the_page_asks_for_a_token_and_an_admin_switches_the_profile(browser, kg, db, ollama,
                                                                     tmp_path) -> None:
    use_server(kg, ollama.url)
    ingest_story(kg, tmp_path)
    with db.session() as session:
        _row, reader = tokens.create(session, "viewer", "read", by="tester")
        _row, admin = tokens.create(session, "ops", "admin", by="tester")
    with serve(db) as server:
        open_page(browser, server.url)
        wait_for(browser, lambda d: "needs a token" in text_of(d, "message"))
        browser.find_element(By.ID, "token").send_keys(reader, Keys.ENTER)
        wait_for(browser, lambda d: text_of(d, "whoami") == "viewer (read)")
        wait_for(browser, lambda d: "Sherlock Holmes" in text_of(d, "result-list"))
        assert not browser.find_element(By.ID, "run-form").is_displayed()
        assert not browser.find_element(By.ID, "profile-activate").is_displayed()

        browser.find_element(By.ID, "token").send_keys(admin, Keys.ENTER)
        wait_for(browser, lambda d: text_of(d, "whoami") == "ops (admin)")
        select = browser.find_element(By.ID, "profile-select")
        select.find_element(By.CSS_SELECTOR, "option[value='default']").click()
        browser.find_element(By.ID, "profile-activate").click()
        wait_for(browser, lambda d: text_of(d, "message") == "Active profile: default")
    assert rows(db, "SELECT name FROM extraction_profiles WHERE active") == [("default",)]
    assert rows(db, "SELECT changed_by FROM profile_changes ORDER BY id DESC LIMIT 1") == [
        ("token:ops",)]


CANON = """Sherlock Holmes shares rooms at Baker Street in London with Doctor Watson, while
Mrs Hudson keeps the house.

Doctor Watson served in Afghanistan and writes for the Strand Magazine about Sherlock Holmes.

Professor Moriarty directs a criminal network across London with Colonel Moran and Fred Porlock.

Inspector Lestrade of Scotland Yard asks Sherlock Holmes for help with the Baskerville case.

Mycroft Holmes works for the British Government in Whitehall and visits the Diogenes Club.

Irene Adler outwits Sherlock Holmes in Bohemia and marries Godfrey Norton.
"""


def star_reply(body: dict[str, Any]) -> Reply:
    """Each chunk's first name linked to the others (a livelier picture than a chain)."""
    names = list(dict.fromkeys(m.group() for m in NAME.finditer(chunk_of(body))))[:8]
    concepts = [{"label": n, "description": f"{n}, as the text has it.",
                 "search_terms": [n.split()[-1].lower()], "quote": n} for n in names]
    relationships = [{"source": names[0], "type": TYPES[i % len(TYPES)], "target": n,
                      "confidence": round(0.55 + 0.06 * i, 2), "quote": names[0]}
                     for i, n in enumerate(names[1:], 1)]
    return Reply(json.dumps({"concepts": concepts, "relationships": relationships}))


@pytest.mark.skipif(not os.environ.get("KG_WEB_SCREENSHOT"),
                    reason="writes the README screenshot: KG_WEB_SCREENSHOT=docs/screenshot.png")
def test_screenshot(browser, kg, db, tmp_path) -> None:
    with FakeOllama(responder=star_reply) as ollama:
        use_server(kg, ollama.url)
        ingest_story(kg, tmp_path, content=CANON)
    with serve(db) as server:
        browser.set_window_size(1440, 860)
        open_page(browser, server.url)
        search(browser, "Sherlock")
        assert "of Sherlock Holmes" in text_of(browser, "graph-status")
        click_node(browser, "Doctor Watson")
        wait_for(browser, lambda d: text_of(d, "detail-label") == "Doctor Watson")
        time.sleep(0.3)
        target = Path(os.environ["KG_WEB_SCREENSHOT"])
        target.parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(target))


def test_ocr_evidence_shows_its_page_with_the_box(browser, kg, db, ollama, tmp_path) -> None:
    from tests.test_ocr import SLIDE, save, slide

    use_server(kg, ollama.url)
    path = save(slide(SLIDE), tmp_path / "slide.png")  # 1280 x 720
    assert kg("ingest", str(path)).exit_code == 0
    with db.session() as session:
        [quote] = queries.concept_detail(session, "Pierre Curie")["evidence"]
    [place] = quote["places"]
    with serve(db) as server:
        open_page(browser, server.url)
        search(browser, "pierre")
        click_node(browser, "Pierre Curie")
        wait_for(browser, lambda d: text_of(d, "detail-label") == "Pierre Curie")
        where = browser.find_element(By.CSS_SELECTOR, "#detail-evidence .where").text
        assert where.endswith(" · page 1")
        image = wait_for(browser, lambda d: d.find_element(
            By.CSS_SELECTOR, "#detail-evidence .page-thumb img"))
        wait_for(browser, lambda d: d.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", image))
        assert browser.execute_script("return arguments[0].naturalWidth", image) == 1024
        frame = browser.execute_script(
            "const r = arguments[0].getBoundingClientRect(); return [r.x, r.y, r.width, r.height]",
            image)
        mark = browser.execute_script(
            "const r = document.querySelector('#detail-evidence .page-box')"
            ".getBoundingClientRect(); return [r.x, r.y, r.width, r.height]")
        scale = frame[2] / 1280  # the thumbnail as shown, whatever the panel's width
        x0, y0, x1, y1 = place["box"]
        assert abs(mark[0] - (frame[0] + x0 * scale)) < 2
        assert abs(mark[1] - (frame[1] + y0 * scale)) < 2
        assert abs(mark[2] - (x1 - x0) * scale) < 2 and abs(mark[3] - (y1 - y0) * scale) < 2
        assert frame[0] <= mark[0] and mark[0] + mark[2] <= frame[0] + frame[2]
        assert not csp_violations(browser)
