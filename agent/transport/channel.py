"""The JSON event channel to the peer (a WebRTC data channel named "events").

Events sent before the channel opens are held and flushed on open; a closed channel swallows
events, since the session is about to end anyway.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from aiortc import RTCDataChannel

from agent.transport.events import make_event

log = logging.getLogger(__name__)
_MAX_HELD_EVENTS = 200


class EventChannel:
    def __init__(self, on_client_event: Callable[[dict[str, Any]], None] = lambda event: None) -> None:
        self._channel: RTCDataChannel | None = None
        self._held: list[str] = []
        self.on_client_event = on_client_event

    def attach(self, channel: RTCDataChannel) -> None:
        self._channel = channel
        channel.on("open", self._flush)
        channel.on("message", self._receive)
        if channel.readyState == "open":
            self._flush()

    def send(self, event_type: str, **fields: Any) -> None:
        text = json.dumps(make_event(event_type, **fields), separators=(",", ":"))
        channel = self._channel
        if channel is not None and channel.readyState == "open":
            channel.send(text)
        elif channel is None or channel.readyState == "connecting":
            if len(self._held) < _MAX_HELD_EVENTS:
                self._held.append(text)

    def _flush(self) -> None:
        held, self._held = self._held, []
        for text in held:
            self._channel.send(text)

    def _receive(self, message: str | bytes) -> None:
        try:
            event = json.loads(message)
        except (TypeError, ValueError):
            log.warning("ignoring a data-channel message that is not JSON")
            return
        if isinstance(event, dict):
            self.on_client_event(event)
