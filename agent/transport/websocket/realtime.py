"""OpenAI's Realtime protocol over a WebSocket: client events become session calls, session events become
server events.

Both generations of the protocol are spoken: the GA names (``response.output_audio.delta``,
``conversation.item.added``/``.done``, ``session.type: realtime``, ``audio.input.format``) and, for a
client that sends ``OpenAI-Beta: realtime=v1``, the beta names (``response.audio.delta``,
``conversation.item.created``, ``input_audio_format: pcm16``). ``session.update`` is read in either
shape. What is not implemented is answered with an ``error`` event naming it; the session goes on.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

import numpy as np

from agent.audio.resample import Resampler
from agent.session import InputError
from agent.transport.inbound import INTERNAL_RATE
from agent.transport.websocket.pcm import decode_pcm16, encode_pcm16

if TYPE_CHECKING:
    from agent.session import Session

log = logging.getLogger(__name__)

RATES = (16_000, 24_000)
OPENAI_RATE = 24_000
_GA = {
    "audio_delta": "response.output_audio.delta",
    "audio_done": "response.output_audio.done",
    "transcript_delta": "response.output_audio_transcript.delta",
    "transcript_done": "response.output_audio_transcript.done",
    "item_added": "conversation.item.added",
    "item_audio": "output_audio",
}
_BETA = {
    "audio_delta": "response.audio.delta",
    "audio_done": "response.audio.done",
    "transcript_delta": "response.audio_transcript.delta",
    "transcript_done": "response.audio_transcript.done",
    "item_added": "conversation.item.created",
    "item_audio": "audio",
}
CLIENT_EVENTS = (
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.truncate",
    "conversation.item.retrieve",
    "response.create",
    "response.cancel",
)
NOT_IMPLEMENTED = (
    "conversation.item.delete",
    "output_audio_buffer.clear",
    "transcription_session.update",
)


class ProtocolError(ValueError):
    def __init__(self, message: str, code: str = "invalid_request_error", param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.param = code, param


class RealtimeProtocol:
    def __init__(self, session: Session, model: str, beta: bool, send_agent_events: bool = False) -> None:
        self.session = session
        self.model = model
        self.beta = beta
        self.names = _BETA if beta else _GA
        self.send_agent_events = send_agent_events  # our own agent.* events (latencies, state), off for OpenAI clients
        self.input_rate = OPENAI_RATE
        self.output_rate = session.outbound.sample_rate
        self.voice = "default"
        self.output_modalities = ["audio"]
        self._instructions: str | None = None
        self._in_resampler = Resampler(INTERNAL_RATE)
        self._out_resampler: Resampler | None = None
        self._assistant_items: dict[str, str] = {}  # response id -> its assistant message item id
        self._transcripts: dict[str, str] = {}
        self._items: dict[str, dict[str, Any]] = {}  # the conversation's recent items, by id, in order
        self._previous: dict[str, str | None] = {}  # item id -> the id of the item before it
        self._client_event_id: str | None = None

    # --- client -> session ---------------------------------------------------------------------

    def receive(self, text: str) -> list[dict[str, Any]]:
        """Handle one client message; returns the messages to send straight back (errors, acknowledgements)."""
        self._client_event_id = None
        try:
            event = json.loads(text)
        except ValueError as exc:
            return [self.error(f"the message is not JSON: {exc}", "invalid_json")]
        except RecursionError:
            return [self.error("the message is JSON nested too deeply", "invalid_json")]
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            return [self.error('a client event is a JSON object with a string "type"', "invalid_event")]
        event_type = event["type"]
        event_id = event.get("event_id")
        self._client_event_id = event_id if isinstance(event_id, str) else None
        try:
            if event_type in NOT_IMPLEMENTED:
                raise ProtocolError(f"{event_type} is not implemented by this server", "not_implemented")
            if event_type not in CLIENT_EVENTS:
                raise ProtocolError(
                    f"unknown client event type {event_type!r}; this server takes {', '.join(CLIENT_EVENTS)}",
                    "invalid_event_type",
                )
            handler = getattr(self, "_on_" + event_type.replace(".", "_"))
            return handler(event) or []
        except InputError as exc:
            return [self.error(str(exc), exc.code, event_type)]
        except ProtocolError as exc:
            return [self.error(str(exc), exc.code, event_type, exc.param)]
        except Exception:
            log.exception("session %s: %s failed", self.session.id, event_type)
            return [
                self.error("the server failed to handle this event", "server_error", event_type, kind="server_error")
            ]

    def _on_session_update(self, event: dict) -> list[dict]:
        update = _field(event, "session", dict)
        session = self.session
        if update.get("type") not in (None, "realtime"):
            raise ProtocolError(
                f'session.type {update["type"]!r} is not served here; use "realtime"', "invalid_value", "session.type"
            )
        # Read everything first, apply once all of it is valid.
        instructions = update.get("instructions", self._instructions)
        if instructions is not None and not isinstance(instructions, str):
            raise ProtocolError("session.instructions must be a string", "invalid_type", "session.instructions")
        instructions = instructions or None  # "" (a client that has none) keeps llm.system_prompt
        audio = _object(update.get("audio"), "session.audio")
        audio_in = _object(audio.get("input"), "session.audio.input")
        audio_out = _object(audio.get("output"), "session.audio.output")
        input_rate = _rate(audio_in.get("format"), update.get("input_audio_format"), self.input_rate, "input")
        output_rate = _rate(audio_out.get("format"), update.get("output_audio_format"), self.output_rate, "output")
        has_detection = "turn_detection" in audio_in or "turn_detection" in update
        detection = audio_in.get("turn_detection", update.get("turn_detection")) if has_detection else False
        voice = audio_out.get("voice", update.get("voice", self.voice))
        transcription = audio_in.get("transcription", update.get("input_audio_transcription"))
        transcription = _object(transcription, "session.audio.input.transcription")
        language = update.get("language", transcription.get("language"))
        modalities = update.get("output_modalities", update.get("modalities", self.output_modalities))
        turn_detection = _turn_detection(detection) if detection is not False else None
        if language is not None:
            session.set_language(language)  # refuses a language it does not know before anything is applied
        if turn_detection is not None:
            session.set_turn_detection(*turn_detection)
        if instructions != self._instructions:
            self._instructions = instructions
            session.set_instructions(instructions)
        self.input_rate = input_rate
        if output_rate != self.output_rate:
            self.output_rate = output_rate
            same = output_rate == session.outbound.sample_rate
            self._out_resampler = None if same else Resampler(output_rate)
        self.voice = str(voice)
        if isinstance(modalities, list):
            self.output_modalities = [str(m) for m in modalities]
        return [self._event("session.updated", session=self.session_object())]

    def _on_input_audio_buffer_append(self, event: dict) -> None:
        data = _field(event, "audio", str)
        try:
            samples = decode_pcm16(data)
        except ValueError as exc:
            raise ProtocolError(f"audio {exc}", "invalid_audio", "audio") from None
        if self.input_rate != INTERNAL_RATE:
            samples = self._in_resampler.samples(samples, self.input_rate)
        self.session.hear(samples, time.monotonic())

    def _on_input_audio_buffer_commit(self, event: dict) -> None:
        self.session.commit_input()

    def _on_input_audio_buffer_clear(self, event: dict) -> None:
        self.session.clear_input()

    def _on_conversation_item_create(self, event: dict) -> list[dict]:
        item = _field(event, "item", dict)
        if item.get("type", "message") != "message" or item.get("role") != "user":
            raise ProtocolError(
                "only user messages can be added (item.type message, item.role user)", "not_implemented", "item"
            )
        content = item.get("content")
        if not isinstance(content, list):
            raise ProtocolError("item.content must be a list of parts", "invalid_type", "item.content")
        texts = [
            part.get("text")
            for part in content
            if isinstance(part, dict)
            and part.get("type") in ("input_text", "text")
            and isinstance(part.get("text"), str)
        ]
        if not texts:
            raise ProtocolError(
                'item.content needs an {"type": "input_text", "text": ...} part', "missing_field", "item.content"
            )
        text = " ".join(texts)
        item_id = self.session.add_user_text(text)
        message = {
            "id": item_id,
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_text", "text": text}],
        }
        if "object" in item or self.beta:
            message["object"] = "realtime.item"
        return self._item_events(message)

    def _on_conversation_item_truncate(self, event: dict) -> None:
        item_id = _field(event, "item_id", str)
        audio_end_ms = _field(event, "audio_end_ms", int)
        response_id = next((r for r, i in self._assistant_items.items() if i == item_id), None)
        if response_id is None:
            raise ProtocolError(
                f"no assistant item {item_id!r} to truncate", "item_truncate_invalid_item_id", "item_id"
            )
        # The client counts in its own output rate's milliseconds, which are ours too.
        self.session.truncate(response_id, audio_end_ms)

    def _on_conversation_item_retrieve(self, event: dict) -> list[dict]:
        item_id = _field(event, "item_id", str)
        item = self._items.get(item_id)
        if item is None:
            raise ProtocolError(f"no item {item_id!r} in this conversation", "item_retrieve_invalid_item_id", "item_id")
        return [self._event("conversation.item.retrieved", item=item)]

    def _on_response_create(self, event: dict) -> None:
        self.session.create_response()

    def _on_response_cancel(self, event: dict) -> None:
        self.session.cancel_response()

    # --- session -> client ---------------------------------------------------------------------

    def messages_for(self, event_type: str, fields: dict[str, Any]) -> list[dict[str, Any]]:
        handler = getattr(self, "_out_" + event_type.replace(".", "_"), None)
        if handler is not None:
            return handler(fields)
        if event_type.startswith("agent."):
            return [self._event(event_type, **fields)] if self.send_agent_events else []
        return [self._event(event_type, **fields)]

    def _out_session_created(self, fields: dict) -> list[dict]:
        return [self._event("session.created", session=self.session_object())]

    def _out_session_updated(self, fields: dict) -> list[dict]:
        return [self._event("session.updated", session=self.session_object())]

    def _out_input_audio_buffer_committed(self, fields: dict) -> list[dict]:
        item_id = fields["item_id"]
        if item_id in self._items:  # a turn the user went on with: the same item, recognised again
            previous = self._previous.get(item_id)
            return [self._event("input_audio_buffer.committed", item_id=item_id, previous_item_id=previous)]
        committed = self._event("input_audio_buffer.committed", item_id=item_id, previous_item_id=self._last_item_id)
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        return [committed, *self._item_events(item)]

    def _out_conversation_item_input_audio_transcription_completed(self, fields: dict) -> list[dict]:
        if (item := self._items.get(fields["item_id"])) is not None:
            item["content"][0]["transcript"] = fields["transcript"]
        return [
            self._event(
                "conversation.item.input_audio_transcription.completed",
                item_id=fields["item_id"],
                content_index=0,
                transcript=fields["transcript"],
                language=fields.get("language"),
                usage={"type": "duration", "seconds": 0},
            )
        ]

    def _out_response_created(self, fields: dict) -> list[dict]:
        response_id = fields["response"]["id"]
        item_id = f"item_{uuid.uuid4().hex[:20]}"
        self._assistant_items[response_id] = item_id
        self._transcripts[response_id] = ""
        while len(self._assistant_items) > 32:
            old = next(iter(self._assistant_items))
            del self._assistant_items[old]
            self._transcripts.pop(old, None)
        item = self._assistant_item(response_id, "in_progress", None)
        where = {"response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0}
        return [
            self._event("response.created", response=self._response(response_id, "in_progress", [])),
            self._event("response.output_item.added", response_id=response_id, output_index=0, item=item),
            *self._item_events(item, done=False),
            self._event("response.content_part.added", **where, part={"type": "audio", "transcript": ""}),
        ]

    def _out_response_audio_transcript_delta(self, fields: dict) -> list[dict]:
        response_id = fields["response_id"]
        self._transcripts[response_id] = self._transcripts.get(response_id, "") + fields["delta"]
        return [self._event(self.names["transcript_delta"], **self._where(response_id), delta=fields["delta"])]

    def _out_response_audio_transcript_done(self, fields: dict) -> list[dict]:
        response_id, transcript = fields["response_id"], fields["transcript"]
        where = self._where(response_id)
        return [
            self._event(self.names["audio_done"], **where),
            self._event(self.names["transcript_done"], **where, transcript=transcript),
            self._event("response.content_part.done", **where, part={"type": "audio", "transcript": transcript}),
        ]

    def _out_response_done(self, fields: dict) -> list[dict]:
        response = fields["response"]
        response_id, status = response["id"], response["status"]
        text = response.get("output_text", "")
        item = self._assistant_item(response_id, "completed" if status == "completed" else "incomplete", text)
        messages = [self._event("response.output_item.done", response_id=response_id, output_index=0, item=item)]
        self._items[item["id"]] = item
        if not self.beta:
            previous = self._previous.get(item["id"])
            messages.append(self._event("conversation.item.done", previous_item_id=previous, item=item))
        messages.append(self._event("response.done", response=self._response(response_id, status, [item])))
        messages.append(
            self._event(
                "rate_limits.updated",
                rate_limits=[
                    {"name": "requests", "limit": 1_000_000, "remaining": 1_000_000, "reset_seconds": 0.0},
                    {"name": "tokens", "limit": 1_000_000, "remaining": 1_000_000, "reset_seconds": 0.0},
                ],
            )
        )
        return messages

    def _out_conversation_item_truncated(self, fields: dict) -> list[dict]:
        item_id = self._assistant_items.get(fields["response_id"])
        if item_id is None:
            return []
        if (item := self._items.get(item_id)) is not None:
            item["content"] = [{"type": self.names["item_audio"], "transcript": fields.get("text", "")}]
        return [
            self._event(
                "conversation.item.truncated", item_id=item_id, content_index=0, audio_end_ms=fields["audio_end_ms"]
            )
        ]

    def _out_error(self, fields: dict) -> list[dict]:
        error = fields.get("error", {})
        return [
            self.error(
                error.get("message", "error"),
                error.get("code") or error.get("type", "server_error"),
                kind="server_error",
            )
        ]

    def audio_message(self, response_id: str, samples: np.ndarray) -> dict[str, Any] | None:
        if response_id not in self._assistant_items:
            return None
        if self._out_resampler is not None:
            samples = self._out_resampler.samples(samples, self.session.outbound.sample_rate)
        return self._event(self.names["audio_delta"], **self._where(response_id), delta=encode_pcm16(samples))

    # --- shapes --------------------------------------------------------------------------------

    def session_object(self) -> dict[str, Any]:
        session = self.session
        detection = _detection_object(session)
        language = session.language if session.listen_language != "auto" else None
        transcription = {"model": session.runtime.stt.name, "language": language, "prompt": ""}
        if self.beta:
            return {
                "id": f"sess_{session.id}",
                "object": "realtime.session",
                "model": self.model,
                "modalities": ["audio", "text"] if "text" in self.output_modalities else ["audio"],
                "instructions": session.memory.system_prompt,
                "voice": self.voice,
                "input_audio_format": "pcm16",
                "output_audio_format": "pcm16",
                "input_audio_transcription": transcription,
                "turn_detection": detection,
                "tools": [],
                "tool_choice": "auto",
                "temperature": 0.8,
                "max_response_output_tokens": "inf",
                "language": session.language,
            }
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": f"sess_{session.id}",
            "model": self.model,
            "output_modalities": self.output_modalities,
            "instructions": session.memory.system_prompt,
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": self.input_rate},
                    "transcription": transcription,
                    "noise_reduction": None,
                    "turn_detection": detection,
                },
                "output": {
                    "format": {"type": "audio/pcm", "rate": self.output_rate},
                    "voice": self.voice,
                    "speed": 1.0,
                },
            },
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": "inf",
            "tracing": None,
            "prompt": None,
            "expires_at": 0,
            "include": None,
            "language": session.language,
        }

    def _assistant_item(self, response_id: str, status: str, transcript: str | None) -> dict[str, Any]:
        content = [] if transcript is None else [{"type": self.names["item_audio"], "transcript": transcript}]
        return {
            "id": self._assistant_items.get(response_id, response_id),
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": content,
        }

    def _response(self, response_id: str, status: str, output: list) -> dict[str, Any]:
        details = None
        if status == "cancelled":
            details = {"type": "cancelled", "reason": "turn_detected"}
        elif status == "failed":
            details = {"type": "failed", "error": {"type": "server_error", "code": "reply_failed"}}
        response = {
            "id": response_id,
            "object": "realtime.response",
            "status": status,
            "status_details": details,
            "output": output,
            "conversation_id": f"conv_{self.session.id}",
            "metadata": None,
            "usage": {"total_tokens": 0, "input_tokens": 0, "output_tokens": 0},
        }
        if self.beta:
            response["modalities"] = ["audio", "text"]
        else:
            response["output_modalities"] = self.output_modalities
            response["audio"] = {
                "output": {"format": {"type": "audio/pcm", "rate": self.output_rate}, "voice": self.voice}
            }
        return response

    @property
    def _last_item_id(self) -> str | None:
        return next(reversed(self._items), None)

    def _item_events(self, item: dict, done: bool = True) -> list[dict]:
        previous = self._last_item_id
        self._items[item["id"]] = item
        self._previous[item["id"]] = previous
        while len(self._items) > 64:
            self._previous.pop(next(iter(self._items)), None)
            del self._items[next(iter(self._items))]
        messages = [self._event(self.names["item_added"], previous_item_id=previous, item=item)]
        if done and not self.beta:
            messages.append(self._event("conversation.item.done", previous_item_id=previous, item=item))
        return messages

    def _where(self, response_id: str) -> dict[str, Any]:
        return {
            "response_id": response_id,
            "item_id": self._assistant_items.get(response_id, response_id),
            "output_index": 0,
            "content_index": 0,
        }

    def _event(self, event_type: str, **fields: Any) -> dict[str, Any]:
        return {"type": event_type, "event_id": f"event_{uuid.uuid4().hex[:20]}", **fields}

    def error(
        self,
        message: str,
        code: str,
        event_type: str | None = None,
        param: str | None = None,
        kind: str = "invalid_request_error",
    ) -> dict[str, Any]:
        if event_type:
            message = f"{event_type}: {message}"
        return self._event(
            "error",
            error={"type": kind, "code": code, "message": message, "param": param, "event_id": self._client_event_id},
        )


def _object(value: object, param: str) -> dict:
    """An optional JSON object of ``session.update``: ``{}`` when absent."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"{param} must be an object", "invalid_type", param)
    return value


