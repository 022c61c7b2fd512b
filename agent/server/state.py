"""What the server holds while it runs: the config, the loaded models and the live sessions.

Models load in a background thread when the app starts, so ``/health`` answers at once and
``/ready`` turns 200 only when every model is loaded and warmed up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from agent import metrics
from agent.config import Config
from agent.models.runtime import ModelRuntime
from agent.session import Session

log = logging.getLogger(__name__)

STATE_KEY = web.AppKey("state", "ServerState")


class ServerState:
    def __init__(self, config: Config, runtime: ModelRuntime | None = None) -> None:
        self.config = config
        self.runtime = runtime
        self.load_error: str | None = None
        self.sessions: dict[str, Session] = {}
        self._loader: asyncio.Task | None = None
        self._owns_runtime = False
        self.draining = False  # SIGTERM came: no new sessions, running ones may finish

    async def drain(self, grace_seconds: float, stop_now: asyncio.Event) -> None:
        """Refuse new sessions and wait until the running ones have ended, ``grace_seconds`` pass or ``stop_now``."""
        self.draining = True
        log.info("shutting down: new sessions refused, %d running get up to %.0fs to end "
                 "(SIGTERM or Ctrl-C again closes them now)", len(self.sessions), grace_seconds)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_seconds
        while self.sessions and loop.time() < deadline and not stop_now.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_now.wait(), min(0.2, max(0.0, deadline - loop.time())))
        if self.sessions:
            log.info("grace over with %d sessions still running; closing them", len(self.sessions))

    @property
    def ready(self) -> bool:
        return self.runtime is not None

    async def load_models(self) -> None:
        if self.runtime is not None:
            await self.runtime.start()  # given by the caller (tests), who also closes it
            return
        log.info("loading models (stt=%s, llm=%s, tts=%s)...", *self._backends())
        try:
            self.runtime = await asyncio.to_thread(ModelRuntime.load, self.config)
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            metrics.ERRORS.labels(stage="model_load").inc()
            log.exception("models failed to load; /ready will report the error")
            return
        self._owns_runtime = True
        await self.runtime.start()
        metrics.models_ready(self.runtime)

    async def close(self) -> None:
        """Stop what the loaded models run beside the process (a launched vLLM server)."""
        if self._loader is not None:
            self._loader.cancel()
        if self._owns_runtime and self.runtime is not None:
            await self.runtime.aclose()

    def _backends(self) -> tuple[str, str, str]:
        c = self.config
        return c.stt.backend, c.llm.backend, c.tts.backend
