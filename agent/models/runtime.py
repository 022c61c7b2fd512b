"""The models of a process, loaded once and shared by every session.

Each model gets one worker thread: calls from all sessions queue on it, so no model is ever entered
by two threads at once and the event loop never waits on inference. Blocking generators (tokens,
audio chunks) are bridged to async iterators by ``iterate_in_thread``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from agent import metrics
from agent.config import Config
from agent.models.base import (
    NEUTRAL,
    ChatMessage,
    ChatModel,
    SpeechChunk,
    SpeechStyle,
    SpeechToText,
    TextToSpeech,
    Transcript,
)
from agent.models.remote.openai_client import ServerUnavailable
from agent.models.smart_turn import SmartTurnModel

log = logging.getLogger(__name__)
T = TypeVar("T")
_DONE = object()


async def iterate_in_thread(
    executor: ThreadPoolExecutor, produce: Callable[[threading.Event], Iterator[T]]
) -> AsyncIterator[T]:
    """Run a blocking generator on ``executor`` and yield its items on the event loop.

    ``produce`` gets a cancel event of its own; when the consumer stops early (break,
    cancellation) it is set, and the producer stops at its next item instead of finishing in
    the background.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    cancel = threading.Event()

    def run() -> None:
        try:
            for item in produce(cancel):
                loop.call_soon_threadsafe(queue.put_nowait, item)
                if cancel.is_set():
                    break
        except BaseException as exc:  # handed to the consumer, raised there
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _DONE)

    future = loop.run_in_executor(executor, run)
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        cancel.set()
        if not future.done():
            future.add_done_callback(lambda f: f.exception())


class ReplyStream:
    """One reply's tokens, and which chat backend produced them (``backend``).

    A model server that cannot answer before its first token hands the turn to the embedded fallback
    model, within the same turn: the user hears a later answer, never silence.
    """

    def __init__(self, runtime: ModelRuntime, messages: list[ChatMessage], words: Awaitable | None) -> None:
        self._runtime, self._messages, self._words = runtime, messages, words
        self.backend = runtime.chat.name  # the fallback's name once it takes over
        self.fallback_reason: str | None = None

    def __aiter__(self) -> AsyncIterator[str]:
        return self._pieces()

    async def _pieces(self) -> AsyncIterator[str]:
        runtime, chat = self._runtime, self._runtime.chat
        if not getattr(chat, "remote", False):
            async for piece in runtime._stream_local(chat, self._messages):
                yield piece
            return
        try:
            async for piece in chat.astream_reply(self._messages):
                yield piece
            return
        except ServerUnavailable as exc:
            if runtime.fallback is None:
                raise
            self.fallback_reason = exc.reason
            metrics.LLM_FALLBACKS.labels(reason=exc.reason).inc()
            log.warning(
                "%s could not answer (%s); the embedded %s answers this turn", chat.name, exc, runtime.fallback.name
            )
        self.backend = f"{runtime.fallback.name}_fallback"
        if self._words is not None:
            await asyncio.shield(self._words)
        if not self._messages[-1].text.strip():
            return  # nothing was heard that a text model could answer
        async for piece in runtime._stream_local(runtime.fallback, self._messages):
            yield piece


@dataclass
class ModelRuntime:
    stt: SpeechToText
    chat: ChatModel
    tts: TextToSpeech
    turn: SmartTurnModel | None = None  # the audio end-of-turn model, when vad.end_of_turn_model asks for it
    fallback: ChatModel | None = None  # answers when a model server (llm.backend vllm) cannot
    executors: dict[str, ThreadPoolExecutor] = field(init=False)
    load_seconds: float = 0.0
    warm_up_seconds: float = 0.0

    def __post_init__(self) -> None:
        # A chat model that schedules several replies itself (Voxtral: one GPU thread, token by token)
        # gets that many llm threads; each only waits on its reply's tokens.
        workers = {"stt": 1, "llm": getattr(self.chat, "max_concurrent_replies", 1), "tts": 1, "turn": 1}
        self.executors = {
            stage: ThreadPoolExecutor(max_workers=count, thread_name_prefix=stage) for stage, count in workers.items()
        }

    @classmethod
    def load(cls, config: Config) -> ModelRuntime:
        """Load and warm up every model (blocking; call it from a thread)."""
        from agent.models.registry import (
            build_chat_model,
            build_fallback_chat_model,
            build_speech_to_text,
            build_text_to_speech,
        )

        started = time.perf_counter()
        turn = SmartTurnModel() if config.vad.end_of_turn_model in ("smart_turn", "both") else None
        runtime = cls(build_speech_to_text(config), build_chat_model(config), build_text_to_speech(config), turn,
                      build_fallback_chat_model(config))
        runtime.load_seconds = time.perf_counter() - started
        runtime.warm_up()
        return runtime

    def warm_up(self) -> None:
        started = time.perf_counter()
        for model in (self.stt, self.chat, self.tts, self.turn, self.fallback):
            if model is not None:
                model.warm_up()
        self.warm_up_seconds = time.perf_counter() - started
        log.info(
            "models ready: stt=%s chat=%s tts=%s load=%.2fs warm_up=%.2fs",
            self.stt.name,
            self.chat.name,
            self.tts.name,
            self.load_seconds,
            self.warm_up_seconds,
        )

    async def transcribe(self, audio: np.ndarray, language: str) -> Transcript:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executors["stt"], self.stt.transcribe, audio, language)

    async def turn_complete_probability(self, audio: np.ndarray) -> float | None:
        """The audio end-of-turn model's probability that the speaker is done; None without one."""
        if self.turn is None:
            return None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executors["turn"], self.turn.probability_complete, audio)

    def stream_reply(self, messages: list[ChatMessage], words: Awaitable | None = None) -> ReplyStream:
        """The reply's text pieces; ``words`` finishes once the user turn's transcript is in its message
        (awaited only when a model that hears audio falls back to one that reads text)."""
        return ReplyStream(self, messages, words)

    def _stream_local(self, chat: ChatModel, messages: list[ChatMessage]) -> AsyncIterator[str]:
        return iterate_in_thread(self.executors["llm"], lambda cancel: chat.stream_reply(messages, cancel))

    async def start(self) -> None:
        """Start what lives on the event loop (a model server's client, process and health watch)."""
        if start := getattr(self.chat, "start", None):
            await start()

    async def aclose(self) -> None:
        if close := getattr(self.chat, "close", None):
            await close()
        self.close()

    def synthesize(self, text: str, language: str, style: SpeechStyle = NEUTRAL) -> AsyncIterator[SpeechChunk]:
        return iterate_in_thread(
            self.executors["tts"], lambda cancel: self.tts.synthesize(text, language, style, cancel=cancel)
        )

    def close(self) -> None:
        for executor in self.executors.values():
            executor.shutdown(wait=False, cancel_futures=True)
