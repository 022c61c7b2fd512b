"""What /metrics, /health and /ready tell an operator, with scripted models standing in for the real ones."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import types

import aiohttp
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from agent import metrics
from agent.client.peer import TalkClient
from tests.conftest import running_server
from tests.fakes import scripted_runtime

# Every family the dashboard and the issue ask for, as the text parser names them (counters lose _total).
EXPECTED_FAMILIES = {
    "voice_agent_voice_to_voice_seconds": "histogram",
    "voice_agent_endpointing_seconds": "histogram",
    "voice_agent_asr_seconds": "histogram",
    "voice_agent_llm_first_token_seconds": "histogram",
    "voice_agent_llm_time_per_output_token_seconds": "histogram",
    "voice_agent_tts_first_audio_seconds": "histogram",
    "voice_agent_barge_in_seconds": "histogram",
    "voice_agent_client_mouth_to_ear_seconds": "histogram",
    "voice_agent_client_jitter_buffer_delay_seconds": "histogram",
    "voice_agent_client_round_trip_time_seconds": "histogram",
    "voice_agent_turns": "counter",
    "voice_agent_interruptions": "counter",
    "voice_agent_errors": "counter",
    "voice_agent_inbound_frames_dropped": "counter",
    "voice_agent_emotions": "counter",
    "voice_agent_active_sessions": "gauge",
    "voice_agent_models_ready": "gauge",
    "voice_agent_model_warm_up_seconds": "gauge",
}


async def get_json(url: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.json()


async def scrape(url: str) -> dict:
    """GET /metrics, parsed by Prometheus's own text parser: {family name: family}."""
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return {family.name: family for family in text_string_to_metric_families(await response.text())}


def sample(families: dict, family: str, name: str, **labels: str) -> float | None:
    for s in families[family].samples:
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


async def test_metrics_parse_with_the_prometheus_text_parser_with_units_in_names_and_zeros_before_traffic(config):
    async with running_server(config, scripted_runtime()) as (url, state):
        families = await scrape(url)

    for name, kind in EXPECTED_FAMILIES.items():
        assert families[name].type == kind, name
    for name, family in families.items():
        if name.startswith("voice_agent_") and family.type == "histogram":
            assert name.endswith("_seconds"), f"{name}: a latency histogram names its unit"
        for s in family.samples:
            assert "session" not in s.labels, f"{s.name} is labelled by session"
    # Known label values export 0 from the start, so rate() and the dashboard have a series at once.
    for status in ("completed", "cancelled", "failed"):
        assert sample(families, "voice_agent_turns", "voice_agent_turns_total", status=status) is not None
    assert sample(families, "voice_agent_errors", "voice_agent_errors_total", stage="asr") is not None
    assert sample(families, "voice_agent_models_ready", "voice_agent_models_ready") == 1
    backend = {"backend": "scripted-stt"}
    assert sample(families, "voice_agent_asr_seconds", "voice_agent_asr_seconds_count", **backend) is not None


async def wait_for_metric(url: str, family: str, name: str, above: float, timeout: float = 10.0) -> float:
    """Scrape until ``name`` exceeds ``above``; return its value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = sample(await scrape(url), family, name) or 0.0
        if value > above or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.05)


async def test_a_client_stats_event_on_the_data_channel_lands_in_the_client_histograms(config):
    histograms = {
        "mouth_to_ear_s": "voice_agent_client_mouth_to_ear_seconds",
        "jitter_buffer_delay_s": "voice_agent_client_jitter_buffer_delay_seconds",
        "round_trip_time_s": "voice_agent_client_round_trip_time_seconds",
    }
    report = {"mouth_to_ear_s": 1.25, "jitter_buffer_delay_s": 0.04, "round_trip_time_s": 0.003}
    async with running_server(config, scripted_runtime()) as (url, state):
        before = await scrape(url)
        async with TalkClient() as client:
            await client.connect(url)
            await client.send_event({"type": "agent.client.stats", "response_id": "resp_x_1", **report})
            rtt = histograms["round_trip_time_s"]
            await wait_for_metric(url, rtt, rtt + "_count", above=sample(before, rtt, rtt + "_count"))
        after = await scrape(url)

    for field, family in histograms.items():
        grown = sample(after, family, family + "_count") - sample(before, family, family + "_count")
        added = sample(after, family, family + "_sum") - sample(before, family, family + "_sum")
        assert grown == 1, family
        assert added == pytest.approx(report[field]), family


def client_histograms() -> dict[str, float]:
    """Count and sum of every client histogram, from the process's registry."""
    values = {}
    for histogram in metrics.CLIENT_REPORT_FIELDS.values():
        for suffix in ("_count", "_sum"):
            name = histogram._name + suffix
            values[name] = REGISTRY.get_sample_value(name)
    return values


