"""The live conversation's routes: ``POST /offer`` (WebRTC), ``GET /v1/realtime`` (OpenAI Realtime over a
WebSocket) and ``GET /ws`` (the simple WebSocket protocol). Each opens one ``Session``; only the transport differs.

``server.max_sessions`` counts the sessions of every transport together.
"""

from __future__ import annotations

import json
import logging
import uuid

from aiohttp import WSMsgType, web
from aiortc import RTCPeerConnection, RTCSessionDescription

from agent import metrics
from agent.server.api import RECORDS_KEY, USER
from agent.server.auth import WS_TOKEN_PREFIX
from agent.server.state import STATE_KEY
from agent.session import Session
from agent.transport.base import Transport
from agent.transport.ice import rtc_configuration
from agent.transport.udp_ports import pin_udp_ports
from agent.transport.webrtc import WebRTCTransport
from agent.transport.websocket.connection import WebSocketTransport
from agent.transport.websocket.realtime import RealtimeProtocol
from agent.transport.websocket.simple import SAMPLE_RATE as SIMPLE_RATE
from agent.transport.websocket.simple import SimpleProtocol

log = logging.getLogger(__name__)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _read_body(request: web.Request, most: int) -> bytes:
    """The body, read until it ends or ``most`` bytes have come (a chunked body arrives in pieces)."""
    body = bytearray()
    while len(body) < most:
        chunk = await request.content.read(most - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)


def _refusal(request: web.Request) -> web.Response | None:
    """Why no session can be opened now (models loading, server full), or None."""
    state = request.app[STATE_KEY]
    if state.draining:
        return _error(503, "the server is shutting down; connect again to reach another server")
    if not state.ready:
        return _error(503, "models are still loading; retry when GET /ready returns 200")
    limit = state.config.server.max_sessions
    if len(state.sessions) >= limit:
        return _error(503, f"the server is full ({limit} sessions, server.max_sessions)")
    return None


def _open_session(request: web.Request, transport: Transport) -> Session:
    state = request.app[STATE_KEY]
    config = state.config
    session_id = uuid.uuid4().hex[:8]

    def forget(session: Session) -> None:
        if state.sessions.pop(session.id, None) is not None:
            metrics.ACTIVE_SESSIONS.dec()

    user = request.get(USER)
    record = None
    if config.records.enabled:
        record = request.app[RECORDS_KEY].live_call(session_id, user.id if user else None, config.language)
    session = Session(session_id, config, state.runtime, transport, on_closed=forget, record=record)
    state.sessions[session_id] = session
    metrics.ACTIVE_SESSIONS.inc()
    metrics.SESSIONS_STARTED.labels(transport=transport.kind).inc()
    return session


async def offer(request: web.Request) -> web.Response:
    config = request.app[STATE_KEY].config
    limit = config.server.max_offer_bytes
    too_large = f"offer body over {limit} bytes (server.max_offer_bytes)"
    if request.content_length is not None and request.content_length > limit:
        return _error(413, too_large)
    body = await _read_body(request, limit + 1)
    if len(body) > limit:
        return _error(413, too_large)
    try:
        params = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return _error(400, 'body is not JSON; send {"sdp": "...", "type": "offer"}')
    if not isinstance(params, dict) or params.get("type") != "offer" or not isinstance(params.get("sdp"), str):
        return _error(400, 'expected JSON {"sdp": "<SDP offer>", "type": "offer"}')
    if "\nm=audio " not in "\n" + params["sdp"].replace("\r\n", "\n"):
        return _error(400, "the offer has no audio section; add a microphone track (sendrecv audio)")
    if (refused := _refusal(request)) is not None:
        return refused

    pc = RTCPeerConnection(rtc_configuration(config.server.ice_servers))
    transport = WebRTCTransport(pc, config.audio.outbound_sample_rate)
    session = _open_session(request, transport)
    transport.connect(session)
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=params["sdp"], type="offer"))
        pin_udp_ports(pc, config.server.udp_port_range)  # before the answer gathers candidates
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
    except Exception as exc:  # aiortc raises ValueError and others for SDP it cannot use
        await session.close("bad offer")
        return _error(400, f"cannot use this SDP offer: {exc}")
    session.start()
    log.info("session %s started over WebRTC (%d active)", session.id, len(request.app[STATE_KEY].sessions))
    return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type})


def _subprotocols(request: web.Request) -> tuple[str, ...]:
    """Echo the client's own subprotocols (``realtime``, the token one) so browsers accept the upgrade."""
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    return tuple(p for p in offered if p == "realtime" or p.startswith(WS_TOKEN_PREFIX))[:1] or ()


async def _serve_websocket(request: web.Request, kind: str) -> web.StreamResponse:
    if (refused := _refusal(request)) is not None:
        return refused
    config = request.app[STATE_KEY].config
    ws = web.WebSocketResponse(
        max_msg_size=config.server.max_ws_message_bytes,
        heartbeat=config.websocket.heartbeat_seconds,
        protocols=_subprotocols(request),
    )
    await ws.prepare(request)
    rate = config.websocket.output_sample_rate if kind == "realtime" else SIMPLE_RATE
    transport = WebSocketTransport(kind, ws, config.websocket, rate, abort=request.transport.abort)
    session = _open_session(request, transport)
    if kind == "realtime":
        beta = "realtime=v1" in request.headers.get("OpenAI-Beta", "")
        model = request.query.get("model") or request.app[STATE_KEY].runtime.chat.name
        agent_events = request.query.get("agent_events") in ("1", "true")
        protocol = RealtimeProtocol(session, model, beta, send_agent_events=agent_events)
    else:
        protocol = SimpleProtocol(session)
    transport.protocol = protocol
    transport.start(session)
    session.start()
    log.info("session %s started over %s (%d active)", session.id, kind, len(request.app[STATE_KEY].sessions))
    reason = "client closed the WebSocket"
    try:
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                replies = protocol.receive(message.data)
            elif message.type == WSMsgType.BINARY:
                replies = protocol.receive(message.data.decode("utf-8", "replace"))
            else:
                if message.type == WSMsgType.ERROR:
                    reason = f"WebSocket error: {ws.exception()}"
                break
            for reply in replies:
                transport.send_message(reply)
        if ws.close_code is not None and ws.close_code != 1000:
            reason = f"WebSocket closed with code {ws.close_code}"
    finally:
        await session.close(reason)
    return ws


async def realtime(request: web.Request) -> web.StreamResponse:
    return await _serve_websocket(request, "realtime")


async def simple_ws(request: web.Request) -> web.StreamResponse:
    return await _serve_websocket(request, "ws")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/offer", offer)
    app.router.add_get("/v1/realtime", realtime)
    app.router.add_get("/ws", simple_ws)
