"""ICE: the STUN/TURN servers each side is given; the candidate pair a connection ended up on and its RTT.

``server.ice_servers`` serve the server's peer connections and the page; ``server.page_ice_servers``
only the page (a TURN server the browser reaches at a public address, such as the pod's own coturn
behind the pod's TCP port, which the server inside the pod has no need to reach). An empty list means
no STUN/TURN at all, not aiortc's default public STUN server.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aioice import Connection
from aiortc import RTCConfiguration, RTCIceServer, RTCIceTransportPolicy, RTCPeerConnection

from agent.config import ServerConfig

# The more indirect candidate decides what a pair is: relayed through TURN beats reflexive beats host.
_INDIRECTNESS = {"host": 0, "srflx": 1, "prflx": 1, "relay": 2}


def rtc_ice_servers(entries: Iterable[Mapping[str, Any] | RTCIceServer]) -> list[RTCIceServer]:
    """``{urls, username?, credential?}`` mappings (as in the config) as aiortc's ``RTCIceServer``."""
    return [entry if isinstance(entry, RTCIceServer) else RTCIceServer(**entry) for entry in entries]


def rtc_configuration(
    entries: Iterable[Mapping[str, Any] | RTCIceServer], *, relay_only: bool = False
) -> RTCConfiguration:
    """A peer connection's configuration; ``relay_only`` gathers and uses TURN candidates only."""
    policy = RTCIceTransportPolicy.RELAY if relay_only else RTCIceTransportPolicy.ALL
    return RTCConfiguration(iceServers=rtc_ice_servers(entries), iceTransportPolicy=policy)


def page_ice_servers(server: ServerConfig) -> list[dict[str, Any]]:
    """What the page is told to use: the shared servers, then the page-only ones."""
    return [*server.ice_servers, *server.page_ice_servers]


@dataclass(frozen=True)
class CandidateInfo:
    type: str  # host, srflx, prflx or relay
    protocol: str  # udp or tcp
    address: str
    port: int


@dataclass(frozen=True)
class CandidatePair:
    local: CandidateInfo
    remote: CandidateInfo

    @property
    def type(self) -> str:
        """``relay`` if either end is relayed, else ``srflx``/``prflx`` if either is reflexive, else ``host``."""
        return max((self.local.type, self.remote.type), key=lambda t: _INDIRECTNESS.get(t, 0))


def ice_connections(pc: RTCPeerConnection) -> list[Connection]:
    """The aioice agents behind a peer connection's transports, once a description has created them."""
    dtls_transports = [t.receiver.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        dtls_transports.append(pc.sctp.transport)
    connections: dict[int, Connection] = {}
    for dtls in dtls_transports:
        if dtls is not None:
            # aiortc keeps the aioice agent of an RTCIceTransport here and exposes no other handle on it.
            connection = dtls.transport._connection
            connections[id(connection)] = connection
    return list(connections.values())


def selected_pair(pc: RTCPeerConnection) -> CandidatePair | None:
    """The nominated candidate pair carrying the connection's media, None before ICE has nominated one."""
    for connection in ice_connections(pc):
        # aioice records the pair nominated for each component (one with rtcp-mux and BUNDLE) here.
        for pair in connection._nominated.values():
            return CandidatePair(_candidate_info(pair.local_candidate), _candidate_info(pair.remote_candidate))
    return None


def _candidate_info(candidate: Any) -> CandidateInfo:
    return CandidateInfo(candidate.type, candidate.transport.lower(), candidate.host, candidate.port)


async def round_trip_time(pc: RTCPeerConnection) -> float | None:
    """Round-trip time of the audio this side sends, from the peer's RTCP receiver reports; None before one."""
    for stats in (await pc.getStats()).values():
        if stats.type == "remote-inbound-rtp" and stats.roundTripTime is not None:
            return stats.roundTripTime
    return None
