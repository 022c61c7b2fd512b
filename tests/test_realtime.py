"""OpenAI's Realtime protocol over /v1/realtime, spoken to by clients we did not write, with the real models.

The official ``openai`` Python SDK's realtime client, and OpenAI's Agents SDK for JavaScript (``@openai/agents``,
RealtimeSession over its WebSocket transport) run by Node: ``tests/js/realtime_conversation.mjs`` only feeds it
audio and writes down what it saw. The Node test is skipped when Node or the npm packages are missing, except
under CI.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from agent.audio.resample import resample_once
from agent.client.peer import wait_until_ready
from agent.client.realtime import RATE, RealtimeConversation
from agent.config import REPO_ROOT, Config
from agent.models.runtime import ModelRuntime
from tests.conftest import free_port, running_server
from tests.speech import silence, speak
from tests.test_end_to_end import RecordingChatModel

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def runtime():
    runtime = ModelRuntime.load(Config())
    runtime.chat = RecordingChatModel(runtime.chat)
    yield runtime
    runtime.close()


def utterance(text: str) -> np.ndarray:
    return np.concatenate([silence(0.3, RATE), speak(text, rate=RATE, words_per_minute=140)])


def recognised(runtime: ModelRuntime, samples_24k: np.ndarray) -> str:
    audio = resample_once(samples_24k, RATE, 16_000).astype(np.float32) / 32768
    return runtime.stt.transcribe(audio, "en").text


async def test_the_openai_sdk_holds_a_spoken_conversation_with_a_follow_up(runtime):
    async with running_server(Config(), runtime) as (url, state), RealtimeConversation(url) as talk:
        first = await talk.ask(utterance("What is the capital of France?"))
        second = await talk.ask(utterance("How many people live there?"))
        assert len(state.sessions) == 1
        [session] = state.sessions.values()
        assert session.transport.kind == "realtime"

    assert talk.errors == []
    assert talk.events[0] == "session.created"
    for expected in (
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.output_item.added",
        "response.output_audio.delta",
        "response.output_audio_transcript.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.done",
    ):
        assert expected in talk.events, expected
    assert first.status == "completed" and first.transcript.strip()
    heard = recognised(runtime, first.samples)
    reply_words = {w.strip(".,!?").lower() for w in first.transcript.split()}
    assert {w.strip(".,!?").lower() for w in heard.split()} & reply_words, (heard, first.transcript)
    user_first, user_second = list(talk.user_transcripts.values())[:2]
    assert "capital" in user_first.lower() and "people" in user_second.lower()
    context = [(m.role, m.text) for m in runtime.chat.contexts[-1]]
    assert context[1] == ("user", user_first)
    assert context[2] == ("assistant", first.transcript.strip())
    assert second.status == "completed"


async def test_speaking_over_a_reply_cancels_it_and_the_next_reply_answers_the_interruption(runtime):
    async with running_server(Config(), runtime) as (url, state), RealtimeConversation(url) as talk:
        talk.truncate_on_speech = True
        asking = asyncio.create_task(talk.ask(utterance("Tell me a long story about a dragon and a knight.")))
        story = await talk.wait_for_audio(1.0)
        interruption = await talk.ask(utterance("What is the capital of France?"))
        await asking

    assert story.status == "cancelled"
    assert "conversation.item.truncated" in talk.events
    assert interruption.status == "completed"
    assert "capital" in list(talk.user_transcripts.values())[-1].lower()
    context = [(m.role, m.text) for m in runtime.chat.contexts[-1]]
    heard_story = context[-2][1]
    assert context[-2][0] == "assistant" and story.transcript.startswith(heard_story.rstrip(".")[:20])
    assert len(heard_story) < len(runtime.chat.replies[-2]), "memory keeps only what was played"


JS = Path(__file__).parent / "js"


def _node_or_skip() -> str:
    node = shutil.which("node")
    reason = None
    if node is None:
        reason = "node is not installed (apt-get install nodejs npm)"
    elif not (JS / "node_modules" / "@openai" / "agents").is_dir():
        reason = "the npm packages are not installed (cd tests/js && npm ci)"
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, so the Agents SDK test may not be skipped")
        pytest.skip(reason)
    return node


def _pcm(path: Path, text: str) -> str:
    samples = np.concatenate([silence(0.2, RATE), speak(text, rate=RATE, words_per_minute=140)])
    path.write_bytes(samples.astype("<i2").tobytes())
    return str(path)


async def test_the_agents_sdk_talks_follows_up_and_is_interrupted_against_voice_agent_serve(runtime, tmp_path):
    node = _node_or_skip()
    files = {
        "--question1": _pcm(tmp_path / "q1.pcm", "What is the capital of France?"),
        "--question2": _pcm(tmp_path / "q2.pcm", "How many people live there?"),
        "--story": _pcm(tmp_path / "story.pcm", "Tell me a long story about a dragon and a knight."),
        "--interrupt": _pcm(tmp_path / "int.pcm", "What is the capital of Italy?"),
    }
    out = tmp_path / "result.json"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "VOICE_AGENT_RECORDS__DATA_DIR": str(tmp_path / "records")}
    with open(tmp_path / "server.log", "w") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "agent", "serve", "--port", str(port)], cwd=REPO_ROOT, env=env, stderr=log_file
        )
    try:
        await wait_until_ready(url, timeout=180)
        args = [node, str(JS / "realtime_conversation.mjs"), "--url", url.replace("http", "ws", 1) + "/v1/realtime"]
        for flag, path in files.items():
            args += [flag, path]
        process = await asyncio.create_subprocess_exec(
            *args, "--out", str(out), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        output, _ = await asyncio.wait_for(process.communicate(), 300)
        call = await _live_call(url)
    finally:
        server.terminate()
        await asyncio.to_thread(server.wait, 30)
    log = output.decode(errors="replace")
    assert out.is_file(), log
    result = json.loads(out.read_text())
    failure = f"exit {process.returncode}: {result.get('problems')} {result.get('failure')}\n{log[-3000:]}"
    assert process.returncode == 0, failure
    assert result["errors"] == [] and not result.get("sdk_rejected_events")

    first, second, story, after = result["turns"]
    assert first["transcript"].strip() and first["audio_samples"] > RATE // 2
    reply_audio = np.frombuffer(Path(first["audio_path"]).read_bytes(), dtype="<i2")
    heard = recognised(runtime, reply_audio)
    words = {w.strip(".,!?").lower() for w in first["transcript"].split()}
    assert {w.strip(".,!?").lower() for w in heard.split()} & words, (heard, first["transcript"])
    assert second["status"] == "completed" and second["transcript"].strip()
    assert story["interrupted"] and story["status"] in ("cancelled", "incomplete"), story
    assert after["status"] == "completed" and after["transcript"].strip()

    # The server's own record of the call: four user turns, the story cut where the client stopped playing it.
    users = [t for t in call["turns"] if t["speaker"] == "user"]
    agents = [t for t in call["turns"] if t["speaker"] == "agent"]
    assert len(users) == 4 and "people" in users[1]["text"].lower() and "italy" in users[3]["text"].lower()
    story_turn = agents[2]
    assert story_turn["heard_text"] is not None and len(story_turn["heard_text"]) < len(story_turn["text"])
    assert story_turn["text"].startswith(story_turn["heard_text"].rstrip(".")[:10])


async def _live_call(url: str) -> dict:
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            async with http.get(url + "/api/calls", params={"source": "live"}) as response:
                calls = (await response.json())["calls"]
            if calls and calls[0]["status"] == "done":
                async with http.get(url + f"/api/calls/{calls[0]['id']}") as response:
                    return await response.json()
            await asyncio.sleep(0.25)
    raise TimeoutError("the call was not on record")
