"""Turn-taking through the real server and a real WebRTC peer, with scripted models.

Barge-in, false interruptions, the echo guard and the adaptive end of turn. The scripted recognizer
transcribes a turn by its length, so what the user "said" is known whatever the VAD cut.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from agent.client.peer import TalkClient
from agent.client.talk import run_turn
from agent.models.base import Transcript
from agent.models.runtime import ModelRuntime
from tests.conftest import running_server
from tests.fakes import ScriptedChatModel, SpeechToTextByLength, ToneTextToSpeech
from tests.speech import silence, speak, trim
from tests.test_server import metric_value

QUESTION = "What is the capital of France and what is it known for today?"
INTERRUPTION = "Stop, wait."
LONG_REPLY = " ".join(f"word{i}" for i in range(40)) + "."


@pytest.fixture(scope="module")
def question() -> np.ndarray:
    return np.concatenate([silence(0.3), speak(QUESTION), silence(0.2)])


@pytest.fixture(scope="module")
def interruption() -> np.ndarray:
    return np.concatenate([trim(speak(INTERRUPTION)), silence(0.2)])


def long_reply_runtime(interruption_text: str) -> ModelRuntime:
    # Turns over 1.6 s are the question, shorter ones the interruption.
    stt = SpeechToTextByLength([(0.0, interruption_text), (1.6, QUESTION)])
    return ModelRuntime(stt, ScriptedChatModel(LONG_REPLY, seconds_per_token=0.002), ToneTextToSpeech(0.1))


async def ask_and_speak_over_the_reply(
    client: TalkClient, question: np.ndarray, interruption: np.ndarray, after_s: float = 1.0, answered: bool = True
):
    await client.say(question, 16_000)
    await client.wait_for_event("agent.state", 20, predicate=lambda e: e["state"] == "speaking")
    await asyncio.sleep(after_s)
    interrupted_at = len(client.events)
    if not answered:
        await client.say(interruption, 16_000)
        return interrupted_at, None
    return interrupted_at, await run_turn(client, interruption, 16_000, timeout=20)


def events_of(client: TalkClient, type: str, after: int = 0) -> list[dict]:
    return [e for e in client.events[after:] if e["type"] == type]


async def test_speaking_over_a_reply_stops_its_audio_at_once_and_memory_keeps_only_what_was_heard(
    config, question, interruption
):
    runtime = long_reply_runtime(INTERRUPTION)
    before = metric_value("voice_agent_interruptions_total")
    async with running_server(config, runtime) as (url, state):
        async with TalkClient() as client:
            await client.connect(url)
            [session] = state.sessions.values()
            interrupted_at, second = await ask_and_speak_over_the_reply(client, question, interruption)
            memory = session.memory.exchanges

    [barge_in] = events_of(client, "agent.barge_in")
    assert barge_in["audible_frames_after_decision"] <= 2
    assert 0 <= barge_in["latency_s"]

    first_done = events_of(client, "response.done")[0]["response"]
    assert first_done["status"] == "cancelled"
    [truncated] = events_of(client, "conversation.item.truncated")
    heard = truncated["text"].split()
    assert 0 < len(heard) < len(LONG_REPLY.split())
    assert heard == LONG_REPLY.split()[: len(heard)]
    # 0.1 s of tone per word: the audio said to be heard matches the words kept
    assert truncated["audio_end_ms"] == pytest.approx(len(heard) * 100, abs=150)

    # The client heard silence from shortly after the server decided the user was speaking until
    # the interruption was answered (jitter buffer and network allowance: 0.2 s).
    started = events_of(client, "input_audio_buffer.speech_started", interrupted_at)[0]["_received_at"]
    stopped = events_of(client, "input_audio_buffer.speech_stopped", interrupted_at)[0]["_received_at"]
    assert client.first_audible_after(started + 0.2) >= stopped

    assert memory[0].agent.text == truncated["text"]
    assert memory[1].user.text == INTERRUPTION
    assert second.status == "completed"
    answer_context = [(m.role, m.text) for m in runtime.chat.contexts[-1]]
    assert answer_context[-3:] == [("user", QUESTION), ("assistant", truncated["text"]), ("user", INTERRUPTION)]
    assert metric_value("voice_agent_interruptions_total") == before + 1


async def test_an_interruption_without_words_resumes_the_reply_where_it_stopped(config, question, interruption):
    runtime = long_reply_runtime("")  # the interruption is heard as no words: a cough, a door
    before = metric_value("voice_agent_false_interruptions_total")
    async with running_server(config, runtime) as (url, state):
        async with TalkClient() as client:
            await client.connect(url)
            [session] = state.sessions.values()
            await ask_and_speak_over_the_reply(client, question, interruption, answered=False)
            done = await client.wait_for_event("response.done", 20)
            await client.wait_until_quiet(0.3, timeout=20)
            memory = session.memory.exchanges

    assert events_of(client, "agent.barge_in")
    [resumed] = events_of(client, "agent.reply.resumed")
    assert resumed["response_id"] == done["response"]["id"]
    assert done["response"]["status"] == "completed"
    assert done["response"]["output_text"] == LONG_REPLY
    assert not events_of(client, "conversation.item.truncated")
    assert [(e.user.text, e.agent.text) for e in memory] == [(QUESTION, LONG_REPLY)]
    assert metric_value("voice_agent_false_interruptions_total") == before + 1
    # the whole reply was played: 41 words of 0.1 s
    audible = sum(peak > 1000 for peak in client._rx_peaks)
    assert audible * 0.02 >= 0.9 * len(LONG_REPLY.split()) * 0.1


async def test_speech_inside_the_echo_guard_does_not_cut_the_reply_until_its_words_are_known(
    config, question, interruption
):
    config.barge_in.echo_guard_ms = 60_000  # every onset falls inside the guard
    runtime = long_reply_runtime(INTERRUPTION)
    async with running_server(config, runtime) as (url, state):
        async with TalkClient() as client:
            await client.connect(url)
            interrupted_at, second = await ask_and_speak_over_the_reply(client, question, interruption, 0.3)

    assert not events_of(client, "agent.barge_in")  # no cut at the onset ...
    stopped = events_of(client, "input_audio_buffer.speech_stopped", interrupted_at)[0]["_received_at"]
    started = events_of(client, "input_audio_buffer.speech_started", interrupted_at)[0]["_received_at"]
    assert client.first_audible_after(started + 0.05) < stopped  # ... the reply kept playing over the user
    assert events_of(client, "response.done")[0]["response"]["status"] == "cancelled"  # ... until the words came
    assert second.status == "completed"


async def test_a_trailing_pause_inside_a_sentence_does_not_split_it_into_two_turns(config):
    first_half, second_half = trim(speak("I want to")), trim(speak("book a table for two people tonight."))
    spoken = np.concatenate([silence(0.3), first_half, silence(0.65), second_half, silence(0.2)])
    stt = SpeechToTextByLength([(0.0, "I want to"), (2.0, "I want to book a table for two people tonight.")])

    async def turns_heard(adaptive: bool) -> list[str]:
        config.vad.adaptive_end_of_turn = adaptive
        config.vad.reopen_window_ms = 0  # the end-of-turn rule alone; reopening would join the halves too
        runtime = ModelRuntime(stt, ScriptedChatModel("Sure.", 0.002), ToneTextToSpeech())
        async with running_server(config, runtime) as (url, state):
            async with TalkClient() as client:
                await client.connect(url)
                await run_turn(client, spoken, 16_000, timeout=20)
                await asyncio.sleep(0.5)
        return [e["transcript"] for e in events_of(client, "conversation.item.input_audio_transcription.completed")]

    # 650 ms is longer than the 500 ms end-of-turn silence: a fixed threshold cuts the sentence ...
    assert len(await turns_heard(adaptive=False)) == 2
    # ... the adaptive one hears "I want to" trail off and waits.
    assert await turns_heard(adaptive=True) == ["I want to book a table for two people tonight."]


FRUSTRATED, MONDAY = "I'm so frustrated.", "Nothing has worked since Monday."


async def test_going_on_after_a_pause_before_the_reply_is_heard_joins_the_turn_and_drops_the_reply(config):
    first, second = trim(speak(FRUSTRATED)), trim(speak(MONDAY))
    spoken = np.concatenate([silence(0.3), first, silence(0.8), second, silence(0.2)])
    whole = f"{FRUSTRATED} {MONDAY}"
    # The first half alone is short; the halves joined (with the silence between) are long.
    stt = SpeechToTextByLength([(0.0, FRUSTRATED), (len(first) / 16_000 + 1.2, whole)])
    chat = ScriptedChatModel("Sorry to hear that, what happened on Monday?", seconds_per_token=0.25)
    runtime = ModelRuntime(stt, chat, ToneTextToSpeech())
    reopened = metric_value("voice_agent_turns_reopened_total")
    over_user = metric_value("voice_agent_replies_over_user_total")
    async with running_server(config, runtime) as (url, state):
        async with TalkClient() as client:
            await client.connect(url)
            [session] = state.sessions.values()
            result = await run_turn(client, spoken, 16_000, timeout=30)
            await client.wait_until_quiet(0.3, timeout=20)
            memory = session.memory.exchanges

    transcripts = events_of(client, "conversation.item.input_audio_transcription.completed")
    assert [t["transcript"] for t in transcripts] == [FRUSTRATED, whole]
    assert len({t["item_id"] for t in transcripts}) == 1, "one user item, recognised again whole"
    [dropped] = events_of(client, "agent.reply.dropped")
    done = [e["response"] for e in events_of(client, "response.done")]
    assert [d["status"] for d in done] == ["cancelled", "completed"] and done[0]["id"] == dropped["response_id"]
    assert result.status == "completed" and result.transcript == whole
    assert [m.text for m in chat.contexts[-1] if m.role == "user"] == [whole]
    assert [(e.user.text, e.agent.text) for e in memory] == [(whole, chat.reply)]
    # Nothing of a reply was audible before the user had finished the whole thought.
    stopped = events_of(client, "input_audio_buffer.speech_stopped")[-1]["_received_at"]
    first_speech = events_of(client, "input_audio_buffer.speech_started")[0]["_received_at"]
    assert client.first_audible_after(first_speech) >= stopped
    assert metric_value("voice_agent_turns_reopened_total") == reopened + 1
    assert metric_value("voice_agent_replies_over_user_total") == over_user


async def test_a_reply_heard_for_longer_than_min_heard_is_interrupted_not_reopened(config, question, interruption):
    runtime = long_reply_runtime(INTERRUPTION)
    reopened = metric_value("voice_agent_turns_reopened_total")
    async with running_server(config, runtime) as (url, state):
        async with TalkClient() as client:
            await client.connect(url)
            _, second = await ask_and_speak_over_the_reply(client, question, interruption, after_s=0.5)
    assert not events_of(client, "agent.reply.dropped")
    assert events_of(client, "response.done")[0]["response"]["status"] == "cancelled"
    assert events_of(client, "conversation.item.truncated")
    assert second.status == "completed" and second.transcript == INTERRUPTION
    assert metric_value("voice_agent_turns_reopened_total") == reopened


async def test_a_complete_question_ends_its_turn_sooner_than_the_default_silence(config):
    question = np.concatenate([silence(0.3), speak("Where is the nearest train station?"), silence(0.2)])
    stt = SpeechToTextByLength([(0.0, "Where is the nearest train station?")])
    runtime = ModelRuntime(stt, ScriptedChatModel("Paris.", 0.002), ToneTextToSpeech())
    async with running_server(config, runtime) as (url, state):
        async with TalkClient() as client:
            await client.connect(url)
            result = await run_turn(client, question, 16_000, timeout=20)
    assert result.status == "completed"
    assert result.server_latency["endpointing_s"] < config.vad.end_of_turn_silence_ms / 1000


class HearingChatModel(ScriptedChatModel):
    """A chat model that hears the turn's audio itself (as Voxtral does)."""

    hears_audio = True


