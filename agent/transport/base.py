"""What a session needs of the transport that carries it: WebRTC or a WebSocket.

The transport turns its wire format into session calls (audio heard, client events) and carries the
session's events and audio out; it owns nothing of the conversation.
"""

from __future__ import annotations

from typing import Any, Protocol


class Transport(Protocol):
    kind: str  # "webrtc", "realtime" (OpenAI Realtime over a WebSocket) or "ws" (the simple protocol)
    output_sample_rate: int  # the rate the session's outbound audio is queued at

    def send(self, event_type: str, **fields: Any) -> None:
        """Send one of the session's events (the names of ``agent.transport.events``)."""

    async def close(self) -> None:
        """Close the connection; the session has stopped its own tasks already."""
