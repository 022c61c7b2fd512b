"""HTTP side of the server: the page, the SDP offer/answer exchange, health, readiness and metrics.

Models load in a background thread when the app starts, so ``/health`` answers at once and
``/ready`` turns 200 only when every model is loaded and warmed up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from pathlib import Path

from aiohttp import web
from aiohttp_pydantic.oas.view import generate_oas
from aiortc import RTCPeerConnection, RTCSessionDescription
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from swagger_ui_bundle import swagger_ui_path

from agent import metrics
from agent.calls.records import CallRecords
from agent.config import Config
from agent.languages import LANGUAGE_NAMES
from agent.models.runtime import ModelRuntime
from agent.server import auth, calls, diag, openai_audio
from agent.server.api import CONFIG_KEY, RECORDS_KEY, USER
from agent.server.errors import error_middleware
from agent.session import Session
from agent.transport.ice import page_ice_servers, rtc_configuration
from agent.transport.udp_ports import pin_udp_ports

log = logging.getLogger(__name__)

STATE_KEY = web.AppKey("state", "ServerState")


class ServerState:
    def __init__(self, config: Config, runtime: ModelRuntime | None = None) -> None:
        self.config = config
        self.runtime = runtime
        self.load_error: str | None = None
        self.sessions: dict[str, Session] = {}
        self._loader: asyncio.Task | None = None

    @property
    def ready(self) -> bool:
        return self.runtime is not None

    async def load_models(self) -> None:
        if self.runtime is not None:
            return
        log.info("loading models (stt=%s, llm=%s, tts=%s)...", *self._backends())
        try:
            self.runtime = await asyncio.to_thread(ModelRuntime.load, self.config)
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            metrics.ERRORS.labels(stage="model_load").inc()
            log.exception("models failed to load; /ready will report the error")
            return
        metrics.models_ready(self.runtime)

    def _backends(self) -> tuple[str, str, str]:
        c = self.config
        return c.stt.backend, c.llm.backend, c.tts.backend


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def offer(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    config = state.config
    limit = config.server.max_offer_bytes
    too_large = f"offer body over {limit} bytes (server.max_offer_bytes)"
    if request.content_length is not None and request.content_length > limit:
        return _error(413, too_large)
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        return _error(413, too_large)
    try:
        params = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return _error(400, 'body is not JSON; send {"sdp": "...", "type": "offer"}')
    if (
        not isinstance(params, dict)
        or params.get("type") != "offer"
        or not isinstance(params.get("sdp"), str)
    ):
        return _error(400, 'expected JSON {"sdp": "<SDP offer>", "type": "offer"}')
    if "\nm=audio " not in "\n" + params["sdp"].replace("\r\n", "\n"):
        return _error(400, "the offer has no audio section; add a microphone track (sendrecv audio)")
    if not state.ready:
        return _error(503, "models are still loading; retry when GET /ready returns 200")
    if len(state.sessions) >= config.server.max_sessions:
        return _error(503, f"the server is full ({config.server.max_sessions} sessions, server.max_sessions)")

    pc = RTCPeerConnection(rtc_configuration(config.server.ice_servers))
    session_id = uuid.uuid4().hex[:8]

    def forget(session: Session) -> None:
        if state.sessions.pop(session.id, None) is not None:
            metrics.ACTIVE_SESSIONS.dec()

    user = request.get(USER)
    record = None
    if config.records.enabled:
        record = request.app[RECORDS_KEY].live_call(session_id, user.id if user else None, config.language)
    session = Session(session_id, config, state.runtime, pc, on_closed=forget, record=record)
    state.sessions[session_id] = session
    metrics.ACTIVE_SESSIONS.inc()

    @pc.on("datachannel")
    def on_datachannel(channel) -> None:
        session.attach_channel(channel)

    @pc.on("track")
    def on_track(track) -> None:
        if track.kind == "audio":
            pc.addTrack(session.outbound)
            session.attach_microphone(track)

    @pc.on("connectionstatechange")
    async def on_connection_state() -> None:
        if pc.connectionState in ("failed", "closed"):
            await session.close(f"connection {pc.connectionState}")

    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=params["sdp"], type="offer"))
        pin_udp_ports(pc, config.server.udp_port_range)  # before the answer gathers candidates
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
    except Exception as exc:  # aiortc raises ValueError and others for SDP it cannot use
        await session.close("bad offer")
        return _error(400, f"cannot use this SDP offer: {exc}")
    session.start()
    log.info("session %s started (%d active)", session_id, len(state.sessions))
    return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type})


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(Path(request.app[CONFIG_KEY].server.web_dir) / "index.html")


async def client_config(request: web.Request) -> web.Response:
    config = request.app[CONFIG_KEY]
    return web.json_response(
        {
            "ice_servers": page_ice_servers(config.server),
            "language": config.language,
            "languages": LANGUAGE_NAMES,
            "auth_mode": config.auth.mode,
            "allow_registration": config.auth.allow_registration,
        }
    )


async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(generate_oas([request.app], "1", "Voice agent API"))


async def api_docs(request: web.Request) -> web.FileResponse:
    return web.FileResponse(Path(request.app[CONFIG_KEY].server.web_dir) / "api-docs.html")


def _details(state: ServerState) -> dict:
    """What /health and /ready both report: models, warm-up, device, GPU memory, sessions."""
    return {
        "models_loaded": state.runtime is not None,
        "warm_up_done": state.ready,  # ModelRuntime.load warms every model before the runtime is set
        "device": metrics.compute_device(),
        "gpu_memory": metrics.gpu_memory(),
        "sessions": len(state.sessions),
        "max_sessions": state.config.server.max_sessions,
    }


async def health(request: web.Request) -> web.Response:
    """Always 200 while the process serves: liveness, with the same details as /ready."""
    state = request.app[STATE_KEY]
    body = {"status": "alive", "ready": state.ready, **_details(state)}
    if state.load_error:
        body["error"] = state.load_error
    return web.json_response(body)


async def ready(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    body: dict = {"ready": state.ready, "sessions": len(state.sessions)}
    body |= _details(state)
    if state.runtime is not None:
        runtime = state.runtime
        body["models"] = {"stt": runtime.stt.name, "chat": runtime.chat.name, "tts": runtime.tts.name}
        body["load_seconds"] = round(runtime.load_seconds, 3)
        body["warm_up_seconds"] = round(runtime.warm_up_seconds, 3)
        if describe := getattr(runtime.chat, "describe", None):  # device, dtype, attention, compiled
            body["chat"] = describe()
    if state.load_error:
        body["error"] = state.load_error
    return web.json_response(body, status=200 if state.ready else 503)


async def diagnostics(request: web.Request) -> web.Response:
    return web.json_response(await diag.report(request.app[STATE_KEY].sessions.values()))


async def prometheus_metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(config: Config, runtime: ModelRuntime | None = None) -> web.Application:
    """Build the app; with ``runtime`` given (tests), models are not loaded again."""
    app = web.Application(
        client_max_size=max(config.server.max_offer_bytes, config.server.max_request_bytes),
        middlewares=[error_middleware, auth.access_middleware(config)],
    )
    state = ServerState(config, runtime)
    records = CallRecords(config)
    app[CONFIG_KEY] = config
    app[STATE_KEY] = state
    app[RECORDS_KEY] = records
    if runtime is not None:
        metrics.models_ready(runtime)
    app.router.add_get("/", index)
    app.router.add_get("/config.json", client_config)
    app.router.add_post("/offer", offer)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", prometheus_metrics)
    app.router.add_get("/diag", diagnostics)
    app.router.add_get("/api/openapi.json", openapi_document)
    app.router.add_get("/api/docs", api_docs)
    app.router.add_static("/api/docs/static/", swagger_ui_path)
    auth.add_routes(app)
    calls.add_routes(app)
    openai_audio.add_routes(app)
    app.router.add_static("/static/", config.server.web_dir)

    async def start_loading(app: web.Application) -> None:
        state._loader = asyncio.create_task(state.load_models())
        records.start()

    async def close_sessions(app: web.Application) -> None:
        sessions = list(state.sessions.values())
        await asyncio.gather(*(s.close("server shutting down") for s in sessions), return_exceptions=True)
        if state._loader is not None:
            state._loader.cancel()
        log.info("closed %d sessions", len(sessions))
        await records.close(config.records.shutdown_write_seconds)

    app.on_startup.append(start_loading)
    app.on_shutdown.append(close_sessions)
    return app
