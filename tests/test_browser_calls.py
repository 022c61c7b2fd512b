"""The Calls view against the real server: upload a recording, find it, play it from a turn, tag it, delete it.

Headless Chromium drives the page as a user would: the Calls tab, the file picker, the filter form, the
call's page with its player and transcript. The server runs in a subprocess with its records in a
temporary folder, and transcribes the upload as a background job.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests import test_browser
from tests.conftest import free_port
from tests.test_browser import CHROMEDRIVER, CHROMIUM, CHROMIUM_FLAGS, REPO_ROOT

pytestmark = test_browser.pytestmark

SPOKEN = "Hello, I am calling about my invoice. It was charged twice. Please send me a refund."
SAID_WORD = "invoice"
UNSAID_WORD = "elephant"
# Silence before the words, so that the first turn starts well after 0 and seeking to it is visible.
LEADING_SILENCE_S = 2.0
TRAILING_SILENCE_S = 1.0
TRANSCRIBE_TIMEOUT_S = 120.0
STEP_TIMEOUT_S = 15.0
# How far the player may be from a turn's start once it plays from there (it keeps playing meanwhile).
SEEK_TOLERANCE_S = 1.5
TAGS = "billing, urgent"


@pytest.fixture
def call_wav(tmp_path: Path) -> Path:
    """A short spoken call about an invoice, as a WAV file with a name a user would upload."""
    spoken, wav = tmp_path / "spoken.wav", tmp_path / "invoice-call.wav"
    subprocess.run(["espeak-ng", "-w", str(spoken), SPOKEN], check=True)
    subprocess.run(["sox", str(spoken), str(wav), "pad", str(LEADING_SILENCE_S), str(TRAILING_SILENCE_S)], check=True)
    return wav


@pytest.fixture
def server_url(tmp_path: Path) -> Iterator[str]:
    """The real server, its call records in a folder of this test, stopped at the end whatever happens."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    env = {**os.environ, "VOICE_AGENT_RECORDS__DATA_DIR": str(tmp_path / "records")}
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "agent", "serve", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        test_browser._wait_until_ready(server, url, log_path)
        yield url
    finally:
        test_browser._stop(server)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_an_uploaded_call_is_transcribed_found_played_from_a_turn_tagged_and_deleted(
    server_url: str, browser: WebDriver, call_wav: Path, tmp_path: Path
) -> None:
    browser.get(server_url)
    browser.find_element(By.ID, "tab-calls").click()
    _wait(browser, lambda d: d.find_element(By.ID, "calls-list-view").is_displayed(), "the Calls view")
    assert "/calls" in browser.current_url
    assert not browser.find_element(By.ID, "talk").is_displayed()

    try:
        # Upload: the row appears and reaches "done" once the background transcription has run.
        browser.find_element(By.ID, "upload-file").send_keys(str(call_wav))
        _wait(
            browser,
            lambda d: _row_statuses(d) == ["done"],
            "the uploaded call transcribed",
            TRANSCRIBE_TIMEOUT_S,
            fail_on=lambda d: "failed" in _row_statuses(d),
        )
        assert _text(browser, ".upload-job .call-status") == "done"
        assert call_wav.name in _text(browser, ".call-row")

        # Words said find the call; words not said find nothing.
        _filter_by_words(browser, SAID_WORD)
        assert len(_rows(browser)) == 1
        _filter_by_words(browser, UNSAID_WORD)
        assert _rows(browser) == []
        assert browser.find_element(By.ID, "calls-empty").is_displayed()
        _filter_by_words(browser, "")
        assert len(_rows(browser)) == 1

        # The call's page: clicking the turn that mentions the invoice plays the recording from its start.
        _rows(browser)[0].click()
        turn = _wait(browser, lambda d: _turn_saying(d, SAID_WORD), f"a transcript turn with {SAID_WORD!r}")
        assert browser.find_element(By.ID, "call-detail").is_displayed()
        start_s = int(turn.get_attribute("data-start-ms")) / 1000
        assert start_s > LEADING_SILENCE_S / 2, "the turn starts where the words start, after the silence"
        turn.find_element(By.CSS_SELECTOR, ".turn-text").click()
        playing = _wait(browser, lambda d: _player(d) if not _player(d)["paused"] else None, "the recording playing")
        assert abs(playing["currentTime"] - start_s) < SEEK_TOLERANCE_S, f"played from {playing}, turn at {start_s} s"

        # Tags are saved and still there after a reload.
        tags_input = browser.find_element(By.ID, "tags-input")
        tags_input.clear()
        tags_input.send_keys(TAGS)
        browser.find_element(By.ID, "tags-save").click()
        _wait(browser, lambda d: _text(d, "#tags-saved") == "Tags saved.", "the tags saved")
        browser.refresh()
        _wait(
            browser,
            lambda d: d.find_element(By.ID, "tags-input").get_attribute("value") == TAGS,
            "the saved tags after a reload",
        )
        assert _text(browser, "#call-meta .tags").split() == ["billing", "urgent"]

        # Delete, confirmed: back on the list, which is empty.
        browser.find_element(By.ID, "call-delete").click()
        WebDriverWait(browser, STEP_TIMEOUT_S).until(expected_conditions.alert_is_present()).accept()
        _wait(
            browser,
            lambda d: d.find_element(By.ID, "calls-empty").is_displayed() and not _rows(d),
            "the empty list after deleting",
        )
        assert browser.find_element(By.ID, "calls-list-view").is_displayed()
    finally:
        screenshot = tmp_path / "calls.png"
        browser.save_screenshot(str(screenshot))
        print(f"screenshot: {screenshot}")


