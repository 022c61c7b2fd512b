"""WebRTC: one peer connection carries a session's microphone, its voice and its events.

The microphone track is decoded and resampled by ``InboundAudio``; the agent's voice leaves through
an ``OutboundAudioTrack`` paced by the wall clock; events travel on the ``events`` data channel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiortc import RTCDataChannel, RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack

from agent.transport.channel import EventChannel
from agent.transport.inbound import PeerVanished
from agent.transport.outbound import OutboundAudioTrack

if TYPE_CHECKING:
    from agent.session import Session


class WebRTCTransport:
    kind = "webrtc"

    def __init__(self, pc: RTCPeerConnection, output_sample_rate: int) -> None:
        self.pc = pc
        self.output_sample_rate = output_sample_rate
        self.channel = EventChannel()
        self._track: OutboundAudioTrack | None = None

    def send(self, event_type: str, **fields: Any) -> None:
        self.channel.send(event_type, **fields)

    def connect(self, session: Session) -> None:
        """Wire the peer connection's tracks, data channel and state to ``session``."""
        pc = self.pc
        self.channel.on_client_event = session.handle_client_event

        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            self.channel.attach(channel)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio" and self._track is None:
                self._track = OutboundAudioTrack(session.outbound)
                pc.addTrack(self._track)
                session.spawn(self._pump_microphone(session, track), "microphone")

        @pc.on("connectionstatechange")
        async def on_connection_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await session.close(f"connection {pc.connectionState}")

    async def _pump_microphone(self, session: Session, track: MediaStreamTrack) -> None:
        try:
            await session.inbound.pump(track)
        except PeerVanished as exc:
            session.spawn(session.close(str(exc)), "close")

    async def close(self) -> None:
        if self._track is not None:
            self._track.stop()
        await self.pc.close()
