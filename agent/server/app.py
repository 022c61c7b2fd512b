"""The app: the page, health, readiness, metrics and diagnostics, and every area's routes.

The live conversation's routes (``/offer``, ``/v1/realtime``, ``/ws``) are in ``live.py``.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from aiohttp import web
from aiohttp_pydantic.oas.view import generate_oas
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from swagger_ui_bundle import swagger_ui_path

from agent import metrics
from agent.calls.records import CallRecords
from agent.config import Config
from agent.languages import LANGUAGE_NAMES
from agent.models.runtime import ModelRuntime
from agent.server import auth, calls, diag, live, openai_audio
from agent.server.api import CONFIG_KEY, RECORDS_KEY
from agent.server.errors import error_middleware
from agent.server.state import STATE_KEY, ServerState
from agent.transport.ice import page_ice_servers

log = logging.getLogger(__name__)

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
    if state.draining:
        body["draining"] = True  # load balancers stop sending new calls here
    return web.json_response(body, status=200 if state.ready and not state.draining else 503)


async def diagnostics(request: web.Request) -> web.Response:
    return web.json_response(await diag.report(request.app[STATE_KEY].sessions.values()))


async def prometheus_metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


# The page loads only its own scripts (none inline) and talks only to this server; Swagger UI sets inline
# styles and data: images. WebRTC media is not governed by CSP.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")


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
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", prometheus_metrics)
    app.router.add_get("/diag", diagnostics)
    app.router.add_get("/api/openapi.json", openapi_document)
    app.router.add_get("/api/docs", api_docs)
    app.router.add_static("/api/docs/static/", swagger_ui_path)
    live.add_routes(app)
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
        log.info("closed %d sessions", len(sessions))
        await records.close(config.records.shutdown_write_seconds)
        await state.close()

    app.on_response_prepare.append(_security_headers)
    app.on_startup.append(start_loading)
    app.on_shutdown.append(close_sessions)
    return app