def _wait(driver: WebDriver, condition, what: str, timeout_s: float = STEP_TIMEOUT_S, fail_on=None):
    """Wait for ``condition`` to be truthy and return it; fail at once when the page shows an error."""

    def check(d: WebDriver):
        if _error_text(d) or (fail_on is not None and fail_on(d)):
            return True
        return condition(d)

    try:
        result = WebDriverWait(driver, timeout_s, poll_frequency=0.25).until(check)
    except TimeoutException:
        pytest.fail(f"no {what} within {timeout_s:.0f} s; {_page_summary(driver)}")
    if _error_text(driver) or (fail_on is not None and fail_on(driver)):
        pytest.fail(f"the page failed while waiting for {what}; {_page_summary(driver)}")
    return result


def _filter_by_words(driver: WebDriver, words: str) -> None:
    field = driver.find_element(By.ID, "filter-q")
    field.clear()
    field.send_keys(words)
    driver.find_element(By.ID, "filter-apply").click()
    # The submit marks the list busy at once; it is the filtered list once the mark is gone.
    _wait(
        driver,
        lambda d: d.find_element(By.ID, "calls-list").get_attribute("aria-busy") is None,
        f"the list filtered by {words!r}",
    )


def _rows(driver: WebDriver) -> list:
    return driver.find_elements(By.CSS_SELECTOR, "#calls-list .call-row[data-id]")


def _row_statuses(driver: WebDriver) -> list[str]:
    # Read in one script: the list re-renders while an upload progresses, so elements found in one call
    # may be gone by the next.
    return driver.execute_script(
        "return [...document.querySelectorAll('#calls-list .call-row .call-status')].map(e => e.innerText.trim());"
    )


def _turn_saying(driver: WebDriver, word: str):
    for turn in driver.find_elements(By.CSS_SELECTOR, "#call-turns .turn[data-start-ms]"):
        try:
            if word in turn.text.lower():
                return turn
        except StaleElementReferenceException:
            return None  # re-rendered while read; the next poll finds the new one
    return None


def _player(driver: WebDriver) -> dict:
    return driver.execute_script(
        "const a = document.getElementById('call-audio');"
        "return {paused: a.paused, currentTime: a.currentTime, src: a.currentSrc, error: a.error && a.error.code};"
    )


def _text(driver: WebDriver, selector: str) -> str:
    elements = driver.find_elements(By.CSS_SELECTOR, selector)
    return elements[0].text.strip() if elements else ""


def _error_text(driver: WebDriver) -> str:
    return _text(driver, "#calls-error")


def _page_summary(driver: WebDriver) -> str:
    rows = [row.text for row in _rows(driver)]
    uploads = [item.text for item in driver.find_elements(By.CSS_SELECTOR, ".upload-job")]
    return f"url={driver.current_url} error={_error_text(driver)!r} rows={rows} uploads={uploads}"
