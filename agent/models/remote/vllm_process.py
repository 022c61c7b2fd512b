"""A vLLM server as a child process: started, its output in our log, restarted with backoff, stopped.

The child runs in a process group of its own, so that stopping or restarting it also ends the engine
processes vLLM spawns (an orphaned engine would keep the port and the memory).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from agent.config import VllmConfig

log = logging.getLogger(__name__)
child_log = logging.getLogger("agent.vllm")

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>

STARTING, HEALTHY, DOWN, RESTARTING, STOPPED = "starting", "healthy", "down", "restarting", "stopped"


def server_command(config: VllmConfig) -> list[str]:
    """The child's argv: the configured command with {model} filled in, its args, and url's host and port."""
    parts = urlsplit(config.url)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"llm.vllm.url {config.url!r} needs a host and a port to launch a server on")
    command = [part.replace("{model}", config.model) for part in config.command]
    return [*command, *config.args, "--host", parts.hostname, "--port", str(parts.port)]


class VllmProcess:
    def __init__(self, config: VllmConfig, healthy: Callable[[], Awaitable[bool]]) -> None:
        self.config = config
        self.state = STOPPED
        self.restarts = 0
        self.pid: int | None = None
        self._healthy = healthy
        self._process: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task | None = None
        self._stopping = False

    def start(self) -> None:
        if self._supervisor is None:
            self._supervisor = asyncio.create_task(self._supervise(), name="vllm-supervisor")

    async def stop(self) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        await self._end_child()
        self.state = STOPPED

    async def _supervise(self) -> None:
        backoff = self.config.restart_backoff_s
        while not self._stopping:
            self.state = STARTING if self.restarts == 0 else RESTARTING
            started = await self._start_child()
            if started:
                # A server that came up resets the backoff; one that never did doubles it.
                backoff = self.config.restart_backoff_s
                self.state = HEALTHY
                code = await self._process.wait()
                log.warning("vLLM server (pid %s) exited with code %s; restarting in %.1fs", self.pid, code, backoff)
            else:
                log.warning("vLLM server did not become healthy; restarting in %.1fs", backoff)
            self.state = DOWN
            await self._end_child()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.config.restart_backoff_max_s)
            self.restarts += 1

    async def _start_child(self) -> bool:
        """Start the server and wait for /health; False if it exited or timed out first."""
        argv = server_command(self.config)
        log.info("starting vLLM: %s", " ".join(argv))
        try:
            self._process = await asyncio.create_subprocess_exec(
                *argv,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, **self.config.env},
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            log.error("cannot start vLLM (%s): %s; check llm.vllm.command", argv[0], exc)
            self._process = None
            return False
        self.pid = self._process.pid
        asyncio.create_task(_relay_output(self._process), name="vllm-output")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.start_timeout_s
        while loop.time() < deadline:
            if self._process.returncode is not None:
                log.error("vLLM exited with code %s while starting; its output is in the log above",
                          self._process.returncode)
                return False
            if await self._healthy():
                log.info("vLLM (pid %s) is healthy", self.pid)
                return True
            await asyncio.sleep(self.config.probe_interval_s)
        log.error("vLLM gave no healthy answer within llm.vllm.start_timeout_s (%ss)", self.config.start_timeout_s)
        return False

    async def _end_child(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.returncode is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), self.config.stop_grace_s)
            except TimeoutError:
                log.warning("vLLM did not stop within %ss of SIGTERM; killing it", self.config.stop_grace_s)
        _signal_group(process.pid, signal.SIGKILL)  # the engine processes it leaves behind, too
        with contextlib.suppress(ProcessLookupError):
            await process.wait()


def _load_prctl():
    # Looked up here, not in the forked child, where only async-signal-safe work belongs.
    try:
        return ctypes.CDLL(None).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def _die_with_parent() -> None:
    """In the child, before exec: Linux kills it when we die, even by SIGKILL (no orphaned server on the GPU)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def _relay_output(process: asyncio.subprocess.Process) -> None:
    assert process.stdout is not None
    async for raw in process.stdout:
        child_log.info("%s", raw.decode("utf-8", "replace").rstrip())
