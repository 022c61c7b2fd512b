from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from agent.config import Config
from agent.models.runtime import ModelRuntime
from agent.server.app import STATE_KEY, ServerState, create_app


@contextlib.asynccontextmanager
async def running_server(
    config: Config, runtime: ModelRuntime | None
) -> AsyncIterator[tuple[str, ServerState]]:
    """The real aiohttp app on a free loopback port, in this test's event loop."""
    app = create_app(config, runtime)
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", app[STATE_KEY]
    finally:
        await runner.cleanup()


@pytest.fixture
def config() -> Config:
    return Config()
