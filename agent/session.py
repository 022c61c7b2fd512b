"""One conversation: a peer connection, its memory, its tasks, and the decision of what to do next.

States: listening -> (user turn ends) -> thinking -> (first reply audio sent) -> speaking -> listening.
A user turn that ends while a reply is still running supersedes it: the reply is cancelled, the
unplayed audio is dropped, and memory keeps only the part of the reply that was heard.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from aiortc import RTCDataChannel, RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack

from agent import metrics
from agent.audio.resample import Resampler, to_float
from agent.audio.turns import PauseDetected, SpeechResumed, SpeechStarted, TurnDetector, TurnEnded
from agent.config import Config
from agent.conversation.chunker import PhraseChunker
from agent.conversation.heard import SpokenPhrase, heard_text
from agent.conversation.memory import ConversationMemory
from agent.languages import system_prompt
from agent.models.base import ChatMessage
from agent.models.runtime import ModelRuntime
from agent.transport.channel import EventChannel
from agent.transport.inbound import InboundAudio, PeerVanished
from agent.transport.outbound import OutboundAudioTrack

log = logging.getLogger(__name__)
turn_log = logging.getLogger("agent.turns")


@dataclass
class TurnLatency:
    endpointing_s: float | None = None
    asr_s: float | None = None
    llm_first_token_s: float | None = None
    llm_first_phrase_s: float | None = None  # chat request to the first phrase complete enough to speak
    tts_first_audio_s: float | None = None
    voice_to_voice_s: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        return {k: (round(v, 4) if v is not None else None) for k, v in self.__dict__.items()}


@dataclass
class _Reply:
    """One attempt to answer a user turn.

    A reply started on a pause is speculative: it recognises, generates and synthesises, but holds
    its events and audio until ``released`` is set at the confirmed end of turn, or is discarded.
    """

    id: str
    item_id: str
    audio: np.ndarray
    audio_end_ms: int
    speech_ended_at: float
    latency: TurnLatency = field(default_factory=TurnLatency)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    held_events: list[tuple[str, dict]] = field(default_factory=list)
    phrases: list[SpokenPhrase] = field(default_factory=list)
    first_audio_at: float | None = None
    task: asyncio.Task | None = None

    @property
    def transcript_fields(self) -> dict:
        """Where the reply's text sits, as OpenAI Realtime's response.audio_transcript.* events say it."""
        return {"response_id": self.id, "item_id": self.item_id, "output_index": 0, "content_index": 0}


class Session:
    def __init__(
        self,
        session_id: str,
        config: Config,
        runtime: ModelRuntime,
        pc: RTCPeerConnection,
        on_closed: Callable[[Session], None] = lambda session: None,
    ) -> None:
        self.id = session_id
        self.config = config
        self.language = config.language
        self.pc = pc
        self.runtime = runtime
        self.memory = ConversationMemory(system_prompt(config), config.memory.max_turns)
        self.events = EventChannel(self._on_client_event)
        self.outbound = OutboundAudioTrack(config.audio.outbound_sample_rate, config.audio.outbound_frame_ms)
        self.outbound.on_tag_started = self._on_audio_started
        self.detector = TurnDetector(config.vad)
        self.inbound = InboundAudio(
            self.detector.frame_samples,
            config.audio.inbound_queue_frames,
            config.server.inbound_timeout_seconds,
            on_drop=metrics.INBOUND_FRAMES_DROPPED.inc,
        )
        self.state = "listening"
        self.closed = asyncio.Event()
        self._on_closed = on_closed
        self._tasks: set[asyncio.Task] = set()
        self._current: _Reply | None = None  # the released reply, generating or playing
        self._speculative: _Reply | None = None
        self._ids = itertools.count(1)

    # --- wiring -----------------------------------------------------------------------------------

    def attach_microphone(self, track: MediaStreamTrack) -> None:
        self._spawn(self._pump_microphone(track), "microphone")
        self._spawn(self._run_turns(), "turns")

    def attach_channel(self, channel: RTCDataChannel) -> None:
        self.events.attach(channel)

    def start(self) -> None:
        self.events.send("session.created", session={"id": self.id, "language": self.language})
        self._set_state("listening")

    def _spawn(self, coro, name: str) -> asyncio.Task:
        task = asyncio.create_task(coro, name=f"{self.id}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self, reason: str) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        log.info("session %s closed: %s", self.id, reason)
        self.outbound.clear()
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.outbound.stop()
        await self.pc.close()
        self._on_closed(self)

    # --- listening --------------------------------------------------------------------------------

    async def _pump_microphone(self, track: MediaStreamTrack) -> None:
        try:
            await self.inbound.pump(track)
        except PeerVanished as exc:
            self._spawn(self.close(str(exc)), "close")

    async def _run_turns(self) -> None:
        while True:
            frame = await self.inbound.queue.get()
            for event in self.detector.process(frame.samples, frame.arrived_at):
                if isinstance(event, SpeechStarted):
                    self.events.send(
                        "input_audio_buffer.speech_started",
                        audio_start_ms=event.audio_start_ms,
                        item_id=f"item_{self.id}_{next(self._ids)}",
                    )
                elif isinstance(event, PauseDetected):
                    self._discard_speculative()
                    self._speculative = self._begin_reply(event.audio, event.audio_end_ms, event.speech_ended_at)
                elif isinstance(event, SpeechResumed):
                    self._discard_speculative()
                elif isinstance(event, TurnEnded):
                    self._on_turn_ended(event)

    def _begin_reply(self, audio: np.ndarray, audio_end_ms: int, speech_ended_at: float) -> _Reply:
        n = next(self._ids)
        reply = _Reply(f"resp_{self.id}_{n}", f"item_{self.id}_{n}", audio, audio_end_ms, speech_ended_at)
        reply.task = self._spawn(self._respond(reply), "reply")
        return reply

    def _discard_speculative(self) -> None:
        reply, self._speculative = self._speculative, None
        if reply is not None:
            metrics.SPECULATIVE_REPLIES.labels(outcome="miss").inc()
            reply.task.cancel()

    def _on_turn_ended(self, turn: TurnEnded) -> None:
        reply, self._speculative = self._speculative, None
        if reply is not None and reply.audio_end_ms == turn.audio_end_ms:
            metrics.SPECULATIVE_REPLIES.labels(outcome="hit").inc()
        else:
            if reply is not None:
                metrics.SPECULATIVE_REPLIES.labels(outcome="miss").inc()
                reply.task.cancel()
            reply = self._begin_reply(turn.audio, turn.audio_end_ms, turn.speech_ended_at)
        self.interrupt()
        reply.latency.endpointing_s = turn.decided_at - turn.speech_ended_at
        self.events.send("input_audio_buffer.speech_stopped", audio_end_ms=turn.audio_end_ms, item_id=reply.item_id)
        self._current = reply
        self._set_state("thinking")
        reply.released.set()
        held, reply.held_events = reply.held_events, []
        for event_type, fields in held:
            self.events.send(event_type, **fields)

    def interrupt(self) -> None:
        """Stop the released reply now: drop its unplayed audio and cancel its generation."""
        reply = self._current
        if reply is not None and not reply.task.done():
            self.outbound.clear()
            reply.task.cancel()

    def _emit(self, reply: _Reply, event_type: str, **fields) -> None:
        """Send an event of ``reply``'s, or hold it while the reply is still speculative."""
        if reply.released.is_set():
            self.events.send(event_type, **fields)
        else:
            reply.held_events.append((event_type, fields))

    # --- replying ---------------------------------------------------------------------------------

    async def _respond(self, reply: _Reply) -> None:
        audio = to_float(reply.audio)
        started = time.monotonic()
        try:
            transcript = await self.runtime.transcribe(audio, self.language)
        except Exception:
            metrics.ERRORS.labels(stage="asr").inc()
            log.exception("session %s: speech recognition failed", self.id)
            await reply.released.wait()
            self.events.send("error", error={"type": "asr_error", "message": "speech recognition failed"})
            self._set_state("listening")
            return
        reply.latency.asr_s = time.monotonic() - started
        self._emit(
            reply,
            "conversation.item.input_audio_transcription.completed",
            item_id=reply.item_id,
            content_index=0,
            transcript=transcript.text,
            language=transcript.language,
        )
        if not transcript.text.strip():
            await reply.released.wait()
            self._set_state("listening")
            return
        user = ChatMessage("user", transcript.text, audio=audio)
        self._emit(reply, "response.created", response={"id": reply.id, "status": "in_progress"})
        status, text = "failed", ""
        try:
            text = await self._generate_and_speak(reply, self.memory.context_for(user))
            await reply.released.wait()
            await self.outbound.wait_drained()
            status = "completed"
        except asyncio.CancelledError:
            status = "cancelled" if reply.released.is_set() else "discarded"
            raise
        except Exception:
            metrics.ERRORS.labels(stage="reply").inc()
            log.exception("session %s: reply %s failed", self.id, reply.id)
            await reply.released.wait()
            self.events.send("error", error={"type": "reply_error", "message": "the reply could not be generated"})
        finally:
            if status != "discarded":
                heard = text if status == "completed" else self._heard(reply)
                self.memory.remember(user, heard)
                self._finish_reply(reply, status, heard)

    async def _generate_and_speak(self, reply: _Reply, messages: list[ChatMessage]) -> str:
        latency = reply.latency
        chunker = PhraseChunker(self.config.chunker)
        phrases: asyncio.Queue[str | None] = asyncio.Queue()
        speaker = asyncio.create_task(self._speak(reply, phrases))
        parts: list[str] = []
        started = time.monotonic()
        try:
            async for piece in self.runtime.stream_reply(messages):
                if latency.llm_first_token_s is None:
                    latency.llm_first_token_s = time.monotonic() - started
                parts.append(piece)
                self._emit(reply, "response.audio_transcript.delta", **reply.transcript_fields, delta=piece)
                for phrase in chunker.push(piece):
                    if latency.llm_first_phrase_s is None:
                        latency.llm_first_phrase_s = time.monotonic() - started
                    phrases.put_nowait(phrase)
            for phrase in chunker.flush():
                phrases.put_nowait(phrase)
            phrases.put_nowait(None)
            await speaker
        finally:
            if not speaker.done():
                speaker.cancel()
                await asyncio.gather(speaker, return_exceptions=True)
        return "".join(parts).strip()

    async def _speak(self, reply: _Reply, phrases: asyncio.Queue[str | None]) -> None:
        while (phrase := await phrases.get()) is not None:
            tag = (reply.id, len(reply.phrases))
            spoken = SpokenPhrase(phrase, 0)
            reply.phrases.append(spoken)
            resampler = Resampler(self.outbound.sample_rate)
            started = time.monotonic()
            async for chunk in self.runtime.synthesize(phrase, self.language):
                if reply.latency.tts_first_audio_s is None:
                    reply.latency.tts_first_audio_s = time.monotonic() - started
                samples = resampler.samples(chunk.audio, chunk.sample_rate)
                spoken.samples += len(samples)
                await reply.released.wait()  # a speculative reply keeps its audio until the turn has ended
                self.outbound.enqueue(samples, tag)
            tail = resampler.flush()
            spoken.samples += len(tail)
            self.outbound.enqueue(tail, tag)

    def _on_audio_started(self, tag, at: float) -> None:
        reply = self._current
        if reply is not None and tag[0] == reply.id and reply.first_audio_at is None:
            reply.first_audio_at = at
            self._set_state("speaking")

    def _heard(self, reply: _Reply) -> str:
        sent = [self.outbound.sent_by_tag.get((reply.id, i), 0) for i in range(len(reply.phrases))]
        return heard_text(reply.phrases, sent)

    def _finish_reply(self, reply: _Reply, status: str, text: str) -> None:
        latency = reply.latency
        if reply.first_audio_at is not None:
            latency.voice_to_voice_s = reply.first_audio_at - reply.speech_ended_at
            metrics.VOICE_TO_VOICE.observe(latency.voice_to_voice_s)
        self._observe_stages(latency)
        metrics.TURNS.labels(status=status).inc()
        self.events.send("response.audio_transcript.done", **reply.transcript_fields, transcript=text)
        self.events.send("response.done", response={"id": reply.id, "status": status, "output_text": text})
        self.events.send("agent.turn.latency", response_id=reply.id, **latency.as_dict())
        self._log_turn(reply, status, text, latency)
        for key in [k for k in self.outbound.sent_by_tag if k[0] == reply.id]:
            del self.outbound.sent_by_tag[key]
        if self._current is reply:
            self._current = None
        if status != "cancelled":
            self._set_state("listening")

    def _observe_stages(self, latency: TurnLatency) -> None:
        if latency.endpointing_s is not None:
            metrics.ENDPOINTING.observe(latency.endpointing_s)
        if latency.asr_s is not None:
            metrics.ASR.labels(backend=self.runtime.stt.name).observe(latency.asr_s)
        if latency.llm_first_token_s is not None:
            metrics.LLM_FIRST_TOKEN.labels(backend=self.runtime.chat.name).observe(latency.llm_first_token_s)
        if latency.llm_first_phrase_s is not None:
            metrics.LLM_FIRST_PHRASE.labels(backend=self.runtime.chat.name).observe(latency.llm_first_phrase_s)
        if latency.tts_first_audio_s is not None:
            metrics.TTS_FIRST_AUDIO.labels(backend=self.runtime.tts.name).observe(latency.tts_first_audio_s)

    def _log_turn(self, reply: _Reply, status: str, text: str, latency: TurnLatency) -> None:
        fields = {"session": self.id, "response": reply.id, "status": status, "language": self.language}
        fields |= latency.as_dict()
        fields["reply_words"] = len(text.split())
        if self.config.logging.turn_log_format == "json":
            turn_log.info(json.dumps({"event": "turn", **fields}))
        else:
            turn_log.info("turn " + " ".join(f"{k}={'-' if v is None else v}" for k, v in fields.items()))

    # --- state and client events ------------------------------------------------------------------

    def _set_state(self, state: str) -> None:
        self.state = state
        self.events.send("agent.state", state=state)

    def _on_client_event(self, event: dict) -> None:
        log.debug("session %s: client event %s", self.id, event.get("type"))