class HeldSpeechToText:
    """Recognises nothing until the test lets it go."""

    name = "held-stt"

    def __init__(self, text: str) -> None:
        self.text = text
        self.go = threading.Event()

    def transcribe(self, audio: np.ndarray, language: str) -> Transcript:
        self.go.wait(30)
        return Transcript(self.text, language)

    def warm_up(self) -> None:
        pass


async def test_a_model_that_hears_audio_answers_without_waiting_for_the_transcript(config, question):
    stt = HeldSpeechToText(QUESTION)
    runtime = ModelRuntime(stt, HearingChatModel("Paris is the capital.", 0.002), ToneTextToSpeech())
    async with running_server(config, runtime) as (url, state):
        async with TalkClient() as client:
            await client.connect(url)
            [session] = state.sessions.values()
            await client.say(question, 16_000)
            await client.wait_for_event("agent.state", 20, predicate=lambda e: e["state"] == "speaking")
            assert not events_of(client, "conversation.item.input_audio_transcription.completed")
            stt.go.set()
            transcribed = await client.wait_for_event("conversation.item.input_audio_transcription.completed", 20)
            done = await client.wait_for_event("response.done", 20)
            memory = session.memory.exchanges
    assert transcribed["transcript"] == QUESTION
    assert done["response"]["status"] == "completed"
    assert [(e.user.text, e.agent.text) for e in memory] == [(QUESTION, "Paris is the capital.")]
