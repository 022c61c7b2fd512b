"""The shipped monitoring, verified for real.

A real Prometheus (Debian's ``prometheus``) scrapes the server while an aiortc peer holds a short
spoken conversation with the embedded models; then every query of every panel of the shipped Grafana
dashboard runs against Prometheus's HTTP API and must return data. The shipped configuration files
are checked with ``promtool`` and against each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from agent.client.peer import TalkClient
from agent.client.talk import run_turn
from agent.config import Config
from agent.models.runtime import ModelRuntime
from tests import test_browser as page
from tests.conftest import free_port, running_server
from tests.speech import utterance

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

REPO_ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = REPO_ROOT / "config/grafana/dashboards/voice-agent.json"
PROMETHEUS_CONFIG = REPO_ROOT / "config/prometheus.yml"
COMPOSE = REPO_ROOT / "docker-compose.yml"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None,
    reason="needs Debian's prometheus package (prometheus, promtool): scripts/install.sh --test installs it",
)
# Grafana's $__rate_interval, as the test resolves it (scrapes every second).
RATE_INTERVAL = "1m"
GPU_METRICS = {"voice_agent_gpu_memory_allocated_bytes", "voice_agent_gpu_memory_reserved_bytes"}
QUESTIONS = ("What is the capital of France?", "How many people live there?")
# Histograms two spoken turns must fill; the other panels may be empty here (barge-in needs an interruption).
FILLED_BY_THE_CONVERSATION = {
    "voice_agent_voice_to_voice_seconds",
    "voice_agent_endpointing_seconds",
    "voice_agent_asr_seconds",
    "voice_agent_llm_first_token_seconds",
    "voice_agent_llm_first_phrase_seconds",
    "voice_agent_tts_first_audio_seconds",
    "voice_agent_client_mouth_to_ear_seconds",
    "voice_agent_client_round_trip_time_seconds",
}
SERVED_FOR = 60.0  # seconds allowed for Prometheus to start, scrape and catch up
# The page test's fixtures: the real server in a subprocess, headless Chromium with a fake microphone.
server_url, browser, question_wav = page.server_url, page.browser, page.question_wav


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel of the shipped dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bvoice_agent_[a-z_]+", expr))


def histograms_in(expr: str) -> set[str]:
    return {name.removesuffix("_bucket") for name in metric_names(expr) if name.endswith("_bucket")}


# --- the shipped files --------------------------------------------------------------------------


def test_every_dashboard_query_names_a_metric_the_server_exports():
    suffixes = {"histogram": ("_bucket", "_count", "_sum"), "counter": ("_total",), "gauge": ("",)}
    exported = set(GPU_METRICS)
    for family in REGISTRY.collect():  # labelled series appear only once used: go by family
        exported |= {family.name + suffix for suffix in suffixes.get(family.type, ())}
    queries = dashboard_queries()

    assert len({title for title, _ in queries}) >= 20
    for title, expr in queries:
        assert metric_names(expr), f"{title!r} queries no voice_agent metric"
        assert metric_names(expr) <= exported, f"{title!r} names {metric_names(expr) - exported}"
        assert "$__rate_interval" in expr or "rate(" not in expr, f"{title!r} hard-codes its rate window"


@needs_prometheus
def test_the_shipped_prometheus_config_passes_promtool():
    result = subprocess.run([PROMTOOL, "check", "config", str(PROMETHEUS_CONFIG)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_docker_compose_runs_the_server_prometheus_and_grafana_on_the_shipped_files():
    compose = yaml.safe_load(COMPOSE.read_text())
    services = {name: s for name, s in compose["services"].items() if "profiles" not in s}
    assert set(services) == {"server", "prometheus", "grafana"}
    assert (REPO_ROOT / services["server"]["build"] / "Dockerfile").is_file()
    mounts = {}
    for service in services.values():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("./"):
                assert (REPO_ROOT / source).exists(), f"{source} is mounted but not in the repository"
                mounts[target] = REPO_ROOT / source
    assert f"--config.file={'/etc/prometheus/prometheus.yml'}" in services["prometheus"]["command"]
    assert mounts["/etc/prometheus/prometheus.yml"] == PROMETHEUS_CONFIG

    provisioning = mounts["/etc/grafana/provisioning"]
    [datasource] = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())["datasources"]
    [provider] = yaml.safe_load((provisioning / "dashboards/voice-agent.yml").read_text())["providers"]
    assert mounts[provider["options"]["path"]] == DASHBOARD.parent
    dashboard = json.loads(DASHBOARD.read_text())
    panel_sources = {p["datasource"]["uid"] for p in dashboard["panels"] if p["type"] != "row"}
    assert panel_sources == {datasource["uid"]}

    # Host networking throughout: Prometheus scrapes the server where `voice-agent serve` listens by default.
    assert {s["network_mode"] for s in services.values()} == {"host"}
    job = yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"][0]
    assert job["static_configs"][0]["targets"] == [f"127.0.0.1:{Config().server.port}"]
    assert datasource["url"] == "http://127.0.0.1:9090"


def test_the_scale_profile_runs_two_voice_servers_on_one_vllm_and_one_postgres_behind_the_load_balancer():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    scale = {name: s for name, s in services.items() if "scale" in s.get("profiles", [])}
    assert set(scale) == {"vllm", "postgres", "voice-1", "voice-2", "lb"}
    voices = [scale["voice-1"], scale["voice-2"]]
    environments = [v["environment"] for v in voices]
    assert environments[0] == environments[1], "both servers use the same model server and the same records"
    assert environments[0]["VOICE_AGENT_LLM__BACKEND"] == "vllm"
    vllm_port = scale["vllm"]["command"][scale["vllm"]["command"].index("--port=8100")].split("=")[1]
    assert environments[0]["VOICE_AGENT_LLM__VLLM__URL"] == f"http://127.0.0.1:{vllm_port}"
    assert environments[0]["VOICE_AGENT_RECORDS__DATABASE_URL"].startswith("postgresql+asyncpg://")
    ports = [v["command"][v["command"].index("--port") + 1] for v in voices]
    lb_conf = (REPO_ROOT / "config" / "nginx-scale.conf").read_text()
    assert all(f"server 127.0.0.1:{port}" in lb_conf for port in ports)
    scraped = [t for job in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]
               for t in job["static_configs"][0]["targets"]]
    assert {f"127.0.0.1:{port}" for port in [*ports, vllm_port]} <= set(scraped)


# --- a real Prometheus scraping a real conversation ---------------------------------------------



@contextlib.contextmanager
def prometheus_scraping(target: str, folder: Path) -> Iterator[tuple[str, Path]]:
    """A Prometheus scraping ``target`` (host:port) every second; yields its URL and its log file."""
    config = folder / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [{"job_name": "voice-agent", "static_configs": [{"targets": [target]}]}],
            }
        )
    )
    port = free_port()
    log = folder / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://127.0.0.1:{port}", log
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class PrometheusApi:
    def __init__(self, http: aiohttp.ClientSession, url: str, log: Path) -> None:
        self.http, self.url, self.log = http, url, log

    async def query(self, expr: str, at: float | None = None) -> list[dict]:
        params = {"query": expr} | ({"time": f"{at:.3f}"} if at is not None else {})
        async with self.http.get(f"{self.url}/api/v1/query", params=params) as response:
            body = await response.json()
        assert body["status"] == "success", f"{expr}: {body}"
        return body["data"]["result"]

    async def wait_for(self, expr: str, holds: Callable[[list[dict]], bool], what: str) -> None:
        deadline = time.monotonic() + SERVED_FOR
        result: list[dict] | str = "no answer"
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                result = await self.query(expr)
                if holds(result):
                    return
            await asyncio.sleep(0.5)
        log = self.log.read_text(errors="replace").splitlines()[-20:]
        pytest.fail(f"{what}: {expr} gave {result} after {SERVED_FOR:.0f} s; Prometheus log:\n" + "\n".join(log))


def values(result: list[dict]) -> list[float]:
    return [float(series["value"][1]) for series in result]


def at_least(n: float) -> Callable[[list[dict]], bool]:
    return lambda result: bool(result) and values(result)[0] >= n


@contextlib.asynccontextmanager
async def conversation_scraped_by_prometheus(
    runtime: ModelRuntime, folder: Path
) -> AsyncIterator[PrometheusApi]:
    """Two spoken turns, each followed by the client's playout report, all scraped by Prometheus."""
    async with running_server(Config(), runtime) as (url, state):
        with prometheus_scraping(url.removeprefix("http://"), folder) as (prometheus_url, log):
            async with aiohttp.ClientSession() as http:
                api = PrometheusApi(http, prometheus_url, log)
                await api.wait_for('up{job="voice-agent"}', at_least(1), "Prometheus never scraped the server")
                async with TalkClient() as client:
                    await client.connect(url)
                    for question in QUESTIONS:
                        turn = await run_turn(client, utterance(question), 16_000, timeout=60)
                        assert turn.status == "completed" and turn.voice_to_voice_s is not None, turn
                        await client.report_playout(turn.voice_to_voice_s)
                turns = len(QUESTIONS)
                await api.wait_for('sum(voice_agent_turns_total{status="completed"})', at_least(turns), "turns")
                reports = "sum(voice_agent_client_mouth_to_ear_seconds_count)"
                await api.wait_for(reports, at_least(turns), "client reports")
                yield api