def client_reports(result: str) -> float:
    return REGISTRY.get_sample_value("voice_agent_client_reports_total", {"result": result})


@pytest.mark.parametrize(
    "report",
    [
        {"type": "agent.client.stats"},
        {"type": "agent.client.stats", "mouth_to_ear_s": "1.2", "round_trip_time_s": None},
        {"type": "agent.client.stats", "mouth_to_ear_s": float("nan"), "jitter_buffer_delay_s": float("inf")},
        {"type": "agent.client.stats", "mouth_to_ear_s": -0.5, "round_trip_time_s": True},
        {"type": "agent.client.stats", "mouth_to_ear_s": 1e9, "jitter_buffer_delay_s": [0.1], "x": {"y": 1}},
        ["agent.client.stats", 1.2],
        "garbage",
        None,
    ],
)
def test_a_client_report_without_a_usable_value_is_counted_as_rejected_and_records_nothing(report):
    before, rejected = client_histograms(), client_reports("rejected")

    metrics.observe_client_report(report)

    assert client_histograms() == before
    assert client_reports("rejected") == rejected + 1


def test_a_client_report_keeps_its_good_values_and_drops_the_bad_ones():
    before, accepted = client_histograms(), client_reports("accepted")

    metrics.observe_client_report({"mouth_to_ear_s": 0.9, "round_trip_time_s": -1, "jitter_buffer_delay_s": "x"})

    changed = {name: value - before[name] for name, value in client_histograms().items() if value != before[name]}
    assert changed == {
        "voice_agent_client_mouth_to_ear_seconds_count": 1,
        "voice_agent_client_mouth_to_ear_seconds_sum": pytest.approx(0.9),
    }
    assert client_reports("accepted") == accepted + 1


def test_importing_metrics_and_scraping_never_imports_torch():
    code = (
        "import sys; from prometheus_client import generate_latest; import agent.metrics as m; "
        "generate_latest(); m.gpu_memory(); m.compute_device(); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


class FakeCuda:
    """torch.cuda as a process with one initialised GPU sees it."""

    def __init__(self, initialized: bool) -> None:
        self.initialized = initialized

    def is_initialized(self) -> bool:
        return self.initialized

    def device_count(self) -> int:
        return 1

    def current_device(self) -> int:
        return 0

    def get_device_name(self, index: int) -> str:
        return "Fake GPU"

    def memory_allocated(self, index: int) -> int:
        return 3 * 2**30

    def memory_reserved(self, index: int) -> int:
        return 4 * 2**30


async def test_gpu_memory_is_exported_and_reported_only_once_the_process_has_initialised_cuda(config, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=FakeCuda(initialized=False)))
    async with running_server(config, scripted_runtime()) as (url, state):
        assert "voice_agent_gpu_memory_reserved_bytes" not in await scrape(url)
        assert (await get_json(url + "/health"))[1]["device"] == "cpu"

        monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=FakeCuda(initialized=True)))
        families = await scrape(url)
        _, health = await get_json(url + "/health")

    reserved = "voice_agent_gpu_memory_reserved_bytes"
    assert sample(families, reserved, reserved, device="cuda:0") == 4 * 2**30
    allocated = "voice_agent_gpu_memory_allocated_bytes"
    assert sample(families, allocated, allocated, device="cuda:0") == 3 * 2**30
    assert health["device"] == "cuda:0 (Fake GPU)"
    assert health["gpu_memory"] == {"cuda:0": {"allocated_bytes": 3 * 2**30, "reserved_bytes": 4 * 2**30}}


async def test_health_and_ready_report_models_warm_up_device_gpu_memory_and_sessions(config):
    runtime = scripted_runtime()
    runtime.load_seconds, runtime.warm_up_seconds = 1.5, 0.25
    async with running_server(config, runtime) as (url, state):
        async with TalkClient() as client:
            await client.connect(url)
            health_status, health = await get_json(url + "/health")
            ready_status, ready = await get_json(url + "/ready")
        families = await scrape(url)

    assert health_status == 200 and ready_status == 200
    for body in (health, ready):
        assert body["ready"] is True
        assert body["models_loaded"] is True and body["warm_up_done"] is True
        assert body["sessions"] == 1 and body["max_sessions"] == config.server.max_sessions
        assert body["device"] == metrics.compute_device()
        assert body["gpu_memory"] == metrics.gpu_memory()
    assert health["status"] == "alive"
    assert ready["models"] == {"stt": "scripted-stt", "chat": "scripted-chat", "tts": "tone-tts"}
    assert ready["warm_up_seconds"] == 0.25
    warm_up = "voice_agent_model_warm_up_seconds"
    assert sample(families, warm_up, warm_up) == 0.25
    assert math.isclose(sample(families, "voice_agent_model_load_seconds", "voice_agent_model_load_seconds"), 1.5)
