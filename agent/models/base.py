"""The three model interfaces every backend implements.

All methods are synchronous and may block: the session runs them in executor
threads, never on the event loop. Audio inside the agent is always 16 kHz mono
float32 in [-1, 1].
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

SAMPLE_RATE = 16_000


@dataclass
class Transcript:
    text: str
    language: str
    confidence: float | None = None  # 0..1, how sure the recognizer is of the text, where it says


@dataclass
class ChatMessage:
    role: str  # "system" | "user" | "assistant"
    text: str
    # A chat model that hears audio directly (Voxtral) reads this; text models ignore it.
    audio: np.ndarray | None = field(default=None, repr=False)


# How strongly an emotion is spoken: 0.5 calm .. 2.0 strong, 1.0 as the emotion's table row says.
MIN_INTENSITY, MAX_INTENSITY = 0.5, 2.0


@dataclass(frozen=True)
class SpeechStyle:
    """How a phrase should sound: the emotion of what is said and its intensity (0.5 calm .. 2.0 strong)."""

    emotion: str = "neutral"  # happy | sad | angry | excited | neutral
    intensity: float = 1.0


NEUTRAL = SpeechStyle()


@dataclass
class SpeechChunk:
    audio: np.ndarray  # float32 mono in [-1, 1]
    sample_rate: int


@runtime_checkable
class SpeechToText(Protocol):
    name: str

    def transcribe(self, audio: np.ndarray, language: str) -> Transcript:
        """Transcribe one user turn (16 kHz mono float32)."""
        ...

    def warm_up(self) -> None: ...


@runtime_checkable
class ChatModel(Protocol):
    name: str

    def stream_reply(self, messages: list[ChatMessage], cancel: threading.Event) -> Iterator[str]:
        """Yield the reply as text pieces (tokens) as soon as each is decoded.

        Must stop between two tokens once ``cancel`` is set.
        """
        ...

    def warm_up(self) -> None: ...


@runtime_checkable
class TextToSpeech(Protocol):
    name: str

    def synthesize(
        self, text: str, language: str, style: SpeechStyle = NEUTRAL, *, cancel: threading.Event | None = None
    ) -> Iterator[SpeechChunk]:
        """Yield audio for one phrase, in chunks as they are produced, spoken as ``style`` asks where the voice can.

        A voice that generates step by step stops between two steps once ``cancel`` is set.
        """
        ...

    def warm_up(self) -> None: ...
