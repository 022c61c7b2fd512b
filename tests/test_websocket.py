"""/v1/realtime and /ws as a client sees them: the protocol's edges, bad input, limits, access, and vanishing
peers. Scripted models stand in for the real ones (tests/test_realtime.py talks to the real ones)."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from websockets.sync.client import connect as sync_connect

from tests.conftest import running_server
from tests.fakes import scripted_runtime
from tests.speech import silence, speak

RATE = 24_000


@pytest.fixture(scope="module")
def question_24k() -> np.ndarray:
    return np.concatenate([silence(0.3, RATE), speak("What is the capital of France?", rate=RATE)])


def ws_url(url: str, path: str = "/v1/realtime") -> str:
    return url.replace("http", "ws", 1) + path


def b64(samples: np.ndarray) -> str:
    return base64.b64encode(samples.astype("<i2").tobytes()).decode()


async def next_of(ws: aiohttp.ClientWebSocketResponse, event_type: str, timeout: float = 20) -> dict:
    """The next server event of ``event_type``, skipping others."""
    deadline = time.monotonic() + timeout
    while True:
        message = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
        if message.type != aiohttp.WSMsgType.TEXT:
            raise AssertionError(f"connection ended waiting for {event_type}: {message.type} {message.extra}")
        event = json.loads(message.data)
        if event["type"] == event_type:
            return event


async def collect_until(ws, event_type: str, timeout: float = 30) -> list[dict]:
    events = []
    deadline = time.monotonic() + timeout
    while True:
        message = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
        assert message.type == aiohttp.WSMsgType.TEXT, (message.type, [e["type"] for e in events])
        events.append(json.loads(message.data))
        if events[-1]["type"] == event_type:
            return events


async def stream(ws, samples: np.ndarray, chunk: int = RATE // 50, realtime: bool = False) -> None:
    for start in range(0, len(samples), chunk):
        await ws.send_json({"type": "input_audio_buffer.append", "audio": b64(samples[start : start + chunk])})
        if realtime:
            await asyncio.sleep(0.02)


async def test_bad_client_events_get_an_error_naming_the_event_and_the_session_goes_on(config):
    async with running_server(config, scripted_runtime()) as (url, state), aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url(url)) as ws:
            await next_of(ws, "session.created")
            cases = [
                ("not json at all", "invalid_json", None),
                (json.dumps({"type": "no.such.event"}), "invalid_event_type", "no.such.event"),
                (json.dumps({"type": "input_audio_buffer.append"}), "missing_required_parameter", "append"),
                (json.dumps({"type": "input_audio_buffer.append", "audio": "%%%"}), "invalid_audio", "append"),
                (
                    json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"abc").decode()}),
                    "invalid_audio",
                    "append",
                ),
                (
                    json.dumps(
                        {"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/pcmu"}}}}}
                    ),
                    "unsupported_audio_format",
                    "session.update",
                ),
                (
                    json.dumps({"type": "input_audio_buffer.commit", "event_id": "mine_1"}),
                    "input_audio_buffer_commit_empty",
                    "commit",
                ),
                (json.dumps({"type": "response.cancel"}), "response_cancel_not_active", "response.cancel"),
                (json.dumps({"type": "conversation.item.delete", "item_id": "x"}), "not_implemented", "delete"),
                (json.dumps([1, 2]), "invalid_event", None),
                ("[" * 5000 + "]" * 5000, "invalid_json", None),
            ]
            for text, code, named in cases:
                await ws.send_str(text)
                error = (await next_of(ws, "error"))["error"]
                assert error["code"] == code, (text, error)
                if named:
                    assert named in error["message"], error
            await ws.send_str(json.dumps({"type": "input_audio_buffer.commit", "event_id": "mine_2"}))
            assert (await next_of(ws, "error"))["error"]["event_id"] == "mine_2"
            await ws.send_json({"type": "session.update", "session": {"instructions": "Be brief."}})
            updated = await next_of(ws, "session.updated")
            assert updated["session"]["instructions"] == "Be brief."
            assert len(state.sessions) == 1


async def test_a_message_over_the_limit_closes_with_1009_and_other_sessions_go_on(config):
    config.server.max_ws_message_bytes = 10_000
    async with running_server(config, scripted_runtime()) as (url, state), aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url(url)) as other, http.ws_connect(ws_url(url)) as ws:
            await next_of(ws, "session.created")
            await ws.send_json({"type": "input_audio_buffer.append", "audio": "A" * 20_000})
            message = await ws.receive(timeout=10)
            assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 1009
            await _until(lambda: len(state.sessions) == 1)
            await next_of(other, "session.created")
            await other.send_json({"type": "session.update", "session": {}})
            await next_of(other, "session.updated")


async def test_sessions_over_max_sessions_are_refused_with_503_whatever_the_transport(config):
    config.server.max_sessions = 1
    async with running_server(config, scripted_runtime()) as (url, state), aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url(url)) as ws:
            await next_of(ws, "session.created")
            for path in ("/v1/realtime", "/ws"):
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await http.ws_connect(ws_url(url, path))
                assert refused.value.status == 503
            offer = {"type": "offer", "sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"}
            async with http.post(url + "/offer", json=offer) as response:
                assert response.status == 503 and "max_sessions" in (await response.json())["error"]


async def test_a_spoken_turn_over_the_websocket_is_answered_with_audio_and_transcript(config, question_24k):
    runtime = scripted_runtime()
    async with running_server(config, runtime) as (url, state), aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url(url)) as ws:
            await next_of(ws, "session.created")
            await stream(ws, np.concatenate([question_24k, silence(1.0, RATE)]), realtime=True)
            events = await collect_until(ws, "response.done")
    kinds = [e["type"] for e in events]
    order = [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "response.created",
        "response.output_audio.delta",
        "response.done",
    ]
    assert [k for k in kinds if k in order and kinds.index(k) == kinds.index(k)] and all(k in kinds for k in order)
    assert [kinds.index(k) for k in order] == sorted(kinds.index(k) for k in order)
    deltas = [e for e in events if e["type"] == "response.output_audio.delta"]
    audio = np.frombuffer(b"".join(base64.b64decode(e["delta"]) for e in deltas), dtype="<i2")
    words = len(runtime.chat.reply.split())
    assert abs(len(audio) / RATE - words * 0.08) < 0.2, "all of the reply's audio, at 24 kHz"
    done = events[-1]["response"]
    assert done["status"] == "completed" and done["output"][0]["content"][0]["transcript"] == runtime.chat.reply
    assert {e["item_id"] for e in deltas} == {done["output"][0]["id"]}


async def test_audio_is_sent_no_further_ahead_of_real_time_than_the_lead(config, question_24k):
    config.websocket.output_lead_ms = 200
    runtime = scripted_runtime(reply=" ".join(["word"] * 40))  # 3.2 s of tone
    arrivals = []

    async def read(ws) -> None:
        while True:
            event = json.loads((await ws.receive(timeout=30)).data)
            if event["type"] == "response.output_audio.delta":
                arrivals.append((time.monotonic(), len(base64.b64decode(event["delta"])) // 2))
            if event["type"] == "response.done":
                return

    async with running_server(config, runtime) as (url, state), aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url(url)) as ws:
            await next_of(ws, "session.created")
            reader = asyncio.create_task(read(ws))
            await stream(ws, np.concatenate([question_24k, silence(1.0, RATE)]), realtime=True)
            await reader
    start = arrivals[0][0]
    received = 0
    for at, samples in arrivals:
        received += samples
        ahead = received / RATE - (at - start)
        assert ahead <= 0.2 + 0.06, f"{ahead:.3f} s ahead of real time"
    assert received / RATE > 3.0 and arrivals[-1][0] - start > 2.8, "paced, not sent at once"


async def test_push_to_talk_commits_and_asks_and_a_typed_message_is_answered(config, question_24k):
    runtime = scripted_runtime()
    async with running_server(config, runtime) as (url, state), aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url(url)) as ws:
            await next_of(ws, "session.created")
            await ws.send_json(
                {
                    "type": "session.update",
                    "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
                }
            )
            updated = await next_of(ws, "session.updated")
            assert updated["session"]["audio"]["input"]["turn_detection"] is None
            await stream(ws, np.concatenate([question_24k, silence(1.0, RATE)]))
            await asyncio.sleep(0.5)
            await ws.send_json({"type": "input_audio_buffer.commit"})
            committed = await next_of(ws, "input_audio_buffer.committed")
            await ws.send_json({"type": "response.create"})
            created = await next_of(ws, "response.created")
            done = await next_of(ws, "response.done")
            assert done["response"]["id"] == created["response"]["id"] and done["response"]["status"] == "completed"
            assert runtime.stt.calls == 1

            await ws.send_json(
                {
                    "type": "conversation.item.create",
                    "item": {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": "Tell me more."}],
                    },
                }
            )
            added = await next_of(ws, "conversation.item.added")
            assert added["item"]["content"][0]["text"] == "Tell me more."
            await ws.send_json({"type": "response.create"})
            assert (await next_of(ws, "response.done"))["response"]["status"] == "completed"
    context = runtime.chat.contexts[-1]
    assert context[-1].text == "Tell me more." and context[-2].role == "assistant"
    assert committed["item_id"] != added["item"]["id"]


async def test_a_beta_client_gets_the_beta_event_names(config, question_24k):
    async with running_server(config, scripted_runtime()) as (url, state), aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url(url), headers={"OpenAI-Beta": "realtime=v1"}) as ws:
            created = await next_of(ws, "session.created")
            assert created["session"]["input_audio_format"] == "pcm16"
            await ws.send_json(
                {
                    "type": "session.update",
                    "session": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 400}},
                }
            )
            updated = await next_of(ws, "session.updated")
            assert updated["session"]["turn_detection"]["silence_duration_ms"] == 400
            await stream(ws, np.concatenate([question_24k, silence(1.0, RATE)]), realtime=True)
            kinds = [e["type"] for e in await collect_until(ws, "response.done")]
    assert "response.audio.delta" in kinds and "response.audio_transcript.delta" in kinds
    assert "conversation.item.created" in kinds
    assert "response.output_audio.delta" not in kinds and "conversation.item.added" not in kinds


async def test_a_client_that_vanishes_mid_reply_leaves_no_session_behind(config, question_24k):
    runtime = scripted_runtime(reply=" ".join(["word"] * 60))
    async with running_server(config, runtime) as (url, state), aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url(url)) as other:
            await next_of(other, "session.created")
            doomed = await http.ws_connect(ws_url(url))
            await next_of(doomed, "session.created")
            await stream(doomed, np.concatenate([question_24k, silence(1.0, RATE)]), realtime=True)
            await next_of(doomed, "response.output_audio.delta")
            [session] = [s for s in state.sessions.values() if s.state in ("thinking", "speaking")]
            doomed._response.connection.transport.abort()  # the network goes, no close frame
            await _until(lambda: session.id not in state.sessions, timeout=5)
            assert all(t.done() for t in session._tasks) and session.outbound.queued_samples == 0
            await other.send_json({"type": "session.update", "session": {}})
            await next_of(other, "session.updated")


async def test_a_client_that_does_not_read_is_disconnected_with_a_reason(config, caplog):
    config.websocket.send_queue_messages = 8
    flood = json.dumps({"type": "x" * 2000})  # each one answered with an error that names it

    def never_read(url: str) -> None:
        sock = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        with sync_connect(ws_url(url), sock=sock, max_size=None, close_timeout=1) as ws:
            for _ in range(2000):
                try:
                    ws.send(flood)
                except Exception:  # the server closed the connection
                    return

    async with running_server(config, scripted_runtime()) as (url, state):
        await asyncio.wait_for(asyncio.to_thread(never_read, url), 20)
        await _until(lambda: not state.sessions, timeout=5)
    assert "client too slow: 8 messages unread (websocket.send_queue_messages)" in caplog.text


async def test_with_token_auth_the_websocket_needs_a_token_in_the_header_or_the_subprotocol(config, tmp_path):
    config.auth.mode = "token"
    async with running_server(config, scripted_runtime()) as (url, state), aiohttp.ClientSession() as http:
        store = await _store(url, http)
        token = store
        for path in ("/v1/realtime", "/ws"):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(ws_url(url, path))
            assert refused.value.status == 401
        async with http.ws_connect(ws_url(url), headers={"Authorization": f"Bearer {token}"}) as ws:
            await next_of(ws, "session.created")
        protocols = ("realtime", f"openai-insecure-api-key.{token}")
        async with http.ws_connect(ws_url(url), protocols=protocols) as ws:
            assert ws.protocol == "realtime"
            await next_of(ws, "session.created")
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(ws_url(url), headers={"Origin": "https://evil.example"}, protocols=protocols)
        assert refused.value.status == 403


async def test_the_simple_ws_protocol_turns_base64_audio_into_transcription_text_and_audio(config):
    runtime = scripted_runtime()
    question = np.concatenate([silence(0.3), speak("What is the capital of France?"), silence(1.0)])
    async with running_server(config, runtime) as (url, state), aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url(url, "/ws")) as ws:
            ready = json.loads((await ws.receive(timeout=10)).data)
            assert ready["type"] == "ready" and ready["sample_rate"] == 16_000
            await ws.send_str("nonsense")
            assert json.loads((await ws.receive(timeout=10)).data)["type"] == "error"
            for start in range(0, len(question), 320):
                await ws.send_json({"type": "audio", "data": b64(question[start : start + 320])})
                await asyncio.sleep(0.02)
            messages = []
            while not messages or messages[-1]["type"] != "response.done":
                messages.append(json.loads((await ws.receive(timeout=30)).data))
    transcription = next(m for m in messages if m["type"] == "transcription")
    assert transcription["text"] == "hello there" and "timestamp" in transcription and "confidence" in transcription
    text = "".join(m["delta"] for m in messages if m["type"] == "response.text.delta")
    assert text == runtime.chat.reply == messages[-1]["text"]
    audio = b"".join(base64.b64decode(m["data"]) for m in messages if m["type"] == "audio")
    assert len(audio) // 2 / 16_000 > 0.5


async def _store(url: str, http: aiohttp.ClientSession) -> str:
    """An account and its token, made through the API as a user would."""
    body = {"name": "alice", "password": "correct horse battery"}
    async with http.post(url + "/api/auth/register", json=body) as response:
        assert response.status in (200, 201), await response.text()
    async with http.post(url + "/api/auth/login", json=body) as response:
        return (await response.json())["token"]


async def _until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_a_websocket_call_is_on_record_with_both_sides_words_and_its_recording(config, question_24k, tmp_path):
    from tests.test_records_api import decode_stereo, open_api, wait_for_live_call

    config.records.job_poll_seconds = 0.2
    runtime = scripted_runtime(reply="Paris is the capital of France.")
    async with running_server(config, runtime) as (url, state), aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url(url)) as ws:
            await next_of(ws, "session.created")
            await stream(ws, np.concatenate([question_24k, silence(1.0, RATE)]), realtime=True)
            await next_of(ws, "response.done")
            await asyncio.sleep(0.5)
        client, api = await open_api(url)
        async with client:
            call = await wait_for_live_call(api)
            status, recording = await api.request("GET", f"/api/calls/{call['id']}/audio")
    user, agent = call["turns"]
    assert user["text"] == "hello there" and agent["text"] == "Paris is the capital of France."
    assert 0 < user["start_ms"] < user["end_ms"] <= agent["start_ms"] < agent["end_ms"]
    audio = decode_stereo(recording, tmp_path)
    rate = 16_000
    left = audio[0, user["start_ms"] * rate // 1000 : user["end_ms"] * rate // 1000]
    right = audio[1, agent["start_ms"] * rate // 1000 : agent["end_ms"] * rate // 1000]
    assert np.abs(left).mean() > 1e-3 and np.abs(right).mean() > 1e-3
    spoken_s = (np.abs(audio[1]) > 0.01).sum() / rate
    assert abs(spoken_s - (agent["end_ms"] - agent["start_ms"]) / 1000) < 0.3, "the agent's voice at its real speed"


async def test_the_readme_realtime_example_runs_against_the_server(config):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme[readme.index("### OpenAI Realtime over a WebSocket") :]
    example = section[section.index("```python\n") + 10 : section.index("```\n", section.index("```python\n") + 10)]
    runtime = scripted_runtime(reply="I am the voice agent.")
    async with running_server(config, runtime) as (url, state):
        code = example.replace("127.0.0.1:8000", url.split("//", 1)[1])
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert out.decode().strip() == "I am the voice agent."
