"""The server inside an already running event loop, on a free loopback port (benchmarks and tests)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from agent.config import Config
from agent.models.runtime import ModelRuntime
from agent.server.app import STATE_KEY, ServerState, create_app


@contextlib.asynccontextmanager
async def running_server(
    config: Config, runtime: ModelRuntime | None, host: str = "127.0.0.1"
) -> AsyncIterator[tuple[str, ServerState]]:
    """Yield the server's URL and state; models are ``runtime`` (None: loaded by the app as usual)."""
    app = create_app(config, runtime)
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{port}", app[STATE_KEY]
    finally:
        await runner.cleanup()
