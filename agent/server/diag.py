"""``GET /diag``: how each session's media travels, to tell a direct path from a relayed one.

Per session: the connection and ICE states, the selected candidate pair (``host``, ``srflx``/``prflx``
or ``relay``, the more indirect of its two ends, and each end's type and protocol) and the round-trip
time from the peer's RTCP receiver reports (None until the first one, a second or so into the call).
The server's own address is shown; the peer's is not, since it is a user's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from agent.session import Session
from agent.transport.ice import round_trip_time, selected_pair


async def report(sessions: Iterable[Session]) -> dict[str, Any]:
    return {"sessions": [await describe(session) for session in sessions]}


async def describe(session: Session) -> dict[str, Any]:
    pc = getattr(session.transport, "pc", None)
    if pc is None:  # a WebSocket: no ICE, no candidates
        return {"id": session.id, "state": session.state, "transport": session.transport.kind}
    pair = selected_pair(pc)
    candidate_pair = None
    if pair is not None:
        local, remote = pair.local, pair.remote
        candidate_pair = {
            "type": pair.type,
            "local": {"type": local.type, "protocol": local.protocol, "address": local.address, "port": local.port},
            "remote": {"type": remote.type, "protocol": remote.protocol},
        }
    return {
        "id": session.id,
        "state": session.state,
        "transport": session.transport.kind,
        "connection_state": pc.connectionState,
        "ice_state": pc.iceConnectionState,
        "candidate_pair": candidate_pair,
        "round_trip_time_s": await round_trip_time(pc),
    }
