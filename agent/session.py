"""One conversation: its memory, its tasks, and the decision of what to do next, whatever transport carries it.

States: listening -> (user turn ends) -> thinking -> (first reply audio sent) -> speaking -> listening.

Turn-taking:
- On a short pause the turn is recognised and answered speculatively, everything held back; the end
  of turn, whose silence the speculative transcript chooses (adaptive end of turn), releases it.
- Barge-in: user speech over a reply (``barge_in.min_speech_ms`` of it, outside the echo guard)
  takes the reply's unplayed audio out of the track at once and holds its speech. When the
  interrupting turn has been recognised, words confirm the interruption (the reply is cancelled,
  memory keeps what was heard, ``conversation.item.truncated`` is sent); no words resume the reply
  where it stopped.

Turn detection (a client may change it, as OpenAI Realtime's ``session.update`` does): ``semantic_vad``
is the adaptive end of turn above, ``server_vad`` a fixed silence, ``none`` push-to-talk: the client
commits the audio it sent and asks for the response.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from agent import metrics
from agent.audio.resample import Resampler, to_float
from agent.audio.turns import PauseDetected, SpeechResumed, SpeechStarted, TurnDetector, TurnEnded
from agent.calls.live import LiveCallRecord
from agent.calls.store import TurnIn
from agent.config import AUTO_LANGUAGE, Config
from agent.conversation.chunker import PhraseChunker
from agent.conversation.emotion import Emotion
from agent.conversation.emotion import detect as detect_emotion
from agent.conversation.end_of_turn import end_of_turn_silence_ms
from agent.conversation.heard import SpokenPhrase, heard_text
from agent.conversation.memory import ConversationMemory, Exchange
from agent.languages import LANGUAGE_NAMES, answer_language, system_prompt
from agent.models.base import ChatMessage
from agent.models.runtime import ModelRuntime
from agent.transport.base import Transport
from agent.transport.inbound import InboundAudio
from agent.transport.outbound import OutboundAudio, QueuedAudio

log = logging.getLogger(__name__)
turn_log = logging.getLogger("agent.turns")

TURN_DETECTION_MODES = ("semantic_vad", "server_vad", "none")


class InputError(ValueError):
    """A client asked for something the session's state does not allow; ``code`` as OpenAI Realtime names it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class TurnLatency:
    endpointing_s: float | None = None
    asr_s: float | None = None
    llm_first_token_s: float | None = None
    llm_first_phrase_s: float | None = None  # chat request to the first phrase complete enough to speak
    llm_per_token_s: float | None = None  # mean time between the reply's tokens after the first
    tts_first_audio_s: float | None = None
    voice_to_voice_s: float | None = None
    llm_backend: str | None = None  # which chat backend answered ("smollm2_fallback" when a model server could not)

    def as_dict(self) -> dict[str, float | str | None]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass
class _Reply:
    """One attempt to answer a user turn.

    A reply started on a pause is speculative: it recognises, generates and synthesises, but holds
    its events and audio until ``released`` is set at the confirmed end of turn, or is discarded.
    """

    id: str
    item_id: str
    audio: np.ndarray
    audio_start_ms: int
    audio_end_ms: int
    speech_ended_at: float
    latency: TurnLatency = field(default_factory=TurnLatency)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    held_events: list[tuple[str, dict]] = field(default_factory=list)
    transcript: str | None = None  # the user's words, once recognised
    user: ChatMessage | None = None  # the user's turn as memory keeps it
    user_emotion: Emotion | None = None
    answering: bool = False  # a reply is being generated (the turn had words, or the model hears audio)
    remembered: bool = False
    # Set once released and any interruption this turn makes has been settled; cleared by a barge-in.
    may_speak: asyncio.Event = field(default_factory=asyncio.Event)
    phrases: list[SpokenPhrase] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)  # the reply's text as generated, heard or not
    first_audio_at: float | None = None
    task: asyncio.Task | None = None
    typed: bool = False  # the user's turn is a typed message, not speech
    heard_cap_samples: int | None = None  # the client said how much it played (conversation.item.truncate)
    final_sent: list[int] | None = None  # samples of each phrase sent, kept when the reply finishes
    dropped: bool = False  # the user went on speaking before hearing it: gone without a trace
    enqueued: bool = False  # some of its audio has been queued to play
    complete_probability: float | None = None  # the audio end-of-turn model's verdict on its turn
    transcribing: asyncio.Task | None = None  # the user turn's speech recognition, while it runs

    @property
    def speaking(self) -> bool:
        return self.first_audio_at is not None

    @property
    def transcript_fields(self) -> dict:
        """Where the reply's text sits, as OpenAI Realtime's response.audio_transcript.* events say it."""
        return {"response_id": self.id, "item_id": self.item_id, "output_index": 0, "content_index": 0}