@needs_prometheus
async def test_every_dashboard_panel_returns_data_from_prometheus_scraping_a_spoken_conversation(runtime, tmp_path):
    async with conversation_scraped_by_prometheus(runtime, tmp_path) as prometheus:
        at = time.time()
        results = {
            (title, expr): await prometheus.query(expr.replace("$__rate_interval", RATE_INTERVAL), at)
            for title, expr in dashboard_queries()
        }
        histograms = set().union(*(histograms_in(expr) for _, expr in results))
        observed = {  # observations while Prometheus watched (other tests in this process may have made some)
            name: sum(values(await prometheus.query(f"sum(increase({name}_count[{RATE_INTERVAL}]))", at)))
            for name in histograms
        }
        ready = values(await prometheus.query("voice_agent_models_ready", at))
        warm_up = values(await prometheus.query("voice_agent_model_warm_up_seconds", at))

    empty = [title for (title, _), result in results.items() if not result]
    assert not empty, f"panels without data: {empty}"
    assert {name for name, count in observed.items() if count > 0} >= FILLED_BY_THE_CONVERSATION
    for (title, expr), result in results.items():
        # A latency panel draws a line once its histogram has observations; the others always do.
        # (Series of the scripted backends other tests in this process used stay NaN.)
        if all(observed[name] > 0 for name in histograms_in(expr)):
            assert any(math.isfinite(v) for v in values(result)), f"{title!r}: {expr} -> {result}"
    assert ready == [1.0] and warm_up[0] > 0

    by_title = {title: result for (title, _), result in results.items()}  # a panel's last target: p95
    completed = [float(s["value"][1]) for s in by_title["Turns"] if s["metric"].get("status") == "completed"]
    assert completed and completed[0] > 0
    p95_voice_to_voice = max(values(by_title["Voice-to-voice (server)"]))
    assert 0.1 < p95_voice_to_voice <= 5.0


