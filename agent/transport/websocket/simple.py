"""The simple WebSocket protocol at ``/ws``: base64 audio in, transcriptions, reply text and reply audio out.

Client -> server:
  {"type": "audio", "data": "<base64 PCM16, 16 kHz, mono>"}   microphone audio, streamed as it is captured
  {"type": "text", "text": "..."}                              a typed message, answered at once
  {"type": "interrupt"}                                        stop the reply now
Server -> client:
  {"type": "ready", "session_id", "sample_rate": 16000, "language"}
  {"type": "speech_started", "timestamp"}                      the user is speaking: stop playing the reply
  {"type": "transcription", "text", "confidence", "language", "timestamp"}
  {"type": "response.text.delta", "response_id", "delta"}
  {"type": "audio", "response_id", "data": "<base64 PCM16, 16 kHz, mono>"}
  {"type": "response.done", "response_id", "status": "completed|cancelled|failed", "text"}   text: what was heard
  {"type": "error", "message"}
Turn taking, barge-in and memory are the session's, as over WebRTC and /v1/realtime.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from agent.session import InputError
from agent.transport.websocket.pcm import decode_pcm16, encode_pcm16

if TYPE_CHECKING:
    from agent.session import Session

SAMPLE_RATE = 16_000


class SimpleProtocol:
    def __init__(self, session: Session) -> None:
        self.session = session

    def receive(self, text: str) -> list[dict[str, Any]]:
        try:
            message = json.loads(text)
        except (ValueError, RecursionError):
            return [_error('the message is not JSON; send {"type": "audio", "data": "<base64 PCM16 16 kHz>"}')]
        kind = message.get("type") if isinstance(message, dict) else None
        try:
            if kind == "audio":
                return self._audio(message)
            if kind == "text" and isinstance(message.get("text"), str) and message["text"].strip():
                self.session.add_user_text(message["text"])
                self.session.create_response()
                return []
            if kind == "interrupt":
                self.session.cancel_response()
                return []
        except InputError as exc:
            return [_error(str(exc))]
        return [_error(f"unknown message type {kind!r}; send audio, text or interrupt")]

    def _audio(self, message: dict) -> list[dict]:
        data = message.get("data")
        if not isinstance(data, str):
            return [_error('an audio message needs "data": base64 PCM16 at 16 kHz mono')]
        try:
            samples = decode_pcm16(data)
        except ValueError as exc:
            return [_error(f"audio data {exc}")]
        self.session.hear(samples, time.monotonic())
        return []

    def messages_for(self, event_type: str, fields: dict[str, Any]) -> list[dict[str, Any]]:
        now = time.time()
        if event_type == "session.created":
            session = self.session
            return [
                {"type": "ready", "session_id": session.id, "sample_rate": SAMPLE_RATE, "language": session.language}
            ]
        if event_type == "input_audio_buffer.speech_started":
            return [{"type": "speech_started", "timestamp": now}]
        if event_type == "conversation.item.input_audio_transcription.completed":
            return [
                {
                    "type": "transcription",
                    "text": fields["transcript"],
                    "confidence": fields.get("confidence"),
                    "language": fields.get("language"),
                    "timestamp": now,
                }
            ]
        if event_type == "response.audio_transcript.delta":
            return [{"type": "response.text.delta", "response_id": fields["response_id"], "delta": fields["delta"]}]
        if event_type == "response.done":
            response = fields["response"]
            return [
                {
                    "type": "response.done",
                    "response_id": response["id"],
                    "status": response["status"],
                    "text": response.get("output_text", ""),
                }
            ]
        if event_type == "error":
            return [_error(fields.get("error", {}).get("message", "error"))]
        return []

    def audio_message(self, response_id: str, samples: np.ndarray) -> dict[str, Any]:
        return {"type": "audio", "response_id": response_id, "data": encode_pcm16(samples)}


def _error(message: str) -> dict[str, Any]:
    return {"type": "error", "message": message}