def _field(event: dict, name: str, kind: type) -> Any:
    if name not in event:
        raise ProtocolError(f"missing field {name!r}", "missing_required_parameter", name)
    value = event[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError(f"field {name!r} must be a {kind.__name__}", "invalid_type", name)
    return value


def _rate(ga_format: object, beta_format: object, current: int, direction: str) -> int:
    """The sample rate a GA ``{"type": "audio/pcm", "rate": N}`` or a beta ``"pcm16"`` asks for."""
    param = f"session.audio.{direction}.format"
    if ga_format is not None:
        if not isinstance(ga_format, dict) or ga_format.get("type") != "audio/pcm":
            raise ProtocolError(f"{param}: only audio/pcm (PCM16) is served here", "unsupported_audio_format", param)
        rate = ga_format.get("rate", OPENAI_RATE)
        if rate not in RATES:
            raise ProtocolError(f"{param}.rate must be 24000 or 16000", "unsupported_audio_format", param)
        return rate
    if beta_format is not None:
        if beta_format != "pcm16":
            raise ProtocolError(f"{direction}_audio_format: only pcm16 is served here", "unsupported_audio_format")
        return OPENAI_RATE
    return current


def _turn_detection(detection: object) -> tuple[str, int | None, bool, bool]:
    """OpenAI's turn_detection -> (our mode, silence ms or None, create_response, interrupt_response)."""
    if detection is None:
        return "none", None, False, False
    if not isinstance(detection, dict) or detection.get("type") not in ("server_vad", "semantic_vad"):
        raise ProtocolError(
            "turn_detection must be null, {type: server_vad} or {type: semantic_vad}", "invalid_value", "turn_detection"
        )
    silence = detection.get("silence_duration_ms")
    if silence is not None and (not isinstance(silence, int) or not 100 <= silence <= 10_000):
        raise ProtocolError(
            "silence_duration_ms must be 100..10000", "invalid_value", "turn_detection.silence_duration_ms"
        )
    create = detection.get("create_response", True) is not False
    interrupt = detection.get("interrupt_response", True) is not False
    return detection["type"], silence, create, interrupt


def _detection_object(session: Session) -> dict[str, Any] | None:
    vad = session.config.vad
    if session.turn_detection == "none":
        return None
    common = {"create_response": session.respond_at_turn_end, "interrupt_response": session.interrupt_response}
    if session.turn_detection == "semantic_vad":
        return {"type": "semantic_vad", "eagerness": "auto", **common}
    return {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": vad.pre_speech_padding_ms,
        "silence_duration_ms": session.end_of_turn_silence_ms,
        "idle_timeout_ms": None,
        **common,
    }
