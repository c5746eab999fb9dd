"""End to end in a real browser: Debian's chromium, driven by Playwright, uses the ``aiayn serve`` page.

Needs ``chromium`` (``apt-get install --no-install-recommends chromium``) and the ``playwright`` Python
package (its own browser download is never used: ``playwright install`` is not needed). When either
is missing the tests fail under CI (the ``CI`` environment variable is set) and are skipped elsewhere.
Set ``AIAYN_SCREENSHOT=path.png`` to keep a screenshot of the explored page.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import urllib.request
from pathlib import Path

import pytest

from aiayn.cli.serve import ServeLimits, make_server
from aiayn.modeldir import load_model_dir
from tiny_translation import tiny_translation_model_dir

CHROMIUM = os.environ.get("AIAYN_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Nothing but this machine: chromium would otherwise still look up outside hosts.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
]
LIMITS = ServeLimits(max_chars=100, max_tokens=40, max_output_tokens=6)


# Tiny models gain nothing from a second thread, and on a busy machine they lose a lot.
pytestmark = pytest.mark.usefixtures("one_thread")


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the browser test (.ci/run installs it)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright Python package is not installed")
    if not Path(CHROMIUM).exists() and shutil.which(CHROMIUM) is None:
        _missing(f"no chromium at {CHROMIUM}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server():
    srv = make_server(load_model_dir(tiny_translation_model_dir()), "127.0.0.1", 0, 1, LIMITS)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    refused: list[int] = []  # 4xx answers some tests ask for on purpose (chromium logs each one)
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("response", lambda r: refused.append(r.status) if r.status >= 400 else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    page.goto(server.url)
    # Locator waits, not wait_for_function: the page's CSP forbids the eval that the latter needs.
    page.wait_for_selector("#model-info:has-text('heads')")
    yield page
    context.close()
    problems = [p for p in problems if not (refused and "Failed to load resource" in p)]
    assert problems == []  # no script errors, no CSP violations, no alert()


def api(server, text: str) -> dict:
    request = urllib.request.Request(
        server.url + "api/translate",
        data=json.dumps({"text": text}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_translate_and_explore_attention(page, server):
    text = "我是一个学生"
    expected = api(server, text)
    assert expected["translation"]
    page.fill("#text", text)
    page.click("#submit")
    page.wait_for_selector("#explorer:not([hidden])")
    assert page.text_content("#output") == expected["translation"]

    # The default view: cross-attention of the last layer, heads averaged.
    assert page.input_value("#layer") == "1" and page.input_value("#head") == "mean"
    page.select_option("#head", "1")
    page.select_option("#layer", "0")
    weights = expected["attention"]["cross"][0][1]  # layer 0, head 1: [T][S]
    rows = page.locator("#heatmap tbody tr")
    assert rows.count() == len(expected["target_tokens"])
    drawn = page.eval_on_selector_all(
        "#heatmap tbody tr",
        "rows => rows.map(r => [...r.querySelectorAll('td')].map(td => Number(td.dataset.w)))",
    )
    assert drawn == weights
    keys = page.eval_on_selector_all("#heatmap thead th.key", "ths => ths.map(th => th.title)")
    assert keys == expected["source_tokens"]
    # Tokens are text, never markup: "<bos>" is shown as typed, not parsed as an element.
    assert page.text_content("#query-tokens .token .t >> nth=0") == "<bos>"
    assert page.text_content("#heatmap tbody th.query >> nth=0") == "<bos>"

    # Hovering a query token shows what it attends to, weight by weight.
    page.hover("#query-tokens .token >> nth=2")
    shown = page.eval_on_selector_all("#key-tokens .token .w", "ws => ws.map(w => w.textContent)")
    assert shown == [f"{w:.2f}" for w in weights[2]]
    assert "attends most to" in page.text_content("#focus")

    # Another kind of attention: the encoder's, source against source.
    page.select_option("#view", label="encoder self-attention (source → source)")
    assert page.locator("#heatmap tbody tr").count() == len(expected["source_tokens"])
    page.hover("#key-tokens .token >> nth=1")
    assert "is attended to most by" in page.text_content("#focus")
    page.select_option("#view", index=0)
    page.hover("#heatmap tbody tr >> nth=1 >> td >> nth=0")
    if os.environ.get("AIAYN_SCREENSHOT"):
        page.screenshot(path=os.environ["AIAYN_SCREENSHOT"], full_page=True)


def test_user_text_is_never_markup(page):
    payload = '<img src=x onerror="window.pwned=1">"我"'
    page.fill("#text", payload)
    page.press("#text", "Enter")  # Enter submits
    page.wait_for_selector("#explorer:not([hidden])")
    assert page.evaluate("window.pwned") is None
    assert page.locator("img").count() == 0
    # The tokens of the payload appear as text on the page's token chips.
    assert page.locator("#query-tokens .token").count() > 3


def test_errors_are_shown_and_the_page_keeps_working(page):
    page.fill("#text", "   ")
    page.click("#submit")
    assert page.text_content("#error") == "Type a sentence first."
    page.fill("#text", "我" * 60)  # within the character limit, over the token limit
    page.click("#submit")
    page.wait_for_selector("#error:has-text('tokens')")
    assert page.text_content("#error") == "the text has 61 tokens; the limit is 40"
    assert page.get_attribute("#text", "maxlength") == "100"
    page.fill("#text", "我爱中国")
    page.click("#submit")
    page.wait_for_selector("#explorer:not([hidden])")
    assert page.is_hidden("#error") and page.text_content("#output")
