"""A real conversation: an aiortc peer speaks espeak-ng audio into the server running the embedded models."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from agent.client.peer import TalkClient
from agent.client.talk import run_turn
from agent.config import Config
from agent.models.base import ChatMessage
from agent.models.runtime import ModelRuntime
from tests.conftest import running_server
from tests.speech import silence, speak, utterance

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class RecordingChatModel:
    """The real chat model, with every context it is given and every reply it generates written down."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name
        self.contexts: list[list[ChatMessage]] = []
        self.replies: list[str] = []

    def stream_reply(self, messages: list[ChatMessage], cancel: threading.Event) -> Iterator[str]:
        self.contexts.append(list(messages))
        self.replies.append("")
        index = len(self.replies) - 1
        for piece in self.inner.stream_reply(messages, cancel):
            self.replies[index] += piece
            yield piece

    def warm_up(self) -> None:
        self.inner.warm_up()


@pytest.fixture(scope="module")
def runtime() -> Iterator[ModelRuntime]:
    runtime = ModelRuntime.load(Config())
    runtime.chat = RecordingChatModel(runtime.chat)
    yield runtime
    runtime.close()


async def test_a_spoken_question_gets_a_spoken_answer_and_the_follow_up_has_the_first_turn_as_context(runtime):
    async with running_server(Config(), runtime) as (url, state):
        async with TalkClient() as client:
            await client.connect(url)
            first = await run_turn(client, utterance("What is the capital of France?"), 16_000, timeout=60)
            second = await run_turn(client, utterance("How many people live there?"), 16_000, timeout=60)

    assert first.error is None, first.error
    assert "capital" in first.transcript.lower() and "france" in first.transcript.lower()
    assert first.status == "completed" and first.reply_text
    assert first.first_audio_at is not None
    reply = client.reply_audio(first.first_audio_at, first.reply_end_at)
    loud_frames = np.abs(reply.reshape(-1, 960)).max(axis=1) > 1000
    assert loud_frames.sum() >= 15, "the reply should be at least 0.3 s of audible speech"

    assert "people" in second.transcript.lower()
    follow_up_context = [(m.role, m.text) for m in runtime.chat.contexts[-1]]
    assert follow_up_context[0][0] == "system"
    assert follow_up_context[1] == ("user", first.transcript)
    assert follow_up_context[2] == ("assistant", first.reply_text)
    assert follow_up_context[3] == ("user", second.transcript)


async def test_speaking_over_a_spoken_answer_cuts_it_and_the_next_answer_replies_to_the_interruption(runtime):
    async with running_server(Config(), runtime) as (url, state):
        async with TalkClient() as client:
            await client.connect(url)
            [session] = state.sessions.values()
            await client.say(utterance("Tell me a long story about a brave knight and a dragon."), 16_000)
            await client.wait_for_event("agent.state", 60, predicate=lambda e: e["state"] == "speaking")
            await asyncio.sleep(1.0)
            interrupted_at = len(client.events)
            answer = await run_turn(client, utterance("What is the capital of France?"), 16_000, timeout=60)
            memory = session.memory.exchanges

    assert answer.error is None, answer.error
    barge_in = [e for e in client.events[interrupted_at:] if e["type"] == "agent.barge_in"]
    assert barge_in and barge_in[0]["audible_frames_after_decision"] <= 2
    [truncated] = [e for e in client.events if e["type"] == "conversation.item.truncated"]
    story = next(
        reply
        for context, reply in zip(runtime.chat.contexts, runtime.chat.replies, strict=True)
        if "story" in context[-1].text.lower()
    )
    heard = truncated["text"].split()
    assert heard and len(heard) < len(story.split()), "about a second of a long story was heard, not all of it"
    assert heard == story.split()[: len(heard)]
    assert memory[-2].agent.text == truncated["text"]
    assert "capital" in answer.transcript.lower()
    answer_context = [(m.role, m.text) for m in runtime.chat.contexts[-1]]
    assert answer_context[-2:] == [("assistant", truncated["text"]), ("user", answer.transcript)]
    assert answer.status == "completed" and answer.reply_text


async def test_a_sentence_with_a_pause_inside_gets_one_transcript_and_one_reply_to_all_of_it(runtime):
    # The first part is a finished sentence: its turn ends 250 ms into the pause, and the user goes on
    # 300 ms later, before any reply can have been heard on this CPU.
    spoken = np.concatenate(
        [
            silence(0.3),
            speak("I'm so frustrated.", words_per_minute=140),
            silence(0.55),
            speak("Nothing has worked since Monday.", words_per_minute=140),
            silence(0.2),
        ]
    )
    async with running_server(Config(), runtime) as (url, state):
        async with TalkClient() as client:
            await client.connect(url)
            [session] = state.sessions.values()
            answer = await run_turn(client, spoken, 16_000, timeout=60)
            memory = session.memory.exchanges

    assert answer.error is None, answer.error
    assert answer.status == "completed" and answer.reply_text
    heard = answer.transcript.lower()
    assert "frustrated" in heard and "monday" in heard, answer.transcript
    items = {
        e["item_id"] for e in client.events if e["type"] == "conversation.item.input_audio_transcription.completed"
    }
    assert len(items) == 1, "one user turn, however many times it was recognised"
    assert [(e.user.text, e.agent.text) for e in memory] == [(answer.transcript, answer.reply_text)]
    assert [m.text for m in runtime.chat.contexts[-1] if m.role == "user"] == [answer.transcript]
