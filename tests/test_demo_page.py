"""The demo page (GET /, app/static/demo.html): served self-contained with a strict CSP, left out of the
OpenAPI document, and used as a person would in a real headless Chromium (Selenium driving Debian's
chromium + chromium-driver) against a real uvicorn server with the small artifact and an API key.

Without a browser the browser test skips locally, and fails under CI (CI set): .ci/run installs one."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import serve, uvicorn_server

KEY = "demo-key-0123456789"


# --- served as a static, self-contained page ----------------------------------------------------------


@pytest.mark.asyncio
async def test_page_is_self_contained_and_not_in_the_api_schema(small_artifact: Path) -> None:
    async with serve(small_artifact) as (_, client):
        r = await client.get("/")
        schema = (await client.get("/openapi.json")).json()
    assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    page = r.text
    assert "http://" not in page and "https://" not in page  # no CDN, no remote fonts or scripts
    assert "<script src" not in page and "@import" not in page and "url(" not in page
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert "script-src 'sha256-" in csp and "style-src 'sha256-" in csp
    assert 'href="docs"' in page and 'fetch("predict"' in page  # relative: works behind a path prefix
    assert "/" not in schema["paths"]


@pytest.mark.asyncio
async def test_page_can_be_turned_off(small_artifact: Path) -> None:
    async with serve(small_artifact, demo_page=False) as (_, client):
        assert (await client.get("/")).status_code == 404


@pytest.mark.asyncio
async def test_page_is_public_when_an_api_key_protects_predict(small_artifact: Path) -> None:
    async with serve(small_artifact, api_key=KEY, protect_ops=True) as (_, client):
        assert (await client.get("/")).status_code == 200  # static HTML, no data
        assert (await client.post("/predict", json={"text": "fine"})).status_code == 401


# --- in a real browser --------------------------------------------------------------------------------


def _no_browser(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the browser test (.ci/run installs chromium and chromium-driver)")
    pytest.skip(f"{reason}; install it to run the browser test (apt-get install chromium chromium-driver)")


@pytest.fixture
def browser() -> Iterator[Any]:
    try:
        from selenium import webdriver
    except ImportError:
        _no_browser("selenium is not installed (pip install -e '.[dev]')")
    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    chromedriver = shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        _no_browser(f"no Chromium/chromedriver on PATH (chromium: {chromium}, chromedriver: {chromedriver})")
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never try to download anything
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1000,1400", "--lang=en-US"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=chromedriver))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def server(small_artifact: Path) -> Iterator[str]:
    with uvicorn_server(small_artifact, SENTIMENT_API_KEY=KEY) as running:
        yield running.url


def _analyse(driver: Any, *, expect: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element(By.ID, "analyse").click()
    target = "error" if expect == "error" else "result"

    def done(d: Any) -> bool:
        return d.find_element(By.ID, target).is_displayed() and d.find_element(By.ID, "analyse").is_enabled()

    WebDriverWait(driver, 30).until(done)


@pytest.mark.slow
def test_a_person_types_a_review_and_sees_label_and_highlighted_tokens(
    browser: Any, server: str, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    sentence = "A gorgeous, witty, seductive movie. I don't think it's dull at all!"
    auth = {"Authorization": f"Bearer {KEY}"}
    r = httpx.post(f"{server}/predict", json={"text": sentence, "explain": True}, headers=auth)
    expected = r.json()["predictions"][0]

    browser.get(server + "/")
    assert browser.title == "Sentiment demo"
    # every control has a label a screen reader announces
    for control in ("text", "key"):
        assert browser.find_element(By.CSS_SELECTOR, f"label[for={control}]").text
    assert browser.find_element(By.LINK_TEXT, "API documentation").get_attribute("href") == server + "/docs"

    browser.find_element(By.ID, "text").send_keys(sentence)
    _analyse(browser, expect="error")  # no key yet: the API's 401 message, shown to the person
    error = browser.find_element(By.ID, "error")
    assert error.get_attribute("role") == "alert"
    assert "missing or invalid API key" in error.text and "request id" in error.text, error.text

    browser.find_element(By.ID, "key").send_keys(KEY)
    _analyse(browser, expect="result")
    assert not browser.find_element(By.ID, "error").is_displayed()
    assert browser.find_element(By.ID, "label").text == expected["label"]
    probs = browser.find_elements(By.CSS_SELECTOR, "#probs li")
    assert len(probs) == len(expected["probabilities"])
    marks = browser.find_elements(By.CSS_SELECTOR, "#highlighted .tok")
    tokens = expected["explanation"]["tokens"]
    assert len(marks) == len(tokens) > 10
    # the marks are the tokens' own characters in the original text, coloured by the sign of their score
    for mark, tok in zip(marks, tokens, strict=True):
        assert mark.text == sentence[tok["start"] : tok["end"]]
    assert browser.find_element(By.ID, "highlighted").text == sentence  # nothing lost or moved
    best = max(tokens, key=lambda t: t["score"])
    best_mark = marks[tokens.index(best)]
    towards_second = (best["score"] > 0) == (expected["label"] == list(expected["probabilities"])[1])
    assert ("pos" if towards_second else "neg") in best_mark.get_attribute("class").split()
    assert best_mark.value_of_css_property("background-color") != "rgba(0, 0, 0, 0)"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#top li")) == 5

    shot = tmp_path / "demo-page.png"
    browser.save_screenshot(str(shot))
    print(f"demo page screenshot: {shot}")

    # offsets count code points: an emoji before a token must not shift the highlights (JS strings
    # count UTF-16 units). chromedriver types only BMP characters, so this text is pasted by script.
    tricky = "\U0001f600 Great fun, but I DON'T like the \u201cending\u201d\u2026"
    box = browser.find_element(By.ID, "text")
    browser.execute_script("arguments[0].value = arguments[1]", box, tricky)
    _analyse(browser, expect="result")
    marks = browser.find_elements(By.CSS_SELECTOR, "#highlighted .tok")
    assert browser.find_element(By.ID, "highlighted").text == tricky
    assert [m.text for m in marks][:4] == ["\U0001f600", "Great", "fun", ","]
    assert "N'T" in [m.text for m in marks] and "\u2026" in [m.text for m in marks]

    # the page loads nothing but itself and /predict, and its CSP blocks nothing it needs
    log = browser.get_log("browser")
    errors = [e for e in log if e["level"] == "SEVERE" and "/predict" not in e["message"]]
    assert errors == [], errors