@dataclass
class _OpenTurn:
    """A turn that ended by VAD and may still be joined by more speech while its reply is not heard."""

    reply: _Reply
    audio: np.ndarray
    audio_start_ms: int
    ended_at: float


@dataclass
class _Interruption:
    """A reply the user spoke over: its speech is held until the interrupting turn shows words or not."""

    reply: _Reply
    onset_at: float | None  # arrival of the frame that confirmed the user's speech; None if decided at turn end
    decision_frame: int  # outbound frames sent when the audio was taken out
    taken: list[QueuedAudio]
    decided_at: float = field(default_factory=time.monotonic)


class Session:
    def __init__(
        self,
        session_id: str,
        config: Config,
        runtime: ModelRuntime,
        transport: Transport,
        on_closed: Callable[[Session], None] = lambda session: None,
        record: LiveCallRecord | None = None,
    ) -> None:
        self.id = session_id
        self.config = config
        self.language = answer_language(config)  # the language answered in
        self._listen_language = config.language  # the language recognised: a code, or "auto"
        self.transport = transport
        self.events = transport  # the session's events leave through its transport
        self.runtime = runtime
        self._instructions: str | None = None  # a client's own system prompt, replacing llm.system_prompt
        self.memory = ConversationMemory(system_prompt(config, self.language), config.memory.max_turns)
        self.outbound = OutboundAudio(
            transport.output_sample_rate, config.audio.outbound_frame_ms, config.audio.audible_threshold
        )
        self.outbound.on_tag_started = self._on_audio_started
        self.outbound.on_stopped = self._on_audio_stopped
        self.record = record  # the call's record and recording, written as the conversation goes
        if record is not None:
            self.outbound.on_frame = record.agent_audio
        self.detector = TurnDetector(config.vad)
        self.turn_detection = "semantic_vad" if config.vad.adaptive_end_of_turn else "server_vad"
        self.respond_at_turn_end = True  # a turn that ends by VAD is answered without being asked
        self.interrupt_response = config.barge_in.enabled  # speech over a reply interrupts it
        self.end_of_turn_silence_ms = config.vad.end_of_turn_silence_ms
        self._manual_audio: list[np.ndarray] = []  # push-to-talk: audio since the last commit or clear
        self._manual_start_ms = 0
        self._stream_ms = 0  # microphone audio received so far
        self._pending: _Reply | None = None  # a committed turn or typed message waiting for response.create
        self._turn_item_id: str | None = None  # the user item of the turn in progress
        self._recent: dict[str, _Reply] = {}  # finished replies a client may still truncate
        self._open_turn: _OpenTurn | None = None  # the last turn, joinable while its reply is unheard
        self._joined: _OpenTurn | None = None  # the reopened turn the speech in progress continues
        self._user_quiet = asyncio.Event()  # no speech heard or being confirmed: a reply may start
        self._user_quiet.set()
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
        self._interrupted: _Interruption | None = None
        self._barge_in_onset: float | None = None  # speech over a reply, not yet long enough to interrupt
        self._ids = itertools.count(1)

    # --- wiring -----------------------------------------------------------------------------------

    def start(self) -> None:
        self.spawn(self._run_turns(), "turns")
        self.events.send("session.created", session={"id": self.id, "language": self.language})
        self._set_state("listening")

    def hear(self, samples: np.ndarray, now: float) -> None:
        """Microphone audio from the transport: int16 mono at 16 kHz, any length."""
        self.inbound.push(samples, now)

    def spawn(self, coro, name: str) -> asyncio.Task:
        """Run ``coro`` as one of the session's tasks: cancelled when the session closes."""
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
        if self.record is not None:
            self.record.close(reason)
        try:
            await self.transport.close()
        finally:
            self._on_closed(self)

    # --- listening --------------------------------------------------------------------------------

    async def _run_turns(self) -> None:
        while True:
            frame = await self.inbound.queue.get()
            if self.record is not None:
                self.record.user_audio(frame.samples)
            self._stream_ms += self.config.vad.frame_ms
            if self.turn_detection == "none":
                if not self._manual_audio:
                    self._manual_start_ms = self._stream_ms - self.config.vad.frame_ms
                self._manual_audio.append(frame.samples)
                if len(self._manual_audio) * self.config.vad.frame_ms > self.config.vad.max_turn_seconds * 1000:
                    self._manual_audio.pop(0)  # a buffer never committed keeps only the last vad.max_turn_seconds
                    self._manual_start_ms += self.config.vad.frame_ms
                continue
            for event in self.detector.process(frame.samples, frame.arrived_at):
                if isinstance(event, SpeechStarted):
                    reopened = self._reopen(event)
                    self._turn_item_id = reopened or f"item_{self.id}_{next(self._ids)}"
                    self.events.send(
                        "input_audio_buffer.speech_started",
                        audio_start_ms=event.audio_start_ms,
                        item_id=self._turn_item_id,
                    )
                    if reopened is None:
                        self._on_speech_started(event)
                elif isinstance(event, PauseDetected):
                    self._discard_speculative()
                    self._speculative = self._begin_reply(self._join(event))
                elif isinstance(event, SpeechResumed):
                    self._discard_speculative()
                elif isinstance(event, TurnEnded):
                    self._on_turn_ended(self._join(event))
            self._check_barge_in()
            if self.detector.hearing_speech:
                self._user_quiet.clear()
            else:
                self._user_quiet.set()

    def _begin_reply(self, turn: PauseDetected | TurnEnded, text: str | None = None) -> _Reply:
        n = next(self._ids)
        item_id = self._turn_item_id or f"item_{self.id}_{n}"
        reply = _Reply(
            f"resp_{self.id}_{n}", item_id, turn.audio, turn.audio_start_ms, turn.audio_end_ms, turn.speech_ended_at
        )
        if text is not None:
            reply.typed, reply.transcript = True, text
        reply.task = self.spawn(self._respond(reply), "reply")
        return reply

    def _discard_speculative(self) -> None:
        reply, self._speculative = self._speculative, None
        if reply is not None:
            metrics.SPECULATIVE_REPLIES.labels(outcome="miss").inc()
            reply.task.cancel()

    def _on_turn_ended(self, turn: TurnEnded, by_vad: bool = True) -> None:
        self._barge_in_onset = None
        reply = self._speculative
        if reply is not None and reply.audio_end_ms == turn.audio_end_ms:
            self._speculative = None
            metrics.SPECULATIVE_REPLIES.labels(outcome="hit").inc()
        else:
            self._discard_speculative()
            reply = self._begin_reply(turn)
        self._turn_item_id = None
        self._joined = None
        reply.latency.endpointing_s = turn.decided_at - turn.speech_ended_at
        if by_vad:
            self.events.send(
                "input_audio_buffer.speech_stopped", audio_end_ms=turn.audio_end_ms, item_id=reply.item_id
            )
        self.events.send("input_audio_buffer.committed", item_id=reply.item_id)
        if by_vad and self.respond_at_turn_end:
            self._release(reply)
            if self.config.vad.reopen_window_ms:
                self._open_turn = _OpenTurn(reply, turn.audio, turn.audio_start_ms, turn.decided_at)
        else:
            self._hold_pending(reply)

    # --- reopening a turn --------------------------------------------------------------------------

    def _reopen(self, speech: SpeechStarted) -> str | None:
        """Speech soon after a turn whose reply has not been heard continues that turn: drop the reply.

        Returns the continued turn's item id, or None when this speech is a turn of its own.
        """
        turn, self._open_turn = self._open_turn, None
        if turn is None or speech.at - turn.ended_at > self.config.vad.reopen_window_ms / 1000:
            return None
        reply = turn.reply
        if reply is not self._current or reply.task.done():
            return None
        heard_ms = sum(self._sent_samples(reply)) * 1000 // self.outbound.sample_rate
        if heard_ms >= self.config.barge_in.min_heard_ms:
            return None
        reply.dropped = True
        reply.may_speak.clear()
        self.outbound.clear()
        self._current = None
        reply.task.cancel()
        self._joined = turn
        metrics.TURNS_REOPENED.inc()
        log.info("session %s: the user went on after %d ms of reply %s: the turn reopens", self.id, heard_ms, reply.id)
        self._set_state("listening")
        return reply.item_id

    def _join(self, turn: PauseDetected | TurnEnded) -> PauseDetected | TurnEnded:
        """The speech in progress joined to the turn it reopened: one audio buffer, recognised again whole."""
        joined = self._joined
        if joined is None:
            return turn
        audio = np.concatenate([joined.audio, turn.audio])
        return dataclasses.replace(turn, audio=audio, audio_start_ms=joined.audio_start_ms)

    def _hold_pending(self, reply: _Reply) -> None:
        """Keep a committed turn (or typed message) unanswered until the client sends response.create."""
        if self._pending is not None:
            self._pending.task.cancel()
        self._pending = reply

    def _release(self, reply: _Reply) -> None:
        """Answer ``reply``'s turn: it becomes the current reply and its held events go out."""
        # A reply still running now was spoken over without a barge-in at the onset (echo guard, short
        # speech): hold it too; this turn's words decide.
        self._barge_in(onset_at=None)
        self._current = reply
        self._set_state("thinking")
        reply.released.set()
        held, reply.held_events = reply.held_events, []
        for event_type, fields in held:
            self.events.send(event_type, **fields)
        self._settle(reply)

    # --- barge-in ---------------------------------------------------------------------------------

    def _on_speech_started(self, event: SpeechStarted) -> None:
        reply = self._current
        if not self.interrupt_response or reply is None or reply.task.done():
            return
        guard = self.config.barge_in.echo_guard_ms / 1000
        if reply.speaking and event.at - reply.first_audio_at < guard:
            return  # too soon after the reply began to tell the user from an echo: the turn's words decide
        self._barge_in_onset = event.at
        self._check_barge_in()

    def _check_barge_in(self) -> None:
        if self._barge_in_onset is None:
            return
        if not self.detector.in_turn:
            self._barge_in_onset = None
        elif self.detector.voiced_ms >= self.config.barge_in.min_speech_ms:
            onset, self._barge_in_onset = self._barge_in_onset, None
            self._barge_in(onset)

    def _barge_in(self, onset_at: float | None) -> None:
        """Take the current reply's unplayed audio out now and hold its speech until the verdict."""
        reply = self._current
        if reply is None or reply.task.done():
            return
        if self._interrupted is not None:  # the user already spoke over an earlier reply and went on
            self._confirm(self._interrupted)
        self._current = None
        reply.may_speak.clear()
        self._interrupted = _Interruption(
            reply, onset_at if reply.speaking else None, self.outbound.frames_sent, self.outbound.clear()
        )
        self._set_state("listening")

    def _interrupted_exchange(self) -> Exchange | None:
        """The reply this turn's words will cancel, as memory will keep it: cut to what was heard."""
        interruption = self._interrupted
        if interruption is None or not interruption.reply.answering:
            return None
        return Exchange(interruption.reply.user, ChatMessage("assistant", self._heard(interruption.reply)))

    def _on_audio_stopped(self, at: float) -> None:
        interruption = self._interrupted
        if interruption is None or interruption.onset_at is None:
            return
        latency = at - interruption.onset_at
        interruption.onset_at = None
        metrics.BARGE_IN.observe(latency)
        self.events.send(
            "agent.barge_in",
            response_id=interruption.reply.id,
            latency_s=round(latency, 4),
            stopped_after_decision_s=round(at - interruption.decided_at, 4),
            audible_frames_after_decision=max(0, self.outbound.last_audible_frame - interruption.decision_frame),
        )

    def _settle(self, reply: _Reply) -> None:
        """Once ``reply`` is released and its words known, decide the interruption it made, then let it speak."""
        if not reply.released.is_set() or reply.may_speak.is_set():
            return
        if self._interrupted is not None and reply.transcript is None:
            return  # the interruption's words decide; they are not known yet
        interruption, self._interrupted = self._interrupted, None
        if interruption is not None:
            if reply.transcript.strip() or not self.config.barge_in.resume_after_false_interruption:
                self._confirm(interruption)
            else:
                self._resume(interruption)
        reply.may_speak.set()

    def _confirm(self, interruption: _Interruption) -> None:
        if self._interrupted is interruption:
            self._interrupted = None
        metrics.INTERRUPTIONS.inc()
        reply = interruption.reply
        if reply.answering and not reply.remembered:
            # Now, not when the task unwinds: the next reply's context is built from memory right away.
            reply.remembered = True
            self.memory.remember(reply.user, self._heard(reply))
        reply.task.cancel()

    def _resume(self, interruption: _Interruption) -> None:
        reply = interruption.reply
        reply.heard_cap_samples = None  # whatever the client said it had played, it plays the rest now
        metrics.FALSE_INTERRUPTIONS.inc()
        self.outbound.restore(interruption.taken)
        self._current = reply
        reply.may_speak.set()
        self.events.send("agent.reply.resumed", response_id=reply.id)
        self._set_state("speaking" if reply.speaking else "thinking")

    def interrupt(self) -> None:
        """Stop the current reply now, as a user interruption with words would."""
        self._barge_in(onset_at=None)
        if self._interrupted is not None:
            self._confirm(self._interrupted)

    # --- what a client may ask (OpenAI Realtime's client events) ----------------------------------

    def commit_input(self) -> None:
        """End the user's turn now with the audio received so far (input_audio_buffer.commit)."""
        now = time.monotonic()
        if self.turn_detection == "none":
            if not self._manual_audio:
                raise InputError("input_audio_buffer_commit_empty", "the input audio buffer is empty")
            audio, self._manual_audio = np.concatenate(self._manual_audio), []
            turn = TurnEnded(audio, self._manual_start_ms, self._stream_ms, now, now)
        else:
            turn = self.detector.end_turn_now(now)
            if turn is None:
                raise InputError("input_audio_buffer_commit_empty", "no speech in the input audio buffer to commit")
        self._on_turn_ended(turn, by_vad=False)

    def clear_input(self) -> None:
        """Drop the audio not yet committed (input_audio_buffer.clear)."""
        self._manual_audio = []
        self._discard_speculative()
        self.detector.drop_turn()
        self._turn_item_id = None
        self._barge_in_onset = None
        self.events.send("input_audio_buffer.cleared")

    def add_user_text(self, text: str) -> str:
        """A typed user message (conversation.item.create); answered at the next create_response. Its item id."""
        now = time.monotonic()
        turn = TurnEnded(np.zeros(0, dtype=np.int16), self._stream_ms, self._stream_ms, now, now)
        pending = self._pending
        if pending is not None and pending.typed:
            text = f"{pending.transcript} {text}"
        self._hold_pending(self._begin_reply(turn, text=text))
        return self._pending.item_id

    def create_response(self) -> None:
        """Answer the committed turn or typed message now (response.create)."""
        reply, self._pending = self._pending, None
        if reply is None:
            raise InputError(
                "response_create_nothing_new", "no user input since the last response: commit audio or add a message"
            )
        self._release(reply)

    def cancel_response(self) -> None:
        """Stop the current reply as an interruption would (response.cancel)."""
        reply = self._current
        if reply is None or reply.task.done():
            raise InputError("response_cancel_not_active", "there is no response in progress to cancel")
        self.interrupt()

    def truncate(self, response_id: str, audio_end_ms: int) -> None:
        """The client played only ``audio_end_ms`` of a reply (conversation.item.truncate): memory keeps that much."""
        reply = self._recent.get(response_id)
        running = self._current if self._current is not None and self._current.id == response_id else None
        if self._interrupted is not None and self._interrupted.reply.id == response_id:
            running = self._interrupted.reply
        reply = running or reply
        if reply is None:
            raise InputError("item_truncate_invalid_item_id", f"no reply {response_id!r} to truncate")
        reply.heard_cap_samples = max(0, audio_end_ms) * self.outbound.sample_rate // 1000
        if running is not None:
            if self.detector.in_turn:
                self._barge_in(onset_at=None)  # the user is speaking: the turn's words decide, as for a barge-in
            else:
                self.interrupt()  # _finish_reply sends conversation.item.truncated with the client's figure
            return
        heard = self._heard(reply)
        if self.memory.revise(reply.user, heard):
            log.info("session %s: reply %s truncated by the client at %d ms", self.id, reply.id, audio_end_ms)
        self.events.send(
            "conversation.item.truncated", item_id=reply.item_id, response_id=reply.id, content_index=0,
            audio_end_ms=audio_end_ms, text=heard,
        )

    @property
    def listen_language(self) -> str:
        """The language recognised: a code, or auto."""
        return self._listen_language

    def set_turn_detection(
        self, mode: str, silence_ms: int | None = None, create_response: bool = True, interrupt_response: bool = True
    ) -> None:
        if mode not in TURN_DETECTION_MODES:
            raise InputError("invalid_value", f"turn detection must be one of {', '.join(TURN_DETECTION_MODES)}")
        if mode != self.turn_detection:
            self._user_quiet.set()
            self._open_turn = self._joined = None
            self._discard_speculative()
            self.detector.drop_turn()
            self._manual_audio = []
            self._turn_item_id = None
        self.turn_detection = mode
        self.respond_at_turn_end = create_response
        self.interrupt_response = interrupt_response and self.config.barge_in.enabled
        self.end_of_turn_silence_ms = silence_ms or self.config.vad.end_of_turn_silence_ms
        self.detector.set_default_end_of_turn_silence(self.end_of_turn_silence_ms)

    def set_instructions(self, instructions: str | None) -> None:
        """A client's system prompt (``{language}`` is replaced as in llm.system_prompt); None: the configured one."""
        self._instructions = instructions
        self.memory.system_prompt = system_prompt(self.config, self.language, instructions)

    def _emit(self, reply: _Reply, event_type: str, **fields) -> None:
        """Send an event of ``reply``'s, or hold it while the reply is still speculative."""
        if reply.released.is_set():
            self.events.send(event_type, **fields)
        else:
            reply.held_events.append((event_type, fields))

    # --- replying ---------------------------------------------------------------------------------

    async def _respond(self, reply: _Reply) -> None:
        if reply.typed:
            reply.user = ChatMessage("user", reply.transcript)
            self._settle(reply)
            await self._reply_to(reply)
            return
        audio = to_float(reply.audio)
        reply.user = ChatMessage("user", "", audio=audio)
        transcribing = reply.transcribing = asyncio.create_task(self._transcribe(reply))
        hears_audio = getattr(self.runtime.chat, "hears_audio", False)
        try:
            # A model that hears the audio answers at once; the transcript (page, memory, the verdict
            # on an interruption) comes alongside. A text model must wait for the words.
            if not hears_audio:
                await transcribing
                if not reply.transcript.strip():
                    await reply.released.wait()
                    self._end_wordless_turn(reply)
                    return
            await self._reply_to(reply)
        finally:
            if not transcribing.done():
                transcribing.cancel()

    async def _transcribe(self, reply: _Reply) -> None:
        started = time.monotonic()
        # On a pause the audio end-of-turn model, if there is one, hears the turn while Whisper reads it.
        judging = None
        if reply is self._speculative and self.turn_detection == "semantic_vad" and self.runtime.turn is not None:
            judging = asyncio.create_task(self.runtime.turn_complete_probability(reply.audio))
        try:
            transcript = await self.runtime.transcribe(reply.user.audio, self._listen_language)
        except asyncio.CancelledError:
            if judging is not None:
                judging.cancel()
            raise
        except Exception:
            if judging is not None:
                judging.cancel()
            metrics.ERRORS.labels(stage="asr").inc()
            log.exception("session %s: speech recognition failed", self.id)
            reply.transcript = ""
            self._settle(reply)
            await reply.released.wait()
            self.events.send("error", error={"type": "asr_error", "message": "speech recognition failed"})
            return
        reply.latency.asr_s = time.monotonic() - started
        reply.transcript = reply.user.text = transcript.text
        self._emit(
            reply,
            "conversation.item.input_audio_transcription.completed",
            item_id=reply.item_id,
            content_index=0,
            transcript=transcript.text,
            language=transcript.language,
            confidence=None if transcript.confidence is None else round(transcript.confidence, 3),
        )
        if transcript.text.strip():
            detected = transcript.language
            if self._listen_language == AUTO_LANGUAGE and detected != self.language and detected in LANGUAGE_NAMES:
                self._set_language(detected, listen=AUTO_LANGUAGE)
            reply.user_emotion = detect_emotion(transcript.text, self.language)
            self._emit(reply, "agent.emotion", speaker="user", item_id=reply.item_id, **_fields(reply.user_emotion))
        if judging is not None:
            try:
                reply.complete_probability = await judging
            except Exception:
                metrics.ERRORS.labels(stage="end_of_turn").inc()
                log.exception("session %s: the end-of-turn model failed; the transcript decides", self.id)
        self._adapt_end_of_turn(reply)
        self._settle(reply)

    async def _reply_to(self, reply: _Reply) -> None:
        user = reply.user
        reply.answering = True
        self._emit(reply, "response.created", response={"id": reply.id, "status": "in_progress"})
        status, text = "failed", ""
        try:
            text = await self._generate_and_speak(reply, self.memory.context_for(user, self._interrupted_exchange()))
            await self._wait_heard(reply)
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
            if reply.dropped:
                self._finish_dropped(reply)
            elif status != "discarded":
                heard = text if status == "completed" and not self._was_cut(reply) else self._heard(reply)
                if not reply.remembered:
                    reply.remembered = True
                    self.memory.remember(user, heard)
                self._finish_reply(reply, status, heard)

    async def _generate_and_speak(self, reply: _Reply, messages: list[ChatMessage]) -> str:
        latency = reply.latency
        chunker = PhraseChunker(self.config.chunker)
        phrases: asyncio.Queue[str | None] = asyncio.Queue()
        speaker = asyncio.create_task(self._speak(reply, phrases))
        parts = reply.parts
        started = time.monotonic()
        stream = self.runtime.stream_reply(messages, words=reply.transcribing)
        try:
            async for piece in stream:
                now = time.monotonic()
                if latency.llm_first_token_s is None:
                    latency.llm_first_token_s = now - started
                elif parts:
                    latency.llm_per_token_s = (now - started - latency.llm_first_token_s) / len(parts)
                parts.append(piece)
                self._emit(reply, "response.audio_transcript.delta", **reply.transcript_fields, delta=piece)
                for phrase in chunker.push(piece):
                    if latency.llm_first_phrase_s is None:
                        latency.llm_first_phrase_s = now - started
                    phrases.put_nowait(phrase)
            for phrase in chunker.flush():
                phrases.put_nowait(phrase)
            phrases.put_nowait(None)
            await speaker
        finally:
            latency.llm_backend = stream.backend
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
            # The reply's emotion so far (its first phrase may be all there is) shapes how this phrase sounds.
            said = " ".join(p.text for p in reply.phrases)
            style = detect_emotion(said, self.language).as_style()
            async for chunk in self.runtime.synthesize(phrase, self.language, style):
                if reply.latency.tts_first_audio_s is None:
                    reply.latency.tts_first_audio_s = time.monotonic() - started
                samples = resampler.samples(chunk.audio, chunk.sample_rate)
                spoken.samples += len(samples)
                await self._wait_to_speak(reply)
                self.outbound.enqueue(samples, tag)
                reply.enqueued = reply.enqueued or len(samples) > 0
            tail = resampler.flush()
            spoken.samples += len(tail)
            await self._wait_to_speak(reply)
            self.outbound.enqueue(tail, tag)

    async def _wait_to_speak(self, reply: _Reply) -> None:
        """Held while speculative or while an interruption is pending; a reply not yet audible also waits
        while the user is speaking or starting to, so that it never starts over them."""
        while True:
            await reply.may_speak.wait()
            if reply.enqueued or self._user_quiet.is_set():
                return
            await self._user_quiet.wait()

    def _on_audio_started(self, tag, at: float) -> None:
        reply = self._current
        if reply is not None and tag[0] == reply.id and reply.first_audio_at is None:
            reply.first_audio_at = at
            if self.detector.in_turn:
                metrics.REPLIES_OVER_USER.inc()
            self._set_state("speaking")

    async def _wait_heard(self, reply: _Reply) -> None:
        """Return once all of the reply's audio has been played; an interruption may hold it meanwhile."""
        while True:
            await reply.may_speak.wait()
            await self.outbound.wait_drained()
            if reply.may_speak.is_set():
                return

    def _end_wordless_turn(self, reply: _Reply) -> None:
        if self._current is reply:  # unless a resumed reply took its place
            self._current = None
            self._set_state("listening")

    def _adapt_end_of_turn(self, reply: _Reply) -> None:
        """A speculative transcript sets the silence that will end its turn; it may end the turn right now."""
        if reply is not self._speculative or reply.released.is_set() or self.turn_detection != "semantic_vad":
            return
        silence_ms = end_of_turn_silence_ms(
            reply.transcript, self.language, self.config.vad, reply.complete_probability
        )
        log.debug(
            "session %s: %r after %d ms of silence; the turn ends at %d ms",
            self.id, reply.transcript, self.detector.silence_ms, silence_ms,
        )
        metrics.END_OF_TURN_SILENCE.observe(silence_ms / 1000)
        self.detector.set_end_of_turn_silence(silence_ms)
        ended = self.detector.end_turn_if_silent_enough(time.monotonic())
        if ended is not None:
            self._on_turn_ended(ended)

    def _sent_samples(self, reply: _Reply) -> list[int]:
        """Samples of each phrase the user heard: as sent, or as much as the client said it played."""
        sent = [self.outbound.sent_by_tag.get((reply.id, i), 0) for i in range(len(reply.phrases))]
        if reply.final_sent is not None:
            sent = list(reply.final_sent)
        cap = reply.heard_cap_samples
        if cap is None:
            return sent
        heard = []
        for n in sent:
            heard.append(min(n, cap))
            cap -= heard[-1]
        return heard

    def _heard(self, reply: _Reply) -> str:
        return heard_text(reply.phrases, self._sent_samples(reply))

    def _was_cut(self, reply: _Reply) -> bool:
        return any(sent < phrase.samples for phrase, sent in zip(reply.phrases, self._sent_samples(reply), strict=True))

    def _finish_dropped(self, reply: _Reply) -> None:
        """A reply the user never heard, its turn reopened: clients learn it is gone; memory and records never
        knew it."""
        metrics.TURNS.labels(status="dropped").inc()
        for key in [k for k in self.outbound.sent_by_tag if k[0] == reply.id]:
            del self.outbound.sent_by_tag[key]
        self.events.send("agent.reply.dropped", response_id=reply.id, item_id=reply.item_id)
        self.events.send("response.audio_transcript.done", **reply.transcript_fields, transcript="")
        self.events.send("response.done", response={"id": reply.id, "status": "cancelled", "output_text": ""})

    def _finish_reply(self, reply: _Reply, status: str, text: str) -> None:
        latency = reply.latency
        if reply.first_audio_at is not None:
            latency.voice_to_voice_s = reply.first_audio_at - reply.speech_ended_at
            metrics.VOICE_TO_VOICE.labels(llm_backend=latency.llm_backend).observe(latency.voice_to_voice_s)
        self._observe_stages(latency)
        metrics.TURNS.labels(status=status).inc()
        if status == "cancelled":
            heard_ms = sum(self._sent_samples(reply)) * 1000 // self.outbound.sample_rate
            self.events.send(
                "conversation.item.truncated",
                item_id=reply.item_id,
                response_id=reply.id,
                content_index=0,
                audio_end_ms=heard_ms,
                text=text,
            )
        if reply.user_emotion is not None:
            metrics.EMOTIONS.labels(speaker="user", emotion=reply.user_emotion.emotion).inc()
        if text:
            emotion = detect_emotion(text, self.language)
            metrics.EMOTIONS.labels(speaker="agent", emotion=emotion.emotion).inc()
            self.events.send("agent.emotion", speaker="agent", response_id=reply.id, **_fields(emotion))
        self.events.send("response.audio_transcript.done", **reply.transcript_fields, transcript=text)
        self.events.send("response.done", response={"id": reply.id, "status": status, "output_text": text})
        self.events.send("agent.turn.latency", response_id=reply.id, **latency.as_dict())
        self._log_turn(reply, status, text, latency)
        self._record_exchange(reply, status, text)
        reply.final_sent = [self.outbound.sent_by_tag.pop((reply.id, i), 0) for i in range(len(reply.phrases))]
        for key in [k for k in self.outbound.sent_by_tag if k[0] == reply.id]:
            del self.outbound.sent_by_tag[key]
        self._recent[reply.id] = reply
        while len(self._recent) > self.config.memory.max_turns:
            del self._recent[next(iter(self._recent))]
        if self._current is reply:
            self._current = None
        if status != "cancelled":
            self._set_state("listening")

    def _record_exchange(self, reply: _Reply, status: str, heard: str) -> None:
        if self.record is None or not (reply.transcript or "").strip():
            return
        emotion = reply.user_emotion.emotion if reply.user_emotion else None
        user = TurnIn("user", "user", reply.audio_start_ms, reply.audio_end_ms, reply.transcript,
                      emotion=emotion, language=self.language)
        said = "".join(reply.parts).strip()
        agent = None
        if said:
            start = reply.first_audio_at or time.monotonic()
            heard_ms = sum(self._sent_samples(reply)) * 1000 // self.outbound.sample_rate
            start_ms = self.record.ms_since_start(start)
            agent = TurnIn(
                "agent", "assistant", start_ms, start_ms + heard_ms, said,
                heard_text=heard if status == "cancelled" or heard != said else None,
                emotion=detect_emotion(said, self.language).emotion, language=self.language,
                latency=reply.latency.as_dict() | {"status": status},
            )
        self.record.exchange(user, agent)

    def _observe_stages(self, latency: TurnLatency) -> None:
        if latency.endpointing_s is not None:
            metrics.ENDPOINTING.observe(latency.endpointing_s)
        if latency.asr_s is not None:
            metrics.ASR.labels(backend=self.runtime.stt.name).observe(latency.asr_s)
        if latency.llm_first_token_s is not None:
            metrics.LLM_FIRST_TOKEN.labels(backend=latency.llm_backend).observe(latency.llm_first_token_s)
        if latency.llm_per_token_s is not None:
            metrics.LLM_TIME_PER_TOKEN.labels(backend=latency.llm_backend).observe(latency.llm_per_token_s)
        if latency.llm_first_phrase_s is not None:
            metrics.LLM_FIRST_PHRASE.labels(backend=latency.llm_backend).observe(latency.llm_first_phrase_s)
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

    def handle_client_event(self, event: dict) -> None:
        """An event from our own page's data channel."""
        log.debug("session %s: client event %s", self.id, event.get("type"))
        if event.get("type") == "agent.client.stats":
            metrics.observe_client_report(event)
        elif event.get("type") == "session.update":
            self._update_session(event.get("session"))

    def _update_session(self, update: object) -> None:
        """The page's language selector sends session.update with ``{"language": code}``."""
        try:
            self.set_language(update.get("language") if isinstance(update, dict) else None)
        except InputError as exc:
            self.events.send("error", error={"type": "invalid_request_error", "code": exc.code, "message": str(exc)})

    def set_language(self, language: object) -> None:
        """Answer and recognise ``language`` from the next turn on; ``auto`` recognises any and answers in kind."""
        if not isinstance(language, str) or (language != AUTO_LANGUAGE and language not in LANGUAGE_NAMES):
            allowed = ", ".join(sorted(LANGUAGE_NAMES))
            raise InputError("invalid_value", f"session.language must be one of {allowed}, or auto; got {language!r}")
        self._set_language(answer_language(self.config) if language == AUTO_LANGUAGE else language, listen=language)

    def _set_language(self, language: str, listen: str) -> None:
        """Answer in ``language`` from the next turn on, recognising ``listen`` (a code, or auto)."""
        self.language, self._listen_language = language, listen
        self.memory.system_prompt = system_prompt(self.config, language, self._instructions)
        log.info("session %s: language %s (recognising %s)", self.id, language, listen)
        self.events.send("session.updated", session={"id": self.id, "language": language, "input_language": listen})


def _fields(emotion: Emotion) -> dict:
    return {"emotion": emotion.emotion, "confidence": emotion.confidence, "intensity": emotion.intensity}
