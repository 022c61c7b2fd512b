"""The web page against the real server: a spoken question shows up in the transcript with an answer.

Headless Chromium plays a WAV of a question as its microphone, the page connects over WebRTC, and
the transcript on the page must show the question and the agent's reply, as a user would see them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.conftest import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
QUESTION = "What is the capital of France?"
READY_TIMEOUT_S = 180.0
ANSWER_TIMEOUT_S = 60.0
# Chromium loops the fake microphone file. The long silence after the question gives the agent time
# to answer before the question comes round again (which would interrupt the answer).
FAKE_MIC_FORMAT = ("-r", "48000", "-b", "16", "-c", "1", "-e", "signed-integer")
LEADING_SILENCE_S = 1.0
TRAILING_SILENCE_S = 15.0
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--window-size=1000,800",
)

_missing = [tool for tool in (CHROMIUM, CHROMEDRIVER, "espeak-ng", "sox") if shutil.which(tool) is None]
pytestmark = pytest.mark.skipif(
    bool(_missing),
    reason=f"the browser test needs Chromium, chromedriver, espeak-ng and sox; missing: {_missing}",
)


@pytest.fixture(scope="module")
def question_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The question as Chromium's fake microphone wants it: 48 kHz 16-bit mono PCM WAV."""
    folder = tmp_path_factory.mktemp("audio")
    spoken, wav = folder / "spoken.wav", folder / "question.wav"
    subprocess.run(["espeak-ng", "-w", str(spoken), QUESTION], check=True)
    pad = ["pad", str(LEADING_SILENCE_S), str(TRAILING_SILENCE_S)]
    subprocess.run(["sox", str(spoken), *FAKE_MIC_FORMAT, str(wav), *pad], check=True)
    return wav


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real server with its real models, in a subprocess, stopped at the end whatever happens."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "agent", "serve", "--port", str(port)],
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_until_ready(server, url, log_path)
        yield url
    finally:
        _stop(server)


@pytest.fixture
def browser(question_wav: Path, tmp_path: Path) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    options.add_argument(f"--use-file-for-fake-audio-capture={question_wav}")
    # An explicit chromedriver path keeps Selenium Manager from downloading one.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_spoken_question_shows_in_the_transcript_with_the_answer_and_its_latency(
    server_url: str, browser: WebDriver, tmp_path: Path
) -> None:
    browser.get(server_url)
    talk = browser.find_element(By.ID, "talk")
    assert talk.text == "Talk"
    talk.click()

    screenshot = tmp_path / "conversation.png"
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    try:
        _wait_for(browser, deadline, _answered, "the question and an answer")
        _wait_for(browser, deadline, _latency_shown, "the answer's latency")
    finally:
        browser.save_screenshot(str(screenshot))
        print(f"screenshot: {screenshot}")

    assert talk.text == "Stop"

    # The language selector lists every language the agent must speak and reaches the session.
    languages = browser.execute_script("return [...document.querySelectorAll('#language option')].map(o => o.value)")
    assert {"auto", "en", "es", "hi", "zh", "bn"} <= set(languages)
    assert browser.find_element(By.ID, "language").get_attribute("value") == "en"
    Select(browser.find_element(By.ID, "language")).select_by_value("es")
    WebDriverWait(browser, 10).until(
        lambda driver: driver.find_element(By.ID, "transcript").get_attribute("data-language") == "es"
    )


def _wait_for(
    driver: WebDriver, deadline: float, condition: Callable[[list[tuple[str, str]]], bool], what: str
) -> None:
    """Wait until ``condition`` holds for the transcript; fail at once if the page shows an error."""
    try:
        WebDriverWait(driver, max(deadline - time.monotonic(), 0.0), poll_frequency=0.25).until(
            lambda driver: condition(_transcript(driver)) or _error_text(driver)
        )
    except TimeoutException:
        pytest.fail(f"no {what} within {ANSWER_TIMEOUT_S:.0f} s of Talk; {_page_summary(driver)}")
    assert not _error_text(driver), f"the page shows an error; {_page_summary(driver)}"


def _transcript(driver: WebDriver) -> list[tuple[str, str]]:
    """The transcript's lines in page order, as (kind, text) with kind "user", "agent" or "latency"."""
    lines = driver.execute_script(
        "return [...document.querySelectorAll("
        "'#transcript .user, #transcript .agent, #transcript .latency:not([hidden])')]"
        ".map((line) => [line.className, line.textContent]);"
    )
    return [(kind, text.strip()) for kind, text in lines]


def _after_question(lines: list[tuple[str, str]]) -> list[tuple[str, str]]:
    for i, (kind, text) in enumerate(lines):
        if kind == "user" and "capital" in text.lower():
            return lines[i + 1 :]
    return []


def _answered(lines: list[tuple[str, str]]) -> bool:
    """A user line mentions the capital and a non-empty agent line comes after it."""
    return any(kind == "agent" and text for kind, text in _after_question(lines))


def _latency_shown(lines: list[tuple[str, str]]) -> bool:
    """An answer to the question is followed by its latency line, with the voice-to-voice time."""
    answer = _after_question(lines)
    return any(
        kind == "agent" and text and next_kind == "latency" and "voice to voice" in next_text
        for (kind, text), (next_kind, next_text) in pairwise(answer)
    )


def _error_text(driver: WebDriver) -> str:
    return driver.find_element(By.ID, "error").text


def _page_summary(driver: WebDriver) -> str:
    state = driver.find_element(By.ID, "state").text
    return f"state={state!r} error={_error_text(driver)!r} transcript={json.dumps(_transcript(driver))}"



def _wait_until_ready(server: subprocess.Popen, url: str, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the server exited with code {server.returncode}:\n{_tail(log_path)}")
        try:
            with urllib.request.urlopen(f"{url}/ready", timeout=5) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            # 503 while models load; an "error" in the body means they failed and never will.
            body = json.loads(exc.read() or b"{}")
            if body.get("error"):
                pytest.fail(f"the server's models failed to load: {body['error']}\n{_tail(log_path)}")
        except OSError:
            pass  # not listening yet
        time.sleep(0.5)
    pytest.fail(f"the server was not ready within {READY_TIMEOUT_S:.0f} s:\n{_tail(log_path)}")


def _stop(server: subprocess.Popen) -> None:
    """Stop the server and anything it started (it runs in its own process group)."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    server.wait(timeout=10)


def _tail(log_path: Path, lines: int = 40) -> str:
    return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
