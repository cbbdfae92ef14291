"""The chat page in headless Chromium (Debian's build, driven by Playwright): ask, watch the
answer stream in, open a cited passage; light and dark."""

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.serving.conftest import ServerFactory

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_ask_a_question_and_open_a_citation(
    serve: ServerFactory, browser: Any, scheme: str
) -> None:
    server = serve()
    page = browser.new_page(color_scheme=scheme)
    try:
        page.goto(server.url + "/")
        assert page.title() == "LoreChat"
        page.fill("#question", "How do I fix a flat tyre?")
        page.click("#send")
        answer = page.locator(".turn .answer").first
        answer.wait_for(state="visible", timeout=30_000)
        page.wait_for_function(
            "document.querySelector('.turn .label')?.textContent.length > 0", timeout=30_000
        )
        assert "inner tube" in answer.inner_text()
        assert "Extractive answer" in page.locator(".turn .label").first.inner_text()
        citation = page.locator(".turn details.citation").first
        assert "bikes.txt" in citation.locator("summary").inner_text()
        passage = citation.locator(".passage")
        assert not passage.is_visible()
        citation.locator("summary").click()
        assert passage.is_visible()
        assert "puncture" in passage.inner_text()
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == ("rgb(18, 18, 22)" if scheme == "dark" else "rgb(250, 250, 250)")
    finally:
        page.close()


def test_errors_are_shown_not_swallowed(serve: ServerFactory, browser: Any) -> None:
    from serving.settings import ApiKey, hash_api_key

    server = serve(api_keys=[ApiKey(name="k", sha256=hash_api_key("right-key"))])
    page = browser.new_page()
    try:
        page.goto(server.url + "/")
        page.fill("#apikey", "wrong-key")
        page.fill("#question", "anything")
        page.click("#send")
        error = page.locator(".turn .answer.error").first
        error.wait_for(state="visible", timeout=30_000)
        assert "unknown API key" in error.inner_text()
    finally:
        page.close()
