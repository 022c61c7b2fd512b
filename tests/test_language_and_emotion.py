"""Language and emotion in a conversation: the page's selector, recognition of the user's language,
emotion events for both sides, and the reply's emotion reaching the voice."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest

from agent.client.peer import TalkClient
from agent.client.talk import run_turn
from agent.config import Config
from agent.models.base import NEUTRAL, SpeechChunk, SpeechStyle
from agent.models.runtime import ModelRuntime
from tests.conftest import running_server
from tests.fakes import ScriptedChatModel, ScriptedSpeechToText, ToneTextToSpeech
from tests.speech import silence, speak
from tests.test_server import metric_value


def utterance(text: str, voice: str = "en-us") -> np.ndarray:
    return np.concatenate([silence(0.3), speak(text, voice=voice, words_per_minute=140), silence(0.2)])


def events_of(client: TalkClient, type: str) -> list[dict]:
    return [e for e in client.events if e["type"] == type]


async def test_each_turn_sends_the_emotion_of_the_user_and_of_the_agent_and_counts_them(config):
    stt = ScriptedSpeechToText(["I am so happy today, thank you!"])
    tts = ToneTextToSpeech()
    runtime = ModelRuntime(stt, ScriptedChatModel("Wow, that is amazing! I am thrilled for you."), tts)
    before = metric_value("voice_agent_emotions_total", speaker="user", emotion="happy")
    async with running_server(config, runtime) as (url, state):
        async with TalkClient() as client:
            await client.connect(url)
            result = await run_turn(client, utterance("I am so happy today"), 16_000, timeout=20)
    assert result.status == "completed"
    user, agent = events_of(client, "agent.emotion")
    assert (user["speaker"], user["emotion"]) == ("user", "happy") and user["item_id"]
    assert (agent["speaker"], agent["emotion"]) == ("agent", "excited") and agent["response_id"]
    assert 0 < user["confidence"] <= 1 and 0.5 <= user["intensity"] <= 2
    assert metric_value("voice_agent_emotions_total", speaker="user", emotion="happy") == before + 1
    # the reply's emotion shapes how it is spoken, from its first phrase on
    assert tts.spoken and all(style.emotion == "excited" for _, _, style in tts.spoken)
    assert tts.spoken[-1][2].intensity > 1.0  # by then "amazing!" has been said


async def test_the_page_selects_the_language_recognised_answered_and_spoken(config):
    stt = ScriptedSpeechToText(["¿Cuál es la capital de Francia?"])
    chat = ScriptedChatModel("La capital de Francia es París.")
    tts = ToneTextToSpeech()
    async with running_server(config, ModelRuntime(stt, chat, tts)) as (url, state):
        async with TalkClient() as client:
            await client.connect(url)
            await client.send_event({"type": "session.update", "session": {"language": "es"}})
            updated = await client.wait_for_event("session.updated", 5)
            await run_turn(client, utterance("Cual es la capital de Francia", voice="es"), 16_000, timeout=20)
            await client.send_event({"type": "session.update", "session": {"language": "xx"}})
            error = await client.wait_for_event("error", 5)
    assert updated["session"]["language"] == "es"
    assert stt.languages[-1] == "es"
    assert {language for _, language, _ in tts.spoken} == {"es"}
    assert "Spanish" in chat.contexts[-1][0].text
    assert "'xx'" in error["error"]["message"] and "auto" in error["error"]["message"]


class RecordingTextToSpeech:
    """A real voice, with the language of every phrase it was asked to speak written down."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name
        self.languages: list[str] = []

    def synthesize(
        self, text: str, language: str, style: SpeechStyle = NEUTRAL, *, cancel: threading.Event | None = None
    ) -> Iterator[SpeechChunk]:
        self.languages.append(language)
        return self.inner.synthesize(text, language, style, cancel=cancel)

    def warm_up(self) -> None:
        self.inner.warm_up()


@pytest.fixture(scope="module")
def auto_runtime() -> Iterator[ModelRuntime]:
    runtime = ModelRuntime.load(Config(language="auto"))
    runtime.tts = RecordingTextToSpeech(runtime.tts)
    yield runtime
    runtime.close()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_spanish_speech_is_recognised_as_spanish_and_answered_with_a_spanish_voice(auto_runtime):
    assert threading.current_thread() is threading.main_thread()
    async with running_server(Config(language="auto"), auto_runtime) as (url, state):
        async with TalkClient() as client:
            await client.connect(url)
            turn = await run_turn(client, utterance("Hola, ¿cuál es la capital de Francia?", "es"), 16_000, 90)
    assert turn.error is None, turn.error
    assert "francia" in turn.transcript.lower()
    [updated] = events_of(client, "session.updated")
    assert updated["session"]["language"] == "es"
    assert turn.status == "completed" and turn.first_audio_at is not None
    assert auto_runtime.tts.languages and set(auto_runtime.tts.languages) == {"es"}
    assert [e["speaker"] for e in events_of(client, "agent.emotion")] == ["user", "agent"]
