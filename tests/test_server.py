"""The HTTP surface and session lifecycle, with scripted models standing in for the real ones."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.client.peer import TalkClient
from agent.client.talk import run_turn
from tests.conftest import running_server
from tests.fakes import scripted_runtime
from tests.speech import silence, speak, trim

AUDIO_ONLY_OFFER_LINES = ("v=0", "o=- 0 0 IN IP4 127.0.0.1", "s=-", "t=0 0")


@pytest.fixture(scope="module")
def question() -> np.ndarray:
    return np.concatenate([speak("What is the capital of France?"), silence(0.2)])


async def post(url: str, data: bytes | str, headers: dict | None = None) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/offer", data=data, headers=headers) as response:
            return response.status, await response.json()


async def test_health_is_alive_and_ready_is_503_until_models_are_loaded(config):
    never_ready = asyncio.Event()
    async with running_server(config, None) as (url, state):
        state.load_models = never_ready.wait  # keep it loading
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "/health") as response:
                assert response.status == 200
            state.runtime = None
            async with http.get(url + "/ready") as response:
                assert response.status == 503
                assert (await response.json())["ready"] is False
        status, body = await post(
            url, json.dumps({"sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", "type": "offer"})
        )
        assert status == 503 and "GET /ready" in body["error"]


@pytest.mark.parametrize(
    "body, status, message",
    [
        ("{not json", 400, "not JSON"),
        (json.dumps({"sdp": 5, "type": "offer"}), 400, "expected JSON"),
        (json.dumps({"sdp": "v=0", "type": "answer"}), 400, "expected JSON"),
        (
            json.dumps(
                {
                    "sdp": "\r\n".join(AUDIO_ONLY_OFFER_LINES + ("m=video 9 UDP/TLS/RTP/SAVPF 96",)),
                    "type": "offer",
                }
            ),
            400,
            "no audio",
        ),
        (
            json.dumps({"sdp": "v=0\r\nm=audio 9 garbage\r\n", "type": "offer"}),
            400,
            "cannot use this SDP offer",
        ),
        ("[" * 30_000 + "]" * 30_000, 400, "nested too deeply"),
    ],
)
async def test_bad_offers_get_400_with_a_message_and_leave_no_session(config, body, status, message):
    async with running_server(config, scripted_runtime()) as (url, state):
        got_status, got = await post(url, body, {"Content-Type": "application/json"})
        assert got_status == status
        assert message in got["error"]
        assert state.sessions == {}


async def test_an_offer_over_the_size_limit_gets_413(config):
    config.server.max_offer_bytes = 1000
    async with running_server(config, scripted_runtime()) as (url, state):
        status, body = await post(url, json.dumps({"sdp": "x" * 5000, "type": "offer"}))
        assert status == 413 and "max_offer_bytes" in body["error"]


async def test_a_chunked_offer_is_read_whole_and_a_big_one_gets_413(config):
    async def pieces(body: bytes, size: int):
        for start in range(0, len(body), size):
            yield body[start : start + size]
            await asyncio.sleep(0.01)

    no_audio = json.dumps({"sdp": "\r\n".join(AUDIO_ONLY_OFFER_LINES), "type": "offer"}).encode()
    async with running_server(config, scripted_runtime()) as (url, state), aiohttp.ClientSession() as http:
        async with http.post(url + "/offer", data=pieces(no_audio, 7)) as response:
            assert response.status == 400 and "no audio section" in (await response.json())["error"]
        async with http.post(url + "/offer", data=pieces(b"x" * 1_000_000, 65_536)) as response:
            assert response.status == 413 and "max_offer_bytes" in (await response.json())["error"]


async def test_the_page_is_served_with_a_content_security_policy_and_no_inline_script(config):
    async with running_server(config, scripted_runtime()) as (url, state), aiohttp.ClientSession() as http:
        for path in ("/", "/api/docs"):
            async with http.get(url + path) as response:
                policy = response.headers["Content-Security-Policy"]
                page = await response.text()
            assert "script-src 'self';" in policy and "frame-ancestors 'none'" in policy
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            scripts = page.split("<script")[1:]
            assert scripts and all(
                " src=" in tag.split(">")[0] and tag.split(">", 1)[1].startswith("</script") for tag in scripts
            )
            assert " on" + "click=" not in page


async def test_more_sessions_than_the_limit_get_503_and_the_first_keeps_working(config, question):
    config.server.max_sessions = 1
    async with running_server(config, scripted_runtime()) as (url, state):
        async with TalkClient() as first:
            await first.connect(url)
            with pytest.raises(ConnectionError, match="503"):
                async with TalkClient() as second:
                    await second.connect(url)
            result = await run_turn(first, question, 16_000, timeout=20)
            assert result.status == "completed"


async def test_a_spoken_turn_streams_events_and_audible_audio_and_the_next_turn_gets_context(config, question):
    runtime = scripted_runtime()
    async with running_server(config, runtime) as (url, state):
        async with TalkClient() as client:
            await client.connect(url)
            first = await run_turn(client, question, 16_000, timeout=20)
            second = await run_turn(client, question, 16_000, timeout=20)
        types = [e["type"] for e in client.events]
        for expected in (
            "session.created",
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "conversation.item.input_audio_transcription.completed",
            "response.created",
            "response.audio_transcript.delta",
            "response.done",
            "agent.turn.latency",
        ):
            assert expected in types
        states = [e["state"] for e in client.events if e["type"] == "agent.state"]
        assert states[:4] == ["listening", "thinking", "speaking", "listening"]
        assert first.status == second.status == "completed"
        assert first.reply_text == "Hello, I am a test. This is my answer."
        assert first.voice_to_voice_s is not None and first.voice_to_voice_s > 0
        second_context = [(m.role, m.text) for m in runtime.chat.contexts[1]]
        assert second_context[1:] == [
            ("user", "hello there"),
            ("assistant", "Hello, I am a test. This is my answer."),
            ("user", "hello there"),
        ]


async def test_metrics_parse_and_count_turns_and_voice_to_voice(config, question):
    async with running_server(config, scripted_runtime()) as (url, state):
        async with TalkClient() as client:
            await client.connect(url)
            await run_turn(client, question, 16_000, timeout=20)
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "/metrics") as response:
                text = await response.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    turns = {
        s.labels.get("status"): s.value for s in families["voice_agent_turns"].samples if s.name.endswith("_total")
    }
    assert turns.get("completed", 0) >= 1
    counts = [s.value for s in families["voice_agent_voice_to_voice_seconds"].samples if s.name.endswith("_count")]
    assert counts and counts[0] >= 1


async def test_a_peer_that_vanishes_mid_reply_is_cleaned_up_and_others_are_unaffected(config, question):
    config.server.inbound_timeout_seconds = 2.0
    runtime = scripted_runtime(reply=" ".join(["word"] * 60) + ".", seconds_per_token=0.02)
    async with running_server(config, runtime) as (url, state):
        async with TalkClient() as survivor:
            await survivor.connect(url)
            vanishing = TalkClient()
            await vanishing.connect(url)
            await vanishing.say(question, 16_000)
            await vanishing.wait_for_event("agent.state", 20, predicate=lambda e: e["state"] == "speaking")
            [doomed] = [s for s in state.sessions.values() if s.state == "speaking"]
            # vanish without a goodbye (no RTCP BYE, no DTLS close): its packets just stop coming
            vanishing._mic.recv = asyncio.Event().wait
            await asyncio.wait_for(doomed.closed.wait(), 6)
            await asyncio.sleep(0.1)
            assert doomed.id not in state.sessions
            assert all(t.done() for t in doomed._tasks)
            assert doomed.outbound.queued_samples == 0
            result = await run_turn(survivor, question, 16_000, timeout=30)
            assert result.status == "completed" and result.first_audio_at is not None
            await vanishing.close()


async def test_speculative_work_is_discarded_when_the_user_goes_on_after_a_short_pause(config, question):
    config.vad.speculative_silence_ms = 200
    config.vad.end_of_turn_silence_ms = 700
    runtime = scripted_runtime()
    before = metric_value("voice_agent_speculative_replies_total", outcome="miss")
    async with running_server(config, runtime) as (url, state):
        async with TalkClient() as client:
            await client.connect(url)
            words = trim(question)
            spoken = np.concatenate([words, silence(0.45), words])  # pause: past 200 ms, short of 700 ms
            result = await run_turn(client, spoken, 16_000, timeout=20)
    assert result.status == "completed"
    assert runtime.stt.calls >= 2  # the speculative attempt ran recognition before it was dropped
    types = [e["type"] for e in client.events]
    assert types.count("response.created") == 1
    assert types.count("conversation.item.input_audio_transcription.completed") == 1
    assert types.count("input_audio_buffer.speech_stopped") == 1
    assert metric_value("voice_agent_speculative_replies_total", outcome="miss") >= before + 1


def metric_value(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_static_files_cannot_reach_outside_the_web_folder(config):
    async with running_server(config, scripted_runtime()) as (url, state), aiohttp.ClientSession() as http:
        for path in ("/static/../agent/config.py", "/static/%2e%2e/agent/config.py", "/static/..%2fpyproject.toml"):
            async with http.get(url + path) as response:
                body = await response.text()
            assert response.status in (403, 404), (path, response.status)
            assert "REPO_ROOT" not in body and "[project]" not in body
