"""The Duplicates panel in a real browser (Debian's headless Chromium through selenium): a
person accepts one grey-zone pair and rejects another, and the graph changes accordingly (one
concept merged, the rejected pair no longer listed, both decisions curation rows of the
page's token); then undoes both from the Recent decisions list."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from kg import tokens
from tests.browser import chromium, needs_browser
from tests.graph_seed import add_concepts, concept_labels, rows
from tests.test_server import serve
from tests.test_server_duplicates import GREY

pytestmark = needs_browser

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402

from tests.test_web import csp_violations, open_page, text_of, wait_for  # noqa: E402


@pytest.fixture
def dialect() -> str:
    """The page does not depend on the database: SQLite keeps the browser test quick."""
    return "sqlite"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from chromium("--window-size=1440,900")


def pair_item(driver: Any, a: str, b: str) -> Any:
    for item in driver.find_elements(By.CSS_SELECTOR, "#duplicate-list li.duplicate"):
        if {a, b} <= set(item.find_element(By.CSS_SELECTOR, ".pair").text.replace(
                " (person)", "").split(" ≈ ")):
            return item
    return None


def listed(driver: Any) -> list[str]:
    return [i.find_element(By.CSS_SELECTOR, ".pair").text
            for i in driver.find_elements(By.CSS_SELECTOR, "#duplicate-list li.duplicate")]


def decisions(driver: Any) -> list[Any]:
    return driver.find_elements(By.CSS_SELECTOR, "#decision-list li.decision")


def test_accept_and_reject_on_the_page_change_the_graph(browser, db) -> None:
    add_concepts(db, *GREY)
    with db.session() as session:
        _row, admin = tokens.create(session, "ops", "admin", by="tester")
    with serve(db) as server:
        open_page(browser, server.url + "/#token=" + admin)
        wait_for(browser, lambda d: len(listed(d)) == 2)
        item = pair_item(browser, "Ludwig Boltzmann", "Boltzmann")
        assert item is not None, listed(browser)
        assert "score 0.8" in item.find_element(By.CSS_SELECTOR, ".why").text

        item.find_element(By.CSS_SELECTOR, "button.accept").click()
        wait_for(browser, lambda d: "merged" in text_of(d, "message"))
        assert "Boltzmann" not in concept_labels(db) and "Ludwig Boltzmann" in concept_labels(db)
        wait_for(browser, lambda d: len(listed(d)) == 1)
        results = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#result-list li")]
        assert not [r for r in results if r.startswith("Boltzmann")], results

        coral = pair_item(browser, "coral reef", "coral")
        assert coral is not None, listed(browser)
        coral.find_element(By.CSS_SELECTOR, "button.reject").click()
        wait_for(browser, lambda d: "kept" in text_of(d, "message"))
        wait_for(browser, lambda d: text_of(d, "duplicate-list") == "No pairs to review.")
        assert {"coral", "coral reef"} <= concept_labels(db)
        assert rows(db, "SELECT action, created_by FROM curation_decisions ORDER BY id") == [
            ("merge", "token:ops"), ("keep_apart", "token:ops")]

        # Recent decisions, newest first: undo the keep-apart, and the pair is back for review.
        wait_for(browser, lambda d: len(decisions(d)) == 2)
        assert "kept" in decisions(browser)[0].text and "merged" in decisions(browser)[1].text
        decisions(browser)[0].find_element(By.CSS_SELECTOR, "button.undo").click()
        wait_for(browser, lambda d: "Undone" in text_of(d, "message"))
        wait_for(browser, lambda d: pair_item(d, "coral reef", "coral") is not None)
        # Undo the merge: Boltzmann is a concept of its own again.
        wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR,
                                                        "#decision-list li.undone")) == 1)
        decisions(browser)[1].find_element(By.CSS_SELECTOR, "button.undo").click()
        wait_for(browser, lambda d: "Boltzmann" in concept_labels(db))
        wait_for(browser, lambda d: not d.find_elements(By.CSS_SELECTOR,
                                                        "#decision-list button.undo"))
        assert not csp_violations(browser)
    assert rows(db, "SELECT action, undone_by FROM curation_decisions ORDER BY id") == [
        ("merge", "token:ops"), ("keep_apart", "token:ops")]
