"""The real Gradio app in headless Chromium: type a query, Retrieve, read the table and prompt.

Runs Debian's /usr/bin/chromium through Playwright's Python package (no `playwright install`);
`.ci/install-browser.sh` installs it. Skips with the reason when either is missing. Checks the
plain retrieval, a cluster filter chosen in the dropdown (every row obeys it), a clicked
example, and the over-long input error. Leaves a screenshot of the filtered result at
tests/artifacts/demo.png for a human to look at.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.serve.live_server import launched

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("UPRISE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
QUERY = "Premise: the cat sat on the mat. Hypothesis: an animal sat."
TIMEOUT_MS = 60_000


@pytest.fixture
def demo_url(prompt_retriever):
    pytest.importorskip("gradio", reason="gradio is not installed (pip install uprise[demo])")
    from serve import build_demo

    with launched(build_demo(prompt_retriever, examples=[QUERY], max_input_chars=200)) as url:
        yield url


@pytest.fixture
def page(demo_url):
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright Python package is not installed"
    )
    if not (os.path.isfile(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.skip(f"no Chromium at {CHROMIUM}; run `bash .ci/install-browser.sh`")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(demo_url, wait_until="domcontentloaded")
            yield page
        finally:
            browser.close()


def test_retrieve_shows_the_prompts_and_the_augmented_input(page, prompt_retriever):
    from playwright.sync_api import expect

    best = prompt_retriever.retrieve(QUERY, k=3)[0]
    page.locator("#uprise-query textarea").fill(QUERY)
    page.locator("#uprise-retrieve").click()
    table = page.locator("#uprise-prompts")
    expect(table).to_contain_text(best.text, timeout=TIMEOUT_MS)
    expect(table).to_contain_text(best.task)
    augmented = page.locator("#uprise-augmented textarea")
    expect(augmented).to_have_value(prompt_retriever.augment(QUERY, k=3))
    assert augmented.input_value().endswith(best.text + "\n\n" + QUERY)


def test_cluster_filter_and_diversity_are_respected(page, prompt_retriever):
    from playwright.sync_api import expect

    flt = {"cluster": ["commonsense"]}
    expected = prompt_retriever.retrieve(QUERY, k=2, filters=flt)
    page.locator("#uprise-query textarea").fill(QUERY)
    dropdown = page.locator("#uprise-cluster input")
    dropdown.click()
    page.get_by_role("option", name="commonsense", exact=True).click()
    page.keyboard.press("Escape")
    page.locator("#uprise-k input[type=number]").fill("2")
    page.locator("#uprise-k input[type=number]").press("Enter")
    page.locator("#uprise-retrieve").click()
    augmented = page.locator("#uprise-augmented textarea")
    expect(augmented).to_have_value(prompt_retriever.augment(QUERY, k=2, filters=flt),
                                    timeout=TIMEOUT_MS)
    table = page.locator("#uprise-prompts")
    for hit in expected:
        expect(table).to_contain_text(hit.text)
    for other in (p for p in prompt_retriever.prompts if p.cluster != "commonsense"):
        expect(table).not_to_contain_text(other.text)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo.png"), full_page=True)


def test_clicking_an_example_fills_the_input(page):
    from playwright.sync_api import expect

    page.get_by_text(QUERY.split(".")[0]).first.click()
    expect(page.locator("#uprise-query textarea")).to_have_value(QUERY, timeout=TIMEOUT_MS)


def test_too_long_input_shows_an_error_not_a_crash(page):
    from playwright.sync_api import expect

    page.locator("#uprise-query textarea").fill("x" * 201)
    page.locator("#uprise-retrieve").click()
    expect(page.get_by_text("has 201 characters").first).to_be_visible(timeout=TIMEOUT_MS)
    page.locator("#uprise-query textarea").fill(QUERY)
    page.locator("#uprise-retrieve").click()  # the app still serves after the error
    expect(page.locator("#uprise-augmented textarea")).to_have_value(
        re_endswith(QUERY), timeout=TIMEOUT_MS
    )


def re_endswith(text: str):
    import re

    return re.compile(re.escape(text) + r"$")
