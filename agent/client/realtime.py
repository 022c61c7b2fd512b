"""A Realtime conversation driven through the official ``openai`` SDK: speak, collect the reply, interrupt.

The SDK's own client talks to our server's ``/v1/realtime``; this module only feeds it audio at real
time, as a microphone would, and writes down what comes back (events, transcript, audio) with the
times they came. The tests and ``scripts/bench_latency.py --transport websocket`` use it. It needs the
``openai[realtime]`` package (``pip install -e .[test]``).
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass, field

import numpy as np

RATE = 24_000
CHUNK = RATE // 50  # 20 ms
AUDIBLE_THRESHOLD = 300  # peak int16 level that counts as audible (matches audio.audible_threshold)


@dataclass
class Reply:
    response_id: str | None = None
    item_id: str | None = None
    transcript: str = ""
    audio: list[bytes] = field(default_factory=list)
    status: str | None = None
    first_audio_at: float | None = None
    first_audible_at: float | None = None  # arrival of the first delta holding audible audio
    latency: dict = field(default_factory=dict)  # the server's agent.turn.latency, when asked for

    @property
    def samples(self) -> np.ndarray:
        return np.frombuffer(b"".join(self.audio), dtype="<i2")


class RealtimeConversation:
    """One ``client.realtime.connect`` session; ``events`` keeps every server event type in order."""

    def __init__(self, url: str, token: str = "none", model: str = "voice-agent", agent_events: bool = False) -> None:
        from openai import AsyncOpenAI

        ws_base = url.replace("http", "ws", 1) + "/v1"
        self.client = AsyncOpenAI(api_key=token, base_url=f"{url}/v1", websocket_base_url=ws_base)
        self.model = model
        self.extra_query = {"agent_events": "1"} if agent_events else {}
        self.events: list[str] = []
        self.errors: list[dict] = []
        self.replies: list[Reply] = []
        self.user_transcripts: dict[str, str] = {}
        self.speech_started: list[float] = []
        self.speech_ended_at: float | None = None  # when our last chunk of speech was sent
        self._done = asyncio.Event()
        self._audio = asyncio.Event()
        self._manager = None
        self.connection = None
        self._reader: asyncio.Task | None = None
        self.truncate_on_speech = False  # act as a player: tell the server how much of an interrupted reply played

    async def __aenter__(self) -> RealtimeConversation:
        self._manager = self.client.realtime.connect(model=self.model, extra_query=self.extra_query)
        self.connection = await self._manager.__aenter__()
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc) -> None:
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        await self._manager.__aexit__(None, None, None)
        await self.client.close()

    async def _read(self) -> None:
        async for event in self.connection:
            self.events.append(event.type)
            if event.type == "error":
                self.errors.append(event.error.model_dump())
            elif event.type == "response.created":
                self._reply(event.response.id)
            elif event.type == "response.output_item.added":
                self._reply(event.response_id).item_id = event.item.id
            elif event.type == "response.output_audio.delta":
                reply = self._reply(event.response_id)
                if reply.first_audio_at is None:
                    reply.first_audio_at = time.monotonic()
                chunk = base64.b64decode(event.delta)
                reply.audio.append(chunk)
                loud = np.abs(np.frombuffer(chunk, "<i2")).max(initial=0) > AUDIBLE_THRESHOLD
                if reply.first_audible_at is None and loud:
                    reply.first_audible_at = time.monotonic()
                self._audio.set()
            elif event.type == "response.output_audio_transcript.delta":
                self._reply(event.response_id).transcript += event.delta
            elif event.type == "conversation.item.input_audio_transcription.completed":
                self.user_transcripts[event.item_id] = event.transcript
            elif event.type == "input_audio_buffer.speech_started":
                self.speech_started.append(time.monotonic())
                if self.truncate_on_speech:
                    await self._truncate_playing()
            elif event.type == "agent.turn.latency":
                fields = event.to_dict()
                self._reply(fields["response_id"]).latency = {k: v for k, v in fields.items() if k.endswith("_s")}
            elif event.type == "response.done":
                self._reply(event.response.id).status = event.response.status
                self._done.set()

    def _reply(self, response_id: str) -> Reply:
        """The reply an event belongs to: events of a cancelled reply may still come after the next one began."""
        for reply in reversed(self.replies):
            if reply.response_id == response_id:
                return reply
        self.replies.append(Reply(response_id=response_id))
        return self.replies[-1]

    async def _truncate_playing(self) -> None:
        """As a player would: stop, and say how much of the reply has played (real time since its first audio)."""
        if not self.replies or self.replies[-1].status is not None or self.replies[-1].first_audio_at is None:
            return
        reply = self.replies[-1]
        received_ms = len(reply.samples) * 1000 // RATE
        played_ms = min(received_ms, int((time.monotonic() - reply.first_audio_at) * 1000))
        await self.connection.conversation.item.truncate(item_id=reply.item_id, content_index=0, audio_end_ms=played_ms)

    async def speak(self, samples: np.ndarray, trailing_silence_s: float = 1.5) -> None:
        """Send 24 kHz int16 speech in 20 ms chunks at real time, then silence, as a microphone does.

        ``speech_ended_at`` is when the chunk holding the last audible sample went out.
        """
        audio = np.concatenate([samples.astype(np.int16), np.zeros(int(trailing_silence_s * RATE), np.int16)])
        audible = np.flatnonzero(np.abs(samples) > AUDIBLE_THRESHOLD)
        last_audible = int(audible[-1]) if audible.size else len(samples) - 1
        started = time.monotonic()
        for i, start in enumerate(range(0, len(audio), CHUNK)):
            chunk = audio[start : start + CHUNK]
            await self.connection.input_audio_buffer.append(audio=base64.b64encode(chunk.tobytes()).decode())
            if start <= last_audible < start + CHUNK:
                self.speech_ended_at = time.monotonic()
            delay = started + (i + 1) * 0.02 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    async def ask(self, samples: np.ndarray, timeout: float = 90) -> Reply:
        """Speak, then wait for the reply to finish."""
        self._done.clear()
        count = len(self.replies)
        self.speech_ended_at = None
        await self.speak(samples)
        deadline = time.monotonic() + timeout
        while len(self.replies) <= count or self.replies[-1].status is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no finished reply within {timeout} s; events: {self.events[-20:]}")
            self._done.clear()
            try:
                await asyncio.wait_for(self._done.wait(), remaining)
            except TimeoutError:
                pass
        return self.replies[-1]

    async def wait_for_audio(self, seconds: float, timeout: float = 90) -> Reply:
        """Wait until the newest reply has sent ``seconds`` of audio."""
        deadline = time.monotonic() + timeout
        while not self.replies or len(self.replies[-1].samples) < seconds * RATE:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the reply did not reach {seconds} s of audio; events: {self.events[-20:]}")
            self._audio.clear()
            try:
                await asyncio.wait_for(self._audio.wait(), 1.0)
            except TimeoutError:
                pass
        return self.replies[-1]
