"""One WebSocket carrying a session: a bounded queue of outgoing messages, and the reply audio paced out.

A protocol (Realtime or the simple one) turns the session's events and audio into messages; this
module only moves them. A client that reads too slowly fills the queue and is disconnected with a
reason rather than letting the server's memory grow.

Over a WebSocket the client plays the audio, so the server cannot know exactly what was heard. It
sends audio at most ``websocket.output_lead_ms`` ahead of real time and assumes the client plays it
as it arrives; at a barge-in what the client can not have played yet is taken back (counted as not
sent, resent if the reply resumes). A client that says how much it played (``conversation.item.truncate``)
overrides that estimate.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import json
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from aiohttp import WSCloseCode, web

from agent.config import WebSocketConfig
from agent.transport.outbound import OutboundAudio, QueuedAudio

if TYPE_CHECKING:
    from agent.session import Session

log = logging.getLogger(__name__)
_dumps = functools.partial(json.dumps, separators=(",", ":"))


class WireProtocol(Protocol):
    def messages_for(self, event_type: str, fields: dict[str, Any]) -> list[dict[str, Any]]:
        """The wire messages that carry one of the session's events (none, one or several)."""

    def audio_message(self, response_id: str, samples: np.ndarray) -> dict[str, Any] | None:
        """The wire message that carries reply audio, int16 at the session's outbound rate."""


@dataclass
class _InFlight:
    tag: Hashable
    samples: np.ndarray
    starts_at: float  # when the client starts playing it, if it plays as it receives


class WebSocketTransport:
    def __init__(
        self,
        kind: str,
        ws: web.WebSocketResponse,
        config: WebSocketConfig,
        output_sample_rate: int,
        abort: Callable[[], None] | None = None,
    ) -> None:
        self.kind = kind
        self.ws = ws
        self.output_sample_rate = output_sample_rate
        self.protocol: WireProtocol | None = None
        self._config = config
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(config.send_queue_messages)
        self._in_flight: collections.deque[_InFlight] = collections.deque()
        self._client_plays_until = 0.0  # time.monotonic() when the client's buffered audio runs out
        self.close_code = WSCloseCode.OK
        self.close_reason = "session ended"
        self._abort = abort  # drops the TCP connection at once
        self._session: Session | None = None

    # --- the session's side ------------------------------------------------------------------------

    def send(self, event_type: str, **fields: Any) -> None:
        for message in self.protocol.messages_for(event_type, fields):
            self.send_message(message)

    def send_message(self, message: dict[str, Any]) -> None:
        if self._queue.full():
            if self.close_code == WSCloseCode.OK:
                limit = self._config.send_queue_messages
                self.close_code = WSCloseCode.POLICY_VIOLATION
                self.close_reason = f"client too slow: {limit} messages unread (websocket.send_queue_messages)"
                log.warning("session %s: closing its WebSocket: %s", self._session.id, self.close_reason)
                self._session.spawn(self._session.close(self.close_reason), "close")
            return
        self._queue.put_nowait(message)

    def start(self, session: Session) -> None:
        """Run the writer and the audio pacer as the session's tasks."""
        self._session = session
        session.outbound.take_back = self._take_back
        session.spawn(self._write(session), "ws-writer")
        session.spawn(self._pace_audio(session.outbound), "ws-audio")

    async def close(self) -> None:
        if self.ws.closed:
            return
        try:
            # A client that reads nothing never lets the close frame out: give up on it and drop the connection.
            await asyncio.wait_for(self.ws.close(code=self.close_code, message=self.close_reason.encode()[:120]), 2.0)
        except TimeoutError:
            if self._abort is not None:
                self._abort()

    # --- out -------------------------------------------------------------------------------------

    async def _write(self, session: Session) -> None:
        try:
            while True:
                await self.ws.send_json(await self._queue.get(), dumps=_dumps)
        except (ConnectionError, RuntimeError) as exc:  # aiohttp raises these once the peer is gone
            session.spawn(session.close(f"send failed: {exc}"), "close")

    async def _pace_audio(self, audio: OutboundAudio) -> None:
        """Send reply audio up to the lead ahead of the client's playback; tick silence when idle."""
        frame_s = audio.frame_samples / audio.sample_rate
        lead_s = self._config.output_lead_ms / 1000
        next_tick = time.monotonic()
        while True:
            now = time.monotonic()
            while (
                self._in_flight
                and self._in_flight[0].starts_at + len(self._in_flight[0].samples) / audio.sample_rate <= now
            ):
                self._in_flight.popleft()
            batch: list[np.ndarray] = []
            batch_reply = None
            while audio.has_audio and max(self._client_plays_until, now) - now < lead_s:
                frame, parts = audio.next_frame()
                starts = max(self._client_plays_until, now)
                self._client_plays_until = starts + frame_s
                offset = 0
                for tag, n in parts:
                    self._in_flight.append(
                        _InFlight(tag, frame[offset : offset + n], starts + offset / audio.sample_rate)
                    )
                    offset += n
                reply = parts[0][0][0] if parts else None
                if batch and reply != batch_reply:
                    self._send_audio(batch_reply, batch)
                    batch = []
                batch_reply = reply
                batch.append(frame)
            if batch:
                self._send_audio(batch_reply, batch)
            elif self._client_plays_until <= now:
                audio.next_frame()  # silence: the recording's clock goes on, a stop is noticed
            next_tick = max(next_tick + frame_s, now)
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))

    def _send_audio(self, response_id: str | None, frames: list[np.ndarray]) -> None:
        if response_id is None:
            return
        message = self.protocol.audio_message(response_id, np.concatenate(frames))
        if message is not None:
            self.send_message(message)

    def _take_back(self) -> list[QueuedAudio]:
        """At a barge-in: the audio sent that the client, playing at real time, has not reached yet."""
        now = time.monotonic()
        rate = self.output_sample_rate
        unplayed = []
        for part in self._in_flight:
            played = int(max(0.0, now - part.starts_at) * rate)
            if played < len(part.samples):
                unplayed.append(QueuedAudio(part.tag, part.samples[played:].copy()))
        self._in_flight.clear()
        self._client_plays_until = now
        return unplayed
