"""The ``voice-agent`` command as an operator runs it: bad config stops start-up, SIGTERM exits cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time

import aiohttp

from agent.client.peer import TalkClient, wait_until_ready
from agent.config import REPO_ROOT
from tests.conftest import serve_in_subprocess


def test_an_unknown_config_key_stops_start_up_naming_the_key():
    env = {**os.environ, "VOICE_AGENT_VAD__AGRESSIVENESS": "2"}
    result = subprocess.run(
        [sys.executable, "-m", "agent", "serve"], env=env, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT
    )
    assert result.returncode == 2
    assert "unknown config key vad.agressiveness" in result.stderr
    assert "aggressiveness" in result.stderr.split("allowed keys")[1]


@contextlib.asynccontextmanager
async def call_on_a_server(monkeypatch, grace_seconds: int):
    """``voice-agent serve`` (server.shutdown_grace_seconds as given) with one WebRTC call connected to it."""
    monkeypatch.setenv("VOICE_AGENT_SERVER__SHUTDOWN_GRACE_SECONDS", str(grace_seconds))
    server, url = serve_in_subprocess()
    try:
        await wait_until_ready(url, timeout=180)
        async with TalkClient() as client:
            await client.connect(url)
            yield server, url, client
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


async def test_sigterm_closes_every_peer_connection_and_exits_cleanly(monkeypatch):
    async with call_on_a_server(monkeypatch, grace_seconds=0) as (server, url, client):  # no grace: closed at once
        server.send_signal(signal.SIGTERM)
        exit_code = await asyncio.to_thread(server.wait, 20)
        log = server.stderr.read()
    assert exit_code == 0, log
    assert "closed 1 sessions" in log
    assert "session" in log and "server shutting down" in log


async def test_sigterm_refuses_new_calls_and_gives_a_running_call_its_grace_to_end(monkeypatch):
    async with call_on_a_server(monkeypatch, grace_seconds=120) as (server, url, client):
        server.send_signal(signal.SIGTERM)
        await asyncio.sleep(1.0)
        async with aiohttp.ClientSession() as http:
            offer = {"type": "offer", "sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"}
            async with http.post(f"{url}/offer", json=offer) as response:
                refused = response.status, (await response.json())["error"]
            async with http.get(f"{url}/ready") as response:
                ready = response.status, await response.json()
        await asyncio.sleep(1.0)
        still_serving = server.poll() is None and client._pc.connectionState == "connected"
        await client.close()  # the caller hangs up: the server need not wait out its grace
        hung_up_at = time.monotonic()
        exit_code = await asyncio.to_thread(server.wait, 60)
        exited_after = time.monotonic() - hung_up_at
        log = server.stderr.read()

    assert refused[0] == 503 and "shutting down" in refused[1]
    assert ready[0] == 503 and ready[1]["draining"] is True
    assert still_serving, "the running call goes on after SIGTERM"
    assert exit_code == 0, log
    assert exited_after < 30, f"the server waited {exited_after:.0f}s after the last call ended"
    assert "new sessions refused" in log