# --- the page's own measurements -----------------------------------------------------------------


@pytest.mark.skipif(bool(page._missing), reason=f"needs Chromium, espeak-ng and sox; missing: {page._missing}")
def test_the_page_reports_mouth_to_ear_jitter_buffer_delay_and_round_trip_time_to_the_server(
    server_url: str, browser: WebDriver
) -> None:
    families = {
        "voice_agent_client_mouth_to_ear_seconds",
        "voice_agent_client_jitter_buffer_delay_seconds",
        "voice_agent_client_round_trip_time_seconds",
    }
    browser.get(server_url)
    browser.find_element(By.ID, "talk").click()

    # The page shows its own mouth-to-ear time on the answer's latency line, next to the server's.
    latency = WebDriverWait(browser, page.ANSWER_TIMEOUT_S, poll_frequency=0.25).until(
        lambda driver: driver.execute_script(
            "return [...document.querySelectorAll('#transcript .latency:not([hidden])')]"
            ".map((line) => line.textContent).find((text) => text.includes('mouth to ear'));"
        ),
        message=f"no latency line with the page's mouth-to-ear time within {page.ANSWER_TIMEOUT_S:.0f} s",
    )
    mouth_to_ear_ms = int(re.search(r"mouth to ear (\d+) ms", latency).group(1))
    voice_to_voice_ms = int(re.search(r"(\d+) ms voice to voice", latency).group(1))
    # Mouth to ear adds the endpointing silence and the way back to the server's voice-to-voice time.
    assert voice_to_voice_ms < mouth_to_ear_ms < voice_to_voice_ms + 2000

    WebDriverWait(browser, 10, poll_frequency=0.25).until(
        lambda driver: all(_observations(server_url, family) >= 1 for family in families),
        message=f"the server did not record the page's report: {[_observations(server_url, f) for f in families]}",
    )


def _observations(url: str, histogram: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == histogram + "_count":
                return sample.value
    return 0.0


@pytest.mark.skipif(bool(page._missing), reason=f"needs Chromium, espeak-ng and sox; missing: {page._missing}")
def test_an_interrupted_reply_shows_the_heard_words_and_strikes_through_the_unheard_rest(
    server_url: str, browser: WebDriver
) -> None:
    browser.get(server_url)
    # The events a barge-in produces, in the order the server sends them, fed to the page's handler.
    bubble = browser.execute_script(
        """
        const fake = { closed: false, monitor: null };
        call = fake;
        const delta = { type: "response.audio_transcript.delta", response_id: "r1", item_id: "i1" };
        const events = [
          { ...delta, delta: "Paris is" },
          { ...delta, delta: " the capital of France." },
          { type: "conversation.item.truncated", item_id: "i1", content_index: 0, audio_end_ms: 900, text: "Paris is" },
          { type: "response.audio_transcript.done", response_id: "r1", item_id: "i1", transcript: "Paris is" },
          { type: "response.done", response: { id: "r1", status: "cancelled", output_text: "Paris is" } },
        ];
        for (const event of events) handleMessage(fake, JSON.stringify(event));
        const message = document.querySelector("#transcript .from-agent");
        return {
          text: message.querySelector(".agent").textContent,
          struck: [...message.querySelectorAll(".agent del")].map((del) => del.textContent),
          note: message.querySelector(".note").textContent,
          interrupted: message.classList.contains("interrupted"),
        };
        """
    )
    assert bubble == {
        "text": "Paris is the capital of France.",
        "struck": ["the capital of France."],
        "note": "interrupted",
        "interrupted": True,
    }
