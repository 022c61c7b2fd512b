"""Scripted stand-ins for the models, for tests of the pipeline and the server only."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np

from agent.models.base import NEUTRAL, ChatMessage, SpeechChunk, SpeechStyle, Transcript
from agent.models.runtime import ModelRuntime


class ScriptedSpeechToText:
    name = "scripted-stt"

    def __init__(self, transcripts: list[str] | None = None) -> None:
        self.transcripts = list(transcripts or ["hello there"])
        self.calls = 0
        self.languages: list[str] = []

    def transcribe(self, audio: np.ndarray, language: str) -> Transcript:
        text = self.transcripts[min(self.calls, len(self.transcripts) - 1)]
        self.calls += 1
        self.languages.append(language)
        return Transcript(text, language)

    def warm_up(self) -> None:
        pass


class SpeechToTextByLength:
    """Transcribes a turn by its length: ``(min_seconds, text)`` pairs, the longest that fits wins."""

    name = "length-stt"

    def __init__(self, rules: list[tuple[float, str]]) -> None:
        self.rules = sorted(rules)
        self.heard: list[str] = []

    def transcribe(self, audio: np.ndarray, language: str) -> Transcript:
        seconds = len(audio) / 16_000
        text = [text for min_seconds, text in self.rules if seconds >= min_seconds][-1]
        self.heard.append(text)
        return Transcript(text, language)

    def warm_up(self) -> None:
        pass


class ScriptedChatModel:
    """Streams a fixed reply word by word and records every context it was given."""

    name = "scripted-chat"

    def __init__(
        self, reply: str = "Hello, I am a test. This is my answer.", seconds_per_token: float = 0.01
    ) -> None:
        self.reply = reply
        self.seconds_per_token = seconds_per_token
        self.contexts: list[list[ChatMessage]] = []

    def stream_reply(self, messages: list[ChatMessage], cancel: threading.Event) -> Iterator[str]:
        self.contexts.append(list(messages))
        for i, word in enumerate(self.reply.split(" ")):
            if cancel.is_set():
                return
            time.sleep(self.seconds_per_token)
            yield word if i == 0 else " " + word

    def warm_up(self) -> None:
        pass


class ToneTextToSpeech:
    """Speaks each phrase as a 300 Hz tone lasting ``seconds_per_word`` per word."""

    name = "tone-tts"

    def __init__(self, seconds_per_word: float = 0.08, sample_rate: int = 22_050) -> None:
        self.seconds_per_word = seconds_per_word
        self.sample_rate = sample_rate
        self.spoken: list[tuple[str, str, SpeechStyle]] = []  # (text, language, style) of every call

    def synthesize(
        self, text: str, language: str, style: SpeechStyle = NEUTRAL, *, cancel: threading.Event | None = None
    ) -> Iterator[SpeechChunk]:
        self.spoken.append((text, language, style))
        n = int(len(text.split()) * self.seconds_per_word * self.sample_rate)
        t = np.arange(n) / self.sample_rate
        audio = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
        for start in range(0, n, 4096):
            yield SpeechChunk(audio[start : start + 4096], self.sample_rate)

    def warm_up(self) -> None:
        pass


def scripted_runtime(**chat_kwargs) -> ModelRuntime:
    return ModelRuntime(ScriptedSpeechToText(), ScriptedChatModel(**chat_kwargs), ToneTextToSpeech())
